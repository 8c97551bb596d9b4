"""Hooks that make lab nodes Kubernetes nodes (wired in tests/lab/fleet.yml `hooks:`).

populate(node, root): writes the node's PKI with tests/lab/pki.py as the cluster's scenario
    says, its service tools into /opt/kubepki-lab/bin (wrappers around tests/lab/tools and
    tests/lab/standins), and /run/kubepki-lab/services.json: the units (systemd), the RKE1
    containers (docker) and the PATH the node's supervisor uses.
start(lab, node): starts the node's supervisor (tests/lab/supervisor.py); joins alpha-style
    kubeadm control planes to the first one's etcd as `kubeadm join` does; after the fleet's
    last node, waits until every node listens on its ports, then uploads each kubeadm cluster's
    kube-system/kubeadm-config as `kubeadm init` does.

Nodes on 127.0.x.y share one network namespace, so every listener binds the node's own address (kubeadm's
loopback-only listeners are moved there through pki.KubeadmNet) and keeps the usual port numbers. Nodes on a
private address have a network namespace of their own (lab.py), with their own 127.0.0.1.
A real binary can replace a stand-in: KUBEPKI_LAB_REAL_BIN=DIR puts DIR first in the PATH of
the supervisor's processes (e.g. kube-apiserver built from source).

kubeadm clusters stand for the kubeadm/Kubernetes line of their key `kubeadm_version:` (v1.31, the
default, or v1.28): tree, validity, subjects and images as pki.kubeadm_cluster(style=...) writes them,
the kubelet of that version (v1.28 reads its serving cert once, v1.31 reloads it) and its kubeadm
(tools/kubeadm.py: `certs renew` as that line has it). Key `etcd:
external` gives the cluster an etcd outside kubeadm (a systemd unit with its own CA on the first control
plane; the control planes hold its ca.crt and an apiserver-etcd-client pair, as kubeadm's external-etcd
docs have the user copy them); single control plane only. Key `certificate_validity_hours:` (v1.31 only) is
the cluster's v1beta4 certificateValidityPeriod: its leaves live that long and its kubeadm-config says so.
Key `light: true` (scenario fresh only) makes a light cluster for fleets at scale (tests/lab/fleet_scale.py): the
same PKI and manifests, but each node runs one process that serves its endpoints (standins/kubeadm_endpoints.py)
instead of etcd, the control plane and the kubelet; no API, so no kubeadm-config upload and nothing to restart.

Scenarios (cluster key `scenario:`), times relative to `up`:
    kubeadm  fresh            everything issued 30 days ago
             expiring_20d     leaves of control plane i (0-based) expire in 17 + i days, kubelet.crt too
             expired_7d       leaves, kubelet.crt and the kubelet's client cert expired 7 days ago; CAs
                              valid. The components
                              run as if started before the expiry (see _boot_twins)
    rke1     fresh            CA and leaves issued 30 days ago
             kubelet_expired  CA 400 days old, leaves re-issued by `rke cert rotate` 30 days ago, the
                              kubelet's self-signed kubelet.crt from the first start: expired 35 days ago
    k3s      fresh            everything issued 30 days ago
             serving_expired  CA 400 days old, server/tls renewed 30 days ago (335 days left), the
                              k3s-serving secret and dynamic-cert.json from the first start: expired 35 days ago
                              (served as such only by a release before the July 2022 fix: see k3s_version)
             serving_165d     as serving_expired with the first start 200 days ago: the served cert has 165 days
                              left, outside k3s's own window, so every release keeps it
    Key `k3s_version:` (default v1.33.6+k3s1) is what `k3s --version` prints and the release line tools/k3s.py
    behaves as. A k3s/RKE2 cluster with several servers is an HA cluster on a shared datastore (each server's
    --datastore-endpoint, one SQLite file under the lab's output dir): one secret, which names every server, served
    by all of them; its servers need private addresses (k3s binds 127.0.0.1:6444 on each).
"""
from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "tools"))
import k3s as k3s_tool  # noqa: E402  pylint: disable=wrong-import-position
import pki  # noqa: E402  pylint: disable=wrong-import-position

NODE_PYTHON = "/usr/bin/python3"
BIN_DIR = "/opt/kubepki-lab/bin"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REAL_BIN_ENV = "KUBEPKI_LAB_REAL_BIN"
READY_TIMEOUT = 90.0
ETCD_JOIN_TIMEOUT = 30.0
SCENARIOS = {"kubeadm": ("fresh", "expiring_20d", "expired_7d"), "rke1": ("fresh", "kubelet_expired"),
             "k3s": ("fresh", "serving_expired", "serving_165d"), "rke2": ("fresh", "serving_expired", "serving_165d")}
