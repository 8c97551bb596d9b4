"""k3s for lab nodes: `k3s server`, `k3s agent`, `k3s certificate check|rotate`, `k3s kubectl`.

Behaves as research/rancher.md describes, with the file layout of tests/lab/pki.py:

- The release line is the node's /run/kubepki-lab/k3s-version (what `k3s --version` prints; nodes.py writes
  the cluster's `k3s_version:`), and with it what k3s and its dynamiclistener do (class Line, sources there).
- `k3s server` at start re-issues each leaf of server/tls that is missing or within the line's 90 or 120
  days of expiry (§1.3; CAs never), re-issues the embedded agent's certs (§1.6), rewrites
  /etc/rancher/k3s/k3s.yaml (§1.8), then picks the supervisor cert (dynamiclistener, §1.7): the
  k3s-serving secret from the datastore if there is one, else dynamic-cert.json, stored back as the
  secret, else a fresh one; with server/tls/dynamic-cert-regenerate a fresh one with a new key.
  Before the July 2022 fix a stored secret is served even expired (seed 003) and renewing it while
  running changes nothing; from it one inside the window is renewed at start and, while running, at
  the 6-hourly check (lab: /run/kubepki-lab/k3s-check-seconds); a static (user-provided) one never.
  From the November 2025 releases a deleted secret is created again from memory within a second. The secret is
  watched: another HA server's renewal or regeneration is served too, with this server's names added. The datastore is
  kine on SQLite (server/db/state.db, or the file of --datastore-endpoint sqlite://<path> that HA servers share; table
  kine, key /registry/secrets/kube-system/k3s-serving, value "k8s\\0" + protobuf, §1.9). Listens on
  --bind-address:6443 (the supervisor cert; k3s.yaml points there), 127.0.0.1:6444 (serving-kube-apiserver.crt,
  reloaded on change) and <node-ip>:10250 (kubelet).
  The HTTP side answers health, /cacerts, /ping, and GET/DELETE of the k3s-serving secret with
  the discovery kubectl needs for `kubectl -n kube-system delete secret k3s-serving`; Leases (get, create, update at a
  resourceVersion, as the apiserver's registry does: standins/_api.py) in the same datastore, so that the servers of an
  HA cluster share them; no client auth.
- `k3s agent` re-issues its certs at every start and serves serving-kubelet.crt on :10250. A real
  agent has them signed by the server; the lab's agent signs with the CA pair that populate left
  in /run/kubepki-lab/k3s-ca (lab plumbing, not part of the node's k3s layout).
- `k3s certificate check [-s SVC]... [-o text|table|json]` and `k3s certificate rotate [-s SVC]...`
  (backup to server/tls-<unix>, delete the files, write dynamic-cert-regenerate; §1.5); `k3s --version`.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supervisor  # noqa: E402  pylint: disable=wrong-import-position
from standins import _api  # noqa: E402  pylint: disable=wrong-import-position

# `use(program)` rebinds these for RKE2 (tools/k3s.py --program rke2): its server is k3s's code (rancher/rke2
# pkg/rke2 runs k3s's server), with its own names, data dir and ports
PROGRAM = "k3s"
DATA_DIR = Path("/var/lib/rancher/k3s")
SECRET_KEY = "/registry/secrets/kube-system/k3s-serving"
# supervisor port, apiserver listeners (k3s: 6443 and loopback 6444; rke2: 9345 and 6443, research/rancher.md 0)
PORTS = {"k3s": (6443, 6444), "rke2": (9345, 6443)}
CHECK_FILE = supervisor.RUN_DIR / "k3s-check-seconds"
# lab fault: this server's secret watch is stuck (an informer that lost its apiserver): no change reaches it
WATCH_FAULT = supervisor.RUN_DIR / "k3s-watch-fault"
STATIC = "listener.cattle.io/static"
SIGNER_DIR = supervisor.RUN_DIR / "k3s-ca"
LAB_BIN = "/opt/kubepki-lab/bin"
CA_FILES = ("server-ca", "client-ca", "request-header-ca", "etcd/server-ca", "etcd/peer-ca")
# certificate check/rotate services -> files under the data dir (k3s pkg/util/services)
SERVICES = {
    "admin": ["server/tls/client-admin"],
    "api-server": ["server/tls/client-kube-apiserver", "server/tls/serving-kube-apiserver"],
    "controller-manager": ["server/tls/client-controller", "server/tls/kube-controller-manager/kube-controller-manager"],
    "scheduler": ["server/tls/client-scheduler", "server/tls/kube-scheduler/kube-scheduler"],
    "supervisor": ["server/tls/client-supervisor"],
    "k3s-controller": ["agent/client-k3s-controller"],
    "k3s-server": [],              # the dynamiclistener cert: rotate writes dynamic-cert-regenerate
    "cloud-controller": ["server/tls/client-k3s-cloud-controller"],
    "etcd": ["server/tls/etcd/client", "server/tls/etcd/server-client", "server/tls/etcd/peer-server-client"],
    "auth-proxy": ["server/tls/client-auth-proxy"],
    "kubelet": ["agent/client-kubelet", "agent/serving-kubelet"],
    "kube-proxy": ["agent/client-kube-proxy"],
}
AGENT_SERVICES = ("kube-proxy", "kubelet", "k3s-controller")


def _first(minor: int, patch: int, patches: dict, every_from: int) -> bool:
    """The release has it: ``patches`` is a minor's first patch with it, ``every_from`` the first minor with it all along."""
    return minor >= every_from or patch >= patches.get(minor, 10 ** 6)


