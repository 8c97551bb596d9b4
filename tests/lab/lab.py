"""The kubepki lab fleet: Kubernetes nodes as Linux mount namespaces on one machine, over real SSH.

Each node is a mount + UTS namespace in which per-node directories are bind-mounted over the
real paths (/etc/kubernetes, /var/lib/etcd, ...) and an sshd listens on the node's own
loopback address (127.0.1.x:22). Ansible reaches the nodes over SSH, as in production.
A node with a private address (e.g. 10.213.0.11) gets a network namespace of its own as well: its
own 127.0.0.1 (k3s binds its apiserver to 127.0.0.1:6444 on every server) and a veth on a bridge
of the lab, which holds the first address of the nodes' /24.

CLI:
    python tests/lab/lab.py up     [--fleet tests/lab/fleet.yml] [--output tests/lab/output] [--recreate]
    python tests/lab/lab.py down   [--output ...]
    python tests/lab/lab.py status [--output ...] [--json]
    python tests/lab/lab.py exec NODE [--output ...] -- CMD...   (run CMD inside NODE's namespace)
    python tests/lab/lab.py ssh  NODE [--output ...] [CMD...]    (SSH to NODE as Ansible would)

Library (for the PKI generator, the kubelet supervisor, the tests):
    lab = Lab(output)
    lab.up(fleet, populate=[f(node, node_root_dir)], start=[f(lab, node)])
    lab.run_in_node(node, argv, background=False)
    lab.down()

Needs root: it creates namespaces and mounts and binds port 22. See tests/lab/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib
import importlib.util
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLEET = REPO_ROOT / "tests" / "lab" / "fleet.yml"
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "lab" / "output"

# Lab-only locations inside a node (empty on the host): service tools, pid files, logs.
BIN_DIR = "/opt/kubepki-lab/bin"
RUN_DIR = "/run/kubepki-lab"
LOG_DIR = "/var/log/kubepki-lab"
# Paths each node has its own copy of. /root is per node too: root's shared ~/.bashrc would
# otherwise put pyenv/cargo ahead of BIN_DIR in every SSH session (bash sources it when started
# by sshd), and ~/.ansible/tmp would be shared by all "hosts". /var/lib/kubepki holds our backups and lock.
NODE_PATHS = ("/etc/kubernetes", "/var/lib/etcd", "/var/lib/kubelet", "/var/lib/rancher",
              "/etc/rancher", "/root", "/var/lib/kubepki", BIN_DIR, RUN_DIR, LOG_DIR)
NODE_PATH_ENV = BIN_DIR + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Modules run with Debian's python on the nodes: it has python3-cryptography (38.x on Debian 12).
NODE_PYTHON = "/usr/bin/python3"
SSHD = "/usr/sbin/sshd"
# Always needed by the lab itself; a fleet may ask for more (`packages:`).
BASE_PACKAGES = ("openssh-server", "python3-cryptography")
DEFAULT_SCENARIO = "fresh"
DISTRIBUTIONS = {"kubeadm": ("control-plane", "worker"),
                 "rke1": ("control-plane", "worker"),
                 "k3s": ("server", "agent"),
                 "rke2": ("server", "agent")}
# Inventory groups by role, across distributions (a k3s server runs the control plane).
ROLE_GROUPS = {"control-plane": "control_plane", "server": "control_plane",
               "worker": "workers", "agent": "workers"}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
STATE_VERSION = 1


class LabError(Exception):
    """Something the user has to act on; the message says what."""


# ---------------------------------------------------------------------------------------------
# Fleet spec

@dataclasses.dataclass
class Node:
    name: str
    role: str
    address: str
    cluster: "Cluster" = dataclasses.field(repr=False, compare=False)
    vars: dict = dataclasses.field(default_factory=dict)

    @property
    def distribution(self) -> str:
        return self.cluster.distribution


@dataclasses.dataclass
class Cluster:
    name: str
    distribution: str
    scenario: str
    nodes: list = dataclasses.field(default_factory=list)
    vars: dict = dataclasses.field(default_factory=dict)  # inventory group vars beyond the basics


@dataclasses.dataclass
class Fleet:
    clusters: list
    packages: list = dataclasses.field(default_factory=list)
    populate_hooks: list = dataclasses.field(default_factory=list)  # "mod:func" strings or callables
    start_hooks: list = dataclasses.field(default_factory=list)
    source: str = ""

    @property
    def nodes(self) -> list:
        return [n for c in self.clusters for n in c.nodes]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no node {name!r} in the fleet ({', '.join(n.name for n in self.nodes)})")


_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def load_fleet(spec=DEFAULT_FLEET) -> Fleet:
    """Read and check a fleet spec: a path to YAML, or the already-parsed mapping."""
    source = ""
    if not isinstance(spec, dict):
        source = str(Path(spec).resolve())
        try:
            spec = yaml.safe_load(Path(spec).read_text())
        except OSError as e:
            raise LabError(f"cannot read fleet spec {spec}: {e.strerror}") from None
    where = source or "fleet spec"
    if not isinstance(spec, dict) or not isinstance(spec.get("clusters"), list) or not spec["clusters"]:
        raise LabError(f"{where}: expected a mapping with a non-empty `clusters:` list")
    hooks = spec.get("hooks") or {}
    fleet = Fleet(clusters=[], packages=list(spec.get("packages") or []),
                  populate_hooks=list(hooks.get("populate") or []),
                  start_hooks=list(hooks.get("start") or []), source=source)
    names, addresses = set(), {}
    for c in spec["clusters"]:
        cname, dist = c.get("name"), c.get("distribution")
        if not isinstance(cname, str) or not _NAME_RE.match(cname):
            raise LabError(f"{where}: cluster name {cname!r} must be a lowercase DNS label")
        if dist not in DISTRIBUTIONS:
            raise LabError(f"{where}: cluster {cname}: distribution {dist!r} is not one of "
                           f"{', '.join(DISTRIBUTIONS)}")
        extra = {k: v for k, v in c.items() if k not in ("name", "distribution", "nodes", "vars", "scenario")}
        gvars = {f"kubepki_{k}": v for k, v in extra.items()}
        gvars.update(c.get("vars") or {})
        for k, v in gvars.items():
            if isinstance(v, (dict, list)):
                raise LabError(f"{where}: cluster {cname}: {k} must be a scalar (inventory.ini "
                               "group vars are plain strings)")
        cluster = Cluster(name=cname, distribution=dist, scenario=str(c.get("scenario") or DEFAULT_SCENARIO),
                          vars=gvars)
        if cname in names:
            raise LabError(f"{where}: name {cname!r} is used twice (clusters and nodes share inventory names)")
        names.add(cname)
        for n in c.get("nodes") or []:
            name, role, addr = n.get("name"), n.get("role"), str(n.get("address", ""))
            if not isinstance(name, str) or not _NAME_RE.match(name):
                raise LabError(f"{where}: node name {name!r} must be a lowercase DNS label (it is the hostname)")
            if name in names or name in DISTRIBUTIONS or name in ROLE_GROUPS.values():
                raise LabError(f"{where}: name {name!r} is used twice or clashes with a group name")
            names.add(name)
            if role not in DISTRIBUTIONS[dist]:
                raise LabError(f"{where}: node {name}: role {role!r} is not valid for {dist} "
                               f"(use {' or '.join(DISTRIBUTIONS[dist])})")
            try:
                ip = ipaddress.IPv4Address(addr)
            except ValueError:
                raise LabError(f"{where}: node {name}: address {addr!r} is not an IPv4 address") from None
            if not (ip.is_loopback or ip.is_private) or addr == "127.0.0.1" or _bridge_address(addr) == addr:
                raise LabError(f"{where}: node {name}: address {addr} must be in 127.0.0.0/8 (e.g. 127.0.1.11, "
                               "not 127.0.0.1), or a private address other than .1 (e.g. 10.213.0.11: a network "
                               "namespace of its own)")
            if addr in addresses:
                raise LabError(f"{where}: nodes {addresses[addr]} and {name} share address {addr}")
            addresses[addr] = name
            nvars = {f"kubepki_{k}": v for k, v in n.items() if k not in ("name", "role", "address", "vars")}
            nvars.update(n.get("vars") or {})
            cluster.nodes.append(Node(name=name, role=role, address=addr, cluster=cluster, vars=nvars))
        if not cluster.nodes:
            raise LabError(f"{where}: cluster {cname} has no nodes")
        fleet.clusters.append(cluster)
    if len({_bridge_address(n.address) for n in fleet.nodes if own_network(n.address)}) > 1:
        raise LabError(f"{where}: nodes with private addresses must share one /24 (the lab's bridge)")
    if dist_names := set(DISTRIBUTIONS) & {c.name for c in fleet.clusters}:
        raise LabError(f"{where}: cluster name(s) {', '.join(dist_names)} clash with distribution groups")
    return fleet


def _resolve_hook(hook, base_dir: Path):
    """A hook is a callable, "package.module:function" or "path/to/file.py:function"."""
    if callable(hook):
        return hook
    mod_name, _sep, func = str(hook).rpartition(":")
    if not mod_name or not func:
        raise LabError(f"hook {hook!r}: write it as 'package.module:function' or 'file.py:function'")
    try:
        if mod_name.endswith(".py"):
            path = (base_dir / mod_name).resolve()
            spec = importlib.util.spec_from_file_location(f"kubepki_lab_hook_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            if str(REPO_ROOT) not in sys.path:
                sys.path.insert(0, str(REPO_ROOT))
            module = importlib.import_module(mod_name)
        return getattr(module, func)
    except (ImportError, OSError, AttributeError) as e:
        raise LabError(f"hook {hook!r} cannot be loaded: {e}") from None


# ---------------------------------------------------------------------------------------------
# Host helpers: root, packages, /proc scans

def require_root(what="the lab"):
    if os.geteuid() != 0:
        raise LabError(f"{what} must run as root (it creates mount namespaces, bind mounts and "
                       "binds port 22 on 127.0.1.x); run it as root, e.g. with sudo")


def ensure_packages(packages) -> list:
    """apt-get install the Debian packages that are missing; returns what it installed."""
    packages = list(dict.fromkeys(packages))
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *packages],
                         capture_output=True, text=True, check=False)
    installed = {line.split()[0] for line in out.stdout.splitlines() if line.split()[1:2] == ["ii"]}
    missing = [p for p in packages if p not in installed]
    if not missing:
        return []
    print(f"lab: installing Debian packages {' '.join(missing)} (once) ...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Keep postinst scripts from starting the system sshd/etcd: they would take the ports.
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=False)
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if res.returncode:
                raise LabError(f"apt-get install {' '.join(missing)} failed; install them by hand "
                               f"and retry:\n{res.stdout[-1500:]}{res.stderr[-1500:]}")
    finally:
        if own_policy:
            policy.unlink(missing_ok=True)
    return missing


def own_network(address: str) -> bool:
    """A node with a private (not loopback) address has a network namespace of its own."""
    return not ipaddress.IPv4Address(address).is_loopback


def _bridge_address(addr: str) -> str:
    return str(next(ipaddress.IPv4Network(f"{addr}/24", strict=False).hosts()))


def _link_name(kind: str, *parts) -> str:
    """A link name (15 characters at most) unique to this lab and node."""
    return f"kp{kind}{hashlib.sha1('/'.join(map(str, parts)).encode()).hexdigest()[:10]}"


def _ip(*argv) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode:
        raise LabError(f"ip {' '.join(argv)}: {done.stderr.strip()}")


def _pids():
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def _ns(pid, kind="mnt"):
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:  # gone, or a zombie (no namespaces any more)
        return None


def _cmdline(pid) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


# Popen objects of the node processes this Python process started (library use, e.g. pytest):
# polled after kills so they leave no zombies and no "still running" ResourceWarning.
_CHILDREN = []


def _reap():
    for p in list(_CHILDREN):
        if p.poll() is not None:
            _CHILDREN.remove(p)


def _tcp_sockets(pid="self"):
    """IPv4 TCP sockets of pid's network namespace: (local, remote, state, inode)."""
    def addr(s):
        ip, port = s.split(":")
        return ".".join(str(b) for b in bytes.fromhex(ip)[::-1]), int(port, 16)
    with open(f"/proc/{pid}/net/tcp") as f:
        f.readline()  # header
        for line in f:
            parts = line.split()
            yield addr(parts[1]), addr(parts[2]), parts[3], int(parts[9])