# name on the node -> tests/lab file (and arguments) run with /usr/bin/python3
TOOLS = {"crictl": "tools/crictl.py", "systemctl": "tools/systemctl.py", "docker": "tools/docker.py",
         "k3s": "tools/k3s.py", "kubelet": "tools/kubelet.py", "kubeadm": "tools/kubeadm.py",
         "kubectl": "tools/k3s.py kubectl",     # k3s's kubectl link: the real kubectl with k3s.yaml
         "rke2": "tools/k3s.py --program rke2",
         "kube-apiserver": "standins/kube_apiserver.py", "kube-controller-manager": "standins/kube_controller_manager.py",
         "kube-scheduler": "standins/kube_scheduler.py", "kubeadm-endpoints": "standins/kubeadm_endpoints.py"}
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_TOOLS = {"kubeadm": ("kubeadm", "crictl", "systemctl", "kubelet") + CONTROL_PLANE,
              "rke1": ("docker", "systemctl", "kubelet") + CONTROL_PLANE, "k3s": ("k3s", "systemctl", "kubectl"),
              "rke2": ("rke2", "systemctl", "kubectl")}
# what a tool is on nodes of one distribution, where it differs (RKE2's kubectl reads rke2.yaml)
DISTRIBUTION_TOOLS = {"rke2": {"kubectl": "tools/k3s.py --program rke2 kubectl"}}
RKE_IMAGE = "rancher/hyperkube:v1.28.15-rancher1"
SSL = "/etc/kubernetes/ssl"
BOOT_DIR = "run/kubepki-lab/boot"     # expired files set aside while the components start

# kubeadm clusters whose kubeadm-config to upload once the fleet is up: (first control plane's root, address, cluster)
_UPLOADS = []
# Cluster-wide material, made at the first node of a cluster. The Cluster object is kept in the
# value so its id cannot be reused by another up in the same process.
_MATERIAL = {}


def _days(n: float):
    return n * pki.DAY


def _light(cluster) -> bool:
    return str(cluster.vars.get("kubepki_light", "")).lower() == "true"


# ---------------------------------------------------------------------------------------------
# populate

def populate(node, root: Path) -> None:
    root = Path(root)
    dist, scenario = node.distribution, node.cluster.scenario
    if scenario not in SCENARIOS[dist]:
        raise ValueError(f"cluster {node.cluster.name}: scenario {scenario!r} is not one of "
                         f"{', '.join(SCENARIOS[dist])} for {dist} (see tests/lab/nodes.py)")
    key = id(node.cluster)
    if key not in _MATERIAL:
        _MATERIAL[key] = (node.cluster, {"kubeadm": _kubeadm_cluster, "rke1": _rke1_cluster, "k3s": _k3s_cluster,
                                         "rke2": _k3s_cluster}[dist](node))
    material = _MATERIAL[key][1]
    units, containers, listen, restore = {"kubeadm": _kubeadm_node, "rke1": _rke1_node, "k3s": _k3s_node,
                                          "rke2": _k3s_node}[dist](node, root, material)
    light = ("kubeadm-endpoints",) if _light(node.cluster) else ()
    _install_tools(root, NODE_TOOLS[dist] + light, DISTRIBUTION_TOOLS.get(dist, {}))
    for tool in ("kubelet", "kubeadm", "k3s", "rke2"):   # what the node's tool reports and behaves as
        if f"{tool}_version" in material:
            (root / "run/kubepki-lab").mkdir(parents=True, exist_ok=True)
            (root / f"run/kubepki-lab/{tool}-version").write_text(material[f"{tool}_version"] + "\n")
    real_bin = os.environ.get(REAL_BIN_ENV, "")
    if real_bin and not Path(real_bin).is_dir():
        raise ValueError(f"{REAL_BIN_ENV}={real_bin} is not a directory")
    path = ":".join(p for p in (str(Path(real_bin).resolve()) if real_bin else "", BIN_DIR, SYSTEM_PATH) if p)
    (root / "var/log/kubepki-lab").mkdir(parents=True, exist_ok=True)
    (root / "run/kubepki-lab/services.json").write_text(json.dumps({
        "node": node.name, "address": node.address, "distribution": dist, "role": node.role, "scenario": scenario,
        "path": path, "units": units, "containers": containers, "listen": listen,
        "restore_after_start": restore}, indent=2) + "\n")


