"""check.yml and renew.yml over a fleet of many nodes, against a bare `ansible -m ping` with the same forks.

    python tests/bench/bench_fleet_scale.py [--size 48|small] [--forks 20] [--no-renew] [--output DIR]

Brings up tests/lab/fleet_scale.py's fleet of --size nodes (small: 12) in its own output dir, then runs over
the whole fleet, in this order: `ansible -m ping` twice (cold: new SSH connections; warm: ControlPersist
masters up), check.yml, renew.yml --check, renew.yml (renews the full clusters' expired and expiring certs;
--no-renew skips it). Prints wall seconds, the ratio to the warm ping, seconds per node, the highest 1-minute
load average seen during each step and the controller's CPU seconds (what a bigger fleet needs of the
controller); then brings the lab down. Exits 1 when a step fails or a node
does not answer; timings are printed, never judged. Needs root and 127.0.8-10.x and 10.213.20.x free.
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "lab"))
import fleet_scale  # noqa: E402  pylint: disable=wrong-import-position

SMALL = 12
RECAP = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def ansible_env(forks: int) -> dict:
    """This checkout's playbooks and collection, as tests/integration/labutil.py ansible_env() has them."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
               ANSIBLE_FORKS=str(forks), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def timed(argv, env, log: Path):
    """(seconds, rc, stdout, highest 1-minute load average while it ran, controller CPU seconds: ansible's processes
    and their ssh clients, not the ControlPersist masters they leave running, nor anything on the nodes)."""
    peak, stop = [os.getloadavg()[0]], threading.Event()

    def sample():
        while not stop.wait(1.0):
            peak[0] = max(peak[0], os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started, cpu = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds, after = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    stop.set()
    sampler.join()
    log.write_text(run.stdout + run.stderr)
    cpu = after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime
    return seconds, run.returncode, run.stdout, max(peak[0], os.getloadavg()[0]), cpu


def answered(step: str, rc: int, out: str, nodes: int) -> str:
    """What went wrong with a step, or '' when it ran to the end on every node."""
    if step.startswith("ping"):
        ok = len(re.findall(r"^\S+ \| SUCCESS", out, re.M))
        return "" if rc == 0 and ok == nodes else f"rc {rc}, {ok} of {nodes} nodes answered"
    recap = RECAP.findall(out)
    bad = [host for host, unreachable, failed in recap if unreachable != "0" or failed != "0"]
    if rc or bad or len(recap) != nodes:
        return f"rc {rc}, {len(recap)} of {nodes} nodes in the recap, failed or unreachable: {', '.join(bad) or '-'}"
    return ""


def size_arg(value: str) -> int:
    return SMALL if value == "small" else int(value)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default=48, type=size_arg,
                    help=f"nodes (at least {fleet_scale.MIN_SIZE}), or small ({SMALL})")
    ap.add_argument("--forks", type=int, default=20, help="ansible forks for every step (ansible.cfg: 20)")
    ap.add_argument("--no-renew", action="store_true", help="skip the real renew.yml")
    ap.add_argument("--output", help="work dir: fleet file, lab, reports, logs of each step (default: a temp dir)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_fleet_scale.py needs root, like the lab itself")
    size = args.size
    try:
        spec = fleet_scale.spec(size)
    except ValueError as e:
        sys.exit(f"bench_fleet_scale.py: {e}")
    work = Path(args.output or tempfile.mkdtemp(prefix="kubepki-fleet-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "fleet.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    lab_py, output = [sys.executable, str(REPO / "tests" / "lab" / "lab.py")], work / "lab"
    inventory, env = str(output / "inventory.ini"), ansible_env(args.forks)
    kinds = {}
    for c in spec["clusters"]:
        kind = f"{c['distribution']}{' light' if c.get('light') else ''}{' HA' if len(c['nodes']) > 2 else ''}"
        kinds[kind] = kinds.get(kind, 0) + len(c["nodes"])
    print(f"fleet: {size} nodes in {len(spec['clusters'])} clusters ({', '.join(f'{k}: {n}' for k, n in kinds.items())}); "
          f"forks {args.forks}; {os.cpu_count()} CPUs; load before {os.getloadavg()[0]:.2f}", flush=True)
    playbook = ["ansible-playbook", "-i", inventory, "-e", f"report_dir={work / 'report'}"]
    steps = [("ping cold", ["ansible", "-i", inventory, "all", "-m", "ansible.builtin.ping"]),
             ("ping warm", ["ansible", "-i", inventory, "all", "-m", "ansible.builtin.ping"]),
             ("check.yml", playbook + ["playbooks/check.yml"]),
             ("renew.yml --check", playbook + ["playbooks/renew.yml", "--check"])]
    if not args.no_renew:
        steps.append(("renew.yml", playbook + ["playbooks/renew.yml"]))
    started = time.monotonic()
    up = subprocess.run(lab_py + ["up", "--fleet", str(work / "fleet.yml"), "--output", str(output)], cwd=REPO,
                        capture_output=True, text=True, check=False)
    up_seconds, failures, rows = time.monotonic() - started, [], []
    try:
        if up.returncode:
            print(up.stdout[-3000:] + up.stderr[-3000:])
            return 1
        print(f"lab up (every node listening): {up_seconds:.1f} s", flush=True)
        print(f"{'step':<18} {'seconds':>8} {'x ping':>7} {'s/node':>7} {'peak load':>9} {'ctl CPU s':>9} {'CPU s/node':>10}",
              flush=True)
        for step, argv in steps:
            seconds, rc, out, load, cpu = timed(argv, env, work / f"{step.replace(' ', '_').replace('-', '')}.log")
            rows.append((step, seconds))
            ratio = f"{seconds / rows[1][1]:>7.1f}" if len(rows) > 1 else f"{'-':>7}"   # the warm ping is the unit
            print(f"{step:<18} {seconds:>8.1f} {ratio} {seconds / size:>7.2f} {load:>9.1f} {cpu:>9.1f} {cpu / size:>10.3f}",
                  flush=True)
            problem = answered(step, rc, out, size)
            if problem:
                failures.append(f"{step}: {problem} (see {work})")
    finally:
        subprocess.run(lab_py + ["down", "--output", str(output)], cwd=REPO, capture_output=True, check=False)
    ratios = ", ".join(f"{step} {seconds / rows[1][1]:.1f}" for step, seconds in rows[2:])
    print(f"ratios to a warm ping over {size} nodes: {ratios}; load after {os.getloadavg()[0]:.2f}")
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