class Line:
    """What k3s (or RKE2, which embeds it) of one release does with its certificates."""

    def __init__(self, version: str, program: str = "k3s"):
        self.version = version
        found = re.match(r"v1\.(\d+)\.(\d+)", version)
        minor, patch = (int(found.group(1)), int(found.group(2))) if found else (99, 0)
        # CertificateRenewDays 90 -> 120, k3s#12232 (pkg/daemons/config/types.go): server/tls at start and
        # ExpirationDaysCheck of the supervisor listener (pkg/cluster/https.go)
        self.renew_days = 120 if _first(minor, patch, {30: 13, 31: 9, 32: 5, 33: 1}, 34) else 90
        # dynamiclistener v0.3.4 (factory/gen.go fdf983a, k3s#5896): Merge never returns a secret within
        # ExpirationDaysCheck days of expiry; before, the stored one wins over a renewal (seed 003)
        # RKE2 pinned dynamiclistener v0.3.3 in its go.mod until rancher/rke2#4324 (June 2023)
        self.merge_refuses_expiring = _first(minor, patch, {22: 13, 23: 10, 24: 4}, 25) if program == "k3s" \
            else _first(minor, patch, {24: 15, 25: 11, 26: 6, 27: 3}, 28)
        # dynamiclistener v0.6.4 / v0.7.1 (storage/kubernetes/controller.go, #202): Deleted watch events are queued
        # and saveInK8s creates the secret again from memory
        self.recreates_deleted = _first(minor, patch, {31: 14, 32: 10, 33: 6, 34: 2}, 35)
        # k3s#4495 (pkg/cluster/https.go RegenerateCerts): the trigger file, read once at start
        # (rke2 certificate rotate: rancher/rke2#2220, v1.20.14, v1.21.8, v1.22.5)
        self.reads_trigger = _first(minor, patch, {21: 8, 22: 5, 23: 1}, 24) if program == "k3s" \
            else _first(minor, patch, {20: 14, 21: 8, 22: 5}, 23)
        # dynamiclistener v0.9.1 (storage/file afb1003, in the 2026-08-01 releases; k3s numbers as rke2's): an empty
        # dynamic-cert.json reads as absent; before, like a corrupt one, it fails storage.Get and so every handshake
        self.empty_cache_is_absent = _first(minor, patch, {33: 13, 34: 10, 35: 7}, 36)


def _version(program: str) -> str:
    default = {"k3s": "v1.33.6+k3s1", "rke2": "v1.33.6+rke2r1"}[program]
    try:
        return (supervisor.RUN_DIR / f"{program}-version").read_text().strip() or default
    except OSError:
        return default


LINE = Line(_version("k3s"))


def use(program: str) -> None:
    """Be the RKE2 (or k3s) server: names, data dir, version."""
    global PROGRAM, DATA_DIR, SECRET_KEY, LINE  # pylint: disable=global-statement
    PROGRAM, DATA_DIR = program, Path(f"/var/lib/rancher/{program}")
    SECRET_KEY = f"/registry/secrets/kube-system/{program}-serving"
    LINE = Line(_version(program), program)


def log(level: str, msg: str) -> None:
    print(f'time="{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}" level={level} msg="{msg}"',
          flush=True)


# ---------------------------------------------------------------------------------------------
# The datastore: kine on SQLite, the secret as Kubernetes protobuf

KINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name INTEGER, created INTEGER,
    deleted INTEGER, create_revision INTEGER, prev_revision INTEGER, lease INTEGER, value BLOB, old_value BLOB);