def _install_tools(root: Path, names, overrides) -> None:
    bin_dir = root / BIN_DIR.lstrip("/")
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        script, *args = overrides.get(name, TOOLS[name]).split()
        (bin_dir / name).write_text(f"#!/bin/sh\n# kubepki lab stand-in, written by tests/lab/nodes.py\n"
                                    f'exec {NODE_PYTHON} {" ".join([str(HERE / script), *args])} "$@"\n')
        (bin_dir / name).chmod(0o755)
    if "docker" in names:   # RKE's kube-proxy container: no certificate to serve, just a process
        (bin_dir / "kube-proxy").write_text("#!/bin/sh\n# kubepki lab: kube-proxy serves no TLS\nexec sleep infinity\n")
        (bin_dir / "kube-proxy").chmod(0o755)


# -- kubeadm ------------------------------------------------------------------------------------

KUBEADM_LINES = {"v1.31": "current", "v1.28": "v1.28"}    # cluster key kubeadm_version -> pki style


def _kubeadm_cluster(node) -> dict:
    now = pki.utc()
    cps = [n for n in node.cluster.nodes if n.role == "control-plane"]
    scenario = node.cluster.scenario
    line = str(node.cluster.vars.get("kubepki_kubeadm_version", "v1.31"))
    if line not in KUBEADM_LINES:
        raise ValueError(f"cluster {node.cluster.name}: kubeadm_version {line!r} is not one of {', '.join(KUBEADM_LINES)}")
    style = KUBEADM_LINES[line]
    if _light(node.cluster) and scenario != "fresh":
        raise ValueError(f"cluster {node.cluster.name}: a light cluster has nothing to restart renewed certs with, so its "
                         f"scenario must be fresh (not {scenario})")
    validity = node.cluster.vars.get("kubepki_certificate_validity_hours")
    # v1beta4 certificateValidityPeriod: the cluster's leaves, and the kubeadm-config it uploads, say so
    profile = pki.dataclasses.replace(pki.KUBEADM_STYLES[style], leaf_lifetime=int(validity) * pki.HOUR) \
        if validity else pki.KUBEADM_STYLES[style]
    if scenario == "expiring_20d":
        leaf_at = {n.name: profile.issued_for(now, expires_in_days=17 + i) for i, n in enumerate(cps)}
    elif scenario == "expired_7d":
        leaf_at = {n.name: profile.issued_for(now, expired_days_ago=7) for n in cps}
    else:
        leaf_at = {n.name: now - _days(30) for n in cps}
    first = min(leaf_at.values()) if leaf_at else now - _days(30)
    # HA: the first control plane's address stands in for a load balancer
    endpoint = f"{cps[0].address}:6443" if len(cps) > 1 else None
    etcd = str(node.cluster.vars.get("kubepki_etcd", "stacked"))
    if etcd not in ("stacked", "external"):
        raise ValueError(f"cluster {node.cluster.name}: etcd {etcd!r} is not stacked or external")
    # external: one etcd outside kubeadm (a systemd unit on the first control plane), as kubeadm's external etcd
    external_url = f"https://{cps[0].address}:2379" if etcd == "external" else None
    cluster = pki.kubeadm_cluster(now, ca_issued_at=first, control_plane_endpoint=endpoint, style=style,
                                  external_etcd=etcd == "external", external_etcd_url=external_url,
                                  leaf_validity=profile.leaf_lifetime if validity else None)
    return {"now": now, "cluster": cluster, "cps": cps, "leaf_at": leaf_at, "first": first,
            "kubelet_version": pki.KUBEADM_IMAGES[style][0], "kubeadm_version": pki.KUBEADM_IMAGES[style][0]}


EXTERNAL_ETCD_PKI = "/run/kubepki-lab/etcd-pki"   # the external etcd's own files: not kubeadm's, not renewed by us


