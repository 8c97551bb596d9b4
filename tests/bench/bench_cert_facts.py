# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""cert_facts on a full kubeadm node against the way operators check today (seed 003):
one `openssl x509 -enddate` per .crt file, plus kubeconfigs decoded with grep | base64 -d.

Prints the times and the ratio; it asserts nothing about speed.
    .venv/bin/python tests/bench/bench_cert_facts.py [--rounds N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
sys.path.insert(0, os.path.join(REPO, ".collections"))
import pki  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import gather  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS  # noqa: E402  pylint: disable=wrong-import-position

# What an operator types, per seed 003 and kubeadm's docs: every .crt, then every embedded kubeconfig cert.
OPENSSL_LOOP = r"""
set -e
for i in $(find "$1/etc/kubernetes/pki" "$1/var/lib/kubelet/pki" -name '*.crt' -o -name 'kubelet-client-current.pem'); do
    echo "$i"; openssl x509 -enddate -noout -in "$i"
done
for k in "$1"/etc/kubernetes/*.conf; do
    echo "$k"
    grep 'client-certificate-data' "$k" | awk '{print $2}' | base64 -d | openssl x509 -enddate -noout || true
done
"""


def timed(func, rounds):
    samples = []
    for _round in range(rounds):
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    now = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory() as root:
        cluster = pki.kubeadm_cluster(now, control_plane_endpoint="lb.example.com:6443")
        pki.build_kubeadm_control_plane(root, cluster, "cp1", "10.0.0.11", now=now, init_node=True)
        facts = gather(NodeFS(root), now=now, probe=False)
        count = facts["summary"]["total"]

        def openssl_loop():
            subprocess.run(["bash", "-c", OPENSSL_LOOP, "bench", root], check=True, capture_output=True)

        env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
                   ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".collections"))
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]

        def ansible_module():
            subprocess.run(["ansible", "localhost", "-m", "kubepki.fleet.cert_facts", "-a", "rootfs=%s probe=false" % root,
                            "-e", "ansible_python_interpreter=%s" % sys.executable], check=True, capture_output=True, env=env)

        loop_lines = subprocess.run(["bash", "-c", OPENSSL_LOOP, "bench", root], check=True, capture_output=True, text=True)
        loop_count = sum(1 for line in loop_lines.stdout.splitlines() if line.startswith("notAfter="))
        openssl_s = timed(openssl_loop, args.rounds)
        core_s = timed(lambda: gather(NodeFS(root), now=now, probe=False), args.rounds)
        module_s = timed(ansible_module, max(1, args.rounds // 2))

    print(json.dumps({"certs_cert_facts": count, "certs_openssl_loop": loop_count, "rounds": args.rounds}))
    print("openssl x509 -enddate loop (seed 003) : %7.3f s for %d certs" % (openssl_s, loop_count))
    print("cert_facts core (in process)          : %7.3f s for %d certs  ratio openssl/core   = %5.1fx" % (core_s, count, openssl_s / core_s))
    print("ansible localhost -m cert_facts       : %7.3f s for %d certs  ratio openssl/module = %5.2fx" % (module_s, count, openssl_s / module_s))
    print("(the module run includes ansible start-up; per node in a fleet run the core time is what adds up)")


if __name__ == "__main__":
    main()