CREATE INDEX IF NOT EXISTS kine_name_index ON kine (name);
CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision);
"""


# --datastore-endpoint sqlite://<path>: a datastore the servers of an HA cluster share. Real k3s shares MySQL, Postgres
# or etcd through kine, which stores the same rows (k3s-io/kine pkg/drivers/generic); the lab's nodes share one file.
DATASTORE: Path | None = None


def kine(data_dir: Path, datastore: Path | None = None) -> sqlite3.Connection:
    path = datastore or DATASTORE or data_dir / "server/db/state.db"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(KINE_SCHEMA)
    return db


def kine_latest(db: sqlite3.Connection, key: str):
    return db.execute("SELECT id, create_revision, deleted, value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1",
                      (key,)).fetchone()


def kine_get(db: sqlite3.Connection, key: str) -> bytes | None:
    row = kine_latest(db, key)
    return None if row is None or row[2] else row[3]


def kine_put(db: sqlite3.Connection, key: str, value: bytes | None) -> None:
    """Every write adds a row, as kine does; value None marks the key deleted."""
    prev = kine_latest(db, key)
    if value is None and (prev is None or prev[2]):
        return
    _kine_append(db, key, value, prev)


def _kine_append(db: sqlite3.Connection, key: str, value: bytes | None, prev) -> int:
    """The row after ``prev`` (kine_latest's); its revision. sqlite3.IntegrityError when another write came after
    ``prev`` first: the unique (name, prev_revision) index, which makes kine's Append fail (k3s-io/kine
    pkg/logstructured/logstructured.go Create, Update)."""
    live = prev is not None and not prev[2]
    return db.execute("INSERT INTO kine (name, created, deleted, create_revision, prev_revision, lease, value, old_value) "
                      "VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
                      (key, int(not live), int(value is None), (prev[1] or prev[0]) if live else 0, prev[0] if prev else 0,
                       prev[3] if value is None else value, prev[3] if live else None)).lastrowid


class KineObjects:
    """JSON objects in kine, resourceVersion = the row's revision (its id), for standins/_api.py's create and update
    (the real apiserver stores protobuf; the lab's Leases are JSON, as --storage-media-type=application/json stores)."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir

    def _write(self, key, obj, wanted):
        """kine's Create (``wanted`` None: only when absent) or Update (only at revision ``wanted``)."""
        db = kine(self.data_dir)
        try:
            prev = kine_latest(db, key)
            live = prev is not None and not prev[2]
            if live != (wanted is not None) or (live and str(prev[0]) != str(wanted)):
                return None, self._decode(prev) if live else None
            try:
                return _kine_append(db, key, json.dumps(obj, separators=(",", ":")).encode(), prev), None
            except sqlite3.IntegrityError:
                return None, self._decode(kine_latest(db, key))
        finally:
            db.close()

    @staticmethod
    def _decode(row):
        if row is None or row[2]:
            return None
        obj = json.loads(row[3])
        obj.setdefault("metadata", {})["resourceVersion"] = str(row[0])
        return obj

    def get(self, key):
        db = kine(self.data_dir)
        try:
            return self._decode(kine_latest(db, key))
        finally:
            db.close()

    def create(self, key, obj):
        return self._write(key, obj, None)

    def update(self, key, obj, revision):
        """Always at a revision: Leases, the one resource served here, allow no unconditional update."""
        return self._write(key, obj, revision)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(num: int, value) -> bytes:
    """One protobuf field: int -> varint, str/bytes -> length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    value = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _pb_fields(buf: bytes) -> list:
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        if key & 7 == 0:
            value, pos = _read_varint(buf, pos)
        elif key & 7 == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported protobuf wire type {key & 7}")
        fields.append((key >> 3, value))
    return fields


def _read_varint(buf: bytes, pos: int) -> tuple:
    value = shift = 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def secret_to_kine(secret: dict) -> bytes:
    """core/v1 Secret in a runtime.Unknown, as the apiserver stores it: b"k8s\\0" + protobuf."""
    meta = secret["metadata"]
    stamp = int(datetime.datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00")).timestamp())
    pb_meta = (_pb(1, meta["name"]) + _pb(3, meta["namespace"]) + _pb(5, meta["uid"]) + _pb(8, _pb(1, stamp))
               + b"".join(_pb(12, _pb(1, k) + _pb(2, v)) for k, v in sorted(meta.get("annotations", {}).items())))
    body = (_pb(1, pb_meta) + b"".join(_pb(2, _pb(1, k) + _pb(2, base64.b64decode(v)))
                                       for k, v in sorted(secret["data"].items())) + _pb(3, secret["type"]))
    return b"k8s\x00" + _pb(1, _pb(1, "v1") + _pb(2, "Secret")) + _pb(2, body)


def kine_to_secret(value: bytes) -> dict:
    if not value.startswith(b"k8s\x00"):
        raise ValueError("not a protobuf value (encrypted secrets are not supported by the lab)")
    raw = dict(_pb_fields(value[4:]))[2]
    meta, data, kind = {"annotations": {}}, {}, ""
    for num, val in _pb_fields(raw):
        if num == 1:
            for mnum, mval in _pb_fields(val):
                if mnum in (1, 3, 5):
                    meta[{1: "name", 3: "namespace", 5: "uid"}[mnum]] = mval.decode()
                elif mnum == 8:
                    secs = dict(_pb_fields(mval)).get(1, 0)
                    meta["creationTimestamp"] = f"{datetime.datetime.fromtimestamp(secs, datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}"
                elif mnum == 12:
                    entry = dict(_pb_fields(mval))
                    meta["annotations"][entry[1].decode()] = entry.get(2, b"").decode()
        elif num == 2:
            entry = dict(_pb_fields(val))
            data[entry[1].decode()] = base64.b64encode(entry.get(2, b"")).decode()
        elif num == 3:
            kind = val.decode()
    return {"metadata": meta, "data": data, "type": kind}


# ---------------------------------------------------------------------------------------------
# Certificates

def load_cluster(pki, tls: Path):
    """The k3s cluster (CAs, service key) as found in a tls dir; absent files give None."""
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import serialization  # pylint: disable=import-outside-toplevel

    def key(path: Path):
        return serialization.load_pem_private_key(path.read_bytes(), None) if path.exists() else None

    def pair(base: str):
        crt = tls / f"{base}.crt"
        if not crt.exists():
            return None
        with pki.quiet_serial_zero():
            return pki.Pair(x509.load_pem_x509_certificate(crt.read_bytes()), key(tls / f"{base}.key"))

    cas = [pair(base) for base in CA_FILES]
    if cas[0] is None or cas[1] is None:
        raise SystemExit(f"k3s: {tls}/server-ca.crt and client-ca.crt are needed (is this node populated?)")
    # the lab's k3s is a v1.31 build: dynamiclistener < v0.7.3, the "legacy" validity rules
    return pki.K3sCluster(PROGRAM, "legacy", pki.K3S_LEGACY, None, *cas, key(tls / "service.key"),
                          "cluster.local", "10.43.0.1")


def _leaf(path: Path):
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _cn(cert) -> str:
    from cryptography.x509.oid import NameOID  # pylint: disable=import-outside-toplevel
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return names[0].value if names else ""


def renew_server(pki, cluster, node: str, ip: str, sans: list, data_dir: Path, now) -> list:
    """Re-issue the leaves of server/tls that are missing or within the line's renew days; returns their names."""
    tls = data_dir / "server/tls"
    renewed = []
    with tempfile.TemporaryDirectory() as tmp:
        # pki.py knows every leaf's subject, SANs and issuer: issue them all, keep the due ones
        fresh_root = Path(tmp)
        pki.build_k3s_server(fresh_root, cluster, node, ip, now=now, leaf_issued_at=now, tls_sans=sans)
        fresh_tls = fresh_root / str(tls).lstrip("/")
        for crt in sorted(fresh_tls.rglob("*.crt")):
            rel = crt.relative_to(fresh_tls)
            if str(rel)[:-4] in CA_FILES or rel.name.endswith(".nochain.crt"):
                continue
            current = _leaf(tls / rel)
            always = rel.parts[0] == "temporary-certs"      # the apiserver makes its loopback pair at each start
            if not always and current is not None:
                days = (supervisor.not_after(current) - now).total_seconds() / 86400
                if days > LINE.renew_days:
                    continue
                log("info", f"certificate CN={_cn(current)} will expire in {days:f} days at "
                            f"{supervisor.not_after(current):%Y-%m-%dT%H:%M:%SZ}")
            for src in (crt, crt.with_suffix(".key")):
                pki.write_file(tls / src.relative_to(fresh_tls), src.read_bytes(), src.stat().st_mode & 0o777)
            if not always:
                new = _leaf(crt)
                log("info", f"certificate CN={_cn(new)} signed by CN={new.issuer.rfc4514_string().split('=', 1)[1]}: "
                            f"notBefore={new.not_valid_before:%Y-%m-%d %H:%M:%S} +0000 UTC "
                            f"notAfter={supervisor.not_after(new):%Y-%m-%d %H:%M:%S} +0000 UTC")
                renewed.append(str(rel))
        for cred in (fresh_root / str(data_dir / "server/cred").lstrip("/")).glob("*"):
            if not (data_dir / "server/cred" / cred.name).exists():
                pki.write_file(data_dir / "server/cred" / cred.name, cred.read_bytes(), 0o600)
    return renewed


def _static(secret: dict) -> bool:
    # factory/gen.go IsStatic: a user-provided cert, never altered by Merge or Renew
    return (secret["metadata"].get("annotations") or {}).get(STATIC) == "true"


def _days_left(secret: dict) -> float:
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    return (supervisor.not_after(cert) - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


def _cns(secret: dict) -> list:
    """factory/gen.go cns: the names the cert was made for, one annotation each (every server's, in HA)."""
    return sorted(v for k, v in (secret["metadata"].get("annotations") or {}).items()
                  if k.startswith("listener.cattle.io/cn-"))


def _renewed(pki, cluster, node: str, ip: str, sans: list, secret: dict, now) -> dict:
    """factory/gen.go Renew and AddCN: a new cert on the stored key for the stored names and this server's, same secret."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key  # pylint: disable=import-outside-toplevel
    key = load_pem_private_key(base64.b64decode(secret["data"]["tls.key"]), None)
    return _updated(secret, pki.serving_secret(cluster, node, ip, issued_at=now, tls_sans=sans + _cns(secret), key=key))


def _lacks_own_names(pki, cluster, node: str, ip: str, sans: list, secret: dict) -> bool:
    # factory/gen.go NeedsUpdate: a server adds its own names (AddCN) to a secret another server made
    return not _static(secret) and bool(set(pki.serving_cns(cluster, node, ip, sans)) - set(_cns(secret)))


def _updated(stored: dict | None, fresh: dict) -> dict:
    """storage.Update of the stored secret: the same object (uid, creation time) with the new data."""
    if stored:
        fresh["metadata"].update({k: stored["metadata"][k] for k in ("uid", "creationTimestamp") if k in stored["metadata"]})
    return fresh


def store(pki, cluster, data_dir: Path, secret: dict) -> None:
    """storage.Update: the datastore, the dynamic-cert.json cache and what the listener serves."""
    db = kine(data_dir)
    try:
        if kine_get(db, SECRET_KEY) != secret_to_kine(secret):
            kine_put(db, SECRET_KEY, secret_to_kine(secret))
    finally:
        db.close()
    try:
        cached = json.loads((data_dir / "server/tls/dynamic-cert.json").read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        cached = None
    if cached != secret["data"]:
        pki.write_dynamic_cert("/", cluster, secret)
    serving = supervisor.RUN_DIR / f"{PROGRAM}-serving"
    serving.mkdir(mode=0o700, exist_ok=True)
    for name in ("tls.key", "tls.crt"):
        pki.write_file(serving / name, base64.b64decode(secret["data"][name]), 0o600)


def serving_secret(pki, cluster, node: str, ip: str, sans: list, data_dir: Path, now) -> dict:
    """dynamiclistener's choice at start: datastore secret, else dynamic-cert.json, else a new one; the
    trigger file first, then Merge's expiry rule of the line."""
    tls = data_dir / "server/tls"
    cache, trigger = tls / "dynamic-cert.json", tls / "dynamic-cert-regenerate"
    db = kine(data_dir)
    try:
        stored = kine_get(db, SECRET_KEY)
    finally:
        db.close()
    secret = kine_to_secret(stored) if stored else None
    if trigger.exists() and LINE.reads_trigger:
        # pkg/cluster/https.go RegenerateCerts removes it; factory Regenerate: a new secret and key (static or not)
        trigger.unlink()
        log("info", f"Regenerating the {PROGRAM}-serving certificate (dynamic-cert-regenerate)")
        # factory Regenerate: a new key, for the names the stored secret has (every server's)
        secret = _updated(secret, pki.serving_secret(cluster, node, ip, issued_at=now,
                                                     tls_sans=sans + (_cns(secret) if secret else [])))
    elif secret is None and cache.exists() and cache.stat().st_size:
        secret = json.loads(cache.read_text())
        log("info", f"Creating new TLS secret for kube-system/{PROGRAM}-serving from {cache}")
    if secret is None:
        secret = pki.serving_secret(cluster, node, ip, issued_at=now, tls_sans=sans)
        log("info", f"Creating new TLS secret for kube-system/{PROGRAM}-serving")
    elif LINE.merge_refuses_expiring and not _static(secret) and _days_left(secret) <= LINE.renew_days:
        log("info", f"certificate CN=k3s will expire in {_days_left(secret):f} days: Merge refuses it, renewing")
        secret = _renewed(pki, cluster, node, ip, sans, secret, now)
    elif _lacks_own_names(pki, cluster, node, ip, sans, secret):
        log("info", f"Adding this server's names to kube-system/{PROGRAM}-serving")
        secret = _renewed(pki, cluster, node, ip, sans, secret, now)
    store(pki, cluster, data_dir, secret)
    ann = secret["metadata"].get("annotations", {})
    log("info", f"Active TLS secret kube-system/{PROGRAM}-serving (ver={secret['metadata'].get('resourceVersion', '')}) "
                f"(count {len(ann) - 1}): map[{' '.join(f'{k}:{v}' for k, v in sorted(ann.items()))}]")
    return secret


def storage_context(cache: Path, serving: Path):
    """The listener's certificate as getCertificate gets it from storage at every handshake: through the
    dynamic-cert.json file layer, whose Get fails on a corrupt cache (and an empty one before v0.9.1), and then so
    does the handshake."""
    served = supervisor.tls_context(str(serving / "tls.crt"), str(serving / "tls.key"), reload=True)

    def context():
        try:
            data = cache.read_bytes()
        except FileNotFoundError:
            return served()
        if data or not LINE.empty_cache_is_absent:
            try:
                json.loads(data)
            except ValueError as exc:
                log("error", f"dynamiclistener: failed to read {cache}: {exc}")
                raise ssl.SSLError(f"no certificate: {cache} is unreadable") from exc
        return served()
    return context


def keep_renewed(pki, cluster, node: str, ip: str, sans: list, data_dir: Path, state: dict) -> None:
    """listener.go WrapExpiration: every 6 h (lab: k3s-check-seconds) checkExpiration renews a cert within
    ExpirationDaysCheck days (cert.IsCertExpired). Before dynamiclistener v0.3.4 the renewal is merged with the
    stored secret, which wins (fdf983a): nothing changes, as in seed 003."""
    try:
        interval = float(CHECK_FILE.read_text())
    except (OSError, ValueError):
        interval = 6 * 3600.0
    while True:
        time.sleep(interval)
        secret = state["secret"]
        if _static(secret) or _days_left(secret) > LINE.renew_days:
            continue
        if not LINE.merge_refuses_expiring:
            log("info", "certificate CN=k3s expires soon; Merge kept the stored certificate")
            continue
        state["secret"] = _renewed(pki, cluster, node, ip, sans, secret, pki.utc())
        store(pki, cluster, data_dir, state["secret"])
        log("info", f"Renewed the {PROGRAM}-serving certificate while running")


def watch_secret(pki, cluster, node: str, ip: str, sans: list, data_dir: Path, state: dict) -> None:
    """storage/kubernetes/controller.go: every change of the secret (another server's renewal or regeneration, in
    HA) goes through Update, where Merge takes the stored cert when it covers this server's names (factory/gen.go
    Merge: "the second secret is returned" when only the fingerprints differ), else adds them (AddCN). From
    dynamiclistener#202 a Deleted event is queued like any other, and saveInK8s creates the secret again from the
    one in memory; before, a deletion is ignored."""
    while True:
        time.sleep(0.5)
        if WATCH_FAULT.exists():
            continue
        db = kine(data_dir)
        try:
            stored = kine_get(db, SECRET_KEY)
        finally:
            db.close()
        if stored is None:
            if LINE.recreates_deleted:
                log("info", f"Creating new TLS secret for kube-system/{PROGRAM}-serving")
                store(pki, cluster, data_dir, state["secret"])
            continue
        secret = kine_to_secret(stored)
        fingerprint = "listener.cattle.io/fingerprint"
        if secret["metadata"]["annotations"].get(fingerprint) == state["secret"]["metadata"]["annotations"].get(fingerprint):
            continue
        if _lacks_own_names(pki, cluster, node, ip, sans, secret):
            secret = _renewed(pki, cluster, node, ip, sans, secret, pki.utc())
        state["secret"] = secret
        store(pki, cluster, data_dir, secret)
        log("info", f"Updated TLS secret kube-system/{PROGRAM}-serving from the datastore")


# ---------------------------------------------------------------------------------------------
# HTTP: the few supervisor/apiserver paths the lab needs

# the Leases the collection's cluster lock takes (k3s's apiserver serves all of coordination.k8s.io/v1)
LEASES = _api.lease_resource()


def api_routes(data_dir: Path, server_ca: Path) -> dict:
    name = f"{PROGRAM}-serving"
    path = f"/api/v1/namespaces/kube-system/secrets/{name}"

    def secret(handler):
        db = kine(data_dir)
        try:
            stored = kine_get(db, SECRET_KEY)
            if stored is None:
                return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                             "message": f'secrets "{name}" not found', "details": {"name": name, "kind": "secrets"}}
            if handler.command == "DELETE":
                kine_put(db, SECRET_KEY, None)
                log("info", f"secret kube-system/{name} deleted")
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success",
                             "details": {"name": name, "kind": "secrets"}}
            return 200, {"kind": "Secret", "apiVersion": "v1", **kine_to_secret(stored)}
        finally:
            db.close()

    leases = KineObjects(data_dir)

    def lease(handler):
        """GET, PUT (update or create) kube-system/leases/<name>, POST (create) kube-system/leases."""
        parts = handler.path.split("?", 1)[0].split("/")[5:]       # <namespace>, leases[, <name>]
        try:
            if parts[1:2] != ["leases"] or len(parts) > 3:
                raise _api.ApiError(404, "NotFound", "the server could not find the requested resource", {})
            namespace, name = parts[0], (parts[2:] or [""])[0]
            if handler.command == "GET" and name:
                found = leases.get(LEASES.key(namespace, name))
                if found is None:
                    raise _api.not_found(LEASES, name)
                return 200, found
            body = json.loads(handler.body or b"{}")
            if handler.command == "POST" and not name:
                return 201, _api.create(leases, LEASES, namespace, _api.new_object(LEASES, body, namespace))
            if handler.command == "PUT" and name:
                obj, created = _api.update(leases, LEASES, namespace, name, body)
                return 201 if created else 200, obj
            raise _api.ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        except _api.ApiError as exc:
            return exc.code, exc.status()

    secrets = _api.Resource("", "v1", "secrets", "Secret", True, verbs=("create", "delete", "get", "list", "patch", "update", "watch"))
    return {
        path: secret,
        "/cacerts": lambda h: (200, server_ca.read_text()),
        "/ping": lambda h: (200, "pong"),
        "/api": lambda h: (200, {"kind": "APIVersions", "versions": ["v1"],
                                 "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        "/api/v1": lambda h: (200, _api.resource_list([secrets], "", "v1")),
        # the discovery kubectl needs for `kubectl -n kube-system get lease <name>`
        "/apis": lambda h: (200, _api.group_list([LEASES])),
        "/apis/coordination.k8s.io": lambda h: (200, _api.api_group([LEASES], LEASES.group)),
        "/apis/coordination.k8s.io/v1": lambda h: (200, _api.resource_list([LEASES], LEASES.group, LEASES.version)),
        "/apis/coordination.k8s.io/v1/namespaces/": lease,
    }


# ---------------------------------------------------------------------------------------------
# Commands

def _node(flags: dict) -> tuple:
    node = (flags.get("node-name") or socket.gethostname()).lower()
    ip = flags.get("node-ip") or flags.get("bind-address") or "127.0.0.1"
    return node, ip


def server(flags: dict) -> int:
    global DATASTORE  # pylint: disable=global-statement
    endpoint = flags.get("datastore-endpoint")
    if endpoint and not endpoint.startswith("sqlite://"):
        raise SystemExit(f"{PROGRAM}: the lab's datastore is sqlite://<path>, not {endpoint}")
    DATASTORE = Path(endpoint[len("sqlite://"):]) if endpoint else None
    pki = supervisor.load_pki()
    data_dir = Path(flags.get("data-dir", DATA_DIR))
    tls = data_dir / "server/tls"
    node, ip = _node(flags)
    sans = flags["-multi"].get("tls-san", [])
    bind = flags.get("bind-address") or "0.0.0.0"
    now = pki.utc()
    cluster = load_cluster(pki, tls)
    renewed = renew_server(pki, cluster, node, ip, sans, data_dir, now)
    log("info", f"{PROGRAM} server {node}: {len(renewed)} certificates renewed")
    pki.build_k3s_agent("/", cluster, node, ip, agent_issued_at=now)       # the embedded agent
    admin = tls / "client-admin"
    kubeconfig = Path(flags.get("write-kubeconfig", f"/etc/rancher/{PROGRAM}/{PROGRAM}.yaml"))
    supervisor_port, api_port = PORTS[PROGRAM]
    supervisor_port = int(flags.get("https-listen-port", supervisor_port)) if PROGRAM == "k3s" else supervisor_port
    # k3s.yaml dials the supervisor port, which proxies the API; rke2.yaml the local apiserver
    server_url = f"https://{flags.get('bind-address', '127.0.0.1')}:{supervisor_port}" if PROGRAM == "k3s" \
        else f"https://127.0.0.1:{api_port}"
    pki.write_file(kubeconfig, pki.kubeconfig(
        server_url, cluster="default", user="default",
        context="default", ca=(tls / "server-ca.crt").read_bytes(), cert=admin.with_suffix(".crt").read_bytes(),
        key=admin.with_suffix(".key").read_bytes()), int(flags.get("write-kubeconfig-mode", "600"), 8))
    log("info", f"Wrote kubeconfig {kubeconfig}")

    state = {"secret": serving_secret(pki, cluster, node, ip, sans, data_dir, now)}
    serving = supervisor.RUN_DIR / f"{PROGRAM}-serving"
    handler = supervisor.make_handler(PROGRAM, api_routes(data_dir, tls / "server-ca.crt"))
    # dynamiclistener serves what storage holds now (getCertificate): a renewal is served at once
    supervisor.serve_https([(bind, supervisor_port)], storage_context(tls / "dynamic-cert.json", serving), handler)
    for loop in (keep_renewed, watch_secret):
        threading.Thread(target=loop, args=(pki, cluster, node, ip, sans, data_dir, state), daemon=True).start()
    # k3s: the apiserver on loopback (https-listen-port + 1); rke2: on every address, here loopback and the node's
    listeners = [("127.0.0.1", supervisor_port + 1)] if PROGRAM == "k3s" else [("127.0.0.1", api_port), (ip, api_port)]
    supervisor.serve_https(listeners, supervisor.tls_context(str(tls / "serving-kube-apiserver.crt"),
                                                             str(tls / "serving-kube-apiserver.key"), reload=True), handler)
    serve_kubelet(data_dir, ip)
    log("info", f"{PROGRAM} server {node} is up")
    threading.Event().wait()
    return 0


def serve_kubelet(data_dir: Path, ip: str) -> None:
    agent = data_dir / "agent"
    supervisor.serve_https([(ip, 10250)], supervisor.tls_context(str(agent / "serving-kubelet.crt"),
                                                                 str(agent / "serving-kubelet.key")),
                           supervisor.make_handler("kubelet"))


def agent(flags: dict) -> int:
    pki = supervisor.load_pki()
    data_dir = Path(flags.get("data-dir", DATA_DIR))
    node, ip = _node(flags)
    if not flags.get("server"):
        raise SystemExit("k3s agent: --server (K3S_URL) is required")
    cluster = load_cluster(pki, SIGNER_DIR)
    pki.build_k3s_agent("/", cluster, node, ip, agent_issued_at=pki.utc())
    log("info", f"k3s agent {node}: certificates re-issued, server {flags['server']}")
    serve_kubelet(data_dir, ip)
    threading.Event().wait()
    return 0


def _selected(flags: dict, data_dir: Path) -> list:
    chosen = [s for v in flags["-multi"].get("service", []) + flags["-multi"].get("s", []) for s in v.split(",")]
    unknown = [s for s in chosen if s not in SERVICES]
    if unknown:
        raise SystemExit(f"k3s: {unknown[0]} is not a recognized service")
    if chosen:
        return chosen
    return list(SERVICES) if (data_dir / "server").exists() else list(AGENT_SERVICES)


def check(flags: dict) -> int:
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.x509.oid import ExtendedKeyUsageOID  # pylint: disable=import-outside-toplevel
    data_dir = Path(flags.get("data-dir", DATA_DIR))
    now = datetime.datetime.now(datetime.timezone.utc)
    rows = []
    for service in _selected(flags, data_dir):
        for base in SERVICES[service]:
            path = data_dir / f"{base}.crt"
            if not path.exists():
                continue
            for block in path.read_text().split("-----END CERTIFICATE-----")[:-1]:
                cert = x509.load_pem_x509_certificate((block + "-----END CERTIFICATE-----\n").strip().encode())
                end = supervisor.not_after(cert)
                start = cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
                status = ("NOT YET VALID" if now < start else "EXPIRED" if now > end
                          else "WARNING" if (end - now).days <= LINE.renew_days else "OK")
                try:
                    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                    usages = [{ExtendedKeyUsageOID.SERVER_AUTH: "ServerAuth",
                               ExtendedKeyUsageOID.CLIENT_AUTH: "ClientAuth"}.get(u, "Unknown") for u in eku]
                except x509.ExtensionNotFound:
                    usages = ["CertSign"] if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca else []
                rows.append({"Filename": path.name, "Subject": _cn(cert), "Issuer": cert.issuer.rfc4514_string()[3:],
                             "Usages": usages, "ExpiryTime": f"{(start if status == 'NOT YET VALID' else end):%Y-%m-%dT%H:%M:%SZ}",
                             "ResidualTime": int((end - now).total_seconds() * 1e9), "Status": status})
    output = flags.get("output") or flags.get("o") or "text"
    if output == "json":
        print(json.dumps({"Certificates": rows}))
    elif output == "yaml":
        import yaml  # pylint: disable=import-outside-toplevel
        print(yaml.safe_dump({"certificates": rows}, sort_keys=False), end="")
    elif output == "table":
        head = ["FILENAME", "SUBJECT", "USAGES", "EXPIRES", "RESIDUAL TIME", "STATUS"]
        table = [[r["Filename"], r["Subject"], ",".join(r["Usages"]),
                  datetime.datetime.fromisoformat(r["ExpiryTime"][:-1]).strftime("%b %d, %Y %H:%M UTC"),
                  f"{r['ResidualTime'] / 86400e9:.0f}d", r["Status"]] for r in rows]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *table)]
        for row in [head, ["-" * w for w in widths], *table]:
            print("   ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    else:
        words = {"OK": "is ok, expires at", "WARNING": f"will expire within {LINE.renew_days} days at",
                 "EXPIRED": "expired at", "NOT YET VALID": "is not valid before"}
        for r in rows:
            log("info" if r["Status"] == "OK" else "warning",
                f"{r['Filename']}: certificate {r['Subject']} ({','.join(r['Usages'])}) {words[r['Status']]} {r['ExpiryTime']}")
    return 0


def rotate(flags: dict) -> int:
    data_dir = Path(flags.get("data-dir", DATA_DIR))
    services = _selected(flags, data_dir)
    is_server = (data_dir / "server").exists()
    backup = data_dir / ("server" if is_server else "agent") / f"tls-{int(time.time())}"
    if is_server:
        shutil.copytree(data_dir / "server/tls", backup)
    backup.mkdir(parents=True, exist_ok=True)
    for agent_file in (data_dir / "agent").glob("*.*"):
        shutil.copy2(agent_file, backup / agent_file.name)
    for service in services:
        for base in SERVICES[service]:
            for suffix in (".crt", ".key"):
                (data_dir / f"{base}{suffix}").unlink(missing_ok=True)
    if "k3s-server" in services and is_server and LINE.reads_trigger:   # the <program>-server service
        trigger = data_dir / "server/tls/dynamic-cert-regenerate"
        trigger.write_bytes(b"")
        trigger.chmod(0o600)
    log("info", f"Successfully backed up certificates to {backup}, please restart k3s server or agent to rotate certificates")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--program"]:
        use(argv[1])
        argv = argv[2:]
    cmd = argv[:1]
    if cmd == ["kubectl"]:
        # the real kubectl, not the node's `kubectl -> k3s` link (/opt/kubepki-lab/bin)
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != LAB_BIN)
        kubectl = shutil.which("kubectl", path=path) or "kubectl"
        os.execve(kubectl, ["kubectl", *argv[1:]],
                  {**os.environ, "KUBECONFIG": os.environ.get("KUBECONFIG", f"/etc/rancher/{PROGRAM}/{PROGRAM}.yaml")})
    if cmd in (["--version"], ["-v"], ["version"]):
        # pkg/cli/cmds/root.go VersionPrinter: "<argv0> version <version> (<commit>)", then the Go version; k3s
        # builds with 8 hex digits of the commit, rke2 with all 40 (scripts/build-binary) and boringcrypto
        commit = hashlib.sha1(LINE.version.encode()).hexdigest()
        print(f"{PROGRAM} version {LINE.version} ({commit[:8]})\ngo version go1.23.8" if PROGRAM == "k3s"
              else f"{PROGRAM} version {LINE.version} ({commit})\ngo version go1.23.8 X:boringcrypto")
        return 0
    if cmd in (["server"], ["agent"]):
        flags = supervisor.parse_flags(argv[1:])
        return server(flags) if cmd == ["server"] else agent(flags)
    if argv[:1] == ["certificate"] and argv[1:2] in (["check"], ["rotate"]):
        flags = supervisor.parse_flags(argv[2:])
        return check(flags) if argv[1] == "check" else rotate(flags)
    print("usage: k3s server|agent [flags] | k3s certificate check|rotate [-s SERVICE]... | k3s kubectl ... | k3s --version",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
