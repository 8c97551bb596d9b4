"""PKI trees as kubeadm, RKE1, k3s and RKE2 leave them on a node, for unit tests, the demo and the lab.

A builder writes a *rootfs tree*: a directory standing for "/" of one node, e.g.
``<root>/etc/kubernetes/pki/apiserver.crt``.  Names, subjects, SANs, key types, validity rules
and file modes follow the research notes (kubeadm.md, rancher.md); a comment says why wherever
the real tools do something surprising.

Time never comes from the system clock except as the default of ``now``.  Builders take the
*issue time* of what they sign (``ca_issued_at``, ``leaf_issued_at``, ...).  A ``Profile`` turns
an issue time into NotBefore/NotAfter exactly as one generation of the issuing code does, and
``Profile.issued_for(now, expires_in_days=N)`` / ``expired_days_ago=N`` give the issue time that
puts a certificate's NotAfter N days after / before ``now``.  Issue times default to ``now``;
kubelet and agent certificates default to the node's leaf issue time where the node has leaves.

Library use (the module is importable as ``ansible_collections.kubepki.fleet.tests.lab.pki``)::

    now = pki.utc("2026-11-23T12:00:00Z")
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 400 * pki.DAY,
                                  control_plane_endpoint="lb.example.com:6443")
    pki.build_kubeadm_control_plane(root, cluster, "cp1", "10.0.0.11", now=now, init_node=True,
                                    leaf_issued_at=pki.KUBEADM.issued_for(now, expires_in_days=20))

CLI (demos): ``python tests/lab/pki.py kubeadm --root /tmp/cp1 --expires-in-days 20``; see ``--help``.
Dependencies: cryptography and PyYAML.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import ipaddress
import json
import os
import re
import secrets
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

datetime = _dt.datetime
timedelta = _dt.timedelta
UTC = _dt.timezone.utc
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------

def utc(value: datetime | str | None = None) -> datetime:
    """Return an aware UTC datetime truncated to whole seconds (X.509 keeps no fractions).

    ``value``: None (the current time), an aware datetime, or an ISO 8601 string ('Z' allowed).
    """
    if value is None:
        value = datetime.now(UTC)
    elif isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware (UTC) datetime")
    return value.astimezone(UTC).replace(microsecond=0)


def _ts(t: datetime) -> int:
    return int(t.timestamp())


def _rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Profile:
    """How one generation of issuing code sets validity, serials and a few extensions.

    ``*_backdate``: NotBefore = issue - backdate.  ``*_after_from_not_before``: NotAfter counts
    the lifetime from NotBefore instead of from the issue time.  ``leaf_backdate=None`` pins a
    leaf's NotBefore to its CA's NotBefore (old client-go/dynamiclistener/RKE code).
    """

    name: str
    ca_lifetime: timedelta
    leaf_lifetime: timedelta
    ca_backdate: timedelta = timedelta(0)
    ca_after_from_not_before: bool = False
    ca_serial_zero: bool = False
    ca_dns_san: bool = False                 # client-go/kubeadm CAs carry their CN as DNS SAN
    leaf_backdate: timedelta | None = None
    leaf_after_from_not_before: bool = False
    leaf_not_before_floor_ca: bool = False   # dynamiclistener >= 0.7.3: max(issue - 1h, CA NotBefore)
    leaf_not_after_cap_ca: bool = False      # kube-controller-manager signer truncates to the CA
    leaf_basic_constraints: bool = False     # leaf carries basicConstraints CA:FALSE

    def ca_validity(self, issued: datetime) -> tuple[datetime, datetime]:
        """NotBefore/NotAfter of a CA created at ``issued``."""
        nb = issued - self.ca_backdate
        return nb, (nb if self.ca_after_from_not_before else issued) + self.ca_lifetime

    def leaf_validity(self, issued: datetime, ca: x509.Certificate) -> tuple[datetime, datetime]:
        """NotBefore/NotAfter of a leaf signed at ``issued`` by ``ca``."""
        ca_nb, ca_na = ca.not_valid_before_utc, ca.not_valid_after_utc
        if self.leaf_backdate is None:
            nb = ca_nb
        else:
            nb = issued - self.leaf_backdate
            if self.leaf_not_before_floor_ca:
                nb = max(nb, ca_nb)
        na = (nb if self.leaf_after_from_not_before else issued) + self.leaf_lifetime
        if self.leaf_not_after_cap_ca:
            na = min(na, ca_na)
        return nb, na

    def issued_for(self, now: datetime | None = None, *, expires_in_days: float | None = None,
                   expired_days_ago: float | None = None, ca: bool = False) -> datetime:
        """Issue time that makes a leaf (or, with ``ca=True``, a CA) expire N days after/before ``now``.

        Example: with a 365-day leaf, ``expires_in_days=20`` gives ``now - 345 days``.  CA floors and
        caps are ignored (they depend on the CA, not on this profile).  Neither option: ``now``.
        """
        now = utc(now)
        if expires_in_days is not None and expired_days_ago is not None:
            raise ValueError("give expires_in_days or expired_days_ago, not both")
        if expires_in_days is None and expired_days_ago is None:
            return now
        target = now + timedelta(days=expires_in_days) if expires_in_days is not None \
            else now - timedelta(days=expired_days_ago)
        if ca:
            lifetime, backdate, from_nb = self.ca_lifetime, self.ca_backdate, self.ca_after_from_not_before
        else:
            lifetime, from_nb = self.leaf_lifetime, self.leaf_after_from_not_before
            backdate = self.leaf_backdate or timedelta(0)
        return utc(target - lifetime + (backdate if from_nb else timedelta(0)))


# kubeadm v1.31+ (v1beta4 validity fields): start - 5m .. start + 8760h / 87600h, random serials.
KUBEADM = Profile("kubeadm", ca_lifetime=87600 * HOUR, leaf_lifetime=8760 * HOUR, ca_backdate=5 * MINUTE,
                  ca_dns_san=True, leaf_backdate=5 * MINUTE, leaf_basic_constraints=True)
# kubeadm v1.28-v1.30: leaf NotBefore = CA NotBefore, NotAfter = issue + 365d; CA backdated 5m (>= 1.28).
KUBEADM_V128 = Profile("kubeadm-v1.28", ca_lifetime=3650 * DAY, leaf_lifetime=365 * DAY, ca_backdate=5 * MINUTE,
                       ca_dns_san=True)
# k3s/RKE2 with dynamiclistener < v0.7.3: CA serial 0, NotBefore = now; leaf NotBefore = CA NotBefore.
K3S_LEGACY = Profile("k3s-legacy", ca_lifetime=3650 * DAY, leaf_lifetime=365 * DAY, ca_serial_zero=True)
# dynamiclistener >= v0.7.3 (Oct 2025): everything backdated 1h and counted from NotBefore.
K3S_CURRENT = Profile("k3s-current", ca_lifetime=3650 * DAY, leaf_lifetime=365 * DAY, ca_backdate=HOUR,
                      ca_after_from_not_before=True, ca_serial_zero=True, leaf_backdate=HOUR,
                      leaf_after_from_not_before=True, leaf_not_before_floor_ca=True)
# RKE >= v0.1.18/v0.2.0: 10-year leaves pinned to the CA's NotBefore.
RKE1 = Profile("rke1", ca_lifetime=3650 * DAY, leaf_lifetime=3650 * DAY, ca_serial_zero=True)
# client-go GenerateSelfSignedCertKey (kubelet.crt): private CA and leaf, now - 1h .. +1y.
KUBELET_SERVING = Profile("kubelet-self-signed", ca_lifetime=365 * DAY, leaf_lifetime=365 * DAY, ca_backdate=HOUR,
                          ca_after_from_not_before=True, leaf_backdate=HOUR, leaf_after_from_not_before=True,
                          leaf_basic_constraints=True)
# kube-controller-manager csrsigning (kubelet client certs); leaf-only profile.
KUBELET_CLIENT = Profile("kcm-signer", ca_lifetime=timedelta(0), leaf_lifetime=8760 * HOUR,
                         leaf_backdate=5 * MINUTE, leaf_after_from_not_before=True, leaf_not_after_cap_ca=True,
                         leaf_basic_constraints=True)

KUBEADM_STYLES = {"current": KUBEADM, "v1.28": KUBEADM_V128}
K3S_STYLES = {"legacy": K3S_LEGACY, "current": K3S_CURRENT}


# --------------------------------------------------------------------------------------------
# Keys, signing, PEM
# --------------------------------------------------------------------------------------------

def new_key(kind: str = "rsa") -> PrivateKey:
    """A fresh private key: ``"rsa"`` (RSA 2048) or ``"ecdsa"`` (ECDSA P-256)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key kind {kind!r} (rsa | ecdsa)")


def key_pem(key: PrivateKey) -> bytes:
    """PEM the way Go's keyutil writes it: PKCS#1 'RSA PRIVATE KEY' or SEC1 'EC PRIVATE KEY'."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def cert_pem(*certs: x509.Certificate) -> bytes:
    """Concatenated PEM blocks, in the given order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclasses.dataclass
class Pair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def ski(self) -> x509.SubjectKeyIdentifier | None:
        try:
            return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return None


_EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


def issue(cn: str, key: PrivateKey, *, issuer: Pair | None, not_before: datetime, not_after: datetime,
          orgs: Sequence[str] = (), ca: bool = False, eku: Sequence[str] = (), dns: Sequence[str] = (),
          ips: Sequence[str] = (), serial: int | None = None, basic_constraints: bool = True,
          key_encipherment: bool = True) -> Pair:
    """Sign one certificate the way Go's x509.CreateCertificate lays it out; the only signing function.

    ``issuer=None`` self-signs with ``key``.  ``eku`` lists "server"/"client" in order.  ``serial``:
    None = random in [1, 2^63-1); 0 is allowed (k3s/RKE/old client-go CAs).  Extensions: KeyUsage
    (critical), EKU, BasicConstraints (critical; always on CAs), SKI on CAs, AKI = issuer's SKI,
    SANs (DNS names before IPs, as Go writes them).  Subject O precedes CN, as in Go.
    """
    if not_after <= not_before:
        raise ValueError(f"{cn}: NotAfter {not_after} is not after NotBefore {not_before}")
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = issuer.key if issuer else key
    builder = (x509.CertificateBuilder()
               .subject_name(name)
               .issuer_name(issuer.cert.subject if issuer else name)
               .public_key(key.public_key())
               # cryptography refuses serial 0; sign with 1 and patch below
               .serial_number(1 if serial == 0 else serial or secrets.randbelow(2 ** 63 - 2) + 1)
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=key_encipherment, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=ca, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True))
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage([_EKU[u] for u in eku]), critical=False)
    if ca or basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer is not None and issuer.ski is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer.ski), critical=False)
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    if serial == 0:
        cert = _with_serial_zero(cert, signer)
    return Pair(cert, key)


