"""Bring-up and teardown time of the lab fleet (infrastructure only: namespaces + sshd).

    python tests/bench/bench_lab_up.py [--rounds 3] [--fleet tests/lab/fleet.yml] [--hooks] [--no-ping]

Each round: `up` into a fresh tmp output, one `ansible all -m ping` (first SSH logins, with
the repo's ansible.cfg), `down`. Prints seconds per round and the median. Needs root, and the
fleet's addresses free (bring the default lab down first).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "lab"))
import lab as labmod  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fleet", default=str(labmod.DEFAULT_FLEET))
    ap.add_argument("--hooks", action="store_true", help="also run the fleet's populate/start hooks")
    ap.add_argument("--no-ping", action="store_true", help="skip the ansible ping")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_lab_up.py needs root, like the lab itself")
    fleet = labmod.load_fleet(args.fleet)
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    rows = []
    print(f"fleet {args.fleet}: {len(fleet.clusters)} clusters, {len(fleet.nodes)} nodes, "
          f"hooks {'on' if args.hooks else 'off'}")
    print(f"{'round':>5} {'up s':>7} {'ping s':>7} {'down s':>7}")
    for i in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="kubepki-lab-bench-") as tmp:
            lab = labmod.Lab(Path(tmp) / "output")
            t0 = time.monotonic()
            try:
                lab.up(fleet, fleet_hooks=args.hooks)
                t_up = time.monotonic() - t0
                t_ping = float("nan")
                if not args.no_ping:
                    t1 = time.monotonic()
                    subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(lab.inventory), "all",
                                    "-m", "ansible.builtin.ping"], env=env, cwd=REPO, check=True,
                                   stdout=subprocess.DEVNULL)
                    t_ping = time.monotonic() - t1
            finally:
                t2 = time.monotonic()
                lab.down()
                t_down = time.monotonic() - t2
        rows.append((t_up, t_ping, t_down))
        print(f"{i:>5} {t_up:>7.2f} {t_ping:>7.2f} {t_down:>7.2f}")
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"{'median':>5} {med[0]:>7.2f} {med[1]:>7.2f} {med[2]:>7.2f}")


if __name__ == "__main__":
    try:
        main()
    except labmod.LabError as e:
        sys.exit(f"bench_lab_up.py: {e}")