def _external_etcd_unit(root: Path, m: dict, node) -> dict:
    """etcd as a systemd unit with its own CA and certs (the external etcd cluster's), client certs required."""
    ca, ip = m["cluster"].external_etcd_ca, node.address
    pki_dir = root / EXTERNAL_ETCD_PKI.lstrip("/")
    pki_dir.mkdir(parents=True, exist_ok=True)
    (pki_dir / "ca.crt").write_bytes(pki.cert_pem(ca.cert))
    pair = pki.new_leaf(node.name, ca, m["cluster"].profile, m["now"] - _days(30), "rsa", eku=["server", "client"],
                        dns=[node.name, "localhost"], ips=[ip, "127.0.0.1"])
    (pki_dir / "server.crt").write_bytes(pki.cert_pem(pair.cert))
    (pki_dir / "server.key").write_bytes(pki.key_pem(pair.key))
    (pki_dir / "server.key").chmod(0o600)
    d = EXTERNAL_ETCD_PKI
    return {"argv": ["etcd", f"--name={node.name}", "--data-dir=/var/lib/etcd",
                     f"--listen-client-urls=https://{ip}:2379", f"--advertise-client-urls=https://{ip}:2379",
                     f"--listen-peer-urls=https://{ip}:2380", f"--initial-advertise-peer-urls=https://{ip}:2380",
                     f"--initial-cluster={node.name}=https://{ip}:2380", f"--cert-file={d}/server.crt",
                     f"--key-file={d}/server.key", f"--trusted-ca-file={d}/ca.crt", "--client-cert-auth=true",
                     f"--peer-cert-file={d}/server.crt", f"--peer-key-file={d}/server.key",
                     f"--peer-trusted-ca-file={d}/ca.crt", "--peer-client-cert-auth=true"]}


def _kubeadm_node(node, root: Path, m: dict):
    ip, now = node.address, m["now"]
    net = pki.KubeadmNet(apiserver_bind_address=ip, etcd_local_host=None, etcd_metrics_url=f"http://{ip}:2381",
                         controller_manager_bind_address=ip, scheduler_bind_address=ip, kubelet_address=ip)
    # the kubelet rotates its client cert (70-90% of its life); only a cluster down past that point
    # (expired_7d) leaves it expired, for kubelet.conf repair to fix
    client_at = pki.KUBELET_CLIENT.issued_for(now, expired_days_ago=7) if node.cluster.scenario == "expired_7d" else now - _days(100)
    kubelet = {"kubelet_client_issued_at": client_at,
               "kubelet_serving_issued_at": m["leaf_at"].get(node.name, m["first"])}
    listen, restore = [f"{ip}:10250"], []
    if node.role == "control-plane":
        index = [n.name for n in m["cps"]].index(node.name)
        pki.build_kubeadm_control_plane(root, m["cluster"], node.name, ip, now=now, leaf_issued_at=m["leaf_at"][node.name],
                                        init_node=index == 0, net=net,
                                        etcd_members=[(n.name, n.address) for n in m["cps"][:index + 1]], **kubelet)
        (root / "var/lib/etcd").mkdir(parents=True, exist_ok=True)
        (root / "var/lib/etcd").chmod(0o700)
        listen += [f"{ip}:{p}" for p in (6443, 2379, 2380, 10257, 10259)]
        if node.cluster.scenario == "expired_7d":
            restore = _boot_twins(root, m, node, net, index)
    else:
        endpoint = m["cluster"].control_plane_endpoint or f"{m['cps'][0].address}:6443"
        pki.build_kubeadm_worker(root, m["cluster"], node.name, now=now, api_server=f"https://{endpoint}", net=net,
                                 **kubelet)
        (root / "etc/kubernetes/manifests").mkdir(parents=True, exist_ok=True)
    # kubeadm's kubelet drop-in + kubeadm-flags.env
    argv = ["kubelet", "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
            "--kubeconfig=/etc/kubernetes/kubelet.conf", "--config=/var/lib/kubelet/config.yaml",
            "--container-runtime-endpoint=unix:///var/run/containerd/containerd.sock", f"--node-ip={ip}",
            "--pod-infra-container-image=registry.k8s.io/pause:3.10"]
    units = {"kubelet": {"argv": argv}}
    if _light(node.cluster):
        units = {"kubeadm-endpoints": {"argv": ["kubeadm-endpoints", f"--hostname={node.name}"]}}
    if m["cluster"].external_etcd_ca is not None and node.name == m["cps"][0].name:
        units["etcd"] = _external_etcd_unit(root, m, node)
    return units, [], listen, restore


