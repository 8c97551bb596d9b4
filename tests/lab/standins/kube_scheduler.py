"""kube-scheduler stand-in for the lab: see _common.run_controller and tests/lab/README.md.

Reads --kubeconfig once at start (client certificate as client-go keeps it), competes for the
kube-system/kube-scheduler Lease every 2 s, serves /healthz on --bind-address:--secure-port
(default 10259) with an in-memory self-signed CN=localhost@<unix> certificate.
"""

import _common

if __name__ == "__main__":
    _common.run_controller("kube-scheduler", 10259, ("server.go:154", "Starting Kubernetes Scheduler"),
                           ("server.go:247", "Leaderelection lost"))
