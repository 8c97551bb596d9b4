"""kube-apiserver stand-in for the lab (run with the kubeadm manifest's flags; see tests/lab/README.md).

For certificates it behaves as the real v1.28 apiserver measured in research/reload.md:

- serves --tls-cert-file/--tls-private-key-file on --bind-address (default here: --advertise-address,
  since lab nodes share one network namespace) : --secure-port, reloads them on change without a
  restart and keeps the last good pair while cert and key disagree; same reload for
  --proxy-client-cert-file (not served, shown in the status file);
- authenticates clients by certificate against --client-ca-file: expired or not-yet-valid certs get
  401 and the real ``"Unable to authenticate the request"`` line, never anonymous; requests without a
  certificate are anonymous (kubeadm leaves --anonymous-auth on), which only reaches /livez, /readyz,
  /healthz and /version, as RBAC's system:public-info-viewer allows;
- stores objects in etcd (first of --etcd-servers) through etcd's JSON gateway, reading
  --etcd-certfile/--etcd-keyfile at every new connection only; gives up after 20 s
  (KUBEPKI_LAB_ETCD_TIMEOUT) at start with ``Error creating leases``;
- answers enough of the API for kubectl: discovery, namespaces, nodes, secrets, configmaps, leases
  (get/list/create/update/patch/delete, Table output), /version, auth whoami.
"""

import base64
import datetime
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

import _api
import _common as c
from _api import ApiError, Resource

FILE_FLAGS = ["tls-cert-file", "tls-private-key-file", "client-ca-file", "requestheader-client-ca-file",
              "proxy-client-cert-file", "proxy-client-key-file", "kubelet-client-certificate", "kubelet-client-key",
              "service-account-key-file", "service-account-signing-key-file", "etcd-cafile", "etcd-certfile",
              "etcd-keyfile"]
SYSTEM_NAMESPACES = ["default", "kube-system", "kube-public", "kube-node-lease"]
IMMORTAL_NAMESPACES = ["default", "kube-system", "kube-public"]
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
POST_START_HOOKS = ["start-kube-apiserver-admission-initializer", "generic-apiserver-start-informers",
                    "rbac/bootstrap-roles", "start-system-namespaces-controller", "bootstrap-controller",
                    "start-cluster-authentication-info-controller", "aggregator-reload-proxy-client-cert"]


class Unauthenticated(Exception):
    """401: the text is the error the apiserver logs."""