def _boot_twins(root: Path, m: dict, node, net, index: int) -> list:
    """Expired leaves: the cluster must have been started while they were valid, since an apiserver
    whose etcd certs are expired never comes up (research/reload.md §4), nor does an etcd cluster whose
    peer certs are. So the etcd pairs start as valid twins (healthcheck-client for the member add too);
    wait_ready() puts the expired files back once everything listens, and the running components keep
    their connections, as real ones do."""
    rels = [f"etc/kubernetes/pki/{base}{ext}" for ext in (".crt", ".key")
            for base in ("apiserver-etcd-client", "etcd/server", "etcd/peer", "etcd/healthcheck-client")]
    with tempfile.TemporaryDirectory() as tmp:
        pki.build_kubeadm_control_plane(tmp, m["cluster"], node.name, node.address, now=m["now"],
                                        leaf_issued_at=m["now"] - _days(30), init_node=index == 0, net=net,
                                        etcd_members=[(n.name, n.address) for n in m["cps"][:index + 1]])
        for rel in rels:
            keep = root / BOOT_DIR / rel
            keep.parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / rel, keep)
            shutil.copy2(Path(tmp) / rel, root / rel)
    return rels


# -- RKE1 -----------------------------------------------------------------------------------------

def _rke1_cluster(node) -> dict:
    now = pki.utc()
    nodes = [pki.RkeNode(n.address, ("controlplane", "etcd") if n.role == "control-plane" else ("worker",),
                         hostname_override=n.name) for n in node.cluster.nodes]
    if node.cluster.scenario == "kubelet_expired":
        ca_at, leaf_at = now - _days(400), now - _days(30)
    else:
        ca_at = leaf_at = now - _days(30)
    cluster = pki.rke1_cluster(nodes, now, ca_issued_at=ca_at, leaf_issued_at=leaf_at, cluster_name=node.cluster.name)
    # RKE_IMAGE's kubelet: v1.28, which reads its serving cert once
    return {"now": now, "cluster": cluster, "kubelet_at": ca_at, "kubelet_version": "v" + RKE_IMAGE.split(":v")[1].split("-")[0]}


