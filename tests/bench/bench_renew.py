# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""renew.yml on the lab's kubeadm clusters: per-node renewal time and per-cluster API unavailability.

Brings up alpha (HA, expiring) and bravo (expired) from tests/lab/fleet.yml, runs renew.yml while
probing every apiserver (a request counts only if the client trusts the served cert), and prints:
  - per node, how long it held the renewal lock (backup + renew + restarts + verification);
  - per cluster, the seconds during which no apiserver answered a trusting client.
Needs root and the default fleet's addresses free.   .venv/bin/python tests/bench/bench_renew.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
import lab as labmod  # noqa: E402  pylint: disable=wrong-import-position
import prober  # noqa: E402  pylint: disable=wrong-import-position

CLUSTERS = ("alpha", "bravo")


def watch_locks(lab, nodes, held, stop):
    """Record when each node's renewal lock appears and disappears: the node's transaction."""
    since = {}
    while not stop.is_set():
        now = time.monotonic()
        for node in nodes:
            locked = (lab.node_root(node) / "var/lib/kubepki/renew.lock").exists()
            if locked and node not in since:
                since[node] = now
            elif not locked and node in since:
                held.setdefault(node, []).append(now - since.pop(node))
        stop.wait(0.05)


def main():
    with open(os.path.join(REPO, "tests", "lab", "fleet.yml"), encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    spec["clusters"] = [c for c in spec["clusters"] if c["name"] in CLUSTERS]
    with tempfile.TemporaryDirectory() as tmp:
        fleet_file = os.path.join(tmp, "fleet.yml")
        with open(fleet_file, "w", encoding="utf-8") as handle:
            yaml.safe_dump(spec, handle)
        output = os.path.join(tmp, "lab")
        started = time.monotonic()
        subprocess.run([sys.executable, os.path.join(REPO, "tests", "lab", "lab.py"), "up", "--fleet", fleet_file,
                        "--output", output], check=True, capture_output=True, cwd=REPO)
        up_seconds = time.monotonic() - started
        lab = labmod.Lab(output)
        try:
            nodes = [n for n in lab.state()["nodes"] if "-cp" in n]
            addresses = {c: [lab.state()["nodes"][n]["address"] for n in nodes if n.startswith(c)] for c in CLUSTERS}
            probes = {c: prober.ApiProber(addresses[c], str(lab.node_root(c + "-cp1") / "etc/kubernetes/admin.conf"),
                                          verify=True) for c in CLUSTERS}
            held, stop = {}, threading.Event()
            watcher = threading.Thread(target=watch_locks, args=(lab, nodes, held, stop), daemon=True)
            env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
                       ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".collections"))
            env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
            for probe in probes.values():
                probe.__enter__()
            watcher.start()
            started = time.monotonic()
            run = subprocess.run(["ansible-playbook", "playbooks/renew.yml", "-i", os.path.join(output, "inventory.ini"),
                                  "-e", "report_dir=%s" % os.path.join(tmp, "report")],
                                 cwd=REPO, env=env, capture_output=True, text=True, check=False)
            total = time.monotonic() - started
            stop.set()
            watcher.join()
            for probe in probes.values():
                probe.__exit__(None, None, None)
        finally:
            subprocess.run([sys.executable, os.path.join(REPO, "tests", "lab", "lab.py"), "down", "--output", output],
                           check=False, capture_output=True)
    if run.returncode:
        print(run.stdout[-4000:])
        sys.exit("renew.yml failed (rc %d)" % run.returncode)
    print("lab up (alpha + bravo, services ready): %.1f s" % up_seconds)
    print("renew.yml, whole run (facts, %d control planes, report): %.1f s" % (len(nodes), total))
    for node in nodes:
        print("  %-10s renewal transaction (lock held): %s" % (node, ", ".join("%.1f s" % s for s in held.get(node, [])) or "-"))
    for cluster, probe in probes.items():
        print("  cluster %-6s no trusted apiserver answering: %5.1f s of %.0f s  (per apiserver below)"
              % (cluster, probe.unavailable_seconds(), total))
        print(probe.report())


if __name__ == "__main__":
    main()