def _socket_owners(inodes) -> dict:
    inodes, owners = set(inodes), {}
    if not inodes:
        return owners
    for pid in _pids():
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    link = os.readlink(fd.path)
                except OSError:
                    continue
                if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                    owners.setdefault(int(link[8:-1]), set()).add(pid)
    return owners


def _listeners(addresses, port=22, pid="self") -> dict:
    """{address: [pids]} of sockets listening on address:port (or on 0.0.0.0:port) in pid's network namespace."""
    found = {}
    for local, _remote, state, inode in _tcp_sockets(pid):
        if state == "0A" and local[1] == port:
            for a in addresses:
                if local[0] in (a, "0.0.0.0"):
                    found.setdefault(a, []).append(inode)
    owners = _socket_owners(i for v in found.values() for i in v)
    return {a: sorted({p for i in inodes for p in owners.get(i, ())}) for a, inodes in found.items()}


_MARKER_RE = re.compile(r"/nodes/([a-z0-9-]+)/root" + re.escape(RUN_DIR) + r"$")


def find_node_namespaces(output) -> dict:
    """{node: {"mnt": "mnt:[...]", "pids": [...]}} for every live namespace of the lab at output.

    Found through the mounts, not through recorded PIDs or namespace ids (ids are reused after a
    namespace dies): a node's namespace has <output>/nodes/<node>/root/run/kubepki-lab mounted
    on /run/kubepki-lab. Works even when state.json is lost.
    """
    output = str(Path(output).resolve())
    host_ns = _ns("self")
    by_ns = {}
    for pid in _pids():
        ns = _ns(pid)
        if ns and ns != host_ns:
            by_ns.setdefault(ns, []).append(pid)
    found = {}
    for ns, pids in by_ns.items():
        node = None
        for pid in pids:  # any member shows the namespace's mounts; try the next if one just died
            try:
                text = Path(f"/proc/{pid}/mountinfo").read_text()
            except OSError:
                continue
            for line in text.splitlines():
                fields = line.split(" ")
                if len(fields) > 5 and fields[4] == RUN_DIR:
                    root = fields[3].replace("\\040", " ").removesuffix("//deleted")
                    m = _MARKER_RE.search(root)
                    # mountinfo shows the path inside the source filesystem: a suffix of ours
                    if m and f"{output}/nodes/{m.group(1)}/root{RUN_DIR}".endswith(root):
                        node = m.group(1)
            break
        if node:
            found[node] = {"mnt": ns, "pids": sorted(pids)}
    return found