def _rke1_node(node, root: Path, m: dict):
    ip, name, cluster = node.address, node.name, m["cluster"]
    pki.build_rke1_node(root, cluster, ip, kubelet_serving_issued_at=m["kubelet_at"])
    if node.name == node.cluster.nodes[0].name:
        # the workstation side of `rke up` (cluster.yml, .rkestate, kube_config_cluster.yml): next to the nodes
        pki.write_rke1_admin(root.parents[2] / "rke" / node.cluster.name, cluster)
    suffix = cluster.node(ip).cert_suffix

    def container(cname, argv):
        return {"name": cname, "image": RKE_IMAGE, "argv": argv, "labels": {"io.rancher.rke.container.name": cname}}

    containers, listen = [], [f"{ip}:10250"]
    if node.role == "control-plane":
        etcd = f"{SSL}/kube-etcd-{suffix}"
        containers.append({**container("etcd", [
            "etcd", f"--name=etcd-{name}", "--data-dir=/var/lib/etcd", f"--advertise-client-urls=https://{ip}:2379",
            f"--listen-client-urls=https://{ip}:2379", f"--initial-advertise-peer-urls=https://{ip}:2380",
            f"--listen-peer-urls=https://{ip}:2380", "--initial-cluster-token=etcd-cluster-1",
            f"--initial-cluster=etcd-{name}=https://{ip}:2380", "--initial-cluster-state=new",
            "--heartbeat-interval=500", "--election-timeout=5000", "--client-cert-auth=true",
            "--peer-client-cert-auth=true", f"--trusted-ca-file={SSL}/kube-ca.pem",
            f"--peer-trusted-ca-file={SSL}/kube-ca.pem", f"--cert-file={etcd}.pem", f"--key-file={etcd}-key.pem",
            f"--peer-cert-file={etcd}.pem", f"--peer-key-file={etcd}-key.pem", f"--listen-metrics-urls=http://{ip}:2381"]),
            "image": "rancher/mirrored-coreos-etcd:v3.5.9"})
        sa = f"{SSL}/kube-service-account-token"
        containers.append(container("kube-apiserver", [
            "kube-apiserver", "--allow-privileged=true", "--anonymous-auth=false", f"--advertise-address={ip}",
            f"--bind-address={ip}", "--secure-port=6443", "--authorization-mode=Node,RBAC",
            f"--client-ca-file={SSL}/kube-ca.pem", f"--etcd-cafile={SSL}/kube-ca.pem",
            f"--etcd-certfile={SSL}/kube-node.pem", f"--etcd-keyfile={SSL}/kube-node-key.pem",
            "--etcd-prefix=/registry", f"--etcd-servers=https://{ip}:2379",
            f"--kubelet-client-certificate={SSL}/kube-apiserver.pem", f"--kubelet-client-key={SSL}/kube-apiserver-key.pem",
            f"--proxy-client-cert-file={SSL}/kube-apiserver-proxy-client.pem",
            f"--proxy-client-key-file={SSL}/kube-apiserver-proxy-client-key.pem",
            "--requestheader-allowed-names=kube-apiserver-proxy-client",
            f"--requestheader-client-ca-file={SSL}/kube-apiserver-requestheader-ca.pem",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User", "--service-account-issuer=rke",
            f"--service-account-key-file={sa}-key.pem", f"--service-account-signing-key-file={sa}-key.pem",
            "--service-cluster-ip-range=10.43.0.0/16", "--service-node-port-range=30000-32767",
            f"--tls-cert-file={SSL}/kube-apiserver.pem", f"--tls-private-key-file={SSL}/kube-apiserver-key.pem"]))
        containers.append(container("kube-controller-manager", [
            "kube-controller-manager", "--allocate-node-cidrs=true", f"--bind-address={ip}", "--cluster-cidr=10.42.0.0/16",
            f"--kubeconfig={SSL}/kubecfg-kube-controller-manager.yaml", "--leader-elect=true", "--profiling=false",
            f"--root-ca-file={SSL}/kube-ca.pem", f"--service-account-private-key-file={sa}-key.pem",
            "--service-cluster-ip-range=10.43.0.0/16", "--use-service-account-credentials=true"]))
        containers.append(container("kube-scheduler", [
            "kube-scheduler", f"--bind-address={ip}", f"--kubeconfig={SSL}/kubecfg-kube-scheduler.yaml",
            "--leader-elect=true", "--profiling=false"]))
        (root / "var/lib/etcd").chmod(0o700)
        listen += [f"{ip}:{p}" for p in (6443, 2379, 2380)]
    # no generate_serving_certificate: no --tls-cert-file, so the kubelet self-signs into /var/lib/kubelet/pki
    containers.append(container("kubelet", [
        "kubelet", f"--address={ip}", "--anonymous-auth=false", "--authentication-token-webhook=true",
        "--authorization-mode=Webhook", f"--client-ca-file={SSL}/kube-ca.pem", "--cluster-dns=10.43.0.10",
        "--cluster-domain=cluster.local", "--fail-swap-on=false", f"--hostname-override={name}",
        f"--kubeconfig={SSL}/kubecfg-kube-node.yaml", f"--node-ip={ip}", "--read-only-port=0",
        "--root-dir=/var/lib/kubelet"]))
    containers.append(container("kube-proxy", [
        "kube-proxy", "--cluster-cidr=10.42.0.0/16", f"--hostname-override={name}",
        f"--kubeconfig={SSL}/kubecfg-kube-proxy.yaml", "--healthz-bind-address=127.0.0.1"]))
    return {}, containers, listen, []


# -- k3s ------------------------------------------------------------------------------------------

def _k3s_cluster(node) -> dict:
    now = pki.utc()
    first_start = {"serving_expired": 400, "serving_165d": 200}.get(node.cluster.scenario)
    ca_at, leaf_at = (now - _days(first_start) if first_start else now - _days(30)), now - _days(30)
    program = node.distribution
    cluster = pki.k3s_cluster(program, now, ca_issued_at=ca_at)
    server = next(n for n in node.cluster.nodes if n.role == "server")
    token = f"K10{hashlib.sha256(pki.cert_pem(cluster.server_ca.cert)).hexdigest()}::server:{os.urandom(16).hex()}"
    # the release line the cluster stands for: tools/k3s.py Line (default: a November 2025 release)
    version = {"k3s": "v1.33.6+k3s1", "rke2": "v1.33.6+rke2r1"}[program]
    servers = [n for n in node.cluster.nodes if n.role == "server"]
    # HA: the secret as it stands once every server has added its names (factory/gen.go AddCN)
    others = [x for n in servers[1:] for x in (n.name, n.address)]
    shared = pki.serving_secret(cluster, server.name, server.address, issued_at=ca_at, tls_sans=others) \
        if len(servers) > 1 else None
    return {"now": now, "cluster": cluster, "ca_at": ca_at, "leaf_at": leaf_at, "server": server, "token": token,
            "shared_secret": shared, f"{program}_version": str(node.cluster.vars.get(f"kubepki_{program}_version", version))}


