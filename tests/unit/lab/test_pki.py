"""Tests of the lab PKI generator against the research test vectors (kubeadm.md §10, rancher.md §6).

Everything is checked by parsing the written files with cryptography/PyYAML/json, never by
asking the generator what it meant to write.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ansible_collections.kubepki.fleet.tests.lab import pki

NOW = pki.utc("2026-11-23T12:00:00Z")
DAY, HOUR, MINUTE = pki.DAY, pki.HOUR, pki.MINUTE
SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


# ------------------------------------------------------------------------------------------
# helpers: parse what is on disk
# ------------------------------------------------------------------------------------------

def certs_in(data: bytes) -> list[x509.Certificate]:
    with pki.quiet_serial_zero():
        return x509.load_pem_x509_certificates(data)


def certs(path) -> list[x509.Certificate]:
    return certs_in(Path(path).read_bytes())


def cert(path) -> x509.Certificate:
    return certs(path)[0]


def key(path):
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def serial(c: x509.Certificate) -> int:
    with pki.quiet_serial_zero():      # cryptography warns on the serial 0 of k3s/RKE CAs
        return c.serial_number


def cn(c: x509.Certificate) -> str:
    return c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def orgs(c: x509.Certificate) -> list[str]:
    return [a.value for a in c.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def ext(c: x509.Certificate, cls):
    try:
        return c.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def eku(c: x509.Certificate) -> list:
    value = ext(c, x509.ExtendedKeyUsage)
    return list(value) if value else []


def sans(c: x509.Certificate) -> tuple[list[str], list[str]]:
    value = ext(c, x509.SubjectAlternativeName)
    if value is None:
        return [], []
    return value.get_values_for_type(x509.DNSName), [str(i) for i in value.get_values_for_type(x509.IPAddress)]


def signed_by(c: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        c.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def same_key(c: x509.Certificate, k) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return c.public_key().public_bytes(*fmt) == k.public_key().public_bytes(*fmt)


def files(root) -> set[str]:
    root = Path(root)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def kubeconfig(path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def kc_cert(conf: dict) -> x509.Certificate:
    return certs_in(base64.b64decode(conf["users"][0]["user"]["client-certificate-data"]))[0]


def flags(manifest_path) -> dict[str, str]:
    pod = yaml.safe_load(Path(manifest_path).read_text())
    command = pod["spec"]["containers"][0]["command"]
    return dict(arg[2:].split("=", 1) for arg in command[1:])


# ------------------------------------------------------------------------------------------
# kubeadm fixtures
# ------------------------------------------------------------------------------------------

CA_AT = NOW - 400 * DAY          # cluster created
CP1_AT = NOW - 100 * DAY         # cp1's leaves last renewed
CP2_AT = NOW - 30 * DAY
KUBELET_AT = NOW - 10 * DAY


@pytest.fixture(scope="module")
def ha(tmp_path_factory):
    """Current-style HA cluster: cp1 (init), cp2 (joined), w1 (worker)."""
    base = tmp_path_factory.mktemp("kubeadm-ha")
    cluster = pki.kubeadm_cluster(NOW, ca_issued_at=CA_AT, control_plane_endpoint="lb.example.com:6443")
    members = [("cp2", "10.0.0.12"), ("cp1", "10.0.0.11")]
    t1 = pki.build_kubeadm_control_plane(base / "cp1", cluster, "cp1", "10.0.0.11", now=NOW, leaf_issued_at=CP1_AT,
                                         init_node=True, kubelet_client_issued_at=KUBELET_AT)
    t2 = pki.build_kubeadm_control_plane(base / "cp2", cluster, "cp2", "10.0.0.12", now=NOW, leaf_issued_at=CP2_AT,
                                         etcd_members=members)
    tw = pki.build_kubeadm_worker(base / "w1", cluster, "w1", now=NOW)
    return {"cluster": cluster, "cp1": t1.root, "cp2": t2.root, "w1": tw.root, "trees": (t1, t2, tw)}


@pytest.fixture(scope="module")
def v128(tmp_path_factory):
    """v1.28-style single control plane with ECDSA keys and no controlPlaneEndpoint."""
    base = tmp_path_factory.mktemp("kubeadm-v128")
    cluster = pki.kubeadm_cluster(NOW, ca_issued_at=CA_AT, style="v1.28", key="ecdsa")
    pki.build_kubeadm_control_plane(base, cluster, "cp1", "10.0.0.11", now=NOW, leaf_issued_at=CP1_AT, init_node=True)
    return {"cluster": cluster, "root": base}


def p(root, path: str) -> Path:
    return Path(root) / path.lstrip("/")


KUBEADM_LEAVES = {  # file base -> (CN or None for node name, O current, O v1.28, EKU, CA file)
    "apiserver": ("kube-apiserver", [], [], [SERVER], "ca"),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ["kubeadm:cluster-admins"], ["system:masters"],
                                 [CLIENT], "ca"),
    "front-proxy-client": ("front-proxy-client", [], [], [CLIENT], "front-proxy-ca"),
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", [], ["system:masters"], [CLIENT], "etcd/ca"),
    "etcd/server": (None, [], [], [SERVER, CLIENT], "etcd/ca"),
    "etcd/peer": (None, [], [], [SERVER, CLIENT], "etcd/ca"),
    "etcd/healthcheck-client": ("kube-etcd-healthcheck-client", [], ["system:masters"], [CLIENT], "etcd/ca"),
}
KUBEADM_CONFS = {  # name -> (CN, O current, O v1.28)
    "admin.conf": ("kubernetes-admin", ["kubeadm:cluster-admins"], ["system:masters"]),
    "super-admin.conf": ("kubernetes-super-admin", ["system:masters"], None),
    "controller-manager.conf": ("system:kube-controller-manager", [], []),
    "scheduler.conf": ("system:kube-scheduler", [], []),
}
CA_FILES = {"ca": "kubernetes", "front-proxy-ca": "front-proxy-ca", "etcd/ca": "etcd-ca"}


# ------------------------------------------------------------------------------------------
# kubeadm
# ------------------------------------------------------------------------------------------

def test_vector7_apiserver_and_etcd_sans(ha):
    api = cert(p(ha["cp1"], "etc/kubernetes/pki/apiserver.crt"))
    assert sans(api) == (["cp1", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                          "kubernetes.default.svc.cluster.local", "lb.example.com"], ["10.96.0.1", "10.0.0.11"])
    for name in ("server", "peer"):
        c = cert(p(ha["cp1"], f"etc/kubernetes/pki/etcd/{name}.crt"))
        assert cn(c) == "cp1"
        assert sans(c) == (["cp1", "localhost"], ["10.0.0.11", "127.0.0.1", "::1"])
    # cp2 gets its own node name and IP
    assert sans(cert(p(ha["cp2"], "etc/kubernetes/pki/apiserver.crt")))[1] == ["10.96.0.1", "10.0.0.12"]


def test_cert_sans_option_sorted_and_deduplicated(tmp_path):
    cluster = pki.kubeadm_cluster(NOW, key="ecdsa", control_plane_endpoint="10.0.0.100:6443")
    pki.build_kubeadm_control_plane(tmp_path, cluster, "zeta", "10.0.0.11", now=NOW,
                                    cert_sans=["api.example.com", "10.0.0.11", "192.0.2.7", "a.example.com"])
    dns, ips = sans(cert(tmp_path / "etc/kubernetes/pki/apiserver.crt"))
    assert dns == sorted(dns) and dns[0] == "a.example.com" and "zeta" in dns
    assert ips == ["10.96.0.1", "10.0.0.11", "10.0.0.100", "192.0.2.7"]


def test_vector9_current_validity(ha):
    root = ha["cp1"]
    leaves = [cert(p(root, f"etc/kubernetes/pki/{b}.crt")) for b in KUBEADM_LEAVES]
    leaves += [kc_cert(kubeconfig(p(root, f"etc/kubernetes/{c}"))) for c in KUBEADM_CONFS]
    for c in leaves:
        assert c.not_valid_before_utc == CP1_AT - 5 * MINUTE, cn(c)
        assert c.not_valid_after_utc == CP1_AT + 8760 * HOUR, cn(c)
        assert c.not_valid_after_utc - c.not_valid_before_utc == 8760 * HOUR + 5 * MINUTE
    for base in CA_FILES:
        ca = cert(p(root, f"etc/kubernetes/pki/{base}.crt"))
        assert ca.not_valid_before_utc == CA_AT - 5 * MINUTE
        assert ca.not_valid_after_utc - ca.not_valid_before_utc == 87600 * HOUR + 5 * MINUTE
        assert serial(ca) != 0
    # cp2 renewed at another time: its leaves follow its own start time
    assert cert(p(ha["cp2"], "etc/kubernetes/pki/apiserver.crt")).not_valid_after_utc == CP2_AT + 8760 * HOUR


def test_v128_validity_pins_leaf_not_before_to_ca(v128):
    root = v128["root"]
    ca_nb = {b: cert(p(root, f"etc/kubernetes/pki/{b}.crt")).not_valid_before_utc for b in CA_FILES}
    assert set(ca_nb.values()) == {CA_AT - 5 * MINUTE}
    for base, spec in KUBEADM_LEAVES.items():
        ca_file = spec[-1]
        c = cert(p(root, f"etc/kubernetes/pki/{base}.crt"))
        assert c.not_valid_before_utc == ca_nb[ca_file]
        assert c.not_valid_after_utc == CP1_AT + 365 * DAY
        assert ext(c, x509.BasicConstraints) is None        # older pkiutil sets no basicConstraints
    for base in CA_FILES:
        ca = cert(p(root, f"etc/kubernetes/pki/{base}.crt"))
        assert serial(ca) != 0                         # random CA serials from kubeadm 1.28
        assert ca.not_valid_after_utc == CA_AT + 3650 * DAY


@pytest.mark.parametrize("style", ["current", "v1.28"])
def test_names_subjects_eku_keys_modes(style, ha, v128):
    root, kind = (ha["cp1"], "rsa") if style == "current" else (v128["root"], "ecdsa")
    pki_dir = p(root, "etc/kubernetes/pki")
    for base, (want_cn, o_cur, o_old, want_eku, _ca) in KUBEADM_LEAVES.items():
        c = cert(pki_dir / f"{base}.crt")
        k = key(pki_dir / f"{base}.key")
        assert cn(c) == (want_cn or "cp1")
        assert orgs(c) == (o_cur if style == "current" else o_old), base
        assert eku(c) == want_eku
        usage = ext(c, x509.KeyUsage)
        assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
        assert same_key(c, k)
        header = (pki_dir / f"{base}.key").read_bytes().splitlines()[0]
        if kind == "rsa":
            assert header == b"-----BEGIN RSA PRIVATE KEY-----" and k.key_size == 2048
        else:
            assert header == b"-----BEGIN EC PRIVATE KEY-----" and isinstance(k.curve, ec.SECP256R1)
        assert mode(pki_dir / f"{base}.crt") == 0o644 and mode(pki_dir / f"{base}.key") == 0o600
    for base, want_cn in CA_FILES.items():
        c = cert(pki_dir / f"{base}.crt")
        assert cn(c) == want_cn and sans(c)[0] == [want_cn]       # CA carries its CN as DNS SAN
        assert ext(c, x509.BasicConstraints).ca and ext(c, x509.KeyUsage).key_cert_sign
        assert same_key(c, key(pki_dir / f"{base}.key"))
    assert mode(pki_dir / "sa.key") == 0o600 and mode(pki_dir / "sa.pub") == 0o600
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    sa_pub = serialization.load_pem_public_key((pki_dir / "sa.pub").read_bytes())
    assert sa_pub.public_bytes(*spki) == key(pki_dir / "sa.key").public_key().public_bytes(*spki)
    for name, (want_cn, o_cur, o_old) in KUBEADM_CONFS.items():
        path = p(root, f"etc/kubernetes/{name}")
        if name == "super-admin.conf" and style == "v1.28":
            assert not path.exists()                              # super-admin.conf arrived in 1.29
            continue
        c = kc_cert(kubeconfig(path))
        assert (cn(c), orgs(c), eku(c)) == (want_cn, o_cur if style == "current" else o_old, [CLIENT])
        assert mode(path) == 0o600


def test_super_admin_only_on_init_node(ha):
    assert p(ha["cp1"], "etc/kubernetes/super-admin.conf").exists()
    assert not p(ha["cp2"], "etc/kubernetes/super-admin.conf").exists()


def test_ca_column_by_signature(ha):
    """Vector 3: each leaf verifies with exactly its CA, by signature; a look-alike CA fails."""
    root = ha["cp1"]
    cas = {b: cert(p(root, f"etc/kubernetes/pki/{b}.crt")) for b in CA_FILES}
    expected = {f"pki/{b}.crt": spec[-1] for b, spec in KUBEADM_LEAVES.items()}
    expected.update({c: "ca" for c in KUBEADM_CONFS})
    for rel, want in expected.items():
        c = kc_cert(kubeconfig(p(root, f"etc/kubernetes/{rel}"))) if rel.endswith(".conf") \
            else cert(p(root, f"etc/kubernetes/{rel}"))
        assert [b for b, ca in cas.items() if signed_by(c, ca)] == [want], rel
        assert ext(c, x509.AuthorityKeyIdentifier).key_identifier == ext(cas[want], x509.SubjectKeyIdentifier).digest
    other = pki.kubeadm_cluster(NOW, key="ecdsa")          # same CA subject "kubernetes", other key
    assert not signed_by(cert(p(root, "etc/kubernetes/pki/apiserver.crt")), other.ca.cert)


def test_ha_nodes_share_cas_and_sa_not_leaves(ha):
    for rel in ("ca.crt", "ca.key", "front-proxy-ca.crt", "etcd/ca.crt", "etcd/ca.key", "sa.key", "sa.pub"):
        assert p(ha["cp1"], f"etc/kubernetes/pki/{rel}").read_bytes() == p(ha["cp2"], f"etc/kubernetes/pki/{rel}").read_bytes()
    a1, a2 = (cert(p(ha[n], "etc/kubernetes/pki/apiserver.crt")) for n in ("cp1", "cp2"))
    assert serial(a1) != serial(a2) and a1.public_key() != a2.public_key()


def test_vector8_kubeconfigs(ha):
    root = ha["cp1"]
    ca_pem = p(root, "etc/kubernetes/pki/ca.crt").read_bytes()
    admin = kubeconfig(p(root, "etc/kubernetes/admin.conf"))
    assert admin["users"][0]["name"] == "kubernetes-admin"
    assert admin["contexts"][0] == {"name": "kubernetes-admin@kubernetes",
                                    "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}}
    assert admin["current-context"] == "kubernetes-admin@kubernetes"
    assert admin["clusters"][0]["name"] == "kubernetes"
    assert admin["clusters"][0]["cluster"]["server"] == "https://lb.example.com:6443"
    assert base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"]) == ca_pem
    k = serialization.load_pem_private_key(base64.b64decode(admin["users"][0]["user"]["client-key-data"]), None)
    assert same_key(kc_cert(admin), k)
    cm = kubeconfig(p(root, "etc/kubernetes/controller-manager.conf"))
    assert cm["users"][0]["name"] == "system:kube-controller-manager"
    assert cm["clusters"][0]["cluster"]["server"] == "https://10.0.0.11:6443"     # local endpoint
    assert kubeconfig(p(ha["cp2"], "etc/kubernetes/scheduler.conf"))["clusters"][0]["cluster"]["server"] == \
        "https://10.0.0.12:6443"

    init = kubeconfig(p(root, "etc/kubernetes/kubelet.conf"))
    assert init["current-context"] == "system:node:cp1@kubernetes"
    assert init["users"][0]["user"] == {"client-certificate": pki.KUBELET_CLIENT_CURRENT,
                                        "client-key": pki.KUBELET_CLIENT_CURRENT}
    for node in ("cp2", "w1"):
        conf = kubeconfig(p(ha[node], "etc/kubernetes/kubelet.conf"))
        assert (conf["clusters"][0]["name"], conf["users"][0]["name"], conf["current-context"]) == \
            ("default-cluster", "default-auth", "default-context")
        assert conf["clusters"][0]["cluster"]["server"] == "https://lb.example.com:6443"
        assert conf["users"][0]["user"]["client-certificate"] == pki.KUBELET_CLIENT_CURRENT
        assert mode(p(ha[node], "etc/kubernetes/kubelet.conf")) == 0o600


def test_worker_has_only_kubelet_material(ha):
    got = files(ha["w1"])
    pems = {f for f in got if re.fullmatch(r"var/lib/kubelet/pki/kubelet-client-\d{4}(-\d\d){5}\.pem", f)}
    assert len(pems) == 1
    assert got == {"etc/kubernetes/kubelet.conf", "etc/kubernetes/pki/ca.crt", "var/lib/kubelet/config.yaml",
                   "var/lib/kubelet/pki/kubelet-client-current.pem", "var/lib/kubelet/pki/kubelet.crt",
                   "var/lib/kubelet/pki/kubelet.key"} | pems
    config = yaml.safe_load(p(ha["w1"], "var/lib/kubelet/config.yaml").read_text())
    assert config["rotateCertificates"] is True
    assert config["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/pki/ca.crt"


def test_vector10_kubelet_client_cert(ha, tmp_path):
    pki_dir = p(ha["cp1"], "var/lib/kubelet/pki")
    link = pki_dir / "kubelet-client-current.pem"
    assert link.is_symlink() and link.resolve().parent == pki_dir.resolve()
    assert link.resolve().name == f"kubelet-client-{KUBELET_AT.strftime('%Y-%m-%d-%H-%M-%S')}.pem"
    assert mode(link.resolve()) == 0o600
    data = link.read_bytes()
    assert data.count(b"-----BEGIN CERTIFICATE-----") == 1 and b"-----BEGIN EC PRIVATE KEY-----" in data
    c, k = certs_in(data)[0], serialization.load_pem_private_key(data[data.index(b"-----BEGIN EC"):], None)
    assert isinstance(k.curve, ec.SECP256R1) and same_key(c, k)
    assert (cn(c), orgs(c), eku(c)) == ("system:node:cp1", ["system:nodes"], [CLIENT])
    assert not ext(c, x509.KeyUsage).key_encipherment                 # ECDSA: digital signature only
    assert signed_by(c, cert(p(ha["cp1"], "etc/kubernetes/pki/ca.crt")))
    assert c.not_valid_before_utc == KUBELET_AT - 5 * MINUTE
    assert c.not_valid_after_utc == KUBELET_AT + 8760 * HOUR - 5 * MINUTE
    # signer truncates NotAfter to the CA's: CA expiring at T + 100 d
    t = NOW
    short = pki.kubeadm_cluster(NOW, key="ecdsa", ca_issued_at=t + 100 * DAY - 87600 * HOUR,
                                control_plane_endpoint="lb:6443")
    pki.build_kubeadm_worker(tmp_path, short, "w9", now=NOW, kubelet_client_issued_at=t)
    c = cert(tmp_path / "var/lib/kubelet/pki/kubelet-client-current.pem")
    assert c.not_valid_before_utc == t - 5 * MINUTE and c.not_valid_after_utc == t + 100 * DAY


def test_vector11_kubelet_serving_self_signed(tmp_path):
    created = dt.datetime.fromtimestamp(1700000000, dt.timezone.utc)
    cluster = pki.kubeadm_cluster(NOW, key="ecdsa", control_plane_endpoint="lb:6443")
    pki.build_kubeadm_worker(tmp_path, cluster, "node1", now=NOW, kubelet_serving_issued_at=created)
    chain = certs(tmp_path / "var/lib/kubelet/pki/kubelet.crt")
    assert len(chain) == 2
    leaf, ca = chain
    assert cn(leaf) == "node1@1700000000" and cn(ca) == "node1-ca@1700000000"
    assert leaf.issuer == ca.subject and signed_by(leaf, ca) and signed_by(ca, ca)
    assert leaf.not_valid_before_utc.timestamp() == 1699996400
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == 365 * DAY
    assert eku(leaf) == [SERVER] and sans(leaf) == (["node1"], [])
    assert serial(leaf) not in (1, 2)                      # random serials since client-go 1.28
    assert key(tmp_path / "var/lib/kubelet/pki/kubelet.key").key_size == 2048
    assert mode(tmp_path / "var/lib/kubelet/pki/kubelet.crt") == 0o644
    assert mode(tmp_path / "var/lib/kubelet/pki/kubelet.key") == 0o600


def test_manifests_flags_and_paths(ha):
    root = ha["cp1"]
    api = flags(p(root, "etc/kubernetes/manifests/kube-apiserver.yaml"))
    assert api["advertise-address"] == "10.0.0.11" and api["secure-port"] == "6443"
    assert api["etcd-servers"] == "https://127.0.0.1:2379"
    assert api["service-account-key-file"] == "/etc/kubernetes/pki/sa.pub"
    kcm = flags(p(root, "etc/kubernetes/manifests/kube-controller-manager.yaml"))
    assert kcm["cluster-signing-key-file"] == "/etc/kubernetes/pki/ca.key" and kcm["bind-address"] == "127.0.0.1"
    assert "secure-port" not in kcm                                   # kubeadm writes none by default
    sched = flags(p(root, "etc/kubernetes/manifests/kube-scheduler.yaml"))
    assert sched["kubeconfig"] == "/etc/kubernetes/scheduler.conf"
    etcd = flags(p(root, "etc/kubernetes/manifests/etcd.yaml"))
    assert etcd["listen-client-urls"] == "https://127.0.0.1:2379,https://10.0.0.11:2379"
    assert etcd["listen-peer-urls"] == "https://10.0.0.11:2380"
    assert etcd["listen-metrics-urls"] == "http://127.0.0.1:2381"
    assert (etcd["name"], etcd["data-dir"], etcd["initial-cluster"]) == ("cp1", "/var/lib/etcd", "cp1=https://10.0.0.11:2380")
    assert "initial-cluster-state" not in etcd
    # every file a manifest names exists in the tree (what discovery will follow)
    for manifest in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        for value in flags(p(root, f"etc/kubernetes/manifests/{manifest}.yaml")).values():
            if value.startswith("/etc/kubernetes/") and value.endswith((".crt", ".key", ".pub", ".conf")):
                assert p(root, value).is_file(), (manifest, value)
        assert mode(p(root, f"etc/kubernetes/manifests/{manifest}.yaml")) == 0o600
    etcd2 = flags(p(ha["cp2"], "etc/kubernetes/manifests/etcd.yaml"))
    assert etcd2["initial-cluster"] == "cp2=https://10.0.0.12:2380,cp1=https://10.0.0.11:2380"
    assert etcd2["initial-cluster-state"] == "existing"


def test_manifest_addresses_are_parameters(tmp_path):
    net = pki.KubeadmNet(apiserver_port=16443, apiserver_bind_address="127.0.1.11", etcd_client_port=12379,
                         etcd_peer_port=12380, etcd_local_host=None, etcd_metrics_url="http://127.0.1.11:12381",
                         etcd_data_dir="/var/lib/etcd-lab", controller_manager_bind_address="127.0.1.11",
                         controller_manager_port=11257, scheduler_bind_address="127.0.1.11", scheduler_port=11259)
    cluster = pki.kubeadm_cluster(NOW, key="ecdsa")
    pki.build_kubeadm_control_plane(tmp_path, cluster, "lab-cp1", "127.0.1.11", now=NOW, init_node=True, net=net)
    api = flags(tmp_path / "etc/kubernetes/manifests/kube-apiserver.yaml")
    assert (api["secure-port"], api["bind-address"], api["etcd-servers"]) == \
        ("16443", "127.0.1.11", "https://127.0.1.11:12379")
    etcd = flags(tmp_path / "etc/kubernetes/manifests/etcd.yaml")
    assert etcd["listen-client-urls"] == "https://127.0.1.11:12379"
    assert etcd["listen-metrics-urls"] == "http://127.0.1.11:12381" and etcd["data-dir"] == "/var/lib/etcd-lab"
    pod = yaml.safe_load((tmp_path / "etc/kubernetes/manifests/etcd.yaml").read_text())
    assert pod["spec"]["containers"][0]["livenessProbe"]["httpGet"] == {
        "host": "127.0.1.11", "path": "/health?exclude=NOSPACE&serializable=true", "port": 12381, "scheme": "HTTP"}
    kcm = flags(tmp_path / "etc/kubernetes/manifests/kube-controller-manager.yaml")
    assert (kcm["bind-address"], kcm["secure-port"]) == ("127.0.1.11", "11257")
    assert flags(tmp_path / "etc/kubernetes/manifests/kube-scheduler.yaml")["secure-port"] == "11259"
    admin = kubeconfig(tmp_path / "etc/kubernetes/admin.conf")
    assert admin["clusters"][0]["cluster"]["server"] == "https://127.0.1.11:16443"


def test_external_ca_and_external_etcd(tmp_path):
    cluster = pki.kubeadm_cluster(NOW, key="ecdsa", external_ca=True, external_etcd=True,
                                  control_plane_endpoint="lb:6443")
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=NOW, init_node=True)
    got = files(tmp_path)
    assert "etc/kubernetes/pki/ca.crt" in got and "etc/kubernetes/pki/ca.key" not in got
    assert "etc/kubernetes/pki/front-proxy-ca.key" in got
    assert not [f for f in got if "etcd" in f]
    kcm = flags(tmp_path / "etc/kubernetes/manifests/kube-controller-manager.yaml")
    assert kcm["cluster-signing-cert-file"] == "" and kcm["cluster-signing-key-file"] == ""
    assert signed_by(cert(tmp_path / "etc/kubernetes/pki/apiserver.crt"), cert(tmp_path / "etc/kubernetes/pki/ca.crt"))


# ------------------------------------------------------------------------------------------
# Profiles, signing primitives, files
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", [pki.KUBEADM, pki.KUBEADM_V128, pki.K3S_LEGACY, pki.K3S_CURRENT, pki.RKE1,
                                     pki.KUBELET_SERVING, pki.KUBELET_CLIENT])
@pytest.mark.parametrize("days", [("expires_in_days", 20), ("expired_days_ago", 3)])
def test_issued_for_round_trip(profile, days):
    """issued_for inverts each profile's NotAfter rule (CA made earlier and long-lived: no floor or cap)."""
    option, n = days
    issued = profile.issued_for(NOW, **{option: n})
    ca = pki.new_ca("ca", pki.KUBEADM, issued - 10 * DAY, "ecdsa")
    leaf = pki.new_leaf("leaf", ca, profile, issued, "ecdsa")
    want = NOW + n * DAY if option == "expires_in_days" else NOW - n * DAY
    assert leaf.cert.not_valid_after_utc == want