def _kill_all(output, deadline) -> dict:
    """Kill every process in the lab's node namespaces until none is left; returns what it found."""
    first = find_node_namespaces(output)
    seen, sig, term_sent_at = {}, signal.SIGTERM, time.monotonic()
    found = first
    while found:
        for node, info in found.items():
            seen.setdefault(node, set()).update(info["pids"])
            for pid in info["pids"]:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
        _reap()
        found = find_node_namespaces(output)
        if found and time.monotonic() - term_sent_at > 2.0:
            sig = signal.SIGKILL  # whatever ignored SIGTERM for 2 s
        if found and time.monotonic() > deadline:
            left = {n: i["pids"] for n, i in found.items()}
            raise LabError(f"processes in node namespaces survive SIGKILL: {left}; check them with ps "
                           "and kill them by hand, then rerun `lab.py down`")
    return seen


# ---------------------------------------------------------------------------------------------
# The lab

class Lab:
    """One lab, identified by its output directory (state.json, inventory.ini, ssh/, nodes/)."""

    def __init__(self, output=DEFAULT_OUTPUT):
        self.output = Path(output).resolve()
        if any(c.isspace() for c in str(self.output)):
            raise LabError(f"output path {self.output} contains whitespace; choose another one")
        self.state_file = self.output / "state.json"
        self.inventory = self.output / "inventory.ini"
        self.ssh_dir = self.output / "ssh"
        self.ssh_key = self.ssh_dir / "id_ed25519"
        self.known_hosts = self.output / "known_hosts"

    # -- paths and state --------------------------------------------------------------------
    def node_dir(self, node) -> Path:
        return self.output / "nodes" / _name(node)

    def node_root(self, node) -> Path:
        """The node's own files: <node_root>/etc/kubernetes is the node's /etc/kubernetes.

        Also a valid `rootfs` for the modules, for offline checks from the host.
        """
        return self.node_dir(node) / "root"

    def state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise LabError(f"{self.state_file} is unreadable ({e}); run `lab.py down --output "
                           f"{self.output}` to clear it") from None

    def _save_state(self, state):
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_file)

    def fleet(self) -> Fleet:
        """The fleet the running lab was built from (as recorded in state.json)."""
        state = self.state()
        if not state:
            raise LabError(f"no lab is up at {self.output}; run `python tests/lab/lab.py up`")
        return load_fleet(state["fleet"])

    # -- up ------------------------------------------------------------------------------------
    def up(self, fleet=DEFAULT_FLEET, populate=(), start=(), recreate=False, fleet_hooks=True,
           install=True) -> dict:
        """Build every node of fleet (a path, a mapping or a Fleet) and write the inventory.

        populate: callables f(node, node_root_dir) run before the node's sshd starts.
        start:    callables f(lab, node) run once all nodes answer on SSH.
        The fleet's own `hooks:` run first unless fleet_hooks is False.
        """
        require_root("`lab.py up`")
        fleet = fleet if isinstance(fleet, Fleet) else load_fleet(fleet)
        base = Path(fleet.source).parent if fleet.source else REPO_ROOT
        populate = [_resolve_hook(h, base) for h in (fleet.populate_hooks if fleet_hooks else [])] + \
            [_resolve_hook(h, base) for h in populate]
        start = [_resolve_hook(h, base) for h in (fleet.start_hooks if fleet_hooks else [])] + \
            [_resolve_hook(h, base) for h in start]
        for p in NODE_PATHS:
            if self.output == Path(p) or Path(p) in self.output.parents:
                raise LabError(f"output {self.output} is under {p}, which nodes shadow; choose another")

        running = find_node_namespaces(self.output)
        if running or self.state():
            if not recreate and running:
                raise LabError(f"a lab is already up at {self.output} (nodes: {', '.join(sorted(running))}); "
                               f"run `python tests/lab/lab.py down --output {self.output}` first, "
                               "or `up --recreate`")
            self.down()  # recreate, or stale leftovers of a lab whose processes are gone
        elif self.output.exists():
            self._remove_output()
        busy = {a: p for a, p in _listeners([n.address for n in fleet.nodes if not own_network(n.address)]).items() if p}
        if busy:
            holders = {}
            for a, pids in busy.items():
                m = re.search(r"-f (\S+)/nodes/[^/]+/sshd/sshd_config", _cmdline(pids[0]))
                who = (f"the lab at {m.group(1)} (run `python tests/lab/lab.py down --output {m.group(1)}`)"
                       if m else f"pid {pids[0]} ({' '.join(_cmdline(pids[0]).split())[:100]})")
                holders.setdefault(who, []).append(a)
            raise LabError("port 22 is taken on the fleet's addresses: " + "; ".join(
                f"{', '.join(sorted(addrs))} by {who}" for who, addrs in holders.items()) +
                ". Stop that, or give the nodes other addresses")
        if install:
            ensure_packages(list(BASE_PACKAGES) + fleet.packages)
        for tool in ("unshare", "nsenter", "mount", "hostname", "ssh-keygen") + (("ip",) if self._bridged(fleet) else ()):
            if not shutil.which(tool):
                raise LabError(f"{tool} is missing; install util-linux / hostname / openssh-client / iproute2")

        t0 = time.monotonic()
        try:
            return self._up(fleet, populate, start, t0)
        except BaseException:
            try:
                self.down()
            except LabError as e:
                print(f"lab: cleanup after the failed up also failed: {e}", file=sys.stderr)
            raise

    def _up(self, fleet, populate, start, t0) -> dict:
        self.output.mkdir(parents=True, mode=0o755)
        self.ssh_dir.mkdir(mode=0o700)
        # Host side: mountpoints (empty dirs, left in place: removing a dir that is a mountpoint
        # in another lab's namespace would detach that lab's mount) and sshd's privsep dir.
        for p in NODE_PATHS:
            os.makedirs(p, mode=0o755, exist_ok=True)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)

        keygens = [subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kubepki-lab",
                                     "-f", str(self.ssh_key)])]
        for node in fleet.nodes:
            sshd_dir = self.node_dir(node) / "sshd"
            sshd_dir.mkdir(parents=True, mode=0o700)
            for p in NODE_PATHS:
                (self.node_root(node) / p.lstrip("/")).mkdir(parents=True, exist_ok=True)
            self.node_root(node).joinpath("root").chmod(0o700)
            keygens.append(subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", node.name,
                                             "-f", str(sshd_dir / "ssh_host_ed25519_key")]))
        if any(p.wait() for p in keygens):
            raise LabError("ssh-keygen failed (see its messages above)")
        shutil.copyfile(self.ssh_key.with_suffix(".pub"), self.ssh_dir / "authorized_keys")
        self.known_hosts.write_text("".join(
            f"{n.address} {' '.join(self._host_pubkey(n).split()[:2])}\n" for n in fleet.nodes))
        hosts = self.output / "hosts"
        try:
            host_hosts = Path("/etc/hosts").read_text()
        except OSError:
            host_hosts = "127.0.0.1 localhost\n"
        hosts.write_text(host_hosts.rstrip("\n") + "\n# kubepki lab nodes\n" +
                         "".join(f"{n.address} {n.name}\n" for n in fleet.nodes))

        state = {"version": STATE_VERSION, "output": str(self.output), "fleet": fleet.source,
                 "created": _now(), "inventory": str(self.inventory), "ssh_key": str(self.ssh_key),
                 "known_hosts": str(self.known_hosts), "node_python": NODE_PYTHON, "nodes": {}}
        if not fleet.source:  # a mapping/Fleet given in code: keep it so status/fleet() work
            spec_file = self.output / "fleet.yml"
            spec_file.write_text(yaml.safe_dump(_fleet_to_spec(fleet), sort_keys=False))
            state["fleet"] = str(spec_file)
        for node in fleet.nodes:
            root = self.node_root(node)
            (root / RUN_DIR.lstrip("/") / "node.json").write_text(json.dumps({
                "name": node.name, "role": node.role, "address": node.address,
                "cluster": node.cluster.name, "distribution": node.distribution,
                "scenario": node.cluster.scenario}, indent=2) + "\n")
            state["nodes"][node.name] = {
                "cluster": node.cluster.name, "distribution": node.distribution, "role": node.role,
                "address": node.address, "root": str(root), "sshd_pid": None, "mnt_ns": None, "uts_ns": None,
                "sshd_log": str(root / LOG_DIR.lstrip("/") / "sshd.log")}
        self._save_state(state)
        self._write_inventory(fleet)

        for hook in populate:
            for node in fleet.nodes:
                try:
                    hook(node, self.node_root(node))
                except Exception as e:
                    raise LabError(f"populate hook {_hook_name(hook)} failed on {node.name}: "
                                   f"{type(e).__name__}: {e}") from e

        self._make_bridge(fleet)
        launched = {node.name: self._launch(node) for node in fleet.nodes}
        for node in fleet.nodes:
            if own_network(node.address):
                self._plug(node, launched[node.name])
        self._wait_started(fleet, launched, state)
        self._save_state(state)
        for hook in start:
            for node in fleet.nodes:
                try:
                    hook(self, node)
                except Exception as e:
                    raise LabError(f"start hook {_hook_name(hook)} failed on {node.name}: "
                                   f"{type(e).__name__}: {e}") from e
        state["up_seconds"] = round(time.monotonic() - t0, 3)
        self._save_state(state)
        return state

    def _bridged(self, fleet) -> list:
        return [n for n in fleet.nodes if own_network(n.address)]

    def _make_bridge(self, fleet) -> None:
        """The lab's bridge, holding the first address of the own-network nodes' /24."""
        nodes = self._bridged(fleet)
        if not nodes:
            return
        bridge, address = _link_name("b", self.output), _bridge_address(nodes[0].address)
        taken = subprocess.run(["ip", "-4", "-o", "addr", "show", "to", f"{address}/32"], capture_output=True,
                               text=True, check=False).stdout.split()
        if taken:
            raise LabError(f"{address} (the bridge of nodes {', '.join(n.name for n in nodes)}) is already on {taken[1]}: "
                           "another lab is up with that /24; bring it down or give these nodes another /24")
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{address}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")

    def _plug(self, node, proc) -> None:
        """A veth from the lab's bridge to eth0 in the node's network namespace (the node's shell waits for it)."""
        deadline, host_net = time.monotonic() + START_TIMEOUT, _ns("self", "net")
        while _ns(proc.pid, "net") in (None, host_net):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"node {node.name}: no network namespace of its own:\n{self._logs(node.name)}")
            time.sleep(0.01)
        veth = _link_name("v", self.output, node.name)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", str(proc.pid))
        _ip("link", "set", veth, "master", _link_name("b", self.output), "up")
        inside = ["nsenter", f"--target={proc.pid}", "--net", "ip"]
        for argv in (["addr", "add", f"{node.address}/24", "dev", "eth0"], ["link", "set", "eth0", "up"]):
            done = subprocess.run(inside + argv, capture_output=True, text=True, check=False)
            if done.returncode:
                raise LabError(f"node {node.name}: ip {' '.join(argv)}: {done.stderr.strip()}")

    def _host_pubkey(self, node) -> str:
        return (self.node_dir(node) / "sshd" / "ssh_host_ed25519_key.pub").read_text()

    def _launch(self, node) -> subprocess.Popen:
        sshd_dir, root = self.node_dir(node) / "sshd", self.node_root(node)
        config = sshd_dir / "sshd_config"
        config.write_text(f"""\
# sshd of lab node {node.name}; runs inside the node's mount namespace.
ListenAddress {node.address}:22
HostKey {sshd_dir}/ssh_host_ed25519_key
PidFile {root}{RUN_DIR}/sshd.pid
AuthorizedKeysFile {self.ssh_dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The output dir may live under world-writable /tmp (pytest), which StrictModes rejects.
StrictModes no
# Overrides sshd's built-in PATH for every session (the node's tools first).
SetEnv PATH={NODE_PATH_ENV} KUBEPKI_LAB_NODE={node.name}
AcceptEnv LANG LC_*
PrintMotd no
PrintLastLog no
UseDNS no
Subsystem sftp internal-sftp
# Ansible forks and ControlPersist open many sessions at once.
MaxSessions 100
MaxStartups 100:30:200
LogLevel INFO
""")
        mounts = [(str(root) + p, p) for p in NODE_PATHS] + [(str(self.output / "hosts"), "/etc/hosts")]
        q = shlex.quote
        # `echo $$` before exec: the shell's PID becomes sshd's PID (unshare without --fork execs
        # in place, Popen's own session replaces setsid, so no extra fork anywhere).
        # a node with its own network waits for the veth _plug gives it
        network = ("ip link set lo up\n"
                   f"until ip -4 -o addr show dev eth0 2>/dev/null | grep -q ' {node.address}/'; do sleep 0.02; done\n"
                   ) if own_network(node.address) else ""
        script = "set -e\n" + f"hostname {q(node.name)}\n" + network + \
            "".join(f"mount --bind {q(src)} {q(dst)}\n" for src, dst in mounts) + \
            f"echo $$ > {q(str(sshd_dir / 'started.pid'))}\n" + \
            f"exec {SSHD} -D -f {q(str(config))} -E {q(str(root) + LOG_DIR + '/sshd.log')}\n"
        with open(sshd_dir / "start.log", "wb") as log:
            proc = subprocess.Popen(["unshare", "--mount", "--uts", *(["--net"] if own_network(node.address) else []),
                                     "--propagation", "private", "sh", "-c", script],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd="/", env=_node_env(node.name))
        _CHILDREN.append(proc)
        return proc

    def _wait_started(self, fleet, launched, state):
        deadline = time.monotonic() + START_TIMEOUT
        host_ns = _ns("self")
        pending = {n.name: n for n in fleet.nodes}
        while pending:
            listening = _listeners([n.address for n in pending.values() if not own_network(n.address)])
            for name, node in list(pending.items()):
                proc, rec = launched[name], state["nodes"][name]
                if own_network(node.address):
                    listening.update(_listeners([node.address], pid=proc.pid))
                if proc.poll() is not None:
                    raise LabError(f"node {name}: sshd exited with {proc.returncode}:\n{self._logs(name)}")
                pid_file = self.node_dir(name) / "sshd" / "started.pid"
                if rec["sshd_pid"] is None and pid_file.exists() and pid_file.read_text().strip():
                    pid = int(pid_file.read_text())
                    mnt = _ns(pid)
                    if pid != proc.pid or mnt is None or mnt == host_ns:
                        raise LabError(f"node {name}: unexpected process layout (pid {pid}, launcher "
                                       f"{proc.pid}, ns {mnt}); see {pid_file.parent}")
                    rec.update(sshd_pid=pid, mnt_ns=mnt, uts_ns=_ns(pid, "uts"))
                if rec["sshd_pid"] and proc.pid in listening.get(node.address, ()):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                raise LabError(f"nodes {', '.join(pending)} did not listen on port 22 within "
                               f"{START_TIMEOUT:.0f}s:\n" + "\n".join(self._logs(n) for n in pending))
            if pending:
                time.sleep(0.02)

    def _logs(self, node) -> str:
        out = []
        for f in (self.node_dir(node) / "sshd" / "start.log", self.node_root(node) / LOG_DIR.lstrip("/") / "sshd.log"):
            try:
                out.append(f"--- {f}\n" + "\n".join(f.read_text().splitlines()[-15:]))
            except OSError:
                pass
        return "\n".join(out)

    def _write_inventory(self, fleet):
        ssh_args = f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=accept-new -o IdentitiesOnly=yes"
        lines = ["# Written by tests/lab/lab.py up; rewritten on every up, do not edit.",
                 f"# Nodes' own files on this host: {self.output}/nodes/<node>/root (kubepki_node_root).",
                 "[all:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={self.ssh_key}",
                 f"ansible_ssh_common_args='{ssh_args}'", f"ansible_python_interpreter={NODE_PYTHON}", ""]
        for c in fleet.clusters:
            lines.append(f"[{c.name}]")
            for n in c.nodes:
                hv = {"ansible_host": n.address, "kubepki_role": n.role,
                      "kubepki_node_root": str(self.node_root(n)), **n.vars}
                lines.append(n.name + "".join(f" {k}={_ini_value(v)}" for k, v in hv.items()))
            lines += ["", f"[{c.name}:vars]", f"kubepki_cluster={c.name}", f"kubepki_distribution={c.distribution}",
                      f"kubepki_scenario={c.scenario}", *(f"{k}={v}" for k, v in c.vars.items()), ""]
        for group in dict.fromkeys(ROLE_GROUPS.values()):
            lines.append(f"[{group}]")
            lines += [n.name for n in fleet.nodes if ROLE_GROUPS[n.role] == group]
            lines.append("")
        for dist in DISTRIBUTIONS:
            lines.append(f"[{dist}:children]")
            lines += [c.name for c in fleet.clusters if c.distribution == dist]
            lines.append("")
        self.inventory.write_text("\n".join(lines))

    # -- down ----------------------------------------------------------------------------------
    def down(self) -> dict:
        """Stop everything of the lab at output and remove output. Quiet no-op when nothing is up."""
        require_root("`lab.py down`")
        try:
            state = self.state() or {}
        except LabError:
            state = {}
        addresses = [n["address"] for n in state.get("nodes", {}).values()]
        summary = {"ssh_masters": self._stop_ssh_clients(addresses)}
        deadline = time.monotonic() + STOP_TIMEOUT
        killed = _kill_all(self.output, deadline)
        summary["killed"] = {n: sorted(p) for n, p in killed.items()}
        # Recorded PIDs that never reached their namespace (a failed up) are ours too.
        for rec in state.get("nodes", {}).values():
            pid = rec.get("sshd_pid")
            if pid and _alive(pid) and f"{self.output}/nodes/" in _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
        _reap()
        while True:  # clients of the killed sshds get EOF and exit by themselves
            busy = _listeners(addresses)
            clients = self._ssh_clients(addresses)
            if not any(busy.values()) and not clients:
                break
            if time.monotonic() > deadline:
                raise LabError(f"still listening on port 22: {busy}; ssh clients still connected: "
                               f"{clients}; stop them by PID, then rerun `lab.py down`")
            for pid in clients:
                _signal(pid, signal.SIGTERM)
            time.sleep(0.05)
        bridge = _link_name("b", self.output)
        if Path(f"/sys/class/net/{bridge}").exists():   # its veths went with the nodes' namespaces
            _ip("link", "del", bridge)
        if self.output.exists():
            self._remove_output()
        return summary

    def _ssh_clients(self, addresses) -> list:
        """PIDs of ssh clients (Ansible's ControlPersist masters included) connected to addresses:22."""
        inodes = [i for _local, remote, state, i in _tcp_sockets()
                  if remote[1] == 22 and remote[0] in addresses and state != "0A" and i]
        host_ns = _ns("self")
        return sorted(p for ps in _socket_owners(inodes).values() for p in ps if _ns(p) == host_ns)

    def _stop_ssh_clients(self, addresses) -> int:
        """Ask the ControlPersist masters to exit cleanly (they remove their sockets)."""
        stopped = 0
        for pid in self._ssh_clients(addresses):
            m = re.match(r"^ssh: (\S+) \[mux\]$", _cmdline(pid))
            if m:
                subprocess.run(["ssh", "-o", f"ControlPath={m.group(1)}", "-O", "exit", "lab-node"],
                               capture_output=True, timeout=10, check=False)
                stopped += 1
        return stopped

    def _remove_output(self):
        marks = ("state.json", "nodes", "inventory.ini", "ssh")
        if any((self.output / m).exists() for m in marks) or not any(self.output.iterdir()):
            shutil.rmtree(self.output)
        else:
            raise LabError(f"{self.output} exists but does not look like a lab output dir; "
                           "not removing it - choose another --output or remove it yourself")

    # -- run inside nodes ----------------------------------------------------------------------
    def node_pid(self, node) -> int:
        """A PID inside the node's namespace (the sshd's, while it lives)."""
        name = _name(node)
        rec = ((self.state() or {}).get("nodes") or {}).get(name)
        if rec is None:
            raise LabError(f"no node {name!r} in the lab at {self.output}; run `lab.py status`")
        pid = rec.get("sshd_pid")
        if pid and _alive(pid) and _ns(pid) == rec.get("mnt_ns"):
            return pid
        found = find_node_namespaces(self.output).get(name)
        if not found:
            raise LabError(f"node {name} is not running; `lab.py down --output {self.output}` then `up`")
        return found["pids"][0]

    def run_in_node(self, node, argv, background=False, *, env=None, check=True, log=None,
                    input=None, timeout=None):
        """Run argv inside node's mount + UTS namespace, with the node's PATH.

        Foreground: returns subprocess.CompletedProcess (text, captured); raises
        CalledProcessError on failure when check. Background: returns the Popen; output goes to
        log (default: the node's /var/log/kubepki-lab/<argv0>.log); `down` stops it.
        """
        name = _name(node)
        target = self.node_pid(name)
        cmd = ["nsenter", f"--target={target}", "--mount", "--uts", "--net", "--", *map(str, argv)]
        full_env = _node_env(name) | (env or {})
        if not background:
            return subprocess.run(cmd, env=full_env, cwd="/", input=input, capture_output=True, text=True,
                                  check=check, timeout=timeout)
        log = Path(log) if log else self.node_root(name) / LOG_DIR.lstrip("/") / f"{Path(str(argv[0])).name}.log"
        with open(log, "ab") as f:
            proc = subprocess.Popen(cmd, env=full_env, cwd="/", stdin=subprocess.DEVNULL, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _CHILDREN.append(proc)
        # Popen returns once nsenter has exec'd, not once it has entered the namespace: wait for
        # that, so the caller (and a `down` right after) sees the process inside the node.
        target_ns, deadline = _ns(target), time.monotonic() + 5
        while _ns(proc.pid) != target_ns and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        return proc

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict:
        state = self.state()
        running = find_node_namespaces(self.output)
        if not state:
            return {"up": False, "output": str(self.output), "stray": sorted(running), "nodes": {}}
        listening = _listeners([n["address"] for n in state["nodes"].values() if not own_network(n["address"])])
        nodes = {}
        for name, rec in state["nodes"].items():
            if own_network(rec["address"]) and rec["sshd_pid"] and _alive(rec["sshd_pid"]):
                listening.update(_listeners([rec["address"]], pid=rec["sshd_pid"]))
            pids = running.get(name, {}).get("pids", [])
            nodes[name] = {**{k: rec[k] for k in ("cluster", "distribution", "role", "address")},
                           "sshd_pid": rec["sshd_pid"],
                           "sshd_alive": bool(rec["sshd_pid"]) and rec["sshd_pid"] in listening.get(rec["address"], ()),
                           "processes": len(pids)}
        return {"up": all(n["sshd_alive"] for n in nodes.values()), "output": str(self.output),
                "inventory": state["inventory"], "created": state["created"], "nodes": nodes}


# ---------------------------------------------------------------------------------------------
# Module-level shortcuts on the default output

def up(fleet=DEFAULT_FLEET, output=DEFAULT_OUTPUT, **kw) -> dict:
    return Lab(output).up(fleet, **kw)


def down(output=DEFAULT_OUTPUT) -> dict:
    return Lab(output).down()


def run_in_node(node, argv, background=False, output=DEFAULT_OUTPUT, **kw):
    return Lab(output).run_in_node(node, argv, background=background, **kw)


def _name(node) -> str:
    return node if isinstance(node, str) else node.name


def _node_env(name) -> dict:
    return {"PATH": NODE_PATH_ENV, "HOME": "/root", "LANG": "C.UTF-8", "KUBEPKI_LAB_NODE": name}


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hook_name(hook) -> str:
    return f"{getattr(hook, '__module__', '?')}:{getattr(hook, '__qualname__', hook)}"


def _ini_value(v) -> str:
    s = str(v)
    return shlex.quote(s) if any(c.isspace() or c in "'\"" for c in s) else s


def _fleet_to_spec(fleet) -> dict:
    return {"packages": fleet.packages, "clusters": [
        {"name": c.name, "distribution": c.distribution, "scenario": c.scenario, "vars": c.vars,
         "nodes": [{"name": n.name, "role": n.role, "address": n.address, "vars": n.vars} for n in c.nodes]}
        for c in fleet.clusters]}


# ---------------------------------------------------------------------------------------------
# CLI

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lab.py", description="The kubepki lab fleet (see tests/lab/README.md).")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="lab output dir (default: %(default)s)")
        return p

    p_up = add("up", "build the fleet and write <output>/inventory.ini")
    p_up.add_argument("--fleet", default=str(DEFAULT_FLEET), help="fleet spec (default: %(default)s)")
    p_up.add_argument("--recreate", action="store_true", help="tear down a lab already up at --output first")
    p_up.add_argument("--populate", action="append", default=[], metavar="MOD:FUNC",
                      help="extra populate hook f(node, node_root_dir); repeatable")
    p_up.add_argument("--start", action="append", default=[], metavar="MOD:FUNC",
                      help="extra start hook f(lab, node); repeatable")
    p_up.add_argument("--no-hooks", action="store_true", help="skip the hooks the fleet spec lists")
    p_up.add_argument("--real-bin", metavar="DIR",
                      help="directory of real kube-apiserver/kube-controller-manager/kube-scheduler binaries to run "
                           "instead of the stand-ins (sets KUBEPKI_LAB_REAL_BIN for the node hooks)")
    add("down", "stop every node process and remove --output")
    p_st = add("status", "show the nodes (exit 0 when all are up)")
    p_st.add_argument("--json", action="store_true")
    p_ex = add("exec", "run a command inside a node's namespace")
    p_ex.add_argument("node")
    p_ex.add_argument("argv", nargs=argparse.REMAINDER)
    p_ssh = add("ssh", "ssh to a node with the lab key")
    p_ssh.add_argument("node")
    p_ssh.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    lab = Lab(args.output)
    try:
        if args.cmd == "up":
            if args.real_bin:
                os.environ["KUBEPKI_LAB_REAL_BIN"] = os.path.abspath(args.real_bin)
            state = lab.up(args.fleet, populate=args.populate, start=args.start, recreate=args.recreate,
                           fleet_hooks=not args.no_hooks)
            print(f"lab up: {len(state['nodes'])} nodes in {state['up_seconds']:.2f}s")
            for name, n in state["nodes"].items():
                print(f"  {name:<16} {n['address']:<13} {n['cluster'] + '/' + n['distribution']:<16} {n['role']:<13} "
                      f"sshd pid {n['sshd_pid']}")
            print(f"inventory: {lab.inventory}\ntry: ANSIBLE_CONFIG={REPO_ROOT}/ansible.cfg "
                  f"ansible -i {lab.inventory} all -m ansible.builtin.ping")
        elif args.cmd == "down":
            t0 = time.monotonic()
            summary = lab.down()
            if summary["killed"]:
                n = sum(len(p) for p in summary["killed"].values())
                print(f"lab down: {len(summary['killed'])} nodes, {n} processes, "
                      f"{summary['ssh_masters']} ssh masters stopped in {time.monotonic() - t0:.2f}s")
        elif args.cmd == "status":
            st = lab.status()
            if args.json:
                print(json.dumps(st, indent=2))
            elif not st["nodes"]:
                stray = f" (stray node namespaces: {st['stray']}; run down)" if st["stray"] else ""
                print(f"no lab at {st['output']}{stray}")
            else:
                print(f"lab at {st['output']} ({'up' if st['up'] else 'DEGRADED'}, since {st['created']})")
                for name, n in st["nodes"].items():
                    print(f"  {name:<16} {n['address']:<13} {n['cluster'] + '/' + n['distribution']:<16} {n['role']:<13} "
                          f"sshd {'up' if n['sshd_alive'] else 'DOWN'} pid {n['sshd_pid']}, {n['processes']} processes")
            return 0 if st["up"] else 1
        elif args.cmd == "exec":
            argv_ = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not argv_:
                raise LabError("nothing to run: lab.py exec NODE -- CMD ...")
            res = lab.run_in_node(args.node, argv_, check=False)
            sys.stdout.write(res.stdout)
            sys.stderr.write(res.stderr)
            return res.returncode
        elif args.cmd == "ssh":
            rec = ((lab.state() or {}).get("nodes") or {}).get(args.node)
            if not rec:
                raise LabError(f"no node {args.node!r} in the lab at {lab.output}")
            argv_ = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            os.execvp("ssh", ["ssh", "-i", str(lab.ssh_key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
                              "-o", "StrictHostKeyChecking=accept-new", "-o", "IdentitiesOnly=yes",
                              f"root@{rec['address']}", *argv_])
    except LabError as e:
        print(f"lab.py {args.cmd}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