def _der_span(buf: bytes, pos: int) -> tuple[int, int]:
    """(content start, content end) of the DER TLV at ``pos``."""
    first = buf[pos + 1]
    if first < 0x80:
        return pos + 2, pos + 2 + first
    n = first & 0x7F
    length = int.from_bytes(buf[pos + 2:pos + 2 + n], "big")
    return pos + 2 + n, pos + 2 + n + length


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _with_serial_zero(cert: x509.Certificate, signer: PrivateKey) -> x509.Certificate:
    # TBS starts with version [0] (a0 03 02 01 02) then the serial INTEGER 1 (02 01 01); 0 has the
    # same length, so flip that byte and re-sign the TBS.
    tbs = bytearray(cert.tbs_certificate_bytes)
    start = _der_span(tbs, 0)[0]
    if bytes(tbs[start:start + 8]) != b"\xa0\x03\x02\x01\x02\x02\x01\x01":
        raise AssertionError("unexpected TBSCertificate layout")
    tbs[start + 7] = 0
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs_end = _der_span(der, _der_span(der, 0)[0])[1]
    alg_end = _der_span(der, tbs_end)[1]
    if isinstance(signer, rsa.RSAPrivateKey):
        sig = signer.sign(bytes(tbs), padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = signer.sign(bytes(tbs), ec.ECDSA(hashes.SHA256()))
    content = bytes(tbs) + der[tbs_end:alg_end] + b"\x03" + _der_len(len(sig) + 1) + b"\x00" + sig
    with quiet_serial_zero():
        return x509.load_der_x509_certificate(b"\x30" + _der_len(len(content)) + content)


@contextlib.contextmanager
def quiet_serial_zero() -> Iterator[None]:
    """Silence cryptography's deprecation warning about serial 0, which real k3s/RKE CAs carry.

    cryptography warns when such a certificate is loaded and again when ``serial_number`` is read.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


def new_ca(cn: str, profile: Profile, issued: datetime, key_kind: str = "rsa", orgs: Sequence[str] = ()) -> Pair:
    """A self-signed CA created at ``issued`` as ``profile``'s code creates it."""
    nb, na = profile.ca_validity(utc(issued))
    return issue(cn, new_key(key_kind), issuer=None, not_before=nb, not_after=na, orgs=orgs, ca=True,
                 dns=[cn] if profile.ca_dns_san else (), serial=0 if profile.ca_serial_zero else None)


def new_leaf(cn: str, ca: Pair, profile: Profile, issued: datetime, key_kind: str = "rsa", *,
             orgs: Sequence[str] = (), eku: Sequence[str] = ("client",), dns: Sequence[str] = (),
             ips: Sequence[str] = (), key_encipherment: bool = True, key: PrivateKey | None = None) -> Pair:
    """A leaf signed by ``ca`` at ``issued`` as ``profile``'s code signs it; ``key`` kept when given."""
    nb, na = profile.leaf_validity(utc(issued), ca.cert)
    return issue(cn, key or new_key(key_kind), issuer=ca, not_before=nb, not_after=na, orgs=orgs, eku=eku, dns=dns,
                 ips=ips, basic_constraints=profile.leaf_basic_constraints, key_encipherment=key_encipherment)


def self_signed_serving(host: str, issued: datetime, *, fixed_serials: bool = False,
                        max_age: timedelta = 365 * DAY) -> tuple[Pair, Pair]:
    """client-go GenerateSelfSignedCertKey: (leaf ``<host>@<unix>``, private CA ``<host>-ca@<unix>``).

    RSA 2048, NotBefore = issue - 1h, NotAfter = NotBefore + ``max_age``; SAN = host (IP or DNS).
    Serials are random since client-go 1.28; RKE's copy keeps CA 1 / leaf 2 (``fixed_serials``).
    """
    issued = utc(issued)
    profile = dataclasses.replace(KUBELET_SERVING, ca_lifetime=max_age, leaf_lifetime=max_age)
    nb, na = profile.ca_validity(issued)
    ca = issue(f"{host}-ca@{_ts(issued)}", new_key("rsa"), issuer=None, not_before=nb, not_after=na, ca=True,
               serial=1 if fixed_serials else None)
    nb, na = profile.leaf_validity(issued, ca.cert)
    is_ip = _is_ip(host)
    leaf = issue(f"{host}@{_ts(issued)}", new_key("rsa"), issuer=ca, not_before=nb, not_after=na, eku=["server"],
                 dns=() if is_ip else [host], ips=[host] if is_ip else (), serial=2 if fixed_serials else None)
    return leaf, ca


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _split_sans(values: Iterable[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IPs) in first-seen order."""
    values = list(values)
    return [v for v in values if not _is_ip(v)], [v for v in values if _is_ip(v)]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def write_file(path: str | os.PathLike, data: bytes | str, mode: int) -> None:
    """Write atomically with ``mode``: temp file in the same directory, fsync, chmod, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclasses.dataclass
class Tree:
    """What a builder wrote: ``files`` are paths relative to ``root`` ("/" + path = path on the node)."""

    root: Path
    files: list[str]
    secret: dict | None = None   # k3s/RKE2 servers: the <p>-serving secret (see serving_secret)


class _Writer:
    """Collects writes under one root; every file goes through write_file."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.files: list[str] = []

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    def mkdir(self, rel: str, mode: int) -> None:
        p = self.path(rel)
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, mode)

    def write(self, rel: str, data: bytes | str, mode: int) -> None:
        write_file(self.path(rel), data, mode)
        self.files.append(rel.lstrip("/"))

    def certs(self, rel: str, *certs: x509.Certificate, mode: int = 0o644) -> None:
        self.write(rel, cert_pem(*certs), mode)

    def key(self, rel: str, key: PrivateKey, mode: int = 0o600) -> None:
        self.write(rel, key_pem(key), mode)

    def yaml(self, rel: str, obj: object, mode: int = 0o600) -> None:
        self.write(rel, _yaml(obj), mode)

    def symlink(self, rel: str, target: str) -> None:
        # temp link + rename, the way the kubelet swaps kubelet-client-current.pem
        p = self.path(rel)
        tmp = p.with_name(p.name + ".tmp-link")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, p)
        self.files.append(rel.lstrip("/"))

    def tree(self, **extra) -> Tree:
        return Tree(self.root, sorted(set(self.files)), **extra)


def _yaml(obj: object) -> str:
    # sigs.k8s.io/yaml output: sorted keys, block style, no line folding
    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False, width=1 << 30)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(server: str, *, cluster: str, user: str, context: str, ca: bytes | str,
               cert: bytes | str, key: bytes | str, namespace: str | None = None) -> str:
    """A kubeconfig as client-go's clientcmd serializes it (sorted keys).

    ``ca``/``cert``/``key``: bytes are embedded as ``*-data``, a str is written as a file path.
    """
    def ref(field: str, value: bytes | str) -> dict:
        return {f"{field}-data": _b64(value)} if isinstance(value, bytes) else {field: value}

    ctx = {"cluster": cluster, "user": user}
    if namespace:
        ctx["namespace"] = namespace
    return _yaml({
        "apiVersion": "v1", "kind": "Config", "preferences": {}, "current-context": context,
        "clusters": [{"name": cluster, "cluster": {"server": server, **ref("certificate-authority", ca)}}],
        "contexts": [{"name": context, "context": ctx}],
        "users": [{"name": user, "user": {**ref("client-certificate", cert), **ref("client-key", key)}}],
    })


# --------------------------------------------------------------------------------------------
# Kubelet files shared by kubeadm and RKE1 nodes
# --------------------------------------------------------------------------------------------

KUBELET_PKI = "/var/lib/kubelet/pki"
KUBELET_CLIENT_CURRENT = f"{KUBELET_PKI}/kubelet-client-current.pem"


def _kubelet_pki(w: _Writer, host: str, serving_issued: datetime, *, fixed_serials: bool,
                 client: tuple[str, Pair, datetime] | None = None) -> None:
    """kubelet.crt/.key (self-signed, never rotated) and, with ``client=(node, ca, issued)``, the
    rotating client cert file kubelet-client-<time>.pem (cert + key, 0600) and its -current link."""
    w.mkdir(KUBELET_PKI, 0o755)
    leaf, ca = self_signed_serving(host.lower(), serving_issued, fixed_serials=fixed_serials)
    w.certs(f"{KUBELET_PKI}/kubelet.crt", leaf.cert, ca.cert)
    w.key(f"{KUBELET_PKI}/kubelet.key", leaf.key)
    if client is None:
        return
    node, signer, issued = client
    # ECDSA P-256 whatever the cluster's key type; key encipherment is requested only for RSA
    pair = new_leaf(f"system:node:{node}", signer, KUBELET_CLIENT, issued, "ecdsa", orgs=["system:nodes"],
                    key_encipherment=False)
    # the kubelet names the file after the node's local time; the lab's nodes run in UTC
    name = f"kubelet-client-{utc(issued).strftime('%Y-%m-%d-%H-%M-%S')}.pem"
    w.write(f"{KUBELET_PKI}/{name}", cert_pem(pair.cert) + key_pem(pair.key), 0o600)
    # relative target so the link resolves inside the rootfs tree (the kubelet writes an absolute one)
    w.symlink(KUBELET_CLIENT_CURRENT, name)


# --------------------------------------------------------------------------------------------
# kubeadm
# --------------------------------------------------------------------------------------------

PKI = "/etc/kubernetes/pki"
MANIFESTS = "/etc/kubernetes/manifests"
KUBEADM_IMAGES = {"current": ("v1.31.4", "3.5.15-0"), "v1.28": ("v1.28.15", "3.5.9-0")}


@dataclasses.dataclass
class KubeadmCluster:
    """What every control-plane node of one kubeadm cluster shares: the CAs, sa.key and settings."""

    style: str                       # "current" (v1.31+) | "v1.28"
    profile: Profile
    key_kind: str                    # "rsa" | "ecdsa" (encryptionAlgorithm)
    ca_issued_at: datetime
    ca: Pair
    front_proxy_ca: Pair
    etcd_ca: Pair | None             # None with external etcd
    sa_key: PrivateKey
    cluster_name: str
    control_plane_endpoint: str | None
    service_subnet: str
    dns_domain: str
    external_ca: bool
    # external etcd: its own CA (the etcd cluster's, not kubeadm's) and URL; the user copies its ca.crt and an
    # apiserver-etcd-client pair into pki/ (kubeadm docs setup-ha-etcd-with-kubeadm.md, "Copy the following files")
    external_etcd_ca: Pair | None = None
    external_etcd_url: str | None = None

    @property
    def service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_subnet, strict=False).hosts()))

    @property
    def admins_org(self) -> str:
        # kubernetes#121837 (v1.29) moved admin.conf and apiserver-kubelet-client off system:masters
        return "kubeadm:cluster-admins" if self.style == "current" else "system:masters"


def kubeadm_cluster(now: datetime | None = None, *, ca_issued_at: datetime | None = None, style: str = "current",
                    key: str = "rsa", control_plane_endpoint: str | None = None, cluster_name: str = "kubernetes",
                    service_subnet: str = "10.96.0.0/12", dns_domain: str = "cluster.local",
                    external_ca: bool = False, external_etcd: bool = False,
                    external_etcd_url: str | None = None, leaf_validity: timedelta | None = None) -> KubeadmCluster:
    """Create the cluster-wide kubeadm material once: ca, front-proxy-ca, etcd/ca, sa.key.

    ``style``: "current" (kubeadm v1.31+) or "v1.28" (v1.28-v1.30 validity and subjects).
    ``key``: "rsa" (RSA-2048, default) or "ecdsa" (ECDSA-P256).  ``external_ca``: ca.key is not
    written on nodes.  ``external_etcd``: no etcd CA, etcd certs or etcd manifest; with ``external_etcd_url``
    the external etcd's CA (``external_etcd_ca``, also for the etcd servers' own certs) and the copied client
    material (pki/etcd/ca.crt without key, apiserver-etcd-client) with the apiserver's --etcd-* flags.
    ``leaf_validity``: v1beta4 certificateValidityPeriod (style current only), one year when None.
    """
    if leaf_validity is not None and style != "current":
        raise ValueError("certificateValidityPeriod exists from kubeadm v1.31 (v1beta4) only")
    profile = KUBEADM_STYLES[style]
    if leaf_validity is not None:
        profile = dataclasses.replace(profile, leaf_lifetime=leaf_validity)
    issued = utc(ca_issued_at if ca_issued_at is not None else now)
    return KubeadmCluster(
        style=style, profile=profile, key_kind=key, ca_issued_at=issued,
        ca=new_ca("kubernetes", profile, issued, key),
        front_proxy_ca=new_ca("front-proxy-ca", profile, issued, key),
        etcd_ca=None if external_etcd else new_ca("etcd-ca", profile, issued, key),
        sa_key=new_key(key), cluster_name=cluster_name, control_plane_endpoint=control_plane_endpoint,
        service_subnet=service_subnet, dns_domain=dns_domain, external_ca=external_ca,
        external_etcd_ca=new_ca("etcd-ca", profile, issued, key) if external_etcd and external_etcd_url else None,
        external_etcd_url=external_etcd_url if external_etcd else None)


def kubeadm_cluster_configuration(cl: KubeadmCluster) -> dict:
    """The ClusterConfiguration `kubeadm init` uploads to kube-system/kubeadm-config (phases/uploadconfig), defaults
    applied: v1beta3 up to v1.30; v1beta4 from v1.31 with its validity periods and encryptionAlgorithm
    (cmd/kubeadm/app/apis/kubeadm/v1beta4/defaults.go: 8760h, 87600h, RSA-2048)."""
    config = {"apiVersion": "kubeadm.k8s.io/v1beta3" if cl.style == "v1.28" else "kubeadm.k8s.io/v1beta4",
              "kind": "ClusterConfiguration", "certificatesDir": PKI, "clusterName": cl.cluster_name,
              "imageRepository": "registry.k8s.io", "kubernetesVersion": KUBEADM_IMAGES[cl.style][0],
              "networking": {"dnsDomain": cl.dns_domain, "serviceSubnet": cl.service_subnet},
              "etcd": {"external": {"endpoints": [cl.external_etcd_url]}} if cl.external_etcd_url
              else {"local": {"dataDir": "/var/lib/etcd"}}}
    if cl.control_plane_endpoint:
        config["controlPlaneEndpoint"] = cl.control_plane_endpoint
    if cl.style != "v1.28":
        config.update(certificateValidityPeriod=f"{int(cl.profile.leaf_lifetime / HOUR)}h0m0s",
                      caCertificateValidityPeriod=f"{int(cl.profile.ca_lifetime / HOUR)}h0m0s",
                      encryptionAlgorithm="ECDSA-P256" if cl.key_kind == "ecdsa" else "RSA-2048")
    return config


@dataclasses.dataclass(frozen=True)
class KubeadmNet:
    """Addresses and ports written into manifests and configs.  Defaults are kubeadm's; the lab
    overrides them because all its nodes share one network namespace."""

    apiserver_port: int = 6443
    apiserver_bind_address: str | None = None       # kubeadm sets none (all interfaces)
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380
    etcd_local_host: str | None = "127.0.0.1"       # loopback client listener + the apiserver's etcd URL
    etcd_metrics_url: str = "http://127.0.0.1:2381"
    etcd_data_dir: str = "/var/lib/etcd"
    controller_manager_bind_address: str = "127.0.0.1"
    controller_manager_port: int = 10257
    scheduler_bind_address: str = "127.0.0.1"
    scheduler_port: int = 10259
    kubelet_address: str | None = None              # written into config.yaml only when set
    kubelet_port: int = 10250


def build_kubeadm_control_plane(root: str | os.PathLike, cluster: KubeadmCluster, node_name: str,
                                advertise_address: str, *, now: datetime | None = None,
                                leaf_issued_at: datetime | None = None, init_node: bool = False,
                                cert_sans: Sequence[str] = (), etcd_members: Sequence[tuple[str, str]] | None = None,
                                net: KubeadmNet = KubeadmNet(), kubelet_client_issued_at: datetime | None = None,
                                kubelet_serving_issued_at: datetime | None = None) -> Tree:
    """Write one kubeadm control-plane node: pki/, kubeconfigs, static pod manifests, kubelet files.

    ``leaf_issued_at``: when this node's leaves and kubeconfig certs were (re)issued (default ``now``).
    ``init_node``: the ``kubeadm init`` node (super-admin.conf in style current; kubelet.conf in
    kubeadm's naming instead of the TLS-bootstrap ``default-*`` naming).  ``etcd_members``:
    (name, peer IP or URL) pairs for ``--initial-cluster`` in the caller's order (default: this node
    alone); a non-init node gets ``--initial-cluster-state=existing``.
    """
    w = _Writer(root)
    now = utc(now)
    issued = utc(leaf_issued_at if leaf_issued_at is not None else now)
    kind, prof, cl = cluster.key_kind, cluster.profile, cluster
    legacy_masters = () if cl.style == "current" else ("system:masters",)
    w.mkdir(PKI, 0o755)

    # §1.2: DNS names sorted (set -> list), IPs deduplicated in first-seen order
    names = [node_name, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             f"kubernetes.default.svc.{cl.dns_domain}", cl.service_ip, advertise_address]
    if cl.control_plane_endpoint:
        names.append(cl.control_plane_endpoint.rsplit(":", 1)[0].strip("[]"))     # port stripped
    api_dns, api_ips = _split_sans([*names, *cert_sans])
    api_dns, api_ips = sorted(set(api_dns)), _dedupe(api_ips)

    leaves = [("apiserver", cl.ca, "kube-apiserver", (), ["server"], api_dns, api_ips),
              ("apiserver-kubelet-client", cl.ca, "kube-apiserver-kubelet-client", (cl.admins_org,), ["client"], (), ()),
              ("front-proxy-client", cl.front_proxy_ca, "front-proxy-client", (), ["client"], (), ())]
    if cl.etcd_ca is not None:
        etcd_dns, etcd_ips = sorted({node_name, "localhost"}), _dedupe([advertise_address, "127.0.0.1", "::1"])
        leaves += [("apiserver-etcd-client", cl.etcd_ca, "kube-apiserver-etcd-client", legacy_masters, ["client"], (), ()),
                   ("etcd/server", cl.etcd_ca, node_name, (), ["server", "client"], etcd_dns, etcd_ips),
                   ("etcd/peer", cl.etcd_ca, node_name, (), ["server", "client"], etcd_dns, etcd_ips),
                   ("etcd/healthcheck-client", cl.etcd_ca, "kube-etcd-healthcheck-client", legacy_masters,
                    ["client"], (), ())]

    cas = [("ca", cl.ca, not cl.external_ca), ("front-proxy-ca", cl.front_proxy_ca, True)]
    if cl.etcd_ca is not None:
        cas.append(("etcd/ca", cl.etcd_ca, True))
    elif cl.external_etcd_ca is not None:
        cas.append(("etcd/ca", cl.external_etcd_ca, False))
        leaves.append(("apiserver-etcd-client", cl.external_etcd_ca, "kube-apiserver-etcd-client", (), ["client"], (), ()))
    for base, pair, with_key in cas:
        w.certs(f"{PKI}/{base}.crt", pair.cert)
        if with_key:
            w.key(f"{PKI}/{base}.key", pair.key)
    for base, ca, cn, orgs, eku, dns, ips in leaves:
        pair = new_leaf(cn, ca, prof, issued, kind, orgs=orgs, eku=eku, dns=dns, ips=ips)
        w.key(f"{PKI}/{base}.key", pair.key)
        w.certs(f"{PKI}/{base}.crt", pair.cert)
    w.key(f"{PKI}/sa.key", cl.sa_key)
    w.write(f"{PKI}/sa.pub", cl.sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o600)

    # §2 kubeconfigs: admin/super-admin/kubelet dial the endpoint, kcm/scheduler the local apiserver
    endpoint = f"https://{cl.control_plane_endpoint}" if cl.control_plane_endpoint \
        else f"https://{_host_port(advertise_address, net.apiserver_port)}"
    local = f"https://{_host_port(advertise_address, net.apiserver_port)}"
    confs = [("admin.conf", "kubernetes-admin", (cl.admins_org,), endpoint)]
    if init_node and cl.style == "current":
        confs.append(("super-admin.conf", "kubernetes-super-admin", ("system:masters",), endpoint))
    confs += [("controller-manager.conf", "system:kube-controller-manager", (), local),
              ("scheduler.conf", "system:kube-scheduler", (), local)]
    ca_pem = cert_pem(cl.ca.cert)
    for name, user, orgs, server in confs:
        pair = new_leaf(user, cl.ca, prof, issued, kind, orgs=orgs)
        w.write(f"/etc/kubernetes/{name}", kubeconfig(
            server, cluster=cl.cluster_name, user=user, context=f"{user}@{cl.cluster_name}", ca=ca_pem,
            cert=cert_pem(pair.cert), key=key_pem(pair.key)), 0o600)

    _kubeadm_kubelet(w, cl, node_name, endpoint, init_node=init_node, net=net,
                     client_issued=utc(kubelet_client_issued_at or issued),
                     serving_issued=utc(kubelet_serving_issued_at or issued))
    members = etcd_members if etcd_members is not None else [(node_name, advertise_address)]
    for name, pod in _kubeadm_manifests(cl, node_name, advertise_address, net, members, init_node).items():
        w.yaml(f"{MANIFESTS}/{name}.yaml", pod)
    return w.tree()


def build_kubeadm_worker(root: str | os.PathLike, cluster: KubeadmCluster, node_name: str, *,
                         now: datetime | None = None, api_server: str | None = None,
                         kubelet_client_issued_at: datetime | None = None,
                         kubelet_serving_issued_at: datetime | None = None, net: KubeadmNet = KubeadmNet()) -> Tree:
    """Write one kubeadm worker: kubelet.conf (TLS-bootstrap form), pki/ca.crt, kubelet files.

    ``api_server``: URL the kubelet dials (default ``https://<control_plane_endpoint>``).
    Kubelet issue times default to ``now``.
    """
    if api_server is None:
        if not cluster.control_plane_endpoint:
            raise ValueError("cluster has no control_plane_endpoint: pass api_server")
        api_server = f"https://{cluster.control_plane_endpoint}"
    now = utc(now)
    w = _Writer(root)
    w.mkdir(PKI, 0o755)
    w.certs(f"{PKI}/ca.crt", cluster.ca.cert)
    _kubeadm_kubelet(w, cluster, node_name, api_server, init_node=False, net=net,
                     client_issued=utc(kubelet_client_issued_at or now),
                     serving_issued=utc(kubelet_serving_issued_at or now))
    return w.tree()


def _kubeadm_kubelet(w: _Writer, cl: KubeadmCluster, node: str, server: str, *, init_node: bool, net: KubeadmNet,
                     client_issued: datetime, serving_issued: datetime) -> None:
    _kubelet_pki(w, node, serving_issued, fixed_serials=False, client=(node, cl.ca, client_issued))
    if init_node:
        # kubeadm's own naming, rewritten by kubelet-finalize to point at the rotating file
        user = f"system:node:{node}"
        names = {"cluster": cl.cluster_name, "user": user, "context": f"{user}@{cl.cluster_name}"}
    else:
        names = {"cluster": "default-cluster", "user": "default-auth", "context": "default-context",
                 "namespace": "default"}
    w.write("/etc/kubernetes/kubelet.conf", kubeconfig(server, ca=cert_pem(cl.ca.cert), cert=KUBELET_CLIENT_CURRENT,
                                                       key=KUBELET_CLIENT_CURRENT, **names), 0o600)
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"cacheTTL": "0s", "enabled": True},
                           "x509": {"clientCAFile": f"{PKI}/ca.crt"}},
        "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"}},
        "cgroupDriver": "systemd", "clusterDNS": [str(ipaddress.ip_address(cl.service_ip) + 9)],
        "clusterDomain": cl.dns_domain, "fileCheckFrequency": "0s", "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248, "rotateCertificates": True, "staticPodPath": MANIFESTS,
        "syncFrequency": "0s", "volumeStatsAggPeriod": "0s",
    }
    if net.kubelet_address:
        config.update(address=net.kubelet_address, port=net.kubelet_port)
    w.yaml("/var/lib/kubelet/config.yaml", config, 0o644)


def _static_pod(name: str, command: list[str], image: str, *, probe: dict, cpu: str, volumes: list[tuple],
                annotations: dict | None = None, readiness: dict | None = None, memory: str | None = None) -> dict:
    """A kubeadm static pod; ``volumes``: (name, host path, mount path, read-only, hostPath type)."""
    def http_probe(threshold: int, path: str, **timing) -> dict:
        get = {"host": probe["host"], "path": path, "port": probe["port"], "scheme": probe["scheme"]}
        return {"failureThreshold": threshold, "httpGet": get, **timing}

    timing = {"initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 15}
    container = {
        "command": command, "image": image, "imagePullPolicy": "IfNotPresent", "name": name,
        "livenessProbe": http_probe(8, probe["live"], **timing),
        "startupProbe": http_probe(24, probe.get("startup", probe["live"]), **timing),
        "resources": {"requests": {"cpu": cpu, **({"memory": memory} if memory else {})}},
        "volumeMounts": [{"mountPath": mount, "name": vname, **({"readOnly": True} if ro else {})}
                         for vname, _host, mount, ro, _type in volumes],
    }
    if readiness:
        container["readinessProbe"] = http_probe(3, readiness["path"], periodSeconds=1, timeoutSeconds=15)
    meta = {"creationTimestamp": None, "labels": {"component": name, "tier": "control-plane"},
            "name": name, "namespace": "kube-system"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {}, "spec": {
        "containers": [container], "hostNetwork": True, "priority": 2000001000,
        "priorityClassName": "system-node-critical",
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"hostPath": {"path": host, "type": htype}, "name": vname}
                    for vname, host, _mount, _ro, htype in volumes]}}


def _args(binary: str, flags: dict) -> list[str]:
    # kubeadm sorts the flags it writes
    return [binary] + [f"--{k}={v}" for k, v in sorted(flags.items())]


def _kubeadm_manifests(cl: KubeadmCluster, node: str, ip: str, net: KubeadmNet,
                       members: Sequence[tuple[str, str]], init_node: bool) -> dict[str, dict]:
    """The four static pods with the flags of kubeadm.md §8."""
    k8s_version, etcd_version = KUBEADM_IMAGES[cl.style]
    image = f"registry.k8s.io/{{}}:{k8s_version}"
    ca_volumes = [("ca-certs", "/etc/ssl/certs", "/etc/ssl/certs", True, "DirectoryOrCreate"),
                  ("etc-ca-certificates", "/etc/ca-certificates", "/etc/ca-certificates", True, "DirectoryOrCreate"),
                  ("k8s-certs", PKI, PKI, True, "DirectoryOrCreate"),
                  ("usr-local-share-ca-certificates", "/usr/local/share/ca-certificates",
                   "/usr/local/share/ca-certificates", True, "DirectoryOrCreate"),
                  ("usr-share-ca-certificates", "/usr/share/ca-certificates", "/usr/share/ca-certificates", True,
                   "DirectoryOrCreate")]
    etcd_local = net.etcd_local_host
    if etcd_local == "127.0.0.1" and ":" in ip:
        etcd_local = "::1"      # kubeadm uses [::1] when the advertise address is IPv6
    etcd_url = f"https://{_host_port(etcd_local or ip, net.etcd_client_port)}"
    api = {
        "advertise-address": ip, "allow-privileged": "true", "authorization-mode": "Node,RBAC",
        "client-ca-file": f"{PKI}/ca.crt", "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "kubelet-client-certificate": f"{PKI}/apiserver-kubelet-client.crt",
        "kubelet-client-key": f"{PKI}/apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": f"{PKI}/front-proxy-client.crt",
        "proxy-client-key-file": f"{PKI}/front-proxy-client.key",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-", "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User", "secure-port": net.apiserver_port,
        "service-account-issuer": f"https://kubernetes.default.svc.{cl.dns_domain}",
        "service-account-key-file": f"{PKI}/sa.pub", "service-account-signing-key-file": f"{PKI}/sa.key",
        "service-cluster-ip-range": cl.service_subnet,
        "tls-cert-file": f"{PKI}/apiserver.crt", "tls-private-key-file": f"{PKI}/apiserver.key",
    }
    if cl.etcd_ca is not None:
        api.update({"etcd-cafile": f"{PKI}/etcd/ca.crt", "etcd-certfile": f"{PKI}/apiserver-etcd-client.crt",
                    "etcd-keyfile": f"{PKI}/apiserver-etcd-client.key", "etcd-servers": etcd_url})
    elif cl.external_etcd_ca is not None:
        # ClusterConfiguration etcd.external caFile/certFile/keyFile, as the kubeadm HA-etcd docs set them
        api.update({"etcd-cafile": f"{PKI}/etcd/ca.crt", "etcd-certfile": f"{PKI}/apiserver-etcd-client.crt",
                    "etcd-keyfile": f"{PKI}/apiserver-etcd-client.key", "etcd-servers": cl.external_etcd_url})
    else:
        # external etcd: its client material is the user's, outside kubeadm's set; plain URL only
        api["etcd-servers"] = "https://etcd.external.invalid:2379"
    if net.apiserver_bind_address:
        api["bind-address"] = net.apiserver_bind_address
    api_host = net.apiserver_bind_address or ip
    pods = {"kube-apiserver": _static_pod(
        "kube-apiserver", _args("kube-apiserver", api), image.format("kube-apiserver"), cpu="250m",
        probe={"host": api_host, "port": net.apiserver_port, "scheme": "HTTPS", "live": "/livez"},
        readiness={"path": "/readyz"}, volumes=ca_volumes,
        annotations={"kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint":
                     _host_port(ip, net.apiserver_port)})}

    kcm_conf = "/etc/kubernetes/controller-manager.conf"
    signing = ("", "") if cl.external_ca else (f"{PKI}/ca.crt", f"{PKI}/ca.key")
    kcm = {"authentication-kubeconfig": kcm_conf, "authorization-kubeconfig": kcm_conf,
           "bind-address": net.controller_manager_bind_address, "client-ca-file": f"{PKI}/ca.crt",
           "cluster-name": cl.cluster_name, "cluster-signing-cert-file": signing[0],
           "cluster-signing-key-file": signing[1], "controllers": "*,bootstrapsigner,tokencleaner",
           "kubeconfig": kcm_conf, "leader-elect": "true", "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
           "root-ca-file": f"{PKI}/ca.crt", "service-account-private-key-file": f"{PKI}/sa.key",
           "use-service-account-credentials": "true"}
    if net.controller_manager_port != 10257:     # kubeadm writes no --secure-port; only the lab needs one
        kcm["secure-port"] = net.controller_manager_port
    pods["kube-controller-manager"] = _static_pod(
        "kube-controller-manager", _args("kube-controller-manager", kcm), image.format("kube-controller-manager"),
        cpu="200m", probe={"host": net.controller_manager_bind_address, "port": net.controller_manager_port,
                           "scheme": "HTTPS", "live": "/healthz"},
        volumes=ca_volumes + [("flexvolume-dir", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
                               "/usr/libexec/kubernetes/kubelet-plugins/volume/exec", False, "DirectoryOrCreate"),
                              ("kubeconfig", kcm_conf, kcm_conf, True, "FileOrCreate")])

    sched_conf = "/etc/kubernetes/scheduler.conf"
    sched = {"authentication-kubeconfig": sched_conf, "authorization-kubeconfig": sched_conf,
             "bind-address": net.scheduler_bind_address, "kubeconfig": sched_conf, "leader-elect": "true"}
    if net.scheduler_port != 10259:
        sched["secure-port"] = net.scheduler_port
    pods["kube-scheduler"] = _static_pod(
        "kube-scheduler", _args("kube-scheduler", sched), image.format("kube-scheduler"), cpu="100m",
        probe={"host": net.scheduler_bind_address, "port": net.scheduler_port, "scheme": "HTTPS", "live": "/healthz"},
        volumes=[("kubeconfig", sched_conf, sched_conf, True, "FileOrCreate")])

    if cl.etcd_ca is not None:
        client = f"https://{_host_port(ip, net.etcd_client_port)}"
        peer = f"https://{_host_port(ip, net.etcd_peer_port)}"
        listen = ([etcd_url] if etcd_local else []) + [client]
        initial = ",".join(f"{n}={u if '://' in u else 'https://' + _host_port(u, net.etcd_peer_port)}"
                           for n, u in members)
        etcd = {"advertise-client-urls": client, "cert-file": f"{PKI}/etcd/server.crt", "client-cert-auth": "true",
                "data-dir": net.etcd_data_dir, "experimental-initial-corrupt-check": "true",
                "experimental-watch-progress-notify-interval": "5s", "initial-advertise-peer-urls": peer,
                "initial-cluster": initial, "key-file": f"{PKI}/etcd/server.key",
                "listen-client-urls": ",".join(listen), "listen-metrics-urls": net.etcd_metrics_url,
                "listen-peer-urls": peer, "name": node, "peer-cert-file": f"{PKI}/etcd/peer.crt",
                "peer-client-cert-auth": "true", "peer-key-file": f"{PKI}/etcd/peer.key",
                "peer-trusted-ca-file": f"{PKI}/etcd/ca.crt", "snapshot-count": "10000",
                "trusted-ca-file": f"{PKI}/etcd/ca.crt"}
        if not init_node:
            etcd["initial-cluster-state"] = "existing"
        metrics = re.match(r"(https?)://\[?([^\]/]+?)\]?:(\d+)", net.etcd_metrics_url.split(",")[0])
        pods["etcd"] = _static_pod(
            "etcd", _args("etcd", etcd), f"registry.k8s.io/etcd:{etcd_version}", cpu="100m", memory="100Mi",
            probe={"host": metrics.group(2), "port": int(metrics.group(3)), "scheme": metrics.group(1).upper(),
                   "live": "/health?exclude=NOSPACE&serializable=true", "startup": "/health?serializable=false"},
            annotations={"kubeadm.kubernetes.io/etcd.advertise-client-urls": client},
            volumes=[("etcd-data", net.etcd_data_dir, net.etcd_data_dir, False, "DirectoryOrCreate"),
                     ("etcd-certs", f"{PKI}/etcd", f"{PKI}/etcd", False, "DirectoryOrCreate")])
    return pods


# --------------------------------------------------------------------------------------------
# RKE1
# --------------------------------------------------------------------------------------------

SSL = "/etc/kubernetes/ssl"


@dataclasses.dataclass(frozen=True)
class RkeNode:
    """One cluster.yml node; ``roles`` from controlplane, etcd, worker."""

    address: str
    roles: tuple[str, ...]
    internal_address: str = ""
    hostname_override: str = ""

    @property
    def cert_suffix(self) -> str:
        """``<addr>`` of kube-etcd-<addr>: internal address when set and different, dots -> dashes."""
        addr = self.internal_address if self.internal_address and self.internal_address != self.address \
            else self.address
        return addr.replace(".", "-").lower()

    @property
    def kubelet_host(self) -> str:
        # RKE passes --hostname-override (default: the address) to the kubelet
        return self.hostname_override or self.address


@dataclasses.dataclass
class Rke1Cluster:
    """An RKE1 cluster: its certificate bundle is cluster-wide (the same files on every node)."""

    nodes: list[RkeNode]
    cluster_name: str
    ca_issued_at: datetime
    leaf_issued_at: datetime
    bundle: dict[str, Pair]          # component name (kube-ca, kube-etcd-10-0-0-1, ...) -> pair
    config: dict                     # cluster.yml content (snake_case)
    encryption_config: str           # "" unless secrets encryption is on

    def node(self, address: str) -> RkeNode:
        for n in self.nodes:
            if n.address == address:
                return n
        raise KeyError(address)

    def hosts(self, role: str) -> list[RkeNode]:
        return [n for n in self.nodes if role in n.roles]


_RKE_SUBJECTS = {  # component -> (X.509 CN, O, EKU, signing CA); kube-etcd-* added per host
    "kube-apiserver": ("kube-apiserver", (), ["client", "server"], "kube-ca"),
    "kube-service-account-token": ("kube-service-account-token", (), ["client"], "kube-ca"),
    "kube-controller-manager": ("system:kube-controller-manager", (), ["client"], "kube-ca"),
    "kube-scheduler": ("system:kube-scheduler", (), ["client"], "kube-ca"),
    "kube-proxy": ("system:kube-proxy", (), ["client"], "kube-ca"),
    "kube-node": ("system:node", ("system:nodes",), ["client"], "kube-ca"),
    "kube-admin": ("kube-admin", ("system:masters",), ["client"], "kube-ca"),
    "kube-apiserver-proxy-client": ("kube-apiserver-proxy-client", (), ["client", "server"],
                                    "kube-apiserver-requestheader-ca"),
}


def rke1_cluster(nodes: Sequence[RkeNode], now: datetime | None = None, *, ca_issued_at: datetime | None = None,
                 leaf_issued_at: datetime | None = None, cluster_name: str = "local",
                 service_cluster_ip_range: str = "10.43.0.0/16", cluster_domain: str = "cluster.local",
                 sans: Sequence[str] = (), kubernetes_version: str = "v1.28.15-rancher1-1",
                 secrets_encryption: bool = False) -> Rke1Cluster:
    """Create an RKE1 cluster's bundle as ``rke up`` does (RSA 2048, profile RKE1).

    ``leaf_issued_at`` defaults to ``now``, ``ca_issued_at`` to the leaf issue time (a cluster
    never rotated).  ``sans``: authentication.sans.
    """
    nodes = list(nodes)
    now = utc(now)
    leaf_at = utc(leaf_issued_at if leaf_issued_at is not None else now)
    ca_at = utc(ca_issued_at if ca_issued_at is not None else leaf_at)
    service_ip = str(next(ipaddress.ip_network(service_cluster_ip_range, strict=False).hosts()))
    bundle = {"kube-ca": new_ca("kube-ca", RKE1, ca_at),
              "kube-apiserver-requestheader-ca": new_ca("kube-apiserver-requestheader-ca", RKE1, ca_at)}

    def alt_names(hosts: list[RkeNode], extra: Sequence[str]) -> tuple[list[str], list[str]]:
        # pki/util.go GetAltNames: per host address, internal address, hostname override; then
        # user SANs; then 127.0.0.1, the service IP and the fixed DNS names (no sorting, no dedupe)
        values = []
        for h in hosts:
            values.append(h.address)
            if h.internal_address and h.internal_address != h.address:
                values.append(h.internal_address)
            if h.hostname_override and h.hostname_override != h.address:
                values.append(h.hostname_override)
        dns, ips = _split_sans(list(values) + list(extra))
        return dns + ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                      f"kubernetes.default.svc.{cluster_domain}"], ips + ["127.0.0.1", service_ip]

    components = dict(_RKE_SUBJECTS)
    for h in [n for n in nodes if "etcd" in n.roles]:
        components[f"kube-etcd-{h.cert_suffix}"] = ("kube-etcd", (), ["client", "server"], "kube-ca")
    for name, (cn, orgs, eku, ca_name) in components.items():
        dns, ips = (), ()
        if name == "kube-apiserver":
            dns, ips = alt_names([n for n in nodes if "controlplane" in n.roles], sans)
        elif name.startswith("kube-etcd-"):
            dns, ips = alt_names([n for n in nodes if "etcd" in n.roles], ())
        bundle[name] = new_leaf(cn, bundle[ca_name], RKE1, leaf_at, orgs=orgs, eku=eku, dns=dns, ips=ips)

    encryption = ""
    if secrets_encryption:
        encryption = _yaml({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                            "resources": [{"resources": ["secrets"], "providers": [
                                {"aescbc": {"keys": [{"name": f"key-{secrets.token_hex(8)}",
                                                      "secret": _b64(secrets.token_bytes(32))}]}},
                                {"identity": {}}]}]})
    config = _rke_config(nodes, cluster_name, kubernetes_version, service_cluster_ip_range, cluster_domain,
                         service_ip, sans, secrets_encryption)
    return Rke1Cluster(nodes, cluster_name, ca_at, leaf_at, bundle, config, encryption)


def _rke_config(nodes: list[RkeNode], cluster_name: str, version: str, service_range: str, domain: str,
                service_ip: str, sans: Sequence[str], encryption: bool) -> dict:
    """cluster.yml content; services.kubelet has no generate_serving_certificate, so kubelets self-sign."""
    kube_api = {"image": "", "extra_args": {}, "service_cluster_ip_range": service_range,
                "service_node_port_range": "30000-32767", "pod_security_policy": False}
    if encryption:
        kube_api["secrets_encryption_config"] = {"enabled": True}
    return {
        "nodes": [{"address": n.address, "port": "22", "internal_address": n.internal_address,
                   "role": list(n.roles), "hostname_override": n.hostname_override, "user": "rancher",
                   "docker_socket": "/var/run/docker.sock", "ssh_key": "", "ssh_key_path": "~/.ssh/id_rsa",
                   "labels": {}, "taints": []} for n in nodes],
        "services": {
            "etcd": {"image": "", "extra_args": {}, "snapshot": None, "retention": "", "creation": ""},
            "kube-api": kube_api,
            "kube-controller": {"image": "", "extra_args": {}, "cluster_cidr": "10.42.0.0/16",
                                "service_cluster_ip_range": service_range},
            "scheduler": {"image": "", "extra_args": {}},
            "kubelet": {"image": "", "extra_args": {}, "cluster_domain": domain,
                        "cluster_dns_server": str(ipaddress.ip_address(service_ip) + 9), "fail_swap_on": False},
            "kubeproxy": {"image": "", "extra_args": {}},
        },
        "network": {"plugin": "canal", "options": {}},
        "authentication": {"strategy": "x509", "sans": list(sans)},
        "ssh_key_path": "~/.ssh/id_rsa",
        "authorization": {"mode": "rbac"},
        "kubernetes_version": version,
        "ingress": {"provider": "nginx"},
        "cluster_name": cluster_name,
        "dns": {"provider": "coredns"},
    }


_RKE_CONFIG_COMMENTS = {
    "nodes": "# Nodes RKE reaches over SSH; role decides which certificates a node receives.",
    "services": "# kubelet: no generate_serving_certificate, so each kubelet self-signs kubelet.crt.",
    "authentication": "# sans are added to the kube-apiserver certificate.",
}


def _rke_kubeconfig(url: str, cluster: str, component: str, ca: str, cert: str, key: str, *, embed: bool) -> str:
    """pki/kubeconfig.go templates (path or -data form), verbatim layout."""
    suffix = "-data" if embed else ""
    if embed:
        ca, cert, key = (_b64(v.encode()) for v in (ca, cert, key))
    user = f"{component}-{cluster}"
    return (f'apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    api-version: v1\n'
            f'    certificate-authority{suffix}: {ca}\n    server: "{url}"\n  name: "{cluster}"\n'
            f'contexts:\n- context:\n    cluster: "{cluster}"\n    user: "{user}"\n  name: "{cluster}"\n'
            f'current-context: "{cluster}"\nusers:\n- name: "{user}"\n  user:\n'
            f'    client-certificate{suffix}: {cert}\n    client-key{suffix}: {key}')


def _rke_has_kubecfg(name: str) -> bool:
    # pki/util.go ToCertObject: no component kubeconfig for these
    return not (name in ("kube-ca", "kube-apiserver", "kube-service-account-token")
                or "kube-etcd" in name or "kube-kubelet" in name)


def _rke_node_components(cluster: Rke1Cluster, node: RkeNode) -> list[str]:
    """pki.go GenerateRKENodeCerts: the union of getCertKeys over the node's roles."""
    names = ["kube-ca", "kube-proxy", "kube-node"]
    if "etcd" in node.roles:
        names += [f"kube-etcd-{h.cert_suffix}" for h in cluster.hosts("etcd")]
    if "controlplane" in node.roles:
        names += ["kube-apiserver", "kube-service-account-token", "kube-controller-manager", "kube-scheduler",
                  "kube-apiserver-requestheader-ca", "kube-apiserver-proxy-client"]
    return _dedupe(names)


def build_rke1_node(root: str | os.PathLike, cluster: Rke1Cluster, address: str, *,
                    kubelet_serving_issued_at: datetime | None = None) -> Tree:
    """Write one RKE1 node: /etc/kubernetes/ssl for its roles and the kubelet's self-signed kubelet.crt.

    Every file in ssl/ is 0600 (rke-tools cert-deployer chmods since 2019); kube-ca-key.pem only on
    controlplane nodes.  ``kubelet_serving_issued_at`` defaults to the cluster's leaf issue time.
    """
    node = cluster.node(address)
    w = _Writer(root)
    w.mkdir(SSL, 0o755)
    for name in _rke_node_components(cluster, node):
        pair = cluster.bundle[name]
        w.certs(f"{SSL}/{name}.pem", pair.cert, mode=0o600)
        if name != "kube-ca" or "controlplane" in node.roles:
            w.key(f"{SSL}/{name}-key.pem", pair.key)
        if _rke_has_kubecfg(name):
            w.write(f"{SSL}/kubecfg-{name}.yaml", _rke_kubeconfig(
                "https://127.0.0.1:6443", "local", name, f"{SSL}/kube-ca.pem", f"{SSL}/{name}.pem",
                f"{SSL}/{name}-key.pem", embed=False) + "\n", 0o600)
    if cluster.encryption_config and "controlplane" in node.roles:
        w.write(f"{SSL}/encryption.yaml", cluster.encryption_config, 0o600)
    _kubelet_pki(w, node.kubelet_host, utc(kubelet_serving_issued_at or cluster.leaf_issued_at), fixed_serials=True)
    return w.tree()


def _camel(key: str) -> str:
    head, *rest = re.split(r"[_-]", key)
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _rke_json(value: object) -> object:
    """cluster.yml content -> the camelCase JSON of types.RancherKubernetesEngineConfig (omitempty)."""
    if isinstance(value, dict):
        out = {_camel(k): _rke_json(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ("", None, False, {}, [])}
    if isinstance(value, list):
        return [_rke_json(v) for v in value]
    return value


def write_rke1_admin(directory: str | os.PathLike, cluster: Rke1Cluster, *, cluster_file: str = "cluster.yml") -> Tree:
    """Write the admin side of an RKE1 cluster: cluster.yml, <name>.rkestate, kube_config_<file>."""
    w = _Writer(directory)
    base = cluster_file.rsplit(".", 1)[0]
    kube_config_name = f"kube_config_{cluster_file}"
    ca_pem = cert_pem(cluster.bundle["kube-ca"].cert).decode()

    parts = ["# If you intended to deploy Kubernetes in an air-gapped environment,\n"
             "# please consult the documentation on how to configure custom RKE images.\n"]
    for k, v in cluster.config.items():
        if k in _RKE_CONFIG_COMMENTS:
            parts.append(_RKE_CONFIG_COMMENTS[k] + "\n")
        parts.append(yaml.safe_dump({k: v}, sort_keys=False, default_flow_style=False))
    w.write(cluster_file, "".join(parts), 0o640)

    admin = cluster.bundle["kube-admin"]
    cp = cluster.hosts("controlplane")
    admin_config = _rke_kubeconfig(f"https://{cp[0].address}:6443", cluster.cluster_name, "kube-admin", ca_pem,
                                   cert_pem(admin.cert).decode(), key_pem(admin.key).decode(), embed=True)
    w.write(kube_config_name, admin_config, 0o600)

    bundle = {}
    for name in sorted(cluster.bundle):
        pair = cluster.bundle[name]
        env = name.upper().replace("-", "_")
        has_cfg = _rke_has_kubecfg(name)
        config = _rke_kubeconfig("https://127.0.0.1:6443", "local", name, f"{SSL}/kube-ca.pem",
                                 f"{SSL}/{name}.pem", f"{SSL}/{name}-key.pem", embed=False) if has_cfg else ""
        common = {"kube-node": "system:node", "kube-admin": "kube-admin",
                  "kube-service-account-token": "kube-service-account-token"}.get(name, f"system:{name}")
        if name == "kube-admin":
            config = admin_config
        bundle[name] = {
            "certificatePEM": cert_pem(pair.cert).decode(), "keyPEM": key_pem(pair.key).decode(),
            "config": config, "name": name, "commonName": common,
            "ouName": {"kube-node": "system:nodes", "kube-admin": "system:masters"}.get(name, ""),
            "envName": env, "path": f"{SSL}/{name}.pem", "keyEnvName": f"{env}_KEY",
            "keyPath": f"{SSL}/{name}-key.pem", "configEnvName": f"KUBECFG_{env}" if has_cfg else "",
            "configPath": (f"./{kube_config_name}" if name == "kube-admin"
                           else f"{SSL}/kubecfg-{name}.yaml" if has_cfg else ""),
        }
    state = {"rkeConfig": _rke_json(cluster.config), "certificatesBundle": bundle}
    if cluster.encryption_config:       # json:"encryptionConfig,omitempty"
        state["encryptionConfig"] = cluster.encryption_config
    full = {"desiredState": state, "currentState": state}
    w.write(f"{base}.rkestate", json.dumps(full, indent=2), 0o600)
    return w.tree()


# --------------------------------------------------------------------------------------------
# k3s and RKE2
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class K3sCluster:
    """CAs and service key shared by the servers of one k3s/RKE2 cluster (the bootstrap data)."""

    program: str                     # "k3s" | "rke2"
    style: str                       # "legacy" | "current" (dynamiclistener validity)
    profile: Profile
    ca_issued_at: datetime
    server_ca: Pair
    client_ca: Pair
    request_header_ca: Pair
    etcd_server_ca: Pair
    etcd_peer_ca: Pair
    service_key: PrivateKey
    cluster_domain: str
    service_ip: str

    @property
    def data_dir(self) -> str:
        return f"/var/lib/rancher/{self.program}"

    @property
    def apiserver_port(self) -> int:
        """Port local components dial: k3s runs kube-apiserver on 6444, RKE2 on 6443."""
        return 6444 if self.program == "k3s" else 6443


def k3s_cluster(program: str = "k3s", now: datetime | None = None, *, ca_issued_at: datetime | None = None,
                style: str = "legacy", cluster_domain: str = "cluster.local",
                service_cidr: str = "10.43.0.0/16") -> K3sCluster:
    """Create a k3s or RKE2 cluster's CAs (ECDSA P-256, serial 0, 3650 d) and service.key (RSA 2048).

    ``style``: "legacy" (dynamiclistener < v0.7.3: leaf NotBefore = CA NotBefore) or "current".
    """
    if program not in ("k3s", "rke2"):
        raise ValueError("program is k3s or rke2")
    profile = K3S_STYLES[style]
    at = utc(ca_issued_at if ca_issued_at is not None else now)

    def ca(prefix: str) -> Pair:
        return new_ca(f"{prefix}-ca@{_ts(at)}", profile, at, "ecdsa")

    return K3sCluster(program, style, profile, at, ca(f"{program}-server"), ca(f"{program}-client"),
                      ca(f"{program}-request-header"), ca("etcd-server"), ca("etcd-peer"), new_key("rsa"),
                      cluster_domain, str(next(ipaddress.ip_network(service_cidr, strict=False).hosts())))


_K3S_KUBECONFIG = """apiVersion: v1
clusters:
- cluster:
    server: {url}
    certificate-authority: {ca}
  name: local
contexts:
- context:
    cluster: local
    namespace: default
    user: user
  name: Default
current-context: Default
kind: Config
preferences: {{}}
users:
- name: user
  user:
    client-certificate: {cert}
    client-key: {key}
"""


def _k3s_sans(cl: K3sCluster, node: str, ip: str, tls_sans: Sequence[str]) -> list[str]:
    # cli/server: tls-san, then loopbacks, node name and IPs, then the apiserver service IP
    return _dedupe([*tls_sans, "127.0.0.1", "::1", "localhost", node, ip, cl.service_ip])


def _kube_dns(domain: str) -> list[str]:
    return ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}"]


def serving_cns(cluster: K3sCluster, node_name: str, node_ip: str, tls_sans: Sequence[str] = ()) -> list[str]:
    """The names a server adds to the supervisor cert (its ``listener.cattle.io/cn-*`` annotations)."""
    return _dedupe(_k3s_sans(cluster, node_name, node_ip, tls_sans) + _kube_dns(cluster.cluster_domain))


def annotation_key(cn: str) -> str:
    """dynamiclistener getAnnotationKey: ``listener.cattle.io/cn-<cn>``, hashed when it has ':'/'*' or is long."""
    key = "listener.cattle.io/cn-" + cn
    if len(key) < 64 and ":" not in key and "*" not in key:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:6]
    return key.replace(":", "_").replace("*", "_")[:min(len(key), 56)] + "-" + digest


def serving_secret(cluster: K3sCluster, node_name: str, node_ip: str, *, issued_at: datetime,
                   tls_sans: Sequence[str] = (), key: PrivateKey | None = None) -> dict:
    """The ``kube-system/<p>-serving`` secret (dynamiclistener) as issued at ``issued_at``; with ``key``, a
    renewal that keeps it (factory/gen.go Renew and Merge reuse the stored key).

    The lab stores it in the cluster; ``write_dynamic_cert`` caches it as dynamic-cert.json.  Build
    two with different issue times to get "files fresh, served secret expired".
    """
    issued = utc(issued_at)
    p = cluster.program
    cns = serving_cns(cluster, node_name, node_ip, tls_sans)
    dns, ips = _split_sans(sorted(cns))          # collectCNs sorts the annotation values
    leaf = new_leaf(p, cluster.server_ca, cluster.profile, issued, "ecdsa", orgs=[p], eku=["server"], dns=dns,
                    ips=ips, key=key)
    annotations = {annotation_key(cn): cn for cn in cns}
    annotations["listener.cattle.io/fingerprint"] = "SHA1=" + leaf.cert.fingerprint(hashes.SHA1()).hex().upper()
    annotations = dict(sorted(annotations.items()))
    stamp = _rfc3339(issued)
    managed = {"f:data": {".": {}, "f:tls.crt": {}, "f:tls.key": {}},
               "f:metadata": {"f:annotations": {".": {}, **{f"f:{k}": {} for k in annotations}}}, "f:type": {}}
    return {
        "metadata": {"name": f"{p}-serving", "namespace": "kube-system", "uid": str(uuid.uuid4()),
                     "resourceVersion": str(secrets.randbelow(10 ** 6) + 200), "creationTimestamp": stamp,
                     "annotations": annotations,
                     "managedFields": [{"manager": p, "operation": "Update", "apiVersion": "v1", "time": stamp,
                                        "fieldsType": "FieldsV1", "fieldsV1": managed}]},
        "data": {"tls.crt": _b64(cert_pem(leaf.cert, cluster.server_ca.cert)), "tls.key": _b64(key_pem(leaf.key))},
        "type": "kubernetes.io/tls",
    }


def write_dynamic_cert(root: str | os.PathLike, cluster: K3sCluster, secret: dict) -> Tree:
    """Write server/tls/dynamic-cert.json: the secret as Go's json.Encoder writes it (one line + newline)."""
    w = _Writer(root)
    # older dynamiclistener used os.Create (0644); 2026 code writes 0600
    w.write(f"{cluster.data_dir}/server/tls/dynamic-cert.json", json.dumps(secret, separators=(",", ":")) + "\n",
            0o600 if cluster.style == "current" else 0o644)
    return w.tree()


def build_k3s_server(root: str | os.PathLike, cluster: K3sCluster, node_name: str, node_ip: str, *,
                     now: datetime | None = None, leaf_issued_at: datetime | None = None,
                     serving_issued_at: datetime | None = None, agent_issued_at: datetime | None = None,
                     tls_sans: Sequence[str] = ()) -> Tree:
    """Write one k3s/RKE2 server: server/tls (research test vector 1), server/cred, dynamic-cert.json,
    /etc/rancher/<p>/<p>.yaml and the agent dir (a server runs an agent too).

    ``leaf_issued_at``: last server start that (re)issued the leaves (default ``now``);
    ``serving_issued_at``: the dynamiclistener cert in dynamic-cert.json (default: leaf time);
    ``agent_issued_at``: the agent certs (default: leaf time).  The returned Tree's ``secret`` is
    the serving secret written to dynamic-cert.json.
    """
    cl, p = cluster, cluster.program
    leaf_at = utc(leaf_issued_at if leaf_issued_at is not None else now)
    tls = f"{cl.data_dir}/server/tls"
    w = _Writer(root)
    w.mkdir(cl.data_dir, 0o700)
    w.mkdir(f"{cl.data_dir}/server", 0o700)
    w.mkdir(tls, 0o700)
    for sub in ("etcd", "temporary-certs", "kube-controller-manager", "kube-scheduler"):
        w.mkdir(f"{tls}/{sub}", 0o755)

    for base, pair in (("server-ca", cl.server_ca), ("client-ca", cl.client_ca),
                       ("request-header-ca", cl.request_header_ca), ("etcd/server-ca", cl.etcd_server_ca),
                       ("etcd/peer-ca", cl.etcd_peer_ca)):
        w.certs(f"{tls}/{base}.crt", pair.cert)
        w.key(f"{tls}/{base}.key", pair.key)
    # single-cert copies for the controller-manager's signer
    w.certs(f"{tls}/server-ca.nochain.crt", cl.server_ca.cert)
    w.certs(f"{tls}/client-ca.nochain.crt", cl.client_ca.cert)
    w.key(f"{tls}/service.key", cl.service_key)
    w.key(f"{tls}/service.current.key", cl.service_key)
    for base in ("client-kubelet", "serving-kubelet", "client-kube-proxy", f"client-{p}-controller"):
        w.key(f"{tls}/{base}.key", new_key("ecdsa"))      # legacy shared keys, no cert (recent builds)

    sans = _k3s_sans(cl, node_name, node_ip, tls_sans)
    dns, ips = _split_sans(sans)
    masters = ("system:masters",)
    leaves = [  # (file, CN, O, CA, EKU, DNS, IPs)
        ("client-admin", "system:admin", masters, cl.client_ca, ["client"], (), ()),
        ("client-supervisor", f"system:{p}-supervisor", masters, cl.client_ca, ["client"], (), ()),
        ("client-controller", "system:kube-controller-manager", (), cl.client_ca, ["client"], (), ()),
        ("client-scheduler", "system:kube-scheduler", (), cl.client_ca, ["client"], (), ()),
        ("client-kube-apiserver", "system:apiserver", masters, cl.client_ca, ["client"], (), ()),
        (f"client-{p}-cloud-controller", f"{p}-cloud-controller-manager", (), cl.client_ca, ["client"], (), ()),
        ("client-auth-proxy", "system:auth-proxy", (), cl.request_header_ca, ["client"], (), ()),
        ("serving-kube-apiserver", "kube-apiserver", (), cl.server_ca, ["server"],
         _kube_dns(cl.cluster_domain) + dns, ips),
        ("etcd/client", "etcd-client", (), cl.etcd_server_ca, ["client"], (), ()),
        ("etcd/server-client", "etcd-server", (), cl.etcd_server_ca, ["server", "client"], ["kine.sock"] + dns, ips),
        ("etcd/peer-server-client", "etcd-peer", (), cl.etcd_peer_ca, ["server", "client"], ["kine.sock"] + dns, ips),
        # since May 2025; SANs are loopback per the newer handler code (unverified for releases)
        ("kube-controller-manager/kube-controller-manager", "kube-controller-manager", (), cl.server_ca, ["server"],
         ["localhost"], ["127.0.0.1"]),
        ("kube-scheduler/kube-scheduler", "kube-scheduler", (), cl.server_ca, ["server"], ["localhost"],
         ["127.0.0.1"]),
    ]
    pairs = {}
    for base, cn, orgs, ca, eku, ldns, lips in leaves:
        pairs[base] = pair = new_leaf(cn, ca, cl.profile, leaf_at, "ecdsa", orgs=orgs, eku=eku, dns=ldns, ips=lips)
        w.certs(f"{tls}/{base}.crt", pair.cert, ca.cert)      # leaf followed by its CA
        w.key(f"{tls}/{base}.key", pair.key)
    # kube-apiserver's --cert-dir: client-go self-signed fixture files, 100-year validity
    loop, loop_ca = self_signed_serving("apiserver-loopback-client", leaf_at, max_age=100 * 365 * DAY)
    w.certs(f"{tls}/temporary-certs/apiserver-loopback-client__.crt", loop.cert, loop_ca.cert)
    w.key(f"{tls}/temporary-certs/apiserver-loopback-client__.key", loop.key)

    w.mkdir(f"{cl.data_dir}/server/cred", 0o700)
    for conf, base in (("admin", "client-admin"), ("supervisor", "client-supervisor"),
                       ("controller", "client-controller"), ("scheduler", "client-scheduler"),
                       ("api-server", "client-kube-apiserver"), ("cloud-controller", f"client-{p}-cloud-controller")):
        w.write(f"{cl.data_dir}/server/cred/{conf}.kubeconfig", _K3S_KUBECONFIG.format(
            url=f"https://127.0.0.1:{cl.apiserver_port}", ca=f"{tls}/server-ca.crt", cert=f"{tls}/{base}.crt",
            key=f"{tls}/{base}.key"), 0o600)

    w.mkdir(f"/etc/rancher/{p}", 0o755)
    w.write(f"/etc/rancher/{p}/{p}.yaml", kubeconfig(
        "https://127.0.0.1:6443", cluster="default", user="default", context="default",
        ca=cert_pem(cl.server_ca.cert), cert=cert_pem(pairs["client-admin"].cert, cl.client_ca.cert),
        key=key_pem(pairs["client-admin"].key)), 0o600)

    secret = serving_secret(cl, node_name, node_ip, issued_at=utc(serving_issued_at or leaf_at), tls_sans=tls_sans)
    w.files += write_dynamic_cert(root, cl, secret).files
    _k3s_agent(w, cl, node_name, node_ip, utc(agent_issued_at or leaf_at))
    return w.tree(secret=secret)


def build_k3s_agent(root: str | os.PathLike, cluster: K3sCluster, node_name: str, node_ip: str, *,
                    now: datetime | None = None, agent_issued_at: datetime | None = None) -> Tree:
    """Write one k3s/RKE2 agent-only node: the agent dir (research test vector 3).

    Agents get fresh certs at every start, so ``agent_issued_at`` is the last agent start (default ``now``).
    """
    w = _Writer(root)
    _k3s_agent(w, cluster, node_name, node_ip, utc(agent_issued_at if agent_issued_at is not None else now))
    return w.tree()


def _k3s_agent(w: _Writer, cl: K3sCluster, node: str, ip: str, issued: datetime) -> None:
    agent = f"{cl.data_dir}/agent"
    w.mkdir(cl.data_dir, 0o700)
    w.mkdir(agent, 0o700)
    # everything here is 0600, certs included (test vector 2)
    w.certs(f"{agent}/client-ca.crt", cl.client_ca.cert, mode=0o600)
    w.certs(f"{agent}/server-ca.crt", cl.server_ca.cert, mode=0o600)
    p = cl.program
    for base, cn, orgs, ca, eku, dns, ips in (
            ("client-kubelet", f"system:node:{node}", ("system:nodes",), cl.client_ca, ["client"], (), ()),
            ("serving-kubelet", node, (), cl.server_ca, ["server"], [node, "localhost"], ["127.0.0.1", ip]),
            ("client-kube-proxy", "system:kube-proxy", (), cl.client_ca, ["client"], (), ()),
            (f"client-{p}-controller", f"system:{p}-controller", (), cl.client_ca, ["client"], (), ())):
        pair = new_leaf(cn, ca, cl.profile, issued, "ecdsa", orgs=orgs, eku=eku, dns=dns, ips=_dedupe(ips))
        w.certs(f"{agent}/{base}.crt", pair.cert, ca.cert, mode=0o600)
        w.key(f"{agent}/{base}.key", pair.key)
    # the agent's local load balancer: 6444 for k3s; RKE2 agents dial the apiserver on 6443
    url = f"https://127.0.0.1:{6444 if p == 'k3s' else 6443}"
    for conf, base in (("kubelet", "client-kubelet"), ("kubeproxy", "client-kube-proxy"),
                       (f"{p}controller", f"client-{p}-controller")):
        w.write(f"{agent}/{conf}.kubeconfig", _K3S_KUBECONFIG.format(
            url=url, ca=f"{agent}/server-ca.crt", cert=f"{agent}/{base}.crt", key=f"{agent}/{base}.key"), 0o600)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _first_cert(data: bytes) -> x509.Certificate | None:
    """First certificate of a PEM file, a kubeconfig's client-certificate-data or a secret's tls.crt."""
    marker = b"-----BEGIN CERTIFICATE-----"
    if marker in data:
        return x509.load_pem_x509_certificates(data[data.index(marker):])[0]
    m = re.search(rb"client-certificate-data: (\S+)", data) or re.search(rb'"tls.crt":"([^"]+)"', data)
    return x509.load_pem_x509_certificates(base64.b64decode(m.group(1)))[0] if m else None


def _summary(tree: Tree, now: datetime) -> list[str]:
    lines = []
    for rel in tree.files:
        path = tree.root / rel
        if path.is_symlink() or path.name.endswith((".key", "-key.pem")):
            continue
        try:
            with quiet_serial_zero():
                cert = _first_cert(path.read_bytes())
        except ValueError:          # e.g. PEM inside JSON (.rkestate)
            cert = None
        if cert is not None:
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            left = (cert.not_valid_after_utc - now).total_seconds() / 86400
            lines.append(f"{left:9.1f}d  {_rfc3339(cert.not_valid_after_utc)}  /{rel}  ({cn[0].value if cn else '-'})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    ap = argparse.ArgumentParser(
        prog="pki.py", description="Write a node's PKI as kubeadm, RKE1, k3s or RKE2 leaves it.",
        epilog="Example: python tests/lab/pki.py kubeadm --root /tmp/cp1 --expires-in-days 20")
    ap.add_argument("distribution", choices=["kubeadm", "rke1", "k3s", "rke2"])
    ap.add_argument("--root", required=True, help="directory standing for / of the node")
    ap.add_argument("--node", help="node name (default: cp1; server1 for k3s/rke2; rke1 uses --ip)")
    ap.add_argument("--ip", default="10.0.0.11", help="node IP / advertise address")
    when = ap.add_mutually_exclusive_group()
    when.add_argument("--expires-in-days", type=float, help="every leaf expires N days from now")
    when.add_argument("--expired-days-ago", type=float, help="every leaf expired N days ago")
    ap.add_argument("--style", help="kubeadm: current | v1.28 (default current); k3s/rke2: legacy | current "
                                    "(default legacy)")
    ap.add_argument("--key", choices=["rsa", "ecdsa"], default="rsa", help="kubeadm key algorithm")
    ap.add_argument("--endpoint", help="kubeadm controlPlaneEndpoint, e.g. lb.example.com:6443")
    ap.add_argument("--admin-dir", help="rke1: where cluster.yml, .rkestate, kube_config go (default <root>/rke)")
    ap.add_argument("--now", help="ISO 8601 instant used as now (default: the clock)")
    args = ap.parse_args(argv)

    now = utc(args.now)
    dist = args.distribution
    styles = {"kubeadm": KUBEADM_STYLES, "k3s": K3S_STYLES, "rke2": K3S_STYLES, "rke1": {"current": RKE1}}[dist]
    style = args.style or {"kubeadm": "current", "rke1": "current"}.get(dist, "legacy")
    if style not in styles:
        ap.error(f"--style for {dist}: one of {', '.join(styles)}")

    def at(profile: Profile) -> datetime:
        # each profile computes its own issue time so that every leaf lands on the same NotAfter
        return profile.issued_for(now, expires_in_days=args.expires_in_days, expired_days_ago=args.expired_days_ago)

    leaf_at = at(styles[style])
    ca_at = min(leaf_at, now)
    trees = []
    if dist == "kubeadm":
        cluster = kubeadm_cluster(now, ca_issued_at=ca_at, style=style, key=args.key,
                                  control_plane_endpoint=args.endpoint)
        trees.append(build_kubeadm_control_plane(
            args.root, cluster, args.node or "cp1", args.ip, now=now, leaf_issued_at=leaf_at, init_node=True,
            kubelet_client_issued_at=max(at(KUBELET_CLIENT), ca_at), kubelet_serving_issued_at=at(KUBELET_SERVING)))
    elif dist == "rke1":
        cluster = rke1_cluster([RkeNode(args.ip, ("controlplane", "etcd", "worker"))], now, ca_issued_at=ca_at,
                               leaf_issued_at=leaf_at)
        trees.append(build_rke1_node(args.root, cluster, args.ip, kubelet_serving_issued_at=at(KUBELET_SERVING)))
        trees.append(write_rke1_admin(args.admin_dir or Path(args.root) / "rke", cluster))
    else:
        cluster = k3s_cluster(dist, now, ca_issued_at=ca_at, style=style)
        trees.append(build_k3s_server(args.root, cluster, args.node or "server1", args.ip, now=now,
                                      leaf_issued_at=leaf_at))
    for tree in trees:
        print(f"# {tree.root}: {len(tree.files)} files (days left, NotAfter, path, CN)")
        print("\n".join(_summary(tree, now)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
