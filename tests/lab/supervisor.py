"""A lab node's init system and container runtime: one process per node, inside the node.

Started by the start hook of tests/lab/nodes.py; reads /run/kubepki-lab/services.json (written
at populate time) and keeps running:

- units, as systemd would (`kubelet`, `k3s`, `k3s-agent`, `etcd`): restarted with backoff when
  they exit (Restart=always);
- pods: the static pods the kubelet (tools/kubelet.py) asks for, and RKE1's docker containers
  (listed in services.json, started at boot like `docker run --restart=always`). A container
  that exits is restarted with backoff (CrashLoopBackOff). Stopping or restarting the kubelet
  unit leaves the pods running, as with containerd or docker.

Executables are looked up in the PATH of services.json: the --real-bin directory (if any), then
the node's /opt/kubepki-lab/bin, then the system's. The tools (systemctl, crictl, docker,
kubelet) talk to this process over /run/kubepki-lab/supervisor.sock: one JSON request and one
JSON answer per connection (`call()`).

Also the library the tools share: `call()`, `parse_flags()`, `tls_context()` / `serve_https()`
(TLS listeners as the components have them), `load_pki()` (tests/lab/pki.py on Debian's
cryptography 38). Runs under /usr/bin/python3 (stdlib, cryptography, PyYAML).
"""
from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUN_DIR = Path("/run/kubepki-lab")
LOG_DIR = Path("/var/log/kubepki-lab")
SOCKET = RUN_DIR / "supervisor.sock"
CONFIG = RUN_DIR / "services.json"
STOP_GRACE = 3.0      # SIGTERM, then SIGKILL (the kubelet's default is 30 s; the lab is impatient)
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 20.0    # kubelet: 10 s doubling to 300 s; faster for tests
BACKOFF_RESET = 60.0  # a process that ran this long starts over at BACKOFF_FIRST
TICK = 0.1
UTC = datetime.timezone.utc


def log(msg: str) -> None:
    print(f"{datetime.datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%fZ} {msg}", flush=True)


def iso(t: float | None) -> str:
    return datetime.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if t else ""


# ---------------------------------------------------------------------------------------------
# Processes and pods

