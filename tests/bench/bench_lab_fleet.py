"""Bring-up time of the full default fleet with its services (populate + start hooks; target < 60 s on 2 cores).

    python tests/bench/bench_lab_fleet.py [--rounds 1] [--no-ping]

The same rounds as bench_lab_up.py --hooks: `up` until every node listens on its ports (etcd
joined, static pods, RKE containers, k3s), one `ansible all -m ping`, `down`.
"""
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv = [str(Path(__file__).with_name("bench_lab_up.py")), "--hooks", "--rounds", "1", *sys.argv[1:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