def test_issued_for_examples():
    assert pki.KUBEADM_V128.issued_for(NOW, expires_in_days=20) == NOW - 345 * DAY
    assert pki.K3S_LEGACY.issued_for(NOW, expired_days_ago=3) == NOW - 368 * DAY
    assert pki.K3S_CURRENT.issued_for(NOW, expires_in_days=20) == NOW - 345 * DAY + HOUR
    assert pki.RKE1.issued_for(NOW, expires_in_days=20, ca=True) == NOW - 3630 * DAY
    assert pki.KUBEADM.issued_for(NOW) == NOW
    with pytest.raises(ValueError):
        pki.KUBEADM.issued_for(NOW, expires_in_days=1, expired_days_ago=1)
    with pytest.raises(ValueError):
        pki.utc(dt.datetime(2026, 1, 1))


def test_serial_zero_ca_is_validly_signed():
    ca = pki.new_ca("zero", pki.K3S_LEGACY, NOW, "rsa")
    assert serial(ca.cert) == 0
    assert signed_by(ca.cert, ca.cert)
    leaf = pki.new_leaf("leaf", ca, pki.K3S_LEGACY, NOW, "ecdsa")
    assert signed_by(leaf.cert, ca.cert)
    ca_ec = pki.new_ca("zero-ec", pki.K3S_LEGACY, NOW, "ecdsa")
    assert serial(ca_ec.cert) == 0 and signed_by(ca_ec.cert, ca_ec.cert)


