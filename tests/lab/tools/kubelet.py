"""The lab's kubelet: serves its serving cert on :10250 and runs the static pods of its manifest dir.

Accepts the real kubelet's flags and ignores those it has no use for. The serving cert is chosen
as the kubelet chooses it: --tls-cert-file / tlsCertFile; else kubelet-server-current.pem in the
cert dir when present; else <cert-dir>/kubelet.crt, self-signed (CN=<hostname>@<unix>, one year)
when missing. It is read once: a renewed file is served after the kubelet restarts (reload.md).

Static pods: every 2 s (the real fileCheckFrequency is 20 s) the manifests of staticPodPath /
--pod-manifest-path are compared with the pods the supervisor runs; a pod whose manifest went away
or changed is removed, a missing or stopped one is (re)created with the manifest's command + args.
The supervisor restarts crashed containers with backoff; restarting this process leaves them running.
"""
from __future__ import annotations

import hashlib
import socket
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import supervisor  # noqa: E402  pylint: disable=wrong-import-position

SYNC_PERIOD = 2.0


def serving_pair(flags: dict, config: dict, hostname: str) -> tuple[str, str]:
    cert = flags.get("tls-cert-file") or config.get("tlsCertFile")
    if cert:
        return cert, flags.get("tls-private-key-file") or config.get("tlsPrivateKeyFile")
    cert_dir = Path(flags.get("cert-dir", "/var/lib/kubelet/pki"))
    current = cert_dir / "kubelet-server-current.pem"
    if current.exists():
        return str(current), str(current)
    crt, key = cert_dir / "kubelet.crt", cert_dir / "kubelet.key"
    if not (crt.exists() and key.exists()):
        pki = supervisor.load_pki()
        leaf, ca = pki.self_signed_serving(hostname, pki.utc())
        pki.write_file(crt, pki.cert_pem(leaf.cert, ca.cert), 0o644)
        pki.write_file(key, pki.key_pem(leaf.key), 0o600)
        supervisor.log(f"Generated self-signed cert {crt} (CN={hostname}@...)")
    return str(crt), str(key)


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
    flags = supervisor.parse_flags(sys.argv[1:] if argv is None else argv)
    config = {}
    if flags.get("config"):
        config = yaml.safe_load(Path(flags["config"]).read_text()) or {}
    hostname = (flags.get("hostname-override") or socket.gethostname()).lower()
    cert, key = serving_pair(flags, config, hostname)
    address = flags.get("address") or config.get("address") or "0.0.0.0"
    port = int(flags.get("port") or config.get("port") or 10250)
    supervisor.serve_https([(address, port)], supervisor.tls_context(cert, key), supervisor.make_handler("kubelet"))
    supervisor.log(f"kubelet {hostname} serving {cert} on {address}:{port}")
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