def aggregate(errors):
    """utilerrors.NewAggregate(...).Error(): one message as is, several deduplicated in brackets."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def now_rfc3339():
    return c.go_time(datetime.datetime.now(c.UTC).replace(microsecond=0))


# --------------------------------------------------------------------------------------------
# etcd through its JSON gateway
# --------------------------------------------------------------------------------------------

class EtcdDown(Exception):
    """etcd could not be reached; ``desc`` is the gRPC-style description of why."""

    def __init__(self, text, desc):
        super().__init__(text)
        self.desc = desc


class Etcd:
    """One kept-alive HTTPS connection to etcd.  The CA, cert and key files are read when a new
    connection is opened and only then, so an open connection keeps the client cert it started with
    (reload.md §2); a broken connection is replaced on the next call."""

    def __init__(self, log, flags):
        url = urllib.parse.urlsplit(flags["etcd-servers"].split(",")[0])
        self.log, self.server = log, f"{url.scheme}://{url.netloc}"
        self.host, self.port = url.hostname, url.port or 2379
        self.files = [flags.get(k) for k in ("etcd-cafile", "etcd-certfile", "etcd-keyfile")]
        self.lock = threading.Lock()
        self.conn = None
        self.cert = None            # client cert of the open connection
        self.connections = 0
        self.last_error = None
        self.last_logged = 0.0

    def _connect(self, timeout):
        addr = f'{{Addr: "{self.host}:{self.port}", ServerName: "{self.host}", }}'
        try:
            ca, cert, key = (c.read_file(path) if path else None for path in self.files)
            if self.server.startswith("http://"):
                conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            else:
                conn = c.VerifiedConnection(self.host, self.port, c.client_context(ca, cert, key),
                                            c.load_pem_certs(ca), timeout)
            conn.connect()
            if conn.sock is not None and isinstance(conn, c.VerifiedConnection):
                self._read_preface(conn)
        except c.CommandFailed as exc:
            raise EtcdDown(str(exc), f"transport: Error while dialing: {exc}")
        except ssl.SSLError as exc:
            raise EtcdDown(c.tls_pair_error(exc), f"transport: authentication handshake failed: {c.tls_pair_error(exc)}")
        except c.GoError as exc:
            stage = "Error while dialing" if str(exc).startswith("dial ") else "authentication handshake failed"
            raise EtcdDown(str(exc), f"transport: {stage}: {exc}")
        self.cert = c.load_pem_certs(cert)[0] if cert else None
        self.connections += 1
        self.log.info("logging.go:59", f"[core] [Channel #1] Subchannel picks a new address {addr} to connect", v=2)
        return conn

    @staticmethod
    def _read_preface(conn):
        """gRPC reads the server's preface before anything else, and that is where a TLS 1.3 server's
        rejection of the client cert arrives (an alert after the handshake).  etcd's HTTP side sends
        nothing first, so a short read that times out means the connection was accepted."""
        conn.sock.settimeout(0.1)
        try:
            data = conn.sock.recv(1)
        except socket.timeout:
            return
        except OSError as exc:
            conn.close()
            text = c.transport_error_text(exc)
            raise EtcdDown(text, f"error reading server preface: {text}")
        conn.close()
        text = "EOF" if not data else "unexpected data before the first request"
        raise EtcdDown(text, f"error reading server preface: {text}")

    def _drop(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def call(self, op, body, timeout=5.0):
        """POST /v3/<op>; returns the decoded answer.  Raises EtcdDown or ApiError (etcd refused)."""
        with self.lock:
            for attempt in (0, 1):
                if self.conn is not None and self.conn.sock is None:
                    self._drop()        # closed by http.client: reconnect here, never with the old context
                fresh = self.conn is None
                try:
                    if fresh:
                        self.conn = self._connect(timeout)
                    self.conn.sock.settimeout(timeout)
                    self.conn.request("POST", f"/v3/{op}", body=json.dumps(body), headers={"Content-Type": "application/json"})
                    resp = self.conn.getresponse()
                    data = resp.read()
                except EtcdDown as exc:
                    self._failed(exc)
                    raise
                except (OSError, http.client.HTTPException) as exc:
                    self._drop()
                    if fresh or attempt:
                        text = c.transport_error_text(exc)
                        err = EtcdDown(text, f"error reading server preface: {text}")
                        self._failed(err)
                        raise err
                    continue
                break
            self.last_error = None
        answer = json.loads(data or b"{}")
        if resp.status != 200:
            raise ApiError(500, "InternalError", f"Internal error occurred: etcdserver: {answer.get('error') or answer}")
        return answer

    def _failed(self, exc):
        self._drop()
        self.last_error = str(exc)
        if time.monotonic() - self.last_logged > 1:
            self.last_logged = time.monotonic()
            self.log.warning("logging.go:59", f'[core] [Channel #1 SubChannel #2] grpc: addrConn.createTransport failed to '
                                              f'connect to {{Addr: "{self.host}:{self.port}", ServerName: "{self.host}", }}. '
                                              f'Err: connection error: desc = {c.go_quote(exc.desc)}')

    # --- key/value helpers over the gateway -----------------------------------------------

    @staticmethod
    def _decode(kv):
        obj = json.loads(base64.b64decode(kv["value"]))
        obj.setdefault("metadata", {})["resourceVersion"] = kv["mod_revision"]
        return obj

    def get(self, key):
        kvs = self.call("kv/range", {"key": b64(key)}).get("kvs") or []
        return self._decode(kvs[0]) if kvs else None

    def list(self, prefix):
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        answer = self.call("kv/range", {"key": b64(prefix), "range_end": b64(end)})
        return [self._decode(kv) for kv in answer.get("kvs") or []], answer["header"]["revision"]

    def _txn(self, key, compare, obj):
        put = {"request_put": {"key": b64(key), "value": b64(json.dumps(obj, separators=(",", ":")))}}
        answer = self.call("kv/txn", {"compare": [dict(compare, key=b64(key))], "success": [put],
                                      "failure": [{"request_range": {"key": b64(key)}}]})
        if answer.get("succeeded"):
            return answer["header"]["revision"], None
        kvs = answer["responses"][0]["response_range"].get("kvs") or []
        return None, (self._decode(kvs[0]) if kvs else None)

    def create(self, key, obj):
        """Put when absent: (revision, None), or (None, existing object)."""
        return self._txn(key, {"target": "CREATE", "result": "EQUAL", "create_revision": "0"}, obj)

    def update(self, key, obj, revision=None):
        """Put when present (and at ``revision`` if given): (revision, None) or (None, current or None)."""
        if revision:
            return self._txn(key, {"target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}, obj)
        return self._txn(key, {"target": "CREATE", "result": "GREATER", "create_revision": "0"}, obj)

    def delete(self, key):
        return int(self.call("kv/deleterange", {"key": b64(key)}).get("deleted") or 0)

    def status(self):
        return {"server": self.server, "connected": self.conn is not None, "connections": self.connections,
                "client_cert": c.cert_info(self.cert) if self.cert else None, "last_error": self.last_error}


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------

def age(obj):
    """duration.HumanDuration of the object's age, as in kubectl's AGE column."""
    created = obj["metadata"].get("creationTimestamp")
    secs = int((datetime.datetime.now(c.UTC) - c.parse_time(created)).total_seconds()) if created else 0
    if secs < -1:
        return "<invalid>"
    if secs < 120:
        return f"{max(secs, 0)}s"
    minutes, hours = secs // 60, secs // 3600
    if minutes < 10:
        return f"{minutes}m{secs % 60}s" if secs % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // 24 // 365}y"


def node_status(obj):
    ready = [x for x in (obj.get("status") or {}).get("conditions") or [] if x.get("type") == "Ready"]
    return "Ready" if ready and ready[0].get("status") == "True" else "NotReady" if ready else "Unknown"


def node_roles(obj):
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix):] for k in obj["metadata"].get("labels") or {} if k.startswith(prefix))
    return ",".join(roles) or "<none>"


AGE = ("Age", "string", age)
RESOURCES = [
    Resource("", "v1", "namespaces", "Namespace", False, ["ns"], "namespaces",
             [("Status", "string", lambda o: (o.get("status") or {}).get("phase", "")), AGE]),
    Resource("", "v1", "nodes", "Node", False, ["no"], "minions",
             [("Status", "string", node_status), ("Roles", "string", node_roles), AGE,
              ("Version", "string", lambda o: ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", ""))]),
    Resource("", "v1", "secrets", "Secret", True, (), "secrets",
             [("Type", "string", lambda o: o.get("type", "Opaque")), ("Data", "integer", lambda o: len(o.get("data") or {})),
              AGE]),
    Resource("", "v1", "configmaps", "ConfigMap", True, ["cm"], "configmaps",
             [("Data", "integer", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), AGE]),
    _api.lease_resource([("Holder", "string", lambda o: (o.get("spec") or {}).get("holderIdentity", "")), AGE]),
    Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False, verbs=("create",)),
    # stored and listed only: the stand-in authenticates but does not authorize
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, (), "clusterrolebindings",
             [("Role", "string", lambda o: "%s/%s" % ((o.get("roleRef") or {}).get("kind", ""), (o.get("roleRef") or {}).get("name", ""))),
              AGE]),
]
GROUP_VERSIONS = _api.group_versions(RESOURCES)


def find_resource(group, version, plural):
    for res in RESOURCES:
        if (res.group, res.version, res.plural) == (group, version, plural):
            return res
    return None


def matches(obj, query):
    """fieldSelector metadata.name/metadata.namespace and labelSelector with k=v, k!=v and k."""
    meta = obj["metadata"]
    for term in filter(None, query.get("fieldSelector", "").split(",")):
        field, _sep, value = term.replace("==", "=").partition("=")
        negate = field.endswith("!")
        actual = meta.get(field.rstrip("!").split(".", 1)[-1], "")
        if (actual == value) == negate:
            return False
    labels = meta.get("labels") or {}
    for term in filter(None, query.get("labelSelector", "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch (also used for strategic merge patches, lists replaced whole)."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def table(res, objects, revision):
    """meta.k8s.io/v1 Table, what kubectl get asks for (Accept: ...;as=Table;...)."""
    columns = [("Name", "string", lambda o: o["metadata"]["name"])] + list(res.columns or [AGE])
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(revision)},
            "columnDefinitions": [{"name": name, "type": kind, "format": "name" if name == "Name" else "",
                                   "description": "", "priority": 0} for name, kind, _fn in columns],
            "rows": [{"cells": [fn(o) for _name, _kind, fn in columns],
                      "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}
                     for o in objects]}


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

class ApiServer:
    """State shared by the request threads: certificates, authenticators, storage."""

    def __init__(self, flags, log, stop):
        self.flags, self.log, self.stop = flags, log, stop
        c.require_files(flags, FILE_FLAGS)
        if not flags.get("etcd-servers"):
            raise c.CommandFailed("--etcd-servers must be specified")
        if not flags.get("tls-cert-file") or not flags.get("tls-private-key-file"):
            raise c.CommandFailed("this stand-in needs --tls-cert-file and --tls-private-key-file")
        self.advertise = flags.get("advertise-address") or "127.0.0.1"
        self.address = (flags.get("bind-address") or self.advertise, int(flags.get("secure-port") or 6443))
        self.anonymous = flags.get("anonymous-auth", "true") != "false"
        self.serving = c.DynamicPair(log, "serving-cert", flags["tls-cert-file"], flags["tls-private-key-file"])
        self.proxy = None
        if flags.get("proxy-client-cert-file") and flags.get("proxy-client-key-file"):
            self.proxy = c.DynamicPair(log, "aggregator-proxy-cert", flags["proxy-client-cert-file"],
                                       flags["proxy-client-key-file"])
        self.ca_files = {"client": flags.get("client-ca-file"), "requestheader": flags.get("requestheader-client-ca-file")}
        self.ca_stat = None
        self.ca_pem, self.roots = {}, {}
        self._load_cas()
        self.ctx = self._context()
        self.etcd = Etcd(log, flags)
        self.started = now_rfc3339()
        self.last_status = None

    # --- certificates --------------------------------------------------------------------

    def _ca_signature(self):
        sig = []
        for path in self.ca_files.values():
            try:
                st = os.stat(path) if path else None
                sig.append((st.st_ino, st.st_mtime_ns, st.st_size) if st else None)
            except OSError:
                sig.append("missing")
        return sig

    def _load_cas(self):
        self.ca_stat = self._ca_signature()
        for kind, path in self.ca_files.items():
            try:
                pem = c.read_file(path) if path else b""
                roots = c.load_pem_certs(pem)
            except (c.CommandFailed, ValueError) as exc:
                self.log.error("dynamic_cafile_content.go:165", f"key failed with : {exc}")
                continue
            self.ca_pem[kind], self.roots[kind] = pem, roots

    def _context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_pair(ctx, self.serving.cert_pem, self.serving.key_pem)
        ctx.set_alpn_protocols(["http/1.1"])
        if self.ca_pem.get("client"):
            # ask for a client cert, let OpenSSL check chain and signature but not dates: Go's
            # tls.RequestClientCert + x509 authenticator answer 401 to expired certs, not a TLS alert
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.verify_flags |= c.X509_V_FLAG_NO_CHECK_TIME
            ctx.load_verify_locations(cadata=self.ca_pem["client"].decode())
        return ctx

    def poll(self):
        changed = self.serving.poll()
        if self.proxy:
            self.proxy.poll()
        if self._ca_signature() != self.ca_stat:
            self._load_cas()
            changed = True
        if changed:
            try:
                self.ctx = self._context()
            except ssl.SSLError as exc:
                self.log.error("tlsconfig.go:200", f"key failed with : {c.tls_pair_error(exc)}")
        self.write_status()

    def write_status(self):
        data = {"component": "kube-apiserver", "pid": os.getpid(), "started": self.started,
                "address": f"{self.address[0]}:{self.address[1]}",
                "serving_cert": dict(c.cert_info(self.serving.cert), reloads=self.serving.reloads),
                "proxy_client_cert": dict(c.cert_info(self.proxy.cert), reloads=self.proxy.reloads) if self.proxy else None,
                "client_ca": [c.cert_info(ca) for ca in self.roots.get("client", [])], "etcd": self.etcd.status()}
        if data != self.last_status:
            self.last_status = data
            c.write_status("kube-apiserver", data)

    def authenticate(self, handler):
        """(user, groups), or None for an anonymous request; raises Unauthenticated."""
        if handler.headers.get("Authorization"):
            raise Unauthenticated("invalid bearer token")
        der = handler.request.getpeercert(binary_form=True)
        if not der:
            return None
        leaf = x509.load_der_x509_certificate(der)
        errors = []
        if self.roots.get("requestheader"):
            # the front-proxy verifier runs first and returns Go's error as is
            err = c.go_verify(leaf, self.roots["requestheader"], ExtendedKeyUsageOID.CLIENT_AUTH)
            if err:
                errors.append(err)
        err = c.go_verify(leaf, self.roots.get("client", []), ExtendedKeyUsageOID.CLIENT_AUTH)
        if err is None:
            return c.cn_of(leaf.subject), c.orgs_of(leaf.subject) + ["system:authenticated"]
        errors.append(f"verifying certificate {c.cert_identifier(leaf)} failed: {err}")
        raise Unauthenticated(aggregate(errors))

    # --- storage -------------------------------------------------------------------------

    def connect_storage(self):
        """Reach etcd within KUBEPKI_LAB_ETCD_TIMEOUT seconds (20) or die as the real one does."""
        deadline = time.monotonic() + float(os.environ.get("KUBEPKI_LAB_ETCD_TIMEOUT", "20"))
        while not self.stop.is_set():
            try:
                self.etcd.call("kv/range", {"key": b64("compact_rev_key")}, timeout=2)
                return
            except (EtcdDown, ApiError):
                pass
            if time.monotonic() > deadline:
                self.log.fatal("instance.go:291", "Error creating leases: error creating storage factory: context deadline exceeded")
            self.stop.wait(1)

    def seed(self):
        """What the apiserver's bootstrap controllers create: the system namespaces and
        kube-system/extension-apiserver-authentication."""
        ns = find_resource("", "v1", "namespaces")
        for name in SYSTEM_NAMESPACES:
            self.etcd.create(ns.key(None, name), self.new_object(ns, {"metadata": {"name": name}}, None))
        cm = find_resource("", "v1", "configmaps")
        f = self.flags
        data = {"client-ca-file": self.ca_pem.get("client", b"").decode()}
        if self.ca_pem.get("requestheader"):
            data.update({"requestheader-client-ca-file": self.ca_pem["requestheader"].decode(),
                         "requestheader-allowed-names": json.dumps(f.get("requestheader-allowed-names", "").split(",")),
                         "requestheader-extra-headers-prefix": json.dumps([f.get("requestheader-extra-headers-prefix", "")]),
                         "requestheader-group-headers": json.dumps([f.get("requestheader-group-headers", "")]),
                         "requestheader-username-headers": json.dumps([f.get("requestheader-username-headers", "")])})
        key = cm.key("kube-system", "extension-apiserver-authentication")
        obj = self.new_object(cm, {"metadata": {"name": "extension-apiserver-authentication"}, "data": data}, "kube-system")
        revision, current = self.etcd.create(key, obj)
        if revision is None:
            obj["metadata"].update({k: current["metadata"][k] for k in ("uid", "creationTimestamp")})
            self.etcd.update(key, obj)

    @staticmethod
    def new_object(res, body, namespace):
        obj = _api.new_object(res, body, namespace)
        if res.plural == "namespaces":
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"].get("name")
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        return obj


class ApiHandler(c.Handler):
    """One request: authenticate, then health, version, discovery or a resource."""

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def dispatch(self):
        app = self.server.app
        path, query = self.url()
        try:
            user = app.authenticate(self)
        except Unauthenticated as exc:
            app.log.error("authentication.go:73", "Unable to authenticate the request", err=str(exc))
            self.send_status(ApiError(401, "Unauthorized", "Unauthorized"))
            return
        if user is None and not app.anonymous:
            self.send_status(ApiError(401, "Unauthorized", "Unauthorized"))
            return
        self.user = user or ("system:anonymous", ["system:unauthenticated"])
        try:
            self.route(app, path, query)
        except ApiError as exc:
            self.send_status(exc)
        except EtcdDown as exc:
            self.send_status(ApiError(504, "Timeout", f"Timeout: request did not complete within requested timeout - {exc}"))

    def send_status(self, err):
        self.read_body()
        self.send(err.code, err.status())

    def forbidden_path(self, path):
        raise ApiError(403, "Forbidden", f'forbidden: User "{self.user[0]}" cannot {self.command.lower()} path "{path}"', {})

    def route(self, app, path, query):
        public = path == "/version" or any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS[:3])
        parts = [p for p in path.split("/") if p]
        is_resource = (parts[:1] == ["api"] and len(parts) > 2) or (parts[:1] == ["apis"] and len(parts) > 3)
        if self.user[0] == "system:anonymous" and not public and not is_resource:
            self.forbidden_path(path)
        if public:
            self.health_or_version(app, parts, query)
        elif parts == ["api"]:
            self.send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{app.advertise}:{app.address[1]}"}]})
        elif parts == ["apis"]:
            self.send(200, {"kind": "APIGroupList", "apiVersion": "v1",
                            "groups": _api.group_list(RESOURCES)["groups"]})
        elif parts == ["api", "v1"]:
            self.send(200, _api.resource_list(RESOURCES, "", "v1"))
        elif parts[:1] == ["apis"] and len(parts) == 2 and any(g == parts[1] for g, v in GROUP_VERSIONS):
            self.send(200, _api.api_group(RESOURCES, parts[1]))
        elif parts[:1] == ["apis"] and len(parts) == 3 and (parts[1], parts[2]) in GROUP_VERSIONS:
            self.send(200, _api.resource_list(RESOURCES, parts[1], parts[2]))
        elif parts[:1] == ["api"] and len(parts) > 2 and parts[1] == "v1":
            self.resource(app, "", "v1", parts[2:], query)
        elif parts[:1] == ["apis"] and len(parts) > 3:
            self.resource(app, parts[1], parts[2], parts[3:], query)
        elif parts[:1] in (["api"], ["apis"]):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        else:
            self.read_body()
            self.send(404, "404 page not found\n", "text/plain; charset=utf-8")

    def health_or_version(self, app, parts, query):
        if parts[0] == "version":
            self.send(200, {"major": "1", "minor": "28", "gitVersion": c.VERSION, "gitCommit": "kubepki-lab",
                            "gitTreeState": "clean", "buildDate": "2024-02-14T10:32:40Z", "goVersion": "go1.20.13",
                            "compiler": "gc", "platform": "linux/amd64"})
            return
        kind = parts[0]
        try:
            app.etcd.call("kv/range", {"key": b64("health")}, timeout=2)
            etcd_err = None
        except (EtcdDown, ApiError) as exc:
            etcd_err = f"error getting data from etcd: {exc}"
        checks = [("ping", None), ("log", None), ("etcd", etcd_err)]
        if kind == "readyz":
            checks += [("etcd-readiness", etcd_err), ("informer-sync", None)]
        checks += [(f"poststarthook/{h}", None) for h in POST_START_HOOKS]
        if kind == "readyz":
            checks.append(("shutdown", None))
        if len(parts) > 1:
            wanted = "/".join(parts[1:])
            checks = [chk for chk in checks if chk[0] == wanted]
            if not checks:
                self.send(404, "404 page not found\n", "text/plain; charset=utf-8")
                return
        code, text = c.health_body(checks, kind, "verbose" in query)
        if code != 200:
            failed = [name for name, err in checks if err]
            app.log.info("healthz.go:261", f"{','.join(failed)} check failed: {kind}\n[-]etcd failed: {etcd_err}")
        self.send(code, text, "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")])

    def resource(self, app, group, version, rest, query):
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        res = find_resource(group, version, rest[0])
        if res is None or len(rest) > 2 or (namespace and not res.namespaced):
            raise ApiError(404, "NotFound", "the server could not find the requested resource", {})
        name = rest[1] if len(rest) == 2 else ""
        verb = {"GET": "get" if name else ("watch" if query.get("watch") in ("1", "true") else "list"),
                "POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}[self.command]
        if self.user[0] == "system:anonymous":
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            what = f'{res.qualified} "{name}"' if name else res.qualified
            raise ApiError(403, "Forbidden", f'{what} is forbidden: User "system:anonymous" cannot {verb} resource '
                                             f'"{res.plural}" in API group "{group}" {scope}',
                           {"name": name, "group": group, "kind": res.plural} if name else {"group": group, "kind": res.plural})
        if res.plural == "selfsubjectreviews" and verb == "create":
            self.read_body()
            self.send(201, {"kind": "SelfSubjectReview", "apiVersion": res.api_version, "metadata": {"creationTimestamp": None},
                            "status": {"userInfo": {"username": self.user[0], "groups": self.user[1]}}})
            return
        if verb not in res.verbs or (verb in ("create",) and name) or (verb in ("update", "delete", "patch") and not name):
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        getattr(self, f"verb_{verb}")(app, res, namespace, name, query)

    def wants_table(self):
        return "as=Table" in (self.headers.get("Accept") or "")

    def body(self):
        ctype = (self.headers.get("Content-Type") or "application/json").split(";")[0]
        if "json" not in ctype:
            raise ApiError(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted '
                                                        f'media types include: application/json, {ctype} is not JSON')
        try:
            return json.loads(self.read_body() or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the object provided is unrecognized: {exc}")

    def verb_get(self, app, res, namespace, name, query):
        obj = app.etcd.get(res.key(namespace, name))
        if obj is None:
            raise _api.not_found(res, name)
        self.send(200, table(res, [obj], obj["metadata"]["resourceVersion"]) if self.wants_table() else obj)

    def verb_list(self, app, res, namespace, name, query):
        objects, revision = app.etcd.list(res.key(namespace))
        objects = [o for o in objects if matches(o, query)]
        if self.wants_table():
            self.send(200, table(res, objects, revision))
            return
        self.send(200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(revision)}, "items": objects})

    def verb_watch(self, app, res, namespace, name, query):
        """A watch that never reports an event: enough for kubectl delete --wait and informers."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        self.hold_open(float(query.get("timeoutSeconds") or 1800), app.stop)
        self.close_connection = True
        try:
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    def verb_create(self, app, res, namespace, name, query):
        if res.namespaced and app.etcd.get(find_resource("", "v1", "namespaces").key(None, namespace)) is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"})
        self.send(201, _api.create(app.etcd, res, namespace, app.new_object(res, self.body(), namespace)))

    def verb_update(self, app, res, namespace, name, query):
        obj, created = _api.update(app.etcd, res, namespace, name, self.body())
        self.send(201 if created else 200, obj)

    def verb_patch(self, app, res, namespace, name, query):
        patch = self.body()
        if not isinstance(patch, dict):
            raise ApiError(415, "UnsupportedMediaType", "only merge and strategic merge patches are supported here")
        current = app.etcd.get(res.key(namespace, name))
        if current is None:
            raise _api.not_found(res, name)
        self.send(200, _api.update(app.etcd, res, namespace, name, merge_patch(current, patch))[0])

    def verb_delete(self, app, res, namespace, name, query):
        self.read_body()
        if res.plural == "namespaces" and name in IMMORTAL_NAMESPACES:
            raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                           {"name": name, "kind": "namespaces"})
        current = app.etcd.get(res.key(namespace, name))
        if current is None or not app.etcd.delete(res.key(namespace, name)):
            raise _api.not_found(res, name)
        self.send(200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                        "details": {"name": name, "group": res.group, "kind": res.plural,
                                    "uid": current["metadata"].get("uid")}})


def main(flags, log, stop):
    app = ApiServer(flags, log, stop)
    log.info("options.go:220", f"external host was not specified, using {app.advertise}")
    log.info("server.go:156", f"Version: {c.VERSION}")
    app.connect_storage()
    if stop.is_set():
        return
    app.seed()
    server = c.serve_tls(app.address, ApiHandler, lambda: app.ctx, log)
    server.app = app
    log.info("dynamic_serving_content.go:132", "Starting controller", name=app.serving.name)
    if app.proxy:
        log.info("dynamic_serving_content.go:132", "Starting controller", name=app.proxy.name)
    log.info("secure_serving.go:213", f"Serving securely on {app.address[0]}:{app.address[1]}")
    app.write_status()
    c.poll_forever(stop, [app.poll])
    while not stop.wait(1):
        pass
    log.info("genericapiserver.go:527", "[graceful-termination] shutdown event", name="ShutdownInitiated")
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    c.run_main(main)