def test_write_file_is_atomic_and_sets_mode(tmp_path):
    target = tmp_path / "a" / "b.key"
    pki.write_file(target, b"one", 0o600)
    pki.write_file(target, "two", 0o640)
    assert target.read_bytes() == b"two" and mode(target) == 0o640
    assert os.listdir(target.parent) == ["b.key"]


# ------------------------------------------------------------------------------------------
# k3s / RKE2
# ------------------------------------------------------------------------------------------

K3S_CA_AT = NOW - 500 * DAY
K3S_LEAF_AT = NOW - 40 * DAY


@pytest.fixture(scope="module")
def k3s(tmp_path_factory):
    base = tmp_path_factory.mktemp("k3s")
    cluster = pki.k3s_cluster("k3s", NOW, ca_issued_at=K3S_CA_AT)
    server = pki.build_k3s_server(base / "server", cluster, "srv1", "10.0.0.21", now=NOW, leaf_issued_at=K3S_LEAF_AT)
    agent = pki.build_k3s_agent(base / "agent", cluster, "agt1", "10.0.0.22", now=NOW)
    return {"cluster": cluster, "server": server, "agent": agent}


@pytest.fixture(scope="module")
def rke2(tmp_path_factory):
    base = tmp_path_factory.mktemp("rke2")
    cluster = pki.k3s_cluster("rke2", NOW, ca_issued_at=K3S_CA_AT, style="current")
    server = pki.build_k3s_server(base / "server", cluster, "srv1", "10.0.0.31", now=NOW, leaf_issued_at=K3S_LEAF_AT)
    return {"cluster": cluster, "server": server}