class Proc:
    """One supervised process: a unit or a container."""

    def __init__(self, name: str, argv: list, log_path: Path, env: dict | None = None, image: str = "",
                 want: bool = True):
        self.id = secrets.token_hex(32)
        self.name, self.argv, self.image, self.env = name, [str(a) for a in argv], image, env or {}
        self.log_path = log_path
        self.want = want              # desired state: running
        self.popen = None
        self.created = time.time()
        self.started_at = self.finished_at = None
        self.exit_code = None
        self.restarts = -1            # becomes 0 at the first start
        self.backoff = 0.0
        self.next_start = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid if self.popen and self.popen.poll() is None else 0

    @property
    def state(self) -> str:
        if self.pid:
            return "running"
        return "exited" if self.finished_at else "created"

    def start(self, path: str) -> None:
        self.restarts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        exe = shutil.which(self.argv[0], path=path) if "/" not in self.argv[0] else self.argv[0]
        with open(self.log_path, "ab") as out:
            if not exe:
                # what containerd says; counts as a crash, so it is retried with backoff
                out.write(f'exec: "{self.argv[0]}": executable file not found in $PATH\n'.encode())
                self._exited(127)
                return
            env = {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8",
                   "KUBEPKI_LAB_NODE": os.environ.get("KUBEPKI_LAB_NODE", ""), **self.env}
            self.popen = subprocess.Popen([exe, *self.argv[1:]], stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, cwd="/", env=env, start_new_session=True)
        self.started_at, self.finished_at, self.exit_code = time.time(), None, None

    def _exited(self, code: int) -> None:
        now = time.time()
        ran = now - (self.started_at or now)
        self.backoff = BACKOFF_FIRST if ran >= BACKOFF_RESET else min(max(self.backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
        self.next_start = now + self.backoff
        self.finished_at, self.exit_code, self.popen = now, code, None

    def poll(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            code = self.popen.returncode
            self._exited(code)
            if self.want:
                log(f"{self.name}: exited with {code}; restarting in {self.backoff:.0f}s")

    def due(self) -> bool:
        return self.want and self.popen is None and time.time() >= self.next_start

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after STOP_GRACE; the caller cleared `want`."""
        popen = self.popen
        if popen is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                popen.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        if self.popen is popen:
            self._exited(popen.returncode if popen.returncode is not None else -9)
        self.next_start = 0.0

    def info(self) -> dict:
        return {"id": self.id, "name": self.name, "image": self.image, "argv": self.argv, "state": self.state,
                "pid": self.pid, "created": iso(self.created), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "exit_code": self.exit_code, "attempt": max(self.restarts, 0),
                "log": str(self.log_path), "want": self.want}


class Pod:
    """A pod sandbox (kind "pod", created by the kubelet) or an RKE docker container (kind "docker")."""

    def __init__(self, spec: dict):
        self.id = secrets.token_hex(32)
        self.kind = spec.get("kind", "pod")
        self.name, self.namespace = spec["name"], spec.get("namespace", "default")
        self.uid = spec.get("uid") or secrets.token_hex(16)
        self.labels, self.annotations = spec.get("labels") or {}, spec.get("annotations") or {}
        self.created = time.time()
        self.ready = True
        base = LOG_DIR / ("containers" if self.kind == "docker" else f"pods/{self.namespace}_{self.name}_{self.uid}")
        self.containers = [Proc(c["name"], c["argv"], base / f"{c['name']}.log", c.get("env"), c.get("image", ""))
                           for c in spec["containers"]]

    def info(self) -> dict:
        return {"id": self.id, "kind": self.kind, "name": self.name, "namespace": self.namespace, "uid": self.uid,
                "labels": self.labels, "annotations": self.annotations, "created": iso(self.created),
                "state": "SANDBOX_READY" if self.ready else "SANDBOX_NOTREADY",
                "containers": [c.info() for c in self.containers]}


class Refused(Exception):
    """An error for the client: message as the real tool would print it."""


class Runtime:
    def __init__(self, config: dict):
        self.config, self.path = config, config["path"]
        self.lock = threading.RLock()
        self.units = {name: Proc(name, u["argv"], LOG_DIR / f"{name}.log", u.get("env"), want=u.get("enabled", True))
                      for name, u in config.get("units", {}).items()}
        self.pods = {}
        for c in config.get("containers", []):
            pod = Pod({"kind": "docker", "name": c["name"], "labels": c.get("labels"), "containers": [c]})
            self.pods[pod.id] = pod

    def procs(self):
        return list(self.units.values()) + [c for p in self.pods.values() for c in p.containers]

    def tick(self) -> None:
        with self.lock:
            for proc in self.procs():
                proc.poll()
                if proc.due():
                    proc.start(self.path)

    def stop_all(self) -> None:
        with self.lock:
            procs = self.procs()
            for proc in procs:
                proc.want = False
        for proc in procs:
            if proc.popen is not None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    # -- lookups ---------------------------------------------------------------------------------
    def _pod(self, ref: str) -> Pod:
        with self.lock:
            found = [p for p in self.pods.values() if p.id.startswith(ref) or p.name == ref]
        if len(found) != 1:
            raise Refused(f'getting sandbox status of pod "{ref}": rpc error: code = NotFound desc = '
                          f'an error occurred when try to find sandbox: {"ambiguous" if found else "not found"}')
        return found[0]

    def _container(self, ref: str, kind: str | None = None) -> tuple[Pod, Proc]:
        with self.lock:
            found = [(p, c) for p in self.pods.values() for c in p.containers
                     if (kind is None or p.kind == kind) and (c.id.startswith(ref) or (p.kind == "docker" and c.name == ref))]
        if len(found) != 1:
            if kind == "docker":
                raise Refused(f"Error response from daemon: No such container: {ref}")
            raise Refused(f'rpc error: code = NotFound desc = an error occurred when try to find container "{ref}": '
                          f'{"ambiguous" if found else "not found"}')
        return found[0]

    def _unit(self, name: str) -> Proc:
        unit = self.units.get(name.removesuffix(".service"))
        if unit is None:
            raise Refused(f"Unit {name.removesuffix('.service')}.service not found.")
        return unit

    # -- operations (one per request `op`) ------------------------------------------------------
    def op_pods(self, req):
        with self.lock:
            return [p.info() for p in self.pods.values() if req.get("kind") in (None, p.kind)]

    def op_runp(self, req):
        pod = Pod(req)
        with self.lock:
            self.pods[pod.id] = pod
            for c in pod.containers:
                c.start(self.path)
        log(f"pod {pod.namespace}/{pod.name} ({pod.kind}) started: {pod.id[:13]}")
        return pod.info()

    def op_stopp(self, req):
        pod = self._pod(req["id"])
        with self.lock:
            for c in pod.containers:
                c.want = False
            pod.ready = False
        for c in pod.containers:
            c.stop()
        log(f"pod {pod.namespace}/{pod.name} stopped")
        return pod.info()

    def op_rmp(self, req):
        pod = self._pod(req["id"])
        if pod.ready and not req.get("force"):
            raise Refused(f'removing the pod sandbox "{pod.id}": rpc error: code = Unknown desc = pod sandbox '
                          f"{pod.id} is not stopped, please stop it first")
        self.op_stopp(req)
        with self.lock:
            self.pods.pop(pod.id, None)
        log(f"pod {pod.namespace}/{pod.name} removed")
        return pod.info()

    def op_container(self, req):
        pod, proc = self._container(req["id"], req.get("kind"))
        return {**proc.info(), "pod": pod.info()}

    def op_docker(self, req):
        """docker stop|start|restart NAME: the container keeps its id, as in docker."""
        pod, proc = self._container(req["id"], "docker")
        if req["action"] in ("stop", "restart"):
            with self.lock:
                proc.want = False
            proc.stop()
        if req["action"] in ("start", "restart"):
            with self.lock:
                proc.want, proc.backoff, proc.next_start = True, 0.0, 0.0
                if proc.popen is None:
                    proc.start(self.path)
        log(f"docker {req['action']} {proc.name}")
        return {**proc.info(), "pod": pod.info()}

    def op_unit(self, req):
        unit, action = self._unit(req["name"]), req["action"]
        if action in ("stop", "restart"):
            with self.lock:
                unit.want = False
            unit.stop()
        if action in ("start", "restart"):
            with self.lock:
                unit.want, unit.backoff, unit.next_start = True, 0.0, 0.0
                if unit.popen is None:
                    unit.start(self.path)
        if action != "status":
            log(f"systemctl {action} {unit.name}")
        return unit.info()

    def op_units(self, req):
        with self.lock:
            return {name: u.info() for name, u in self.units.items()}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            req = json.loads(self.rfile.readline())
            method = getattr(self.server.runtime, "op_" + str(req.get("op")), None)
            if method is None:
                raise Refused(f"unknown request {req.get('op')!r}")
            answer = {"ok": True, "result": method(req)}
        except Refused as e:
            answer = {"ok": False, "error": str(e)}
        except Exception as e:  # pylint: disable=broad-except  # the daemon must survive a bad request
            answer = {"ok": False, "error": f"supervisor: {type(e).__name__}: {e}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def run() -> int:
    """The daemon: `python3 supervisor.py run`."""
    try:
        config = json.loads(CONFIG.read_text())
    except (OSError, ValueError) as e:
        print(f"supervisor: cannot read {CONFIG}: {e}", file=sys.stderr)
        return 2
    runtime = Runtime(config)
    SOCKET.unlink(missing_ok=True)
    server = _Server(str(SOCKET), _Handler)
    server.runtime = runtime
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopping = threading.Event()

    def on_term(signum, frame):  # pylint: disable=unused-argument
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    (RUN_DIR / "supervisor.pid").write_text(f"{os.getpid()}\n")
    log(f"supervisor of {config.get('node')} up: units {sorted(runtime.units)}, "
        f"{len(runtime.pods)} docker containers, PATH={runtime.path}")
    while not stopping.wait(TICK):
        runtime.tick()
    runtime.stop_all()
    SOCKET.unlink(missing_ok=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Library for the tools

class SupervisorError(Exception):
    """The supervisor refused the request (message as the real tool prints it) or is not running."""


def call(op: str, timeout: float = 30.0, **args):
    """One request to the node's supervisor; returns its result or raises SupervisorError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(SOCKET))
            sock.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as e:
        raise SupervisorError(f"cannot reach the lab supervisor at {SOCKET} ({e.strerror or e}); "
                              "is this a lab node and is it up?") from None
    answer = json.loads(data)
    if not answer["ok"]:
        raise SupervisorError(answer["error"])
    return answer["result"]


def parse_flags(argv, booleans=()) -> dict:
    """Go-style flags: --name=value, --name value, --bool (names in `booleans` never take the next
    word). Keys are the names; "-multi" holds every value of repeated flags, "-args" the rest."""
    flags, multi, rest, i = {}, {}, [], 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and len(arg) > 1:
            name, eq, value = arg.lstrip("-").partition("=")
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                if name not in booleans and nxt is not None and not nxt.startswith("-"):
                    value, i = nxt, i + 1
                else:
                    value = "true"
            flags[name] = value
            multi.setdefault(name, []).append(value)
        else:
            rest.append(arg)
        i += 1
    return {**flags, "-multi": multi, "-args": rest}


def load_pki():
    """tests/lab/pki.py, usable under cryptography 38 (Debian 12), which lacks not_valid_*_utc."""
    sys.path.insert(0, str(REPO / "tests" / "lab"))
    import pki  # pylint: disable=import-outside-toplevel
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    if not hasattr(x509.Certificate, "not_valid_after_utc") and not getattr(pki, "_lab_patched", False):
        original = pki.Profile.leaf_validity

        class UtcView:
            """The CA certificate with the two properties pki.py reads from it."""

            def __init__(self, cert):
                self.cert = cert

            def __getattr__(self, name):
                return getattr(self.cert, name)

            @property
            def not_valid_before_utc(self):
                return self.cert.not_valid_before.replace(tzinfo=UTC)

            @property
            def not_valid_after_utc(self):
                return self.cert.not_valid_after.replace(tzinfo=UTC)

        pki.Profile.leaf_validity = lambda self, issued, ca: original(self, issued, UtcView(ca))
        pki._lab_patched = True  # pylint: disable=protected-access
    return pki


def not_before(cert) -> datetime.datetime:
    """NotBefore as an aware datetime, on cryptography 38 and later."""
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=UTC)


def not_after(cert) -> datetime.datetime:
    """NotAfter as an aware datetime, on cryptography 38 and later."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=UTC)


def tls_context(cert: str, key: str, reload: bool = False):
    """A function returning the SSLContext for cert/key files. reload=False reads them once (the
    kubelet, k3s agent); reload=True re-reads them when they change and keeps the last good pair
    while they do not match, as kube-apiserver does (research/reload.md §1)."""
    state = {}

    def stamp():
        return tuple(os.stat(f).st_mtime_ns for f in (cert, key))

    def get() -> ssl.SSLContext:
        if "ctx" in state and not reload:
            return state["ctx"]
        try:
            current = stamp()
            if state.get("stamp") != current:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cert, key)
                if "ctx" in state:
                    log(f"Loaded a new cert/key pair {cert}")
                state.update(ctx=ctx, stamp=current)
        except (OSError, ssl.SSLError) as e:
            if "ctx" not in state:
                raise
            log(f"{cert}: {e}; keeping the last good pair")
        return state["ctx"]

    get()  # fail at start on a missing or broken pair
    return get


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, context):
        self.context = context
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = super().get_request()
        # the handshake happens in the handler thread, so a slow client does not block accept()
        return self.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        err = sys.exc_info()[1]
        if not isinstance(err, (ssl.SSLError, ConnectionError, TimeoutError)):
            log(f"{self.server_address}: {type(err).__name__}: {err}")


def make_handler(component: str, routes: dict | None = None):
    """An HTTP handler answering /healthz, /livez, /readyz, /version and `routes` {path: fn(handler)} (a path ending
    in / is a prefix; fn returns (status, body) with body a dict for JSON or a str); anything else is 401, as for an
    anonymous client of a component with anonymous auth off."""
    table = {p: (lambda h: (200, "ok")) for p in ("/healthz", "/livez", "/readyz")}
    table["/version"] = lambda h: (200, {"major": "1", "minor": "31", "gitVersion": f"v1.31.4-kubepki-lab+{component}",
                                         "platform": "linux/amd64"})
    table.update(routes or {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 15
        server_version = component

        def answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""  # pylint: disable=attribute-defined-outside-init
            path = self.path.split("?", 1)[0]
            # a route ending in / answers every path under it
            route = table.get(path) or next((fn for p, fn in table.items() if p.endswith("/") and path.startswith(p)), None)
            if route is None:
                status, body = 401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
            else:
                status, body = route(self)
            data = (json.dumps(body) if isinstance(body, (dict, list)) else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if isinstance(body, (dict, list)) else "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

        def log_message(self, format, *args):  # pylint: disable=redefined-builtin
            pass

    return Handler


def serve_https(listeners, context, handler, optional=()) -> list:
    """Serve handler over TLS on each (host, port) in listeners, in daemon threads. A listener in
    `optional` that cannot bind is skipped with a log line; any other raises OSError."""
    servers = []
    for host, port in listeners:
        try:
            server = _TLSServer((host, int(port)), handler, context)
        except OSError as e:
            if (host, port) in optional:
                log(f"not listening on {host}:{port}: {e.strerror}")
                continue
            raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        log(f"serving TLS on {host}:{port}")
    return servers


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:
        return run()
    print("usage: supervisor.py run", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
