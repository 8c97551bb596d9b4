"""kubeadm for lab nodes: `version` and `certs renew`, as the release line of the node behaves.

The line is the node's /run/kubepki-lab/kubeadm-version (what `kubeadm version -o short` prints;
nodes.py writes the cluster's `kubeadm_version:`). With --rootfs DIR every path, that one included,
is read under DIR, as kubeadm chroots there (so a node tree can be renewed off the lab). Modelled on kubernetes cmd/kubeadm at v1.28.15
and v1.31.4:

- app/cmd/certs.go: `certs renew` has one subcommand per handle of renewal/manager.go certsList and
  kubeConfigList, sorted (`super-admin.conf` from v1.29, kubernetes#121305), plus `all`; each takes
  --cert-dir, --config, --kubeconfig and the global --rootfs (kubeconfigs always in /etc/kubernetes).
  `renew` itself has no flags and `Run: cmdutil.SubCmdRun()`, so an unknown handle with a flag fails in
  cobra's flag parsing ("unknown flag: --cert-dir", kubernetes/kubeadm#3093), without one in SubCmdRun
  ("invalid subcommand"); both exit 1 (kubeadmutil.CheckErr DefaultErrorExitCode), on stderr.
- getInternalCfg: with --config the file, the cluster untouched; else the kubeadm-config ConfigMap read
  with --kubeconfig, and when that read fails "[renew] Error reading configuration from the Cluster.
  Falling back to default configuration" and the defaults (one-year leaves, RSA-2048 keys); a
  kubeconfig that cannot be loaded gives the defaults without a word.
- renewal/manager.go RenewUsingLocalCA: a missing cert prints "MISSING!" and is skipped; a CA without
  its key is external ("can't be renewed"); otherwise certToConfig copies CN, O, SANs and extended key
  usages, pkiutil.NewCertAndKey makes a new key of the configured algorithm and signs it:
  v1.28 NotBefore = the CA's NotBefore, NotAfter = now + 365 days (pkiutil.NewSignedCert);
  v1.31 NotBefore = start - 5 min (CertificateBackdate), NotAfter = start + certificateValidityPeriod.
- renewal/filerenewer.go + readwriter.go: a file pair is written key first, then cert, each with
  os.WriteFile (0600 key, 0644 cert on creation; an existing file keeps its mode), not atomically; a
  kubeconfig gets the new cert and key in the current context's user and ca.crt in its cluster,
  written with clientcmd.WriteToFile (0600).
- `all` stops at the first error; at its end it asks for the restarts.

Fault injection for tests: the node's /run/kubepki-lab/kubeadm-fault holding a handle makes the renewal of that
handle fail after its key was written (a file pair) or before its kubeconfig was (ENOSPC), as a full
disk would; the file is read once and removed.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import os
import re
import ssl
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supervisor  # noqa: E402  pylint: disable=wrong-import-position

pki = supervisor.load_pki()

VERSION_FILE = "/run/kubepki-lab/kubeadm-version"
FAULT_FILE = "/run/kubepki-lab/kubeadm-fault"
DEFAULTS = {"cert-dir": "/etc/kubernetes/pki", "kubeconfig": "/etc/kubernetes/admin.conf", "config": "", "rootfs": ""}
KUBECONFIG_DIR = "/etc/kubernetes"      # constants.KubernetesDir: no flag moves it
# renewal/manager.go: handle -> (long name, file under --cert-dir or /etc/kubernetes, CA base name)
CERTS = {
    "apiserver": ("certificate for serving the Kubernetes API", "apiserver", "ca"),
    "apiserver-kubelet-client": ("certificate for the API server to connect to kubelet", "apiserver-kubelet-client", "ca"),
    "front-proxy-client": ("certificate for the front proxy client", "front-proxy-client", "front-proxy-ca"),
    "apiserver-etcd-client": ("certificate the apiserver uses to access etcd", "apiserver-etcd-client", "etcd/ca"),
    "etcd-server": ("certificate for serving etcd", "etcd/server", "etcd/ca"),
    "etcd-peer": ("certificate for etcd nodes to communicate with each other", "etcd/peer", "etcd/ca"),
    "etcd-healthcheck-client": ("certificate for liveness probes to healthcheck etcd", "etcd/healthcheck-client", "etcd/ca"),
}
KUBECONFIGS = {
    "admin.conf": "certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself",
    "super-admin.conf": "certificate embedded in the kubeconfig file for the super-admin",
    "controller-manager.conf": "certificate embedded in the kubeconfig file for the controller manager to use",
    "scheduler.conf": "certificate embedded in the kubeconfig file for the scheduler manager to use",
}
RESTART_NOTE = ("\nDone renewing certificates. You must restart the kube-apiserver, kube-controller-manager, "
                "kube-scheduler and etcd, so that they can use the new certificates.")
_EKU = {ExtendedKeyUsageOID.SERVER_AUTH: "server", ExtendedKeyUsageOID.CLIENT_AUTH: "client"}


class KubeadmError(Exception):
    """What kubeadmutil.CheckErr prints before exiting 1."""


def version(flags: dict) -> str:
    try:
        return on_host(flags, VERSION_FILE).read_text().strip() or "v1.31.4"
    except OSError:
        return "v1.31.4"


def minor(text: str) -> tuple:
    found = re.match(r"v?(\d+)\.(\d+)", text)
    return (int(found.group(1)), int(found.group(2))) if found else (1, 31)


def handles(line: tuple) -> list:
    # kubernetes#121305 (v1.29) added super-admin.conf to kubeConfigList
    names = list(CERTS) + [k for k in KUBECONFIGS if k != "super-admin.conf" or line >= (1, 29)]
    return sorted(names)


@dataclasses.dataclass
class Config:
    validity: datetime.timedelta = datetime.timedelta(days=365)     # constants.CertificateValidity
    key: str = "rsa"                                               # RSA-2048, kubeadm's default algorithm


def _duration(text: str) -> datetime.timedelta:
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts:
        raise KubeadmError(f'time: invalid duration "{text}"')
    return datetime.timedelta(seconds=sum(float(n) * units[u] for n, u in parts))


def _from_cluster_configuration(doc: dict, line: tuple) -> Config:
    cfg = Config()
    if line >= (1, 31) and doc.get("certificateValidityPeriod"):      # v1beta4
        cfg.validity = _duration(str(doc["certificateValidityPeriod"]))
    algorithm = doc.get("encryptionAlgorithm") if line >= (1, 31) else None
    if algorithm is None and (doc.get("featureGates") or {}).get("PublicKeysECDSA"):   # v1beta3 feature gate
        algorithm = "ECDSA-P256"
    cfg.key = "ecdsa" if str(algorithm or "").startswith("ECDSA") else "rsa"
    return cfg


def on_host(flags: dict, path: str) -> Path:
    """``path`` as kubeadm sees it after --rootfs's chroot."""
    return Path(flags["rootfs"].rstrip("/") + path) if flags["rootfs"] else Path(path)


