"""tests/bench/bench_fleet_scale.py at its CI size: 12 nodes (kubeadm, RKE1, k3s, light kubeadm HA and single).

Runs the benchmark without the real renew.yml (the slowest step, whose renewals test_renew_kubeadm.py,
test_rke_kubelet.py and test_k3s_serving.py cover; the benchmark's --check run still plans them) and checks
that it ran to the end: every node answered ping, check.yml and renew.yml --check passed on every node, the
ratios were printed, the light nodes serve the certs they hold, and the lab is down. No timing is judged.
Needs root and 127.0.8.x, 127.0.9.x, 10.213.20.x free. Also: fleet_scale.py's fleets of other sizes are valid (no lab).
"""
import json
import subprocess
import sys

import pytest
import yaml

from labutil import REPO, busy, labmod

import fleet_scale  # tests/lab is on sys.path through labutil  # pylint: disable=wrong-import-order


def _ssh_addresses(nodes):
    """The nodes' sshd on loopback addresses; private ones are routed off the machine without the lab's bridge, and
    lab.py refuses a bridge address already taken."""
    return [(n["address"], 22) for n in nodes if n["address"].startswith("127.")]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    nodes = [n for c in fleet_scale.spec(12)["clusters"] for n in c["nodes"]]
    taken = busy(_ssh_addresses(nodes))
    if taken:
        pytest.skip(f"addresses busy ({', '.join(taken)}): another scale lab runs there")
    work = tmp_path_factory.mktemp("fleet-scale")
    run = subprocess.run([sys.executable, str(REPO / "tests/bench/bench_fleet_scale.py"), "--size", "small", "--no-renew",
                          "--output", str(work)], cwd=str(REPO), capture_output=True, text=True, timeout=600, check=False)
    print(run.stdout)
    return run, work, nodes


def test_runs_to_the_end_on_every_node(bench):
    run, _work, _nodes = bench
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for step in ("ping cold", "ping warm", "check.yml", "renew.yml --check"):
        assert any(line.startswith(step + " ") for line in run.stdout.splitlines()), f"no row for {step}:\n{run.stdout}"
    assert "ratios to a warm ping over 12 nodes: check.yml " in run.stdout
    assert "renew.yml --check " in run.stdout.rsplit("ratios", 1)[1]
    assert "FAILED" not in run.stdout


def test_light_nodes_serve_the_certs_they_hold(bench):
    _run, work, nodes = bench
    report = json.loads((work / "report/kubepki-report.json").read_text())
    assert report["summary"]["hosts"] == len(nodes) and not report["summary"]["hosts_without_facts"]
    light = {n["name"] for c in yaml.safe_load((work / "fleet.yml").read_text())["clusters"] if c.get("light")
             for n in c["nodes"]}
    rows = [r for r in report["certs"] if r["host"] in light]
    endpoints = {(r["host"], r["endpoint"].rsplit(":", 1)[1]) for r in rows if r["source"] == "endpoint"}
    for host in light:
        ports = {"10250"} if host.endswith("-w1") else {"6443", "2379", "2380", "10257", "10259", "10250"}
        assert {p for h, p in endpoints if h == host} == ports, host
    assert all(r["state"] == "ok" for r in rows), [r["id"] for r in rows if r["state"] != "ok"]
    served = [r for r in rows if r["source"] != "endpoint" and r.get("served_on")]
    assert served and all(r["in_use"] for r in served), [(r["host"], r["id"]) for r in served if not r["in_use"]]


def test_lab_is_down(bench):
    _run, work, nodes = bench
    assert not (work / "lab").exists()
    assert not busy(_ssh_addresses(nodes))


@pytest.mark.parametrize("size", [12, 24, 48, 300])
def test_fleet_of_any_size_is_a_valid_lab_fleet(size):
    fleet = labmod.load_fleet(fleet_scale.spec(size))
    assert len(fleet.nodes) == size == len({n.address for n in fleet.nodes})
    assert {c.distribution for c in fleet.clusters} == {"kubeadm", "rke1", "k3s"}
    assert sum(len(c.nodes) > 2 for c in fleet.clusters) == (size >= 24) + max(1, size // 16)   # HA clusters
