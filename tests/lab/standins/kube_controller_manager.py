"""kube-controller-manager stand-in for the lab: see _common.run_controller and tests/lab/README.md.

Reads --kubeconfig once at start (client certificate as client-go keeps it), competes for the
kube-system/kube-controller-manager Lease every 2 s, serves /healthz on --bind-address:--secure-port
(default 10257) with an in-memory self-signed CN=localhost@<unix> certificate.
"""

import _common

if __name__ == "__main__":
    _common.run_controller("kube-controller-manager", 10257, ("controllermanager.go:189", "Starting"),
                           ("controllermanager.go:324", "leaderelection lost"))