def _k3s_node(node, root: Path, m: dict):
    """A k3s or RKE2 node: RKE2's server is k3s's code with its own names and ports (research/rancher.md 0)."""
    ip, name, cluster, program = node.address, node.name, m["cluster"], node.distribution
    data = root / f"var/lib/rancher/{program}"
    supervisor_port, api_port = k3s_tool.PORTS[program]
    unit = "k3s" if program == "k3s" else "rke2-server"
    if node.role == "server":
        # the served cert dates from the first start: legacy dynamiclistener gives it the CA's NotBefore
        tree = pki.build_k3s_server(root, cluster, name, ip, now=m["now"], leaf_issued_at=m["leaf_at"],
                                    serving_issued_at=m["ca_at"])
        secret, argv, datastore = tree.secret, [program, "server"], None
        if m["shared_secret"]:
            if ipaddress.ip_address(ip).is_loopback:
                raise ValueError(f"{name}: the servers of an HA cluster need private addresses (k3s binds 127.0.0.1:6444 "
                                 "on each server): give them e.g. 10.213.0.11")
            datastore = root.parents[2] / "datastore" / node.cluster.name / "state.db"
            argv += [f"--datastore-endpoint=sqlite://{datastore}", f"--token={m['token']}"]
            secret = m["shared_secret"]
            pki.write_dynamic_cert(root, cluster, secret)
        db = k3s_tool.kine(data, datastore)
        try:
            if k3s_tool.kine_get(db, f"/registry/secrets/kube-system/{program}-serving") is None:
                k3s_tool.kine_put(db, f"/registry/secrets/kube-system/{program}-serving", k3s_tool.secret_to_kine(secret))
        finally:
            db.close()
        pki.write_file(data / "server/token", m["token"] + "\n", 0o600)
        argv += [f"--node-ip={ip}", f"--bind-address={ip}", f"--advertise-address={ip}", f"--node-name={name}"]
        # the host can reach a node's own loopback only when it shares the host's network
        loopback = ["127.0.0.1:6444"] if program == "k3s" else [f"127.0.0.1:{api_port}"]
        listen = [f"{ip}:{supervisor_port}", f"{ip}:10250"] + ([f"{ip}:{api_port}"] if program == "rke2" else []) + \
            (loopback if ipaddress.ip_address(ip).is_loopback else [])
        return {unit: {"argv": argv}}, [], listen, []
    pki.build_k3s_agent(root, cluster, name, ip, now=m["now"], agent_issued_at=m["leaf_at"])
    signer = root / "run/kubepki-lab/k3s-ca"        # lab plumbing: the agent signs its own certs
    for base, pair in (("server-ca", cluster.server_ca), ("client-ca", cluster.client_ca)):
        pki.write_file(signer / f"{base}.crt", pki.cert_pem(pair.cert), 0o600)
        pki.write_file(signer / f"{base}.key", pki.key_pem(pair.key), 0o600)
    argv = [program, "agent", f"--server=https://{m['server'].address}:{supervisor_port}", f"--token={m['token']}",
            f"--node-ip={ip}", f"--node-name={name}"]
    return {f"{program}-agent": {"argv": argv}}, [], [f"{ip}:10250"], []


# ---------------------------------------------------------------------------------------------
# start

def start(lab, node) -> None:
    root = lab.node_root(node)
    config = json.loads((root / "run/kubepki-lab/services.json").read_text())
    cps = [n for n in node.cluster.nodes if n.role == "control-plane"]
    light = _light(node.cluster)     # no etcd to join, no API to upload to
    if not light and node.distribution == "kubeadm" and node.role == "control-plane" and node.name != cps[0].name:
        _etcd_member_add(lab.node_root(cps[0]), cps[0].address, node)
    lab.run_in_node(node, [NODE_PYTHON, str(HERE / "supervisor.py"), "run"], background=True,
                    log=root / "var/log/kubepki-lab/supervisor.log")
    sock = root / "run/kubepki-lab/supervisor.sock"
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the supervisor of {node.name} did not start; see {root}/var/log/kubepki-lab/supervisor.log:\n"
                               + _tail(root / "var/log/kubepki-lab/supervisor.log"))
        time.sleep(0.02)
    if not light and node.distribution == "kubeadm" and node.name == cps[0].name:
        _UPLOADS.append((root, cps[0].address, _MATERIAL[id(node.cluster)][1]["cluster"]))
    if config and node.name == lab.fleet().nodes[-1].name:
        wait_ready(lab)
        while _UPLOADS:
            _upload_kubeadm_config(*_UPLOADS.pop())