def tls_files(prog: str) -> set[str]:
    pairs = ["client-admin", "client-auth-proxy", "client-ca", "client-controller", f"client-{prog}-cloud-controller",
             "client-kube-apiserver", "client-scheduler", "client-supervisor", "request-header-ca", "server-ca",
             "serving-kube-apiserver", "etcd/server-ca", "etcd/peer-ca", "etcd/client", "etcd/server-client",
             "etcd/peer-server-client", "temporary-certs/apiserver-loopback-client__",
             "kube-controller-manager/kube-controller-manager", "kube-scheduler/kube-scheduler"]
    return ({f"{b}.{e}" for b in pairs for e in ("crt", "key")}
            | {"client-ca.nochain.crt", "server-ca.nochain.crt", "client-kube-proxy.key", f"client-{prog}-controller.key",
               "client-kubelet.key", "serving-kubelet.key", "service.key", "service.current.key", "dynamic-cert.json"})


@pytest.mark.parametrize("prog", ["k3s", "rke2"])
def test_k3s_vector1_2_server_tls_layout_and_modes(prog, k3s, rke2):
    root = (k3s if prog == "k3s" else rke2)["server"].root
    tls = p(root, f"var/lib/rancher/{prog}/server/tls")
    assert {str(f.relative_to(tls)) for f in tls.rglob("*") if f.is_file()} == tls_files(prog)
    assert mode(tls) == 0o700
    for f in tls.rglob("*"):
        if f.suffix == ".crt":
            assert mode(f) == 0o644, f
        elif f.suffix == ".key":
            assert mode(f) == 0o600, f


