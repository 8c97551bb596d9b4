"""The lab's infrastructure layer (tests/lab/lab.py): namespaced nodes over real SSH, teardown.

Brings up a two-node, two-cluster fleet (written here, on free 127.0.1.2xx addresses, output in
a tmp dir) through the CLI, checks it with real `ansible` runs and the hook API, then tears it
down and checks that nothing is left. Needs root (namespaces, mounts, port 22).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB_PY = REPO / "tests" / "lab" / "lab.py"
sys.path.insert(0, str(LAB_PY.parent))
import lab as labmod  # noqa: E402

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (mount namespaces, "
                                "bind mounts, port 22 on 127.0.1.x); run pytest as root")
BIN = Path(sys.executable).parent

HOOKS_PY = '''\
import os


def populate(node, root):
    (root / "etc/kubernetes/x").write_text(f"I am {node.name} of {node.cluster.name}\\n")
    probe = root / "opt/kubepki-lab/bin/kubepki-probe"
    probe.write_text(f"#!/bin/sh\\necho probe {node.name}\\n")
    os.chmod(probe, 0o755)
'''


def _free_addresses(n):
    free = [f"127.0.1.{i}" for i in range(200, 251) if not labmod._listeners([f"127.0.1.{i}"])]
    if len(free) < n:
        pytest.skip("no free 127.0.1.200-250 addresses (other labs running?)")
    return free[:n]


def _cli(*args):
    return subprocess.run([sys.executable, str(LAB_PY), *args], capture_output=True, text=True, timeout=120, cwd="/",
                          check=False)


def _ansible(inventory, *args):
    """Run ad-hoc ansible with the repo's ansible.cfg; returns {host: result} (from --tree)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    with tempfile.TemporaryDirectory() as tree:
        res = subprocess.run([str(BIN / "ansible"), "-i", str(inventory), "all", "--tree", tree, *args],
                             capture_output=True, text=True, env=env, cwd=str(REPO), timeout=120,
                             check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        return {f.name: json.loads(f.read_text()) for f in Path(tree).iterdir()}


def _snapshot(path):
    p = Path(path)
    if not p.exists():
        return None
    return sorted((str(f.relative_to(p)), f.read_bytes() if f.is_file() else None) for f in p.rglob("*"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    work = tmp_path_factory.mktemp("lab")
    a1, a2 = _free_addresses(2)
    (work / "hooks.py").write_text(HOOKS_PY)
    (work / "fleet.yml").write_text(f"""\
hooks:
  populate: ["hooks.py:populate"]
clusters:
  - name: tx
    distribution: kubeadm
    scenario: expiring_20d
    nodes:
      - {{name: tx-cp1, role: control-plane, address: {a1}}}
  - name: ty
    distribution: k3s
    nodes:
      - {{name: ty-server, role: server, address: {a2}}}
""")
    out = work / "output"
    host_before = _snapshot("/etc/kubernetes")
    res = _cli("up", "--fleet", str(work / "fleet.yml"), "--output", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    info = {"out": out, "lab": labmod.Lab(out), "inventory": out / "inventory.ini", "addresses": (a1, a2),
            "host_before": host_before, "state": json.loads((out / "state.json").read_text()),
            "nodes": {"tx-cp1": "tx", "ty-server": "ty"}, "background": []}
    yield info
    labmod.Lab(out).down()  # no-op when test_down already ran


@needs_root
def test_inventory_shape(lab):
    res = subprocess.run([str(BIN / "ansible-inventory"), "-i", str(lab["inventory"]), "--list"],
                         capture_output=True, text=True, check=True,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")))
    inv = json.loads(res.stdout)
    hv = inv["_meta"]["hostvars"]
    assert inv["kubeadm"]["children"] == ["tx"] and inv["k3s"]["children"] == ["ty"]
    assert inv["tx"]["hosts"] == ["tx-cp1"] and inv["ty"]["hosts"] == ["ty-server"]
    assert sorted(inv["control_plane"]["hosts"]) == ["tx-cp1", "ty-server"]
    assert hv["tx-cp1"]["kubepki_scenario"] == "expiring_20d"
    assert hv["ty-server"]["kubepki_scenario"] == labmod.DEFAULT_SCENARIO
    for host, (cluster, dist, role, addr) in {
            "tx-cp1": ("tx", "kubeadm", "control-plane", lab["addresses"][0]),
            "ty-server": ("ty", "k3s", "server", lab["addresses"][1])}.items():
        v = hv[host]
        assert (v["kubepki_cluster"], v["kubepki_distribution"], v["kubepki_role"], v["ansible_host"]) == \
            (cluster, dist, role, addr)
        assert v["ansible_user"] == "root" and v["ansible_python_interpreter"] == labmod.NODE_PYTHON
        assert Path(v["ansible_ssh_private_key_file"]).stat().st_mode & 0o077 == 0
        assert "StrictHostKeyChecking=accept-new" in v["ansible_ssh_common_args"]
        assert f"UserKnownHostsFile={lab['out']}/known_hosts" in v["ansible_ssh_common_args"]
        assert v["kubepki_node_root"] == str(lab["out"] / "nodes" / host / "root")
    # The node interpreter must be able to run modules that use cryptography.
    subprocess.run([labmod.NODE_PYTHON, "-c", "import cryptography"], check=True)


@needs_root
def test_hostname_over_real_ssh(lab):
    hosts = _ansible(lab["inventory"], "-m", "ansible.builtin.command", "-a", "hostname")
    assert {h: r["stdout"] for h, r in hosts.items()} == {h: h for h in lab["nodes"]}
    for node in lab["nodes"]:  # it went through each node's own sshd, with the lab key
        log = (lab["out"] / "nodes" / node / "root/var/log/kubepki-lab/sshd.log").read_text()
        assert "Accepted publickey for root" in log


@needs_root
def test_files_are_per_node_and_host_untouched(lab):
    hosts = _ansible(lab["inventory"], "-m", "ansible.builtin.command", "-a", "cat /etc/kubernetes/x")
    assert {h: r["stdout"] for h, r in hosts.items()} == \
        {h: f"I am {h} of {c}" for h, c in lab["nodes"].items()}
    # The node's tool dir comes first in PATH and is the node's own.
    hosts = _ansible(lab["inventory"], "-m", "ansible.builtin.shell", "-a", "kubepki-probe; echo $PATH")
    for h, r in hosts.items():
        probe, path = r["stdout"].splitlines()
        assert probe == f"probe {h}" and path.startswith(labmod.BIN_DIR + ":")
    assert _snapshot("/etc/kubernetes") == lab["host_before"]
    assert not Path("/etc/kubernetes/x").exists()


@needs_root
def test_run_in_node(lab):
    lb = lab["lab"]
    for node, cluster in lab["nodes"].items():
        assert lb.run_in_node(node, ["cat", "/etc/kubernetes/x"]).stdout == f"I am {node} of {cluster}\n"
        assert lb.run_in_node(node, ["hostname"]).stdout.strip() == node
        assert lb.run_in_node(node, ["sh", "-c", "command -v kubepki-probe"]).stdout.strip() == \
            f"{labmod.BIN_DIR}/kubepki-probe"
    with pytest.raises(subprocess.CalledProcessError):
        lb.run_in_node("tx-cp1", ["false"])
    # A background process (as the kubelet supervisor will be) lives in the node's namespace;
    # it is not recorded anywhere, so `down` must find it through the namespace.
    proc = lb.run_in_node("tx-cp1", ["sleep", "600"], background=True)
    lab["background"].append(proc.pid)
    mnt = lab["state"]["nodes"]["tx-cp1"]["mnt_ns"]
    assert labmod._ns(proc.pid) == mnt != labmod._ns("self")
    assert proc.pid in labmod.find_node_namespaces(lab["out"])["tx-cp1"]["pids"]


@needs_root
def test_status_and_refusing_a_second_up(lab):
    res = _cli("status", "--output", str(lab["out"]), "--json")
    st = json.loads(res.stdout)
    assert res.returncode == 0 and st["up"] and set(st["nodes"]) == set(lab["nodes"])
    res = _cli("up", "--fleet", str(lab["out"].parent / "fleet.yml"), "--output", str(lab["out"]))
    assert res.returncode == 2 and "already up" in res.stderr and "down" in res.stderr


@needs_root
def test_down_leaves_nothing(lab):
    out, state = lab["out"], lab["state"]
    addresses = list(lab["addresses"])
    recorded = [n["sshd_pid"] for n in state["nodes"].values()] + lab["background"]
    assert all(labmod._alive(p) for p in recorded)
    assert labmod.Lab(out)._ssh_clients(addresses), "expected Ansible's ControlPersist masters"
    res = _cli("down", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert labmod.find_node_namespaces(out) == {}
    assert not any(labmod._alive(p) for p in recorded)  # gone (or a zombie awaiting init)
    # No process anywhere is still in one of the nodes' namespaces.
    node_ns = {n["mnt_ns"] for n in state["nodes"].values()}
    assert not [p for p in labmod._pids() if labmod._ns(p) in node_ns and
                str(out) in Path(f"/proc/{p}/mountinfo").read_text()]
    assert not any(labmod._listeners(addresses).values())
    assert not labmod.Lab(out)._ssh_clients(addresses)
    assert not out.exists()
    assert _snapshot("/etc/kubernetes") == lab["host_before"]
    res = _cli("down", "--output", str(out))  # nothing up: quiet success
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


@needs_root
def test_failed_up_cleans_up(tmp_path):
    """A hook failing after the sshds started: up raises, names the hook, and leaves nothing."""
    (addr,) = _free_addresses(1)
    out = tmp_path / "output"
    spec = {"clusters": [{"name": "tz", "distribution": "rke1",
                          "nodes": [{"name": "tz-cp1", "role": "control-plane", "address": addr}]}]}
    started = []

    def start(lab, node):
        started.append(lab.node_pid(node))
        raise RuntimeError("boom")

    with pytest.raises(labmod.LabError, match=r"start hook .*start.* failed on tz-cp1: RuntimeError: boom"):
        labmod.Lab(out).up(spec, start=[start])
    assert started and not labmod._alive(started[0])
    assert labmod.find_node_namespaces(out) == {} and not out.exists()
    assert not any(labmod._listeners([addr]).values())


@needs_root
def test_nodes_with_private_addresses_have_a_network_of_their_own(tmp_path):
    """Each gets its own 127.0.0.1 (two binds of 127.0.0.1:6444 at once) on a bridge of the lab, which `down` removes."""
    out = tmp_path / "output"
    spec = {"clusters": [{"name": "tn", "distribution": "k3s", "nodes": [
        {"name": "tn-1", "role": "server", "address": "10.213.9.11"},
        {"name": "tn-2", "role": "server", "address": "10.213.9.12"}]}]}
    lab = labmod.Lab(out)
    lab.up(spec, install=False)
    try:
        bind = "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', 6444)); s.listen(); time.sleep(30)"
        holders = [lab.run_in_node(n, ["python3", "-c", bind], background=True) for n in ("tn-1", "tn-2")]
        peer = "import socket; socket.create_connection(('10.213.9.12', 22), timeout=3).close(); print('reached')"
        assert lab.run_in_node("tn-1", ["python3", "-c", peer]).stdout == "reached\n"
        assert [h.poll() for h in holders] == [None, None]
        hosts = _ansible(lab.inventory, "-m", "ansible.builtin.command", "-a", "ip -4 -o addr show dev eth0")
        assert {h: r["stdout"].split()[3] for h, r in hosts.items()} == {"tn-1": "10.213.9.11/24", "tn-2": "10.213.9.12/24"}
        assert lab.status()["up"]
    finally:
        lab.down()
    assert not [link for link in os.listdir("/sys/class/net") if link.startswith("kpb")]
    with pytest.raises(labmod.LabError, match="must share one /24"):
        labmod.load_fleet({"clusters": [{"name": "tn", "distribution": "k3s", "nodes": [
            {"name": "tn-1", "role": "server", "address": "10.213.9.11"},
            {"name": "tn-2", "role": "server", "address": "10.213.8.12"}]}]})


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_non_root_is_refused_clearly():
    # a copy where nobody can read it: the checkout, like /tmp on some machines, may be closed to other users
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        copy = Path(tmp) / "tests/lab/lab.py"
        copy.parent.mkdir(parents=True)
        shutil.copy(LAB_PY, copy)
        for path in (Path(tmp), copy.parent.parent, copy.parent):
            path.chmod(0o755)
        out = Path(tmp) / "o"
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", str(copy),
                              "up", "--output", str(out)], capture_output=True, text=True, timeout=120, cwd="/", check=False)
        assert res.returncode == 2 and "must run as root" in res.stderr, res.stderr
        assert not out.exists()


def test_fleet_validation():
    fleet = labmod.load_fleet(labmod.DEFAULT_FLEET)
    assert [c.name for c in fleet.clusters] == ["alpha", "bravo", "charlie", "delta"]
    assert [n.name for n in fleet.nodes] == ["alpha-cp1", "alpha-cp2", "alpha-cp3", "alpha-w1", "bravo-cp1",
                                             "charlie-cp1", "charlie-w1", "delta-server", "delta-agent"]
    assert {c.name: c.distribution for c in fleet.clusters} == \
        {"alpha": "kubeadm", "bravo": "kubeadm", "charlie": "rke1", "delta": "k3s"}

    def spec(**node):
        return {"clusters": [{"name": "c", "distribution": "k3s", "nodes": [
            {"name": "n1", "role": "server", "address": "127.0.1.5"},
            {"name": "n2", "role": "agent", "address": "127.0.1.6", **node}]}]}
    assert labmod.load_fleet(spec()).nodes[1].cluster.scenario == labmod.DEFAULT_SCENARIO
    for bad, message in [({"role": "worker"}, "not valid for k3s"),
                         ({"address": "127.0.1.5"}, "share address"),
                         ({"address": "127.0.0.1"}, "not 127.0.0.1"),
                         ({"address": "10.0.0.1"}, "must be in 127.0.0.0/8"),
                         ({"address": "8.8.8.8"}, "or a private address other than .1"),
                         ({"name": "N_2"}, "DNS label"),
                         ({"name": "n1"}, "used twice")]:
        with pytest.raises(labmod.LabError, match=message):
            labmod.load_fleet(spec(**bad))