def _upload_kubeadm_config(root: Path, address: str, cluster) -> None:
    """What `kubeadm init` creates through the API, when its admin credentials were valid: kube-system/kubeadm-config
    (phases/uploadconfig) and, from v1.29, the ClusterRoleBinding that gives admin.conf's group kubeadm:cluster-admins
    cluster-admin (phases/kubeconfig EnsureAdminClusterRoleBinding, kubernetes#121305). Sent with a system:masters
    client cert signed by the cluster CA now, since expired scenarios' admin.conf no longer authenticates."""
    admin = pki.new_leaf("kubernetes-admin", cluster.ca, cluster.profile, pki.utc(), orgs=("system:masters",))
    objects = [("/api/v1/namespaces/kube-system/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
        "data": {"ClusterConfiguration": yaml.safe_dump(pki.kubeadm_cluster_configuration(cluster))}})]
    if cluster.admins_org == "kubeadm:cluster-admins":
        objects.append(("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubeadm:cluster-admins"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}]}))
    with tempfile.TemporaryDirectory() as tmp:
        pem = Path(tmp) / "admin.pem"
        pem.write_bytes(pki.cert_pem(admin.cert) + pki.key_pem(admin.key))
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE    # expired scenarios serve expired certs by now
        tls.load_cert_chain(str(pem))
    for path, obj in objects:
        conn = http.client.HTTPSConnection(address, 6443, context=tls, timeout=10)
        try:
            conn.request("POST", path, json.dumps(obj), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read().decode(errors="replace")
        finally:
            conn.close()
        if resp.status not in (201, 409):
            raise RuntimeError(f"creating {obj['kind']} {obj['metadata']['name']} on {address}:6443 answered {resp.status}: "
                               f"{answer[:300]}; see {root}/var/log/kubepki-lab/supervisor.log")


def _etcd_member_add(cp1_root: Path, cp1_address: str, node) -> None:
    """`kubeadm join --control-plane` adds the member before writing etcd.yaml with
    --initial-cluster-state=existing; strict reconfig checks make it wait for the previous member."""
    pki_dir = cp1_root / "etc/kubernetes/pki/etcd"
    cmd = ["etcdctl", f"--endpoints=https://{cp1_address}:2379", f"--cacert={pki_dir}/ca.crt",
           f"--cert={pki_dir}/healthcheck-client.crt", f"--key={pki_dir}/healthcheck-client.key",
           "--dial-timeout=1s", "--command-timeout=3s", "member", "add", node.name,
           f"--peer-urls=https://{node.address}:2380"]
    deadline = time.monotonic() + ETCD_JOIN_TIMEOUT
    while True:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
        if res.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd member add {node.name} via {cp1_address}:2379 failed for {ETCD_JOIN_TIMEOUT:.0f}s: "
                               f"{res.stderr.strip()[-500:]}")
        time.sleep(0.3)


def wait_ready(lab, timeout: float = READY_TIMEOUT) -> None:
    """Wait until every node of the lab listens on the ports of its services.json, then put back
    the files that _boot_twins set aside."""
    pending, restore = {}, []
    for n in lab.fleet().nodes:
        config = json.loads((lab.node_root(n) / "run/kubepki-lab/services.json").read_text())
        pending.update({(n.name, addr): lab.node_root(n) for addr in config["listen"]})
        restore += [(lab.node_root(n), rel) for rel in config.get("restore_after_start", [])]
    deadline = time.monotonic() + timeout
    while pending:
        for (name, addr) in list(pending):
            host, port = addr.rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=0.5).close()
                del pending[(name, addr)]
            except OSError:
                pass
        if pending and time.monotonic() > deadline:
            detail = "\n".join(f"--- {name}: nothing on {addr}; last lines of its logs:\n"
                               + _tail(root / "var/log/kubepki-lab/supervisor.log")
                               for (name, addr), root in sorted(pending.items()))
            raise RuntimeError(f"not listening after {timeout:.0f}s: "
                               f"{', '.join(f'{n} {a}' for n, a in sorted(pending))}\n{detail}")
        time.sleep(0.2)
    for root, rel in restore:
        os.replace(root / BOOT_DIR / rel, root / rel)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({path}: {e.strerror})"