def _kubeconfig_client(path: Path):
    """(server, ssl context) from a kubeconfig with embedded client cert data; raises OSError/KeyError/ValueError."""
    conf = yaml.safe_load(path.read_text())
    ctx_name = conf["current-context"]
    context = next(c["context"] for c in conf["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in conf["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in conf["users"] if u["name"] == context["user"])
    tls = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    tls.check_hostname = False
    with tempfile.TemporaryDirectory() as tmp:
        pem = Path(tmp) / "client.pem"
        pem.write_bytes(base64.b64decode(user["client-certificate-data"]) + b"\n" + base64.b64decode(user["client-key-data"]))
        tls.load_cert_chain(str(pem))
    return cluster["server"], tls


def load_config(flags: dict, line: tuple) -> Config:
    """getInternalCfg (app/cmd/certs.go): --config, else the cluster's kubeadm-config, else the defaults."""
    if flags["config"]:
        try:
            docs = list(yaml.safe_load_all(on_host(flags, flags["config"]).read_text()))
        except OSError as exc:
            raise KubeadmError(f"unable to read config from \"{flags['config']}\" : {exc}") from exc
        doc = next((d for d in docs if isinstance(d, dict) and d.get("kind") == "ClusterConfiguration"), {})
        return _from_cluster_configuration(doc, line)
    try:
        server, tls = _kubeconfig_client(on_host(flags, flags["kubeconfig"]))
    except (OSError, KeyError, ValueError, StopIteration, ssl.SSLError, yaml.YAMLError):
        return Config()
    # util/config/cluster.go FetchInitConfigurationFromCluster; the wording changed after v1.30 (release not pinned)
    if line >= (1, 31):
        print('[renew] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...')
        print("[renew] Use 'kubeadm init phase upload-config --config your-config-file' to re-upload it.")
    else:
        print("[renew] Reading configuration from the cluster...")
        print("[renew] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    try:
        url = server + "/api/v1/namespaces/kube-system/configmaps/kubeadm-config"
        with urllib.request.urlopen(url, context=tls, timeout=10) as resp:   # noqa: S310  # https from the kubeconfig
            data = json.load(resp)["data"]["ClusterConfiguration"]
        print()
        return _from_cluster_configuration(yaml.safe_load(data) or {}, line)
    except (OSError, KeyError, ValueError, yaml.YAMLError):
        print("[renew] Error reading configuration from the Cluster. Falling back to default configuration\n")
        return Config()


def _write(path: Path, data: bytes, mode: int) -> None:
    """os.WriteFile: truncate and write in place; ``mode`` only when the file is created."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _take_fault(flags: dict, handle: str) -> bool:
    fault = on_host(flags, FAULT_FILE)
    try:
        wanted = fault.read_text().strip()
    except OSError:
        return False
    if wanted != handle:
        return False
    fault.unlink()
    return True


def _new_pair(old: x509.Certificate, ca: pki.Pair, cfg: Config, line: tuple, start: datetime.datetime) -> pki.Pair:
    """certToConfig + pkiutil.NewCertAndKey: the old subject, SANs and usages; a new key; the line's validity."""
    def values(oid):
        return [a.value for a in old.subject.get_attributes_for_oid(oid)]
    try:
        sans = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns, ips = sans.get_values_for_type(x509.DNSName), [str(i) for i in sans.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        dns, ips = [], []
    try:
        eku = [_EKU[u] for u in old.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value if u in _EKU]
    except x509.ExtensionNotFound:
        eku = []
    if line >= (1, 31):
        not_before, not_after = start - 5 * pki.MINUTE, start + cfg.validity
    else:
        not_before, not_after = supervisor.not_before(ca.cert), start + cfg.validity
    key = pki.new_key(cfg.key)
    # pkiutil.NewSignedCert: KeyEncipherment only for RSA keys; BasicConstraints as the line's tree has them
    return pki.issue(values(NameOID.COMMON_NAME)[0], key, issuer=ca, not_before=not_before, not_after=not_after,
                     orgs=values(NameOID.ORGANIZATION_NAME), eku=eku, dns=dns, ips=ips,
                     basic_constraints=pki.KUBEADM_STYLES["current" if line >= (1, 31) else "v1.28"].leaf_basic_constraints,
                     key_encipherment=not isinstance(key, ec.EllipticCurvePrivateKey))


def _ca(cert_dir: Path, base: str):
    crt, key = cert_dir / f"{base}.crt", cert_dir / f"{base}.key"
    if not key.exists():
        return None
    return pki.Pair(x509.load_pem_x509_certificate(crt.read_bytes()), load_pem_private_key(key.read_bytes(), None))


def renew_file(handle: str, flags: dict, cfg: Config, line: tuple, start) -> None:
    long_name, base, ca_base = CERTS[handle]
    cert_dir = on_host(flags, flags["cert-dir"])
    crt, key = cert_dir / f"{base}.crt", cert_dir / f"{base}.key"
    if not crt.exists():
        print(f"MISSING! {long_name}")
        return
    ca = _ca(cert_dir, ca_base)
    if ca is None:
        print(f"Detected external {ca_base}, {long_name} can't be renewed")
        return
    pair = _new_pair(x509.load_pem_x509_certificate(crt.read_bytes()), ca, cfg, line, start)
    _write(key, pki.key_pem(pair.key), 0o600)
    if _take_fault(flags, handle):
        raise KubeadmError(f"failed to renew certificate {handle}: unable to write certificate to file {crt}: "
                           f"write {crt}: no space left on device")
    _write(crt, pki.cert_pem(pair.cert), 0o644)
    print(f"{long_name} renewed")


def renew_kubeconfig(handle: str, flags: dict, cfg: Config, line: tuple, start) -> None:
    long_name, path = KUBECONFIGS[handle], on_host(flags, f"{KUBECONFIG_DIR}/{handle}")
    if not path.exists():
        print(f"MISSING! {long_name}")
        return
    ca = _ca(on_host(flags, flags["cert-dir"]), "ca")
    if ca is None:
        print(f"Detected external ca, {long_name} can't be renewed")
        return
    conf = yaml.safe_load(path.read_text())
    context = next(c["context"] for c in conf["contexts"] if c["name"] == conf["current-context"])
    user = next(u["user"] for u in conf["users"] if u["name"] == context["user"])
    cluster = next(c["cluster"] for c in conf["clusters"] if c["name"] == context["cluster"])
    old = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    pair = _new_pair(old, ca, cfg, line, start)
    user["client-certificate-data"] = base64.b64encode(pki.cert_pem(pair.cert)).decode()
    user["client-key-data"] = base64.b64encode(pki.key_pem(pair.key)).decode()
    cluster["certificate-authority-data"] = base64.b64encode(pki.cert_pem(ca.cert)).decode()
    if _take_fault(flags, handle):
        raise KubeadmError(f"failed to renew certificate {handle}: failed to write new kubeconfig file {path}: "
                           f"write {path}: no space left on device")
    _write(path, yaml.safe_dump(conf, default_flow_style=False).encode(), 0o600)
    print(f"{long_name} renewed")


def usage(line: tuple) -> str:
    """cobra's help of `kubeadm certs renew`: names padded to the longest, each Short "Renew the <LongName>"."""
    shorts = {"all": "Renew all available certificates"}
    shorts.update({h: "Renew the " + (KUBECONFIGS[h] if h in KUBECONFIGS else CERTS[h][0]) for h in handles(line)})
    width = max(map(len, shorts))
    commands = "".join(f"  {name.ljust(width)} {short}\n" for name, short in shorts.items())
    return ("This command is not meant to be run on its own. See list of available subcommands.\n\n"
            "Usage:\n  kubeadm certs renew [flags]\n  kubeadm certs renew [command]\n\n"
            f"Available Commands:\n{commands}\n"
            "Flags:\n  -h, --help   help for renew\n\n"
            "Global Flags:\n      --rootfs string   The path to the 'real' host root filesystem.\n")


def certs_renew(argv: list, line: tuple) -> int:
    args = [a for a in argv if not a.startswith("-")]
    # --rootfs is the root command's persistent flag: every subcommand, renew included, knows it
    own_flags = [a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in ("--rootfs", "--help")]
    if "--help" in argv or "-h" in argv:
        print(usage(line), end="")
        return 0
    if not args:
        raise KubeadmError('missing subcommand; "renew" is not meant to be run on its own')
    handle = args[0]
    if handle != "all" and handle not in handles(line):
        if own_flags:   # cobra parses renew's own (empty) flag set first
            raise KubeadmError(f"unknown flag: {own_flags[0]}")
        raise KubeadmError(f'invalid subcommand "{handle}"\nSee \'kubeadm certs renew -h\' for help and examples')
    flags = dict(DEFAULTS)
    parsed = supervisor.parse_flags(argv)
    for name in list(parsed):
        if name.startswith("-") or name in ("-multi", "-args"):
            continue
        if name not in DEFAULTS:
            raise KubeadmError(f"unknown flag: --{name}")
        flags[name] = parsed[name]
    cfg = load_config(flags, line)
    start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    for name in (handles(line) if handle == "all" else [handle]):
        (renew_kubeconfig if name in KUBECONFIGS else renew_file)(name, flags, cfg, line, start)
    if handle == "all":
        print(RESTART_NOTE)
    return 0


def main(argv: list) -> int:
    words = [a for a in argv if not a.startswith("-")]
    flags = dict(DEFAULTS, rootfs=supervisor.parse_flags(argv).get("rootfs", ""))
    line = minor(version(flags))
    try:
        if words[:1] == ["version"]:
            text = version(flags)
            if "-o" in argv or any(a.startswith("--output") for a in argv):
                print(text)
            else:
                print(f'kubeadm version: &version.Info{{Major:"1", Minor:"{line[1]}", GitVersion:"{text}"}}')
            return 0
        if words[:2] == ["certs", "renew"]:
            return certs_renew(argv[2:], line)
        raise KubeadmError(f'unknown command "{" ".join(words[:2])}" for "kubeadm" (lab stand-in: version, certs renew)')
    except KubeadmError as exc:
        print(f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
