"""The lab's kubelet: serves its serving cert on :10250, renews its node Lease, runs its static pods.

Accepts the real kubelet's flags and ignores those it has no use for. Its version is the node's
/run/kubepki-lab/kubelet-version (what `kubelet --version` prints; v1.28.15 when absent).

Serving cert, as kubernetes cmd/kubelet/app/server.go InitializeTLS and pkg/kubelet/kubelet.go
choose it (research/corrections.md §2): --tls-cert-file / tlsCertFile when set; else, with
serverTLSBootstrap: true, the rotating kubelet-server-current.pem; else <cert-dir>/kubelet.crt,
self-signed (CN=<hostname>@<unix>, one year) when missing or unreadable. A leftover
kubelet-server-current.pem without serverTLSBootstrap is not served. A file cert is read once before
v1.31 and reloaded on change from v1.31 on (ReloadKubeletServerCertificateFile, beta and on by
default: pkg/features/kube_features.go); the rotating cert is not modelled beyond being served.

Client cert: kubelet.conf (--kubeconfig) is read once at start, as the kubelet's client certificate
manager loads kubelet-client-current.pem at start (pkg/kubelet/certificate/kubelet.go). With it the
kubelet registers its Node when absent and renews its Lease kube-node-lease/<node> every 10 s (pkg/kubelet/kubelet.go: 40 s lease
duration x 0.25, component-helpers/apimachinery/lease/controller.go: get, create when absent,
update renewTime); an expired or rejected client cert leaves the Lease unrenewed.

Static pods: every 2 s (the real fileCheckFrequency is 20 s) the manifests of staticPodPath /
--pod-manifest-path are compared with the pods the supervisor runs; a pod whose manifest went away
or changed is removed, a missing or stopped one is (re)created with the manifest's command + args.
The supervisor restarts crashed containers with backoff; restarting this process leaves them running.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import json
import socket
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supervisor  # noqa: E402  pylint: disable=wrong-import-position

SYNC_PERIOD = 2.0
LEASE_DURATION = 40
LEASE_RENEW = LEASE_DURATION * 0.25
VERSION_FILE = supervisor.RUN_DIR / "kubelet-version"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def version() -> str:
    try:
        return VERSION_FILE.read_text().strip() or "v1.28.15"
    except OSError:
        return "v1.28.15"


def reloads_file_cert(text: str) -> bool:
    major, minor = (int(x) for x in text.lstrip("v").split(".")[:2])
    return (major, minor) >= (1, 31)


def serving_pair(flags: dict, config: dict, hostname: str) -> tuple[str, str, bool]:
    """(cert, key, is a file cert the kubelet may reload)."""
    cert = flags.get("tls-cert-file") or config.get("tlsCertFile")
    if cert:
        return cert, flags.get("tls-private-key-file") or config.get("tlsPrivateKeyFile"), True
    cert_dir = Path(flags.get("cert-dir", "/var/lib/kubelet/pki"))
    current = cert_dir / "kubelet-server-current.pem"
    if config.get("serverTLSBootstrap") and current.exists():
        return str(current), str(current), False
    crt, key = cert_dir / "kubelet.crt", cert_dir / "kubelet.key"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(crt), str(key))
    except (OSError, ssl.SSLError):
        pki = supervisor.load_pki()
        leaf, ca = pki.self_signed_serving(hostname, pki.utc())
        pki.write_file(crt, pki.cert_pem(leaf.cert, ca.cert), 0o644)
        pki.write_file(key, pki.key_pem(leaf.key), 0o600)
        supervisor.log(f"Generated self-signed cert {crt} (CN={hostname}@...)")
    return str(crt), str(key), True


class LeaseRenewer:
    """The node Lease, renewed with the client cert kubelet.conf named when this kubelet started."""

    def __init__(self, kubeconfig: str, node: str):
        config = yaml.safe_load(Path(kubeconfig).read_text())
        context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        self.node, self.url = node, urlsplit(cluster["server"])
        self.ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        self.ctx.check_hostname = False   # the lab's endpoints are IPs in the cert's SANs; Go checks them too
        if user.get("client-certificate-data"):
            with tempfile.NamedTemporaryFile("wb", dir=supervisor.RUN_DIR, delete=False) as pem:
                pem.write(base64.b64decode(user["client-certificate-data"]) + base64.b64decode(user["client-key-data"]))
            self.ctx.load_cert_chain(pem.name)
            Path(pem.name).unlink()
        else:
            self.ctx.load_cert_chain(user["client-certificate"], user.get("client-key"))
        self.last_error, self.registered = None, False

    def call(self, method: str, path: str, body: dict | None = None):
        conn = http.client.HTTPSConnection(self.url.hostname, self.url.port or 443, context=self.ctx, timeout=5)
        try:
            conn.request(method, path, body=json.dumps(body) if body else None,
                         headers={"Content-Type": "application/json", "Accept": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def register(self) -> None:
        """The Node object, created when absent (pkg/kubelet/kubelet_node_status.go registerWithAPIServer)."""
        status, _node = self.call("GET", f"/api/v1/nodes/{self.node}")
        if status == 404:
            status, answer = self.call("POST", "/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}}})
            if status not in (201, 409):
                raise OSError(f"register node: HTTP {status} {answer.get('message', '')}")
        elif status != 200:
            raise OSError(f"GET node: HTTP {status}")
        self.registered = True

    def renew(self) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            if not self.registered:
                self.register()
            status, lease = self.call("GET", f"{LEASES}/{self.node}")
            if status == 404:
                lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                         "spec": {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_DURATION}}
            elif status != 200:
                raise OSError(f"GET lease: HTTP {status} {lease.get('message', '')}")
            lease.setdefault("spec", {})["renewTime"] = now
            status, answer = (self.call("POST", LEASES, lease) if status == 404
                              else self.call("PUT", f"{LEASES}/{self.node}", lease))
            if status not in (200, 201):
                raise OSError(f"update lease: HTTP {status} {answer.get('message', '')}")
            self.last_error = None
        except (OSError, ssl.SSLError, ValueError, http.client.HTTPException) as e:
            if str(e) != self.last_error:
                supervisor.log(f'"Failed to update lease" err="{e}"')
            self.last_error = str(e)

    def run(self) -> None:
        while True:
            self.renew()
            time.sleep(LEASE_RENEW)


def desired_pods(manifest_dir: Path, node: str) -> dict:
    pods = {}
    for path in sorted(manifest_dir.glob("*")):
        if path.name.startswith(".") or path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
            continue
        try:
            data = path.read_bytes()
            manifest = yaml.safe_load(data)
            meta, spec = manifest["metadata"], manifest["spec"]
        except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
            supervisor.log(f"Could not process manifest file {path}: {e}")
            continue
        name = f"{meta['name']}-{node}"
        uid = hashlib.md5(data + node.encode()).hexdigest()  # the kubelet hashes the file and the node name
        pods[name] = {
            "kind": "pod", "name": name, "namespace": meta.get("namespace", "default"), "uid": uid,
            "labels": meta.get("labels") or {},
            "annotations": {"kubernetes.io/config.source": "file", "kubernetes.io/config.hash": uid,
                            "kubernetes.io/config.file": str(path)},
            "containers": [{"name": c["name"], "image": c.get("image", ""),
                            "argv": list(c.get("command") or []) + list(c.get("args") or []),
                            "env": {e["name"]: str(e.get("value", "")) for e in c.get("env") or []}}
                           for c in spec.get("containers") or []],
        }
    return pods


def sync(manifest_dir: Path, node: str) -> None:
    desired = desired_pods(manifest_dir, node)
    running = set()
    for pod in supervisor.call("pods", kind="pod"):
        if pod["annotations"].get("kubernetes.io/config.source") != "file":
            continue
        want = desired.get(pod["name"])
        if want and want["uid"] == pod["uid"] and pod["state"] == "SANDBOX_READY":
            running.add(pod["name"])
            continue
        why = "manifest removed" if not want else "manifest changed" if want["uid"] != pod["uid"] else "sandbox stopped"
        supervisor.log(f"SyncLoop REMOVE {pod['namespace']}/{pod['name']} ({why})")
        supervisor.call("rmp", id=pod["id"], force=True)
    for name, spec in desired.items():
        if name not in running:
            supervisor.log(f"SyncLoop ADD {spec['namespace']}/{name}")
            supervisor.call("runp", **spec)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--version" in argv:
        print(f"Kubernetes {version()}")
        return 0
    flags = supervisor.parse_flags(argv)
    config = {}
    if flags.get("config"):
        config = yaml.safe_load(Path(flags["config"]).read_text()) or {}
    hostname = (flags.get("hostname-override") or socket.gethostname()).lower()
    cert, key, file_cert = serving_pair(flags, config, hostname)
    reload = file_cert and reloads_file_cert(version())
    address = flags.get("address") or config.get("address") or "0.0.0.0"
    port = int(flags.get("port") or config.get("port") or 10250)
    supervisor.serve_https([(address, port)], supervisor.tls_context(cert, key, reload=reload), supervisor.make_handler("kubelet"))
    supervisor.log(f"kubelet {version()} {hostname} serving {cert} on {address}:{port} ({'reloaded on change' if reload else 'read once'})")
    if flags.get("kubeconfig") and Path(flags["kubeconfig"]).exists():
        try:
            threading.Thread(target=LeaseRenewer(flags["kubeconfig"], hostname).run, daemon=True).start()
        except (OSError, ssl.SSLError, KeyError, StopIteration, ValueError, yaml.YAMLError) as e:
            supervisor.log(f'"Failed to load kubeconfig" path="{flags["kubeconfig"]}" err="{e}"')
    manifests = flags.get("pod-manifest-path") or config.get("staticPodPath")
    while True:
        if manifests and Path(manifests).is_dir():
            try:
                sync(Path(manifests), hostname)
            except supervisor.SupervisorError as e:
                supervisor.log(f"sync failed: {e}")
        time.sleep(SYNC_PERIOD)


if __name__ == "__main__":
    sys.exit(main())