@pytest.mark.parametrize("prog", ["k3s", "rke2"])
def test_k3s_vector3_agent_dir(prog, k3s, rke2):
    for tree in ([k3s["server"], k3s["agent"]] if prog == "k3s" else [rke2["server"]]):
        agent = p(tree.root, f"var/lib/rancher/{prog}/agent")
        want = {"client-ca.crt", "server-ca.crt", "kubelet.kubeconfig", "kubeproxy.kubeconfig",
                f"{prog}controller.kubeconfig"} | {f"{b}.{e}" for b in ("client-kubelet", "serving-kubelet",
                                                                        "client-kube-proxy", f"client-{prog}-controller")
                                                   for e in ("crt", "key")}
        assert {f.name for f in agent.iterdir()} == want
        assert all(mode(f) == 0o600 for f in agent.iterdir() if f.suffix in (".crt", ".key"))
    node, ip = ("agt1", "10.0.0.22") if prog == "k3s" else ("srv1", "10.0.0.31")
    root = (k3s["agent"] if prog == "k3s" else rke2["server"]).root
    agent = p(root, f"var/lib/rancher/{prog}/agent")
    serving = cert(agent / "serving-kubelet.crt")
    assert cn(serving) == node and sans(serving) == ([node, "localhost"], ["127.0.0.1", ip])
    assert signed_by(serving, cert(agent / "server-ca.crt"))
    client = cert(agent / "client-kubelet.crt")
    assert (cn(client), orgs(client)) == (f"system:node:{node}", ["system:nodes"])
    assert signed_by(client, cert(agent / "client-ca.crt"))
    conf = kubeconfig(agent / "kubelet.kubeconfig")
    assert conf["users"][0]["user"]["client-certificate"] == f"/var/lib/rancher/{prog}/agent/client-kubelet.crt"
    assert p(root, conf["clusters"][0]["cluster"]["certificate-authority"]).is_file()


@pytest.mark.parametrize("prog", ["k3s", "rke2"])
def test_k3s_vector4_cas(prog, k3s, rke2):
    fx = k3s if prog == "k3s" else rke2
    tls = p(fx["server"].root, f"var/lib/rancher/{prog}/server/tls")
    pattern = re.compile(rf"^({prog}-(server|client|request-header)-ca|etcd-(server|peer)-ca)@(\d{{10}})$")
    for rel in ("server-ca.crt", "client-ca.crt", "request-header-ca.crt", "etcd/server-ca.crt", "etcd/peer-ca.crt"):
        ca = cert(tls / rel)
        m = pattern.match(cn(ca))
        assert m and int(m.group(4)) == int(K3S_CA_AT.timestamp()), cn(ca)
        assert orgs(ca) == [] and serial(ca) == 0
        assert ca.not_valid_after_utc - ca.not_valid_before_utc == 3650 * DAY
        assert ext(ca, x509.KeyUsage).key_cert_sign and signed_by(ca, ca)
        nb = K3S_CA_AT if fx["cluster"].style == "legacy" else K3S_CA_AT - HOUR
        assert ca.not_valid_before_utc == nb
    assert cn(cert(tls / "server-ca.crt")).startswith(f"{prog}-server-ca@")
    assert len(certs(tls / "server-ca.nochain.crt")) == 1


