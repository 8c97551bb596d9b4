"""A light kubeadm node: its TLS endpoints, without the components behind them (cluster key `light: true`).

    kubeadm_endpoints.py --hostname=NODE [--manifests=DIR] [--kubelet-config=FILE]

One process serves what each component of the node would serve, on the address and port its static pod
manifest gives: kube-apiserver its --tls-cert-file (reloaded on change, apiserver's dynamic_serving_content.go),
etcd its --cert-file on every --listen-client-urls URL and --peer-cert-file on every --listen-peer-urls URL (read
per handshake, etcd client/pkg/transport/listener.go; here when they change), kube-controller-manager and kube-scheduler an in-memory self-signed
CN=localhost@<unix> (no --tls-cert-file: client-go GenerateSelfSignedCertKey, as the stand-ins do), and the
kubelet its serving cert as tools/kubelet.py chooses it. Nothing else: no API, no etcd data, no static pods, no
node Lease. So the node holds real certs and serves them to cert_facts' probes with one process instead of six;
a renewal that must restart something needs a full node.
"""
import ssl
import sys
import tempfile
import threading
from pathlib import Path

import yaml

import _common

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import kubelet  # noqa: E402  pylint: disable=wrong-import-position
import supervisor  # noqa: E402  pylint: disable=wrong-import-position  # kubelet put it on the path

# manifest -> (listen flag, default port, cert flag, key flag); no cert flag: in-memory self-signed
SERVED = {"kube-apiserver.yaml": [("bind-address", 6443, "tls-cert-file", "tls-private-key-file")],
          "etcd.yaml": [("listen-client-urls", 2379, "cert-file", "key-file"),
                        ("listen-peer-urls", 2380, "peer-cert-file", "peer-key-file")],
          "kube-controller-manager.yaml": [("bind-address", 10257, None, None)],
          "kube-scheduler.yaml": [("bind-address", 10259, None, None)]}


def _flags(manifest: Path) -> dict:
    container = yaml.safe_load(manifest.read_text())["spec"]["containers"][0]
    return supervisor.parse_flags(list(container.get("command") or []) + list(container.get("args") or []))


def _listeners(flags: dict, listen: str, default_port: int) -> list:
    value = flags.get(listen, "127.0.0.1")
    if "://" in value:     # etcd: a comma-separated list of URLs
        return [(url.split("://", 1)[1].rpartition(":")[0], int(url.rpartition(":")[2])) for url in value.split(",")]
    return [(value, int(flags.get("secure-port", default_port)))]


def _self_signed():
    """The context of a controller-manager or scheduler started now (ssl loads a chain from a file only)."""
    _leaf, chain, key = _common.self_signed_localhost()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.NamedTemporaryFile(dir=supervisor.RUN_DIR) as pem:
        pem.write(chain + key)
        pem.flush()
        ctx.load_cert_chain(pem.name)
    return lambda: ctx


def main(argv=None) -> int:
    flags = supervisor.parse_flags(sys.argv[1:] if argv is None else argv)
    manifests = Path(flags.get("manifests", "/etc/kubernetes/manifests"))
    for name, listeners in SERVED.items():
        if not (manifests / name).exists():
            continue
        component = _flags(manifests / name)
        for listen, port, cert, key in listeners:
            context = supervisor.tls_context(component[cert], component[key], reload=True) if cert else _self_signed()
            supervisor.serve_https(_listeners(component, listen, port), context, supervisor.make_handler(name[:-5]))
    config = yaml.safe_load(Path(flags.get("kubelet-config", "/var/lib/kubelet/config.yaml")).read_text()) or {}
    cert, key, file_cert = kubelet.serving_pair({}, config, flags["hostname"])
    reload = file_cert and kubelet.reloads_file_cert(kubelet.version())
    supervisor.serve_https([(config.get("address", "0.0.0.0"), int(config.get("port", 10250)))],
                           supervisor.tls_context(cert, key, reload=reload), supervisor.make_handler("kubelet"))
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