@pytest.mark.parametrize("prog", ["k3s", "rke2"])
def test_k3s_vector5_6_leaves(prog, k3s, rke2):
    fx = k3s if prog == "k3s" else rke2
    tls = p(fx["server"].root, f"var/lib/rancher/{prog}/server/tls")
    expected = {  # file -> (CN, O, EKU)
        "client-admin": ("system:admin", ["system:masters"], [CLIENT]),
        "client-supervisor": (f"system:{prog}-supervisor", ["system:masters"], [CLIENT]),
        "client-controller": ("system:kube-controller-manager", [], [CLIENT]),
        "client-scheduler": ("system:kube-scheduler", [], [CLIENT]),
        "client-kube-apiserver": ("system:apiserver", ["system:masters"], [CLIENT]),
        f"client-{prog}-cloud-controller": (f"{prog}-cloud-controller-manager", [], [CLIENT]),
        "client-auth-proxy": ("system:auth-proxy", [], [CLIENT]),
        "serving-kube-apiserver": ("kube-apiserver", [], [SERVER]),
        "etcd/client": ("etcd-client", [], [CLIENT]),
        "etcd/server-client": ("etcd-server", [], [SERVER, CLIENT]),
        "etcd/peer-server-client": ("etcd-peer", [], [SERVER, CLIENT]),
        "kube-controller-manager/kube-controller-manager": ("kube-controller-manager", [], [SERVER]),
        "kube-scheduler/kube-scheduler": ("kube-scheduler", [], [SERVER]),
    }
    for base, (want_cn, want_o, want_eku) in expected.items():
        chain = certs(tls / f"{base}.crt")
        leaf = chain[0]
        assert len(chain) >= 2 and not ext(leaf, x509.BasicConstraints)          # leaf first
        assert (cn(leaf), orgs(leaf), eku(leaf)) == (want_cn, want_o, want_eku), base
        assert signed_by(leaf, chain[1])
        if fx["cluster"].style == "legacy":
            assert leaf.not_valid_before_utc == chain[1].not_valid_before_utc
            assert leaf.not_valid_after_utc == K3S_LEAF_AT + 365 * DAY
        else:
            assert leaf.not_valid_before_utc == K3S_LEAF_AT - HOUR
            assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == 365 * DAY
        k = key(tls / f"{base}.key")
        assert isinstance(k, ec.EllipticCurvePrivateKey) and isinstance(k.curve, ec.SECP256R1) and same_key(leaf, k)
        assert (tls / f"{base}.key").read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
        assert 220 <= (tls / f"{base}.key").stat().st_size <= 240
    svc = tls / "service.key"
    assert svc.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----") and key(svc).key_size == 2048
    assert 1600 <= svc.stat().st_size <= 1700
    api = cert(tls / "serving-kube-apiserver.crt")
    ip = "10.0.0.21" if prog == "k3s" else "10.0.0.31"
    assert sans(api) == (["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                          "kubernetes.default.svc.cluster.local", "localhost", "srv1"],
                         ["127.0.0.1", "::1", ip, "10.43.0.1"])
    assert sans(cert(tls / "etcd/server-client.crt"))[0][0] == "kine.sock"
    assert signed_by(cert(tls / "etcd/peer-server-client.crt"), cert(tls / "etcd/peer-ca.crt"))
    assert signed_by(cert(tls / "client-auth-proxy.crt"), cert(tls / "request-header-ca.crt"))


@pytest.mark.parametrize("value,expected", [
    ("::1", "listener.cattle.io/cn-__1-f16284"),
    ("fe80::1", "listener.cattle.io/cn-fe80__1-6a8c64"),
    ("127.0.0.1", "listener.cattle.io/cn-127.0.0.1"),
    ("ip-172-31-26-138.us-west-2.compute.internal", "listener.cattle.io/cn-ip-172-31-26-138.us-west-2.compute-1b361c"),
])
def test_annotation_key_vectors(value, expected):
    assert pki.annotation_key(value) == expected


@pytest.mark.parametrize("prog", ["k3s", "rke2"])
def test_k3s_vector11_12_dynamic_cert(prog, k3s, rke2):
    fx = k3s if prog == "k3s" else rke2
    tree = fx["server"]
    path = p(tree.root, f"var/lib/rancher/{prog}/server/tls/dynamic-cert.json")
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    secret = json.loads(raw)
    assert secret == tree.secret
    assert mode(path) == (0o644 if fx["cluster"].style == "legacy" else 0o600)
    assert secret["type"] == "kubernetes.io/tls"
    assert (secret["metadata"]["name"], secret["metadata"]["namespace"]) == (f"{prog}-serving", "kube-system")
    ann = secret["metadata"]["annotations"]
    cns = {k: v for k, v in ann.items() if k.startswith("listener.cattle.io/cn-")}
    assert all(pki.annotation_key(v) == k for k, v in cns.items())
    ip = "10.0.0.21" if prog == "k3s" else "10.0.0.31"
    assert set(cns.values()) == {"10.43.0.1", "127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default",
                                 "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", ip, "srv1"}
    assert ann["listener.cattle.io/cn-__1-f16284"] == "::1"
    chain = certs_in(base64.b64decode(secret["data"]["tls.crt"]))
    leaf = chain[0]
    assert ann["listener.cattle.io/fingerprint"] == "SHA1=" + leaf.fingerprint(hashes.SHA1()).hex().upper()
    assert re.fullmatch(r"SHA1=[0-9A-F]{40}", ann["listener.cattle.io/fingerprint"])
    assert (cn(leaf), orgs(leaf), eku(leaf)) == (prog, [prog], [SERVER])
    dns, ips = sans(leaf)
    assert set(dns) | set(ips) == set(cns.values()) and dns == sorted(dns)
    server_ca = cert(p(tree.root, f"var/lib/rancher/{prog}/server/tls/server-ca.crt"))
    assert chain[1] == server_ca and signed_by(leaf, server_ca)
    k = serialization.load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
    assert base64.b64decode(secret["data"]["tls.key"]).startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert isinstance(k.curve, ec.SECP256R1) and same_key(leaf, k)


def test_k3s_served_secret_can_be_older_than_files(k3s, tmp_path):
    cluster = k3s["cluster"]
    old = pki.serving_secret(cluster, "srv1", "10.0.0.21", issued_at=pki.K3S_LEGACY.issued_for(NOW, expired_days_ago=5))
    served = certs_in(base64.b64decode(old["data"]["tls.crt"]))[0]
    assert served.not_valid_after_utc == NOW - 5 * DAY
    # and the same split on disk: fresh leaves, expired dynamic-cert.json
    tree = pki.build_k3s_server(tmp_path, cluster, "srv1", "10.0.0.21", now=NOW, leaf_issued_at=NOW,
                                serving_issued_at=NOW - 400 * DAY)
    tls = tmp_path / "var/lib/rancher/k3s/server/tls"
    assert cert(tls / "serving-kube-apiserver.crt").not_valid_after_utc == NOW + 365 * DAY
    cached = certs_in(base64.b64decode(json.loads((tls / "dynamic-cert.json").read_text())["data"]["tls.crt"]))[0]
    assert cached.not_valid_after_utc == NOW - 35 * DAY
    assert tree.secret["metadata"]["annotations"]["listener.cattle.io/fingerprint"] == \
        "SHA1=" + cached.fingerprint(hashes.SHA1()).hex().upper()


@pytest.mark.parametrize("prog", ["k3s", "rke2"])
def test_k3s_vector14_admin_kubeconfig(prog, k3s, rke2):
    root = (k3s if prog == "k3s" else rke2)["server"].root
    path = p(root, f"etc/rancher/{prog}/{prog}.yaml")
    conf = kubeconfig(path)
    assert mode(path) == 0o600
    assert (conf["clusters"][0]["name"], conf["users"][0]["name"], conf["contexts"][0]["name"],
            conf["current-context"]) == ("default",) * 4
    assert conf["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    tls = p(root, f"var/lib/rancher/{prog}/server/tls")
    assert base64.b64decode(conf["clusters"][0]["cluster"]["certificate-authority-data"]) == \
        (tls / "server-ca.crt").read_bytes()
    chain = certs_in(base64.b64decode(conf["users"][0]["user"]["client-certificate-data"]))
    assert chain[0] == cert(tls / "client-admin.crt") and chain[1] == cert(tls / "client-ca.crt")


# ------------------------------------------------------------------------------------------
# RKE1
# ------------------------------------------------------------------------------------------

RKE_CA_AT = NOW - 1000 * DAY
RKE_LEAF_AT = NOW - 200 * DAY
RKE_NODES = [pki.RkeNode("10.0.0.1", ("controlplane", "etcd")),
             pki.RkeNode("10.0.0.2", ("etcd",), internal_address="192.168.0.2"),
             pki.RkeNode("10.0.0.3", ("worker",), hostname_override="node1")]


@pytest.fixture(scope="module")
def rke(tmp_path_factory):
    base = tmp_path_factory.mktemp("rke1")
    cluster = pki.rke1_cluster(RKE_NODES, NOW, ca_issued_at=RKE_CA_AT, leaf_issued_at=RKE_LEAF_AT)
    roots = {n.address: pki.build_rke1_node(base / n.address, cluster, n.address,
                                            kubelet_serving_issued_at=dt.datetime.fromtimestamp(1700000000,
                                                                                                dt.timezone.utc)).root
             for n in RKE_NODES}
    admin = pki.write_rke1_admin(base / "admin", cluster)
    return {"cluster": cluster, "roots": roots, "admin": admin.root}


def ssl(rke, address: str) -> Path:
    return p(rke["roots"][address], "etc/kubernetes/ssl")


def test_rke1_vector16_files_per_role(rke):
    common = {"kube-ca.pem", "kube-proxy.pem", "kube-proxy-key.pem", "kube-node.pem", "kube-node-key.pem",
              "kubecfg-kube-proxy.yaml", "kubecfg-kube-node.yaml"}
    etcd = {f"kube-etcd-{a}{s}.pem" for a in ("10-0-0-1", "192-168-0-2") for s in ("", "-key")}
    cp_components = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-service-account-token",
                     "kube-apiserver-requestheader-ca", "kube-apiserver-proxy-client")
    with_kubecfg = ("kube-controller-manager", "kube-scheduler", "kube-apiserver-requestheader-ca",
                    "kube-apiserver-proxy-client")
    cp = ({"kube-ca-key.pem"} | {f"{n}{s}.pem" for n in cp_components for s in ("", "-key")}
          | {f"kubecfg-{n}.yaml" for n in with_kubecfg})
    assert {f.name for f in ssl(rke, "10.0.0.1").iterdir()} == common | etcd | cp
    assert {f.name for f in ssl(rke, "10.0.0.2").iterdir()} == common | etcd
    assert {f.name for f in ssl(rke, "10.0.0.3").iterdir()} == common
    for address in rke["roots"]:
        assert all(mode(f) == 0o600 for f in ssl(rke, address).iterdir())
        assert (ssl(rke, address) / "kube-ca.pem").read_bytes() == (ssl(rke, "10.0.0.1") / "kube-ca.pem").read_bytes()


def test_rke1_vector17_validity_subjects_eku(rke):
    d = ssl(rke, "10.0.0.1")
    ca = cert(d / "kube-ca.pem")
    assert cn(ca) == "kube-ca" and serial(ca) == 0 and key(d / "kube-ca-key.pem").key_size == 2048
    assert ca.not_valid_before_utc == RKE_CA_AT and ca.not_valid_after_utc - ca.not_valid_before_utc == 3650 * DAY
    assert sans(ca) == ([], [])
    rh = cert(d / "kube-apiserver-requestheader-ca.pem")
    expected = {  # file -> (CN, O, EKU, CA)
        "kube-apiserver": ("kube-apiserver", [], [CLIENT, SERVER], ca),
        "kube-controller-manager": ("system:kube-controller-manager", [], [CLIENT], ca),
        "kube-scheduler": ("system:kube-scheduler", [], [CLIENT], ca),
        "kube-proxy": ("system:kube-proxy", [], [CLIENT], ca),
        "kube-node": ("system:node", ["system:nodes"], [CLIENT], ca),
        "kube-service-account-token": ("kube-service-account-token", [], [CLIENT], ca),
        "kube-apiserver-proxy-client": ("kube-apiserver-proxy-client", [], [CLIENT, SERVER], rh),
        "kube-etcd-10-0-0-1": ("kube-etcd", [], [CLIENT, SERVER], ca),
        "kube-etcd-192-168-0-2": ("kube-etcd", [], [CLIENT, SERVER], ca),
    }
    for name, (want_cn, want_o, want_eku, issuer) in expected.items():
        c = cert(d / f"{name}.pem")
        assert (cn(c), orgs(c), eku(c)) == (want_cn, want_o, want_eku), name
        assert signed_by(c, issuer), name
        assert c.not_valid_before_utc == issuer.not_valid_before_utc == RKE_CA_AT
        assert c.not_valid_after_utc == RKE_LEAF_AT + 3650 * DAY
        k = key(d / f"{name}-key.pem")
        assert isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048 and same_key(c, k)
        assert (d / f"{name}-key.pem").read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert sans(cert(d / "kube-apiserver.pem")) == (
        ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
        ["10.0.0.1", "127.0.0.1", "10.43.0.1"])
    assert sans(cert(d / "kube-etcd-192-168-0-2.pem"))[1] == ["10.0.0.1", "10.0.0.2", "192.168.0.2", "127.0.0.1",
                                                              "10.43.0.1"]


def test_rke1_kubecfgs_reference_files(rke):
    root = rke["roots"]["10.0.0.1"]
    conf = kubeconfig(ssl(rke, "10.0.0.1") / "kubecfg-kube-node.yaml")
    assert conf["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert (conf["clusters"][0]["name"], conf["users"][0]["name"]) == ("local", "kube-node-local")
    for ref in (conf["clusters"][0]["cluster"]["certificate-authority"], conf["users"][0]["user"]["client-certificate"],
                conf["users"][0]["user"]["client-key"]):
        assert p(root, ref).is_file()


def test_rke1_vector18_kubelet_self_signed(rke):
    for address, host in (("10.0.0.3", "node1"), ("10.0.0.1", "10.0.0.1")):
        chain = certs(p(rke["roots"][address], "var/lib/kubelet/pki/kubelet.crt"))
        leaf, ca = chain
        assert (cn(leaf), cn(ca)) == (f"{host}@1700000000", f"{host}-ca@1700000000")
        assert (serial(leaf), serial(ca)) == (2, 1)
        assert signed_by(leaf, ca)
        assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == 365 * DAY
        assert ca.not_valid_after_utc - ca.not_valid_before_utc == 365 * DAY
        assert leaf.public_key().key_size == 2048
    assert sans(cert(p(rke["roots"]["10.0.0.1"], "var/lib/kubelet/pki/kubelet.crt"))) == ([], ["10.0.0.1"])


def test_rke1_vector19_rkestate(rke):
    path = rke["admin"] / "cluster.rkestate"
    text = path.read_text()
    assert mode(path) == 0o600
    assert text.startswith('{\n  "desiredState": {\n    "rkeConfig": {')
    state = json.loads(text)
    assert set(state) == {"desiredState", "currentState"}
    keys = {"certificatePEM", "keyPEM", "config", "name", "commonName", "ouName", "envName", "path", "keyEnvName",
            "keyPath", "configEnvName", "configPath"}
    for which in state.values():
        assert {"rkeConfig", "certificatesBundle"} <= set(which)
        bundle = which["certificatesBundle"]
        assert set(bundle) == {"kube-ca", "kube-apiserver-requestheader-ca", "kube-apiserver", "kube-controller-manager",
                               "kube-scheduler", "kube-proxy", "kube-node", "kube-admin", "kube-service-account-token",
                               "kube-apiserver-proxy-client", "kube-etcd-10-0-0-1", "kube-etcd-192-168-0-2"}
        for name, entry in bundle.items():
            assert set(entry) == keys and entry["name"] == name
            special = {"kube-node": "system:node", "kube-admin": "kube-admin",
                       "kube-service-account-token": "kube-service-account-token"}
            assert entry["commonName"] == special.get(name, f"system:{name}")
            assert entry["path"] == f"/etc/kubernetes/ssl/{name}.pem"
        assert bundle["kube-ca"]["envName"] == "KUBE_CA" and bundle["kube-ca"]["keyEnvName"] == "KUBE_CA_KEY"
        assert bundle["kube-node"]["configPath"] == "/etc/kubernetes/ssl/kubecfg-kube-node.yaml"
        assert bundle["kube-node"]["ouName"] == "system:nodes"
        assert bundle["kube-admin"]["configPath"] == "./kube_config_cluster.yml"
        assert bundle["kube-ca"]["certificatePEM"].encode() == (ssl(rke, "10.0.0.1") / "kube-ca.pem").read_bytes()
        assert which["rkeConfig"]["nodes"][1]["internalAddress"] == "192.168.0.2"
    assert "encryptionConfig" not in state["currentState"]          # omitempty without secrets encryption


def test_rke1_admin_kubeconfig_and_cluster_yml(rke):
    conf_path = rke["admin"] / "kube_config_cluster.yml"
    conf = kubeconfig(conf_path)
    assert mode(conf_path) == 0o600
    assert conf["clusters"][0]["cluster"]["server"] == "https://10.0.0.1:6443"
    assert (conf["current-context"], conf["users"][0]["name"]) == ("local", "kube-admin-local")
    admin = kc_cert(conf)
    assert (cn(admin), orgs(admin)) == ("kube-admin", ["system:masters"])
    assert signed_by(admin, cert(ssl(rke, "10.0.0.1") / "kube-ca.pem"))
    yml_path = rke["admin"] / "cluster.yml"
    text = yml_path.read_text()
    assert text.startswith("# If you intended to deploy Kubernetes in an air-gapped environment,")
    config = yaml.safe_load(text)
    assert mode(yml_path) == 0o640 and "generate_serving_certificate" not in config["services"]["kubelet"]
    assert [(n["address"], n["role"]) for n in config["nodes"]] == [(n.address, list(n.roles)) for n in RKE_NODES]
    assert "kubelet" in config["services"]


def test_rke1_secrets_encryption(tmp_path):
    nodes = [pki.RkeNode("10.0.0.9", ("controlplane", "etcd", "worker"))]
    cluster = pki.rke1_cluster(nodes, NOW, secrets_encryption=True)
    pki.build_rke1_node(tmp_path / "n", cluster, "10.0.0.9")
    pki.write_rke1_admin(tmp_path / "a", cluster)
    state = json.loads((tmp_path / "a/cluster.rkestate").read_text())
    enc = yaml.safe_load(state["currentState"]["encryptionConfig"])
    assert enc["kind"] == "EncryptionConfiguration"
    assert (tmp_path / "n/etc/kubernetes/ssl/encryption.yaml").read_text() == state["currentState"]["encryptionConfig"]


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dist,probe", [
    ("kubeadm", "etc/kubernetes/pki/apiserver.crt"),
    ("rke1", "etc/kubernetes/ssl/kube-apiserver.pem"),
    ("k3s", "var/lib/rancher/k3s/server/tls/serving-kube-apiserver.crt"),
    ("rke2", "var/lib/rancher/rke2/server/tls/serving-kube-apiserver.crt"),
])
def test_cli_expires_in_days(dist, probe, tmp_path, capsys):
    assert pki.main([dist, "--root", str(tmp_path), "--expires-in-days", "20", "--now", "2026-11-23T12:00:00Z"]) == 0
    assert cert(tmp_path / probe).not_valid_after_utc == NOW + 20 * DAY
    if dist in ("kubeadm", "rke1"):        # the CLI ages the kubelet's self-signed cert the same way
        assert cert(tmp_path / "var/lib/kubelet/pki/kubelet.crt").not_valid_after_utc == NOW + 20 * DAY
    assert "/" + probe in capsys.readouterr().out


def test_cli_runs_as_a_script(tmp_path):
    script = Path(pki.__file__)
    run = subprocess.run([sys.executable, str(script), "kubeadm", "--root", str(tmp_path), "--style", "v1.28",
                          "--key", "ecdsa", "--expired-days-ago", "2", "--now", "2026-11-23T12:00:00Z"],
                         capture_output=True, text=True, check=False, cwd=script.parents[2])
    assert run.returncode == 0, run.stderr
    c = cert(tmp_path / "etc/kubernetes/pki/apiserver.crt")
    assert c.not_valid_after_utc == NOW - 2 * DAY
    assert not (tmp_path / "etc/kubernetes/super-admin.conf").exists()
    bad = subprocess.run([sys.executable, str(script), "k3s", "--root", str(tmp_path / "x"), "--style", "v1.28"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "--style" in bad.stderr
