"""Machinery shared by the lab's kube-apiserver, kube-controller-manager and kube-scheduler stand-ins.

The stand-ins run under Debian's /usr/bin/python3 with python3-cryptography (38) and PyYAML, and
reproduce what research/reload.md measured on the real v1.28 binaries, as far as certificates go:

- flags: ``--name=value`` (also ``--name value`` and bare ``--name``); unknown flags are ignored;
- klog lines on stderr: ``E1123 17:29:19.123456   12345 file.go:73] message``;
- Go's x509 error texts (``x509: certificate has expired or is not yet valid: current time ... is
  after ...``); Python's ssl verifies signatures and names, validity dates are checked here, so
  expired certificates reach the same code paths as in Go instead of failing the handshake;
- ``DynamicPair``: a cert/key file pair reloaded on change (poll 0.25 s), keeping the last good pair
  while cert and key disagree, as the apiserver's dynamic_serving_content.go does;
- ``KubeClient``: a client built from a kubeconfig as client-go builds it (embedded cert: read once;
  cert/key file references: re-read every 5 min, KUBEPKI_LAB_CERT_REFRESH);
- ``run_controller``: kube-controller-manager and kube-scheduler (leader election on a Lease, 2 s
  retry, in-memory self-signed serving cert, /healthz);
- a status file ``$KUBEPKI_LAB_STATUS_DIR/<component>.status`` (default /run/kubepki-lab) telling
  which certificates the running process really uses.
"""

import base64
import datetime
import http.client
import http.server
import ipaddress
import json
import os
import select
import signal
import socket
import socketserver
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VERSION = "v1.28.7-kubepki-lab"
X509_V_FLAG_NO_CHECK_TIME = 0x200000     # OpenSSL: verify chains and names, leave the dates to us
UTC = datetime.timezone.utc
LOOPBACK = ipaddress.ip_address("127.0.0.1")
POLL_SECONDS = 0.25


# --------------------------------------------------------------------------------------------
# Flags, logging, exit paths
# --------------------------------------------------------------------------------------------

def parse_flags(argv):
    """pflag-style flags as a dict (last one wins); bare ``--flag`` is "true"; positionals ignored."""
    flags = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not eq:
            if i < len(argv) and not argv[i].startswith("-"):
                value = argv[i]
                i += 1
            else:
                value = "true"
        flags[name] = value
    return flags


def go_quote(text):
    """strconv.Quote, close enough for klog's structured values."""
    return json.dumps(str(text), ensure_ascii=False)


class Klog:
    """klog's text format on stderr; ``v`` is the component's --v."""

    def __init__(self, verbosity=0):
        self.verbosity = verbosity
        self.lock = threading.Lock()

    def line(self, severity, where, msg, **kv):
        now = datetime.datetime.now()
        if kv:      # structured call (klog.InfoS/ErrorS): quoted message, key="value" pairs
            msg = go_quote(msg) + "".join(f" {k}={go_quote(v) if isinstance(v, str) else v}" for k, v in kv.items())
        text = f"{severity}{now:%m%d %H:%M:%S}.{now.microsecond:06d} {os.getpid():7d} {where}] {msg}\n"
        with self.lock:
            sys.stderr.write(text)
            sys.stderr.flush()

    def info(self, where, msg, v=0, **kv):
        if v <= self.verbosity:
            self.line("I", where, msg, **kv)

    def warning(self, where, msg, **kv):
        self.line("W", where, msg, **kv)

    def error(self, where, msg, **kv):
        self.line("E", where, msg, **kv)

    def fatal(self, where, msg, code=255, **kv):
        """klog.Fatal: log and exit 255 at once (no cleanup, like os.Exit)."""
        self.line("F", where, msg, **kv)
        os._exit(code)


class CommandFailed(Exception):
    """A start-up error that the real binaries report as ``"command failed" err="..."``."""


def missing(path, op="open"):
    return CommandFailed(f"{op} {path}: no such file or directory")


def require_files(flags, names):
    """Fail like the real binaries when a file flag points nowhere (empty values are allowed)."""
    for name in names:
        path = flags.get(name)
        if path and not os.path.exists(path):
            raise missing(path)


def run_main(main):
    """Run ``main(flags, log, stop)``: SIGTERM/SIGINT set ``stop``; CommandFailed exits 1 as run.go does."""
    flags = parse_flags(sys.argv[1:])
    log = Klog(int(flags.get("v", "0") or 0))
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        main(flags, log, stop)
    except CommandFailed as exc:
        log.error("run.go:74", "command failed", err=str(exc))
        sys.exit(1)
    sys.exit(0)


# --------------------------------------------------------------------------------------------
# Certificates and Go's x509 error texts
# --------------------------------------------------------------------------------------------

def not_before(cert):
    return cert.not_valid_before.replace(tzinfo=UTC)


def not_after(cert):
    return cert.not_valid_after.replace(tzinfo=UTC)


def go_time(value):
    """time.Format(time.RFC3339): UTC as Z; ``now`` is shown in local time as Go does."""
    if value.utcoffset() == datetime.timedelta(0):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat(timespec="seconds")


def now_local():
    return datetime.datetime.now().astimezone().replace(microsecond=0)


def cn_of(name):
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return attrs[0].value if attrs else ""


def orgs_of(name):
    return [a.value for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def validity_error(cert, now=None):
    """Go's CertificateInvalidError{Expired} text, or None while ``cert`` is within its dates."""
    now = now or now_local()
    if now > not_after(cert):
        return f"x509: certificate has expired or is not yet valid: current time {go_time(now)} is after {go_time(not_after(cert))}"
    if now < not_before(cert):
        return f"x509: certificate has expired or is not yet valid: current time {go_time(now)} is before {go_time(not_before(cert))}"
    return None


def _ext(cert, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None


def go_verify(leaf, roots, usage, now=None):
    """x509.Certificate.Verify as Go words its failures (leaf dates first, then the chain, then EKU).

    ``roots``: parsed CA certs; ``usage``: an ExtendedKeyUsageOID the leaf must allow.  Signatures
    are not re-checked (OpenSSL did that for the CA that matters); issuers are matched by name.
    """
    now = now or now_local()
    err = validity_error(leaf, now)
    if err:
        return err
    candidates = [ca for ca in roots if ca.subject == leaf.issuer]
    if not candidates:
        return "x509: certificate signed by unknown authority"
    hints = [validity_error(ca, now) for ca in candidates]
    if all(hints):
        return (f"x509: certificate signed by unknown authority (possibly because of {go_quote(hints[0])} "
                f"while trying to verify candidate authority certificate {go_quote(cn_of(candidates[0].subject))})")
    eku = _ext(leaf, x509.ExtendedKeyUsage)
    if eku is not None and usage not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
        return "x509: certificate specifies an incompatible key usage"
    return None


def colon_hex(data):
    return ":".join(f"{b:02X}" for b in data) if data else ""


def cert_identifier(cert):
    """certificateIdentifier() of the apiserver's x509 authenticator."""
    ski = _ext(cert, x509.SubjectKeyIdentifier)
    aki = _ext(cert, x509.AuthorityKeyIdentifier)
    return (f"SN={cert.serial_number}, SKID={colon_hex(ski.digest if ski else b'')}, "
            f"AKID={colon_hex(aki.key_identifier if aki else b'')}")


def cert_info(cert):
    """What the status files say about a certificate (serial and fingerprint as the collection prints them)."""
    digest = cert.fingerprint(hashes.SHA256())
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "serial": f"{cert.serial_number:X}", "sha256": ":".join(f"{b:02X}" for b in digest),
            "not_before": go_time(not_before(cert)), "not_after": go_time(not_after(cert))}


def load_pem_certs(data):
    """Every certificate in PEM ``data`` (bytes); [] when there is none."""
    out = []
    marker = b"-----BEGIN CERTIFICATE-----"
    for chunk in data.split(marker)[1:]:
        out.append(x509.load_pem_x509_certificate(marker + chunk.split(b"-----END CERTIFICATE-----")[0]
                                                  + b"-----END CERTIFICATE-----\n"))
    return out


def read_file(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise missing(path)


def tls_pair_error(exc):
    """Go's tls.X509KeyPair wording for an ssl error raised by load_cert_chain."""
    reason = getattr(exc, "reason", "") or ""
    if reason == "KEY_VALUES_MISMATCH":
        return "tls: private key does not match public key"
    if "KEY" in reason or reason in ("NO_START_LINE", "BAD_BASE64_DECODE"):
        return "tls: failed to find any PEM data in key input"
    return "tls: failed to find any PEM data in certificate input"


def load_pair(ctx, cert_pem, key_pem):
    """ctx.load_cert_chain from bytes (ssl only takes paths): a private temp file, removed at once.

    Loading exactly the bytes that were checked avoids racing with a writer of the real files.
    """
    fd, path = tempfile.mkstemp(prefix="kubepki-standin-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


def self_signed_localhost(now=None):
    """client-go GenerateSelfSignedCertKey("localhost", [127.0.0.1]) as kube-controller-manager and
    kube-scheduler call it at each start (reload.md §5): CA ``localhost-ca@<unix>``, leaf
    ``localhost@<unix>``, RSA 2048, NotBefore = now - 1h, NotAfter = NotBefore + 1 year, random serials.
    Returns (leaf cert, chain PEM, key PEM)."""
    now = (now or datetime.datetime.now(UTC)).replace(microsecond=0)
    stamp = int(now.timestamp())
    valid_from = now - datetime.timedelta(hours=1)
    valid_to = valid_from + datetime.timedelta(days=365)

    def build(cn, key, issuer_name, signer, ca, aki=None):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
                   .public_key(key.public_key()).serial_number(int.from_bytes(os.urandom(8), "big") % (2 ** 63 - 2) + 1)
                   .not_valid_before(valid_from).not_valid_after(valid_to)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                                data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = (builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                       .add_extension(aki, critical=False)
                       # what the real ones serve: DNS:localhost, IP:127.0.0.1, IP:127.0.0.1
                       .add_extension(x509.SubjectAlternativeName([
                           x509.DNSName("localhost"), x509.IPAddress(LOOPBACK), x509.IPAddress(LOOPBACK)]),
                           critical=False))
        return builder.sign(signer, hashes.SHA256())

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = build(f"localhost-ca@{stamp}", ca_key, None, ca_key, True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(_ext(ca, x509.SubjectKeyIdentifier))
    leaf = build(f"localhost@{stamp}", key, ca.subject, ca_key, False, aki)
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    return leaf, chain, key_pem


# --------------------------------------------------------------------------------------------
# Reloadable cert/key pair (dynamic_serving_content.go)
# --------------------------------------------------------------------------------------------

class DynamicPair:
    """A cert/key file pair watched by polling (inode, mtime, size); ``poll()`` returns True when a
    new valid pair was loaded.  While the files are empty or disagree, the last good pair stays."""

    def __init__(self, log, prefix, cert_file, key_file):
        self.log = log
        self.name = f"{prefix}::{cert_file}::{key_file}"
        self.files = (cert_file, key_file)
        self.signature = None
        self.cert_pem = self.key_pem = self.cert = None
        self.reloads = 0
        err = self._load()
        if err:
            raise CommandFailed(err)

    def _stat(self):
        sig = []
        for path in self.files:
            try:
                st = os.stat(path)
            except OSError:
                return None
            sig.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(sig)

    def _load(self):
        """Read and check the files; returns an error text or None (new pair in place)."""
        self.signature = self._stat()
        cert_pem, key_pem = (read_file(path) for path in self.files)
        if not cert_pem.strip() or not key_pem.strip():
            return f"missing content for serving cert {go_quote(self.name)}"
        try:
            load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_pem, key_pem)
            cert = load_pem_certs(cert_pem)[0]
        except ssl.SSLError as exc:
            return tls_pair_error(exc)
        except (ValueError, IndexError):
            return "tls: failed to find any PEM data in certificate input"
        self.cert_pem, self.key_pem, self.cert = cert_pem, key_pem, cert
        return None

    def poll(self):
        if self._stat() == self.signature:
            return False
        try:
            err = self._load()
        except CommandFailed as exc:
            err = str(exc)
        if err:
            # utilruntime.HandleError(fmt.Errorf("%v failed with : %v", workItemKey, err))
            self.log.error("dynamic_serving_content.go:197", f"key failed with : {err}")
            return False
        self.reloads += 1
        self.log.info("dynamic_serving_content.go:113", "Loaded a new cert/key pair", v=2, name=self.name)
        return True


def poll_forever(stop, callbacks, interval=POLL_SECONDS):
    """A daemon thread calling each callback every ``interval`` seconds until ``stop``."""
    def loop():
        while not stop.wait(interval):
            for callback in callbacks:
                callback()

    thread = threading.Thread(target=loop, name="poller", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------------------------
# TLS HTTP server
# --------------------------------------------------------------------------------------------

def ssl_error_text(exc):
    """How Go would name the failure of a handshake with a peer (remote alerts, EOF, ...)."""
    reason = getattr(exc, "reason", "") or ""
    alerts = {"SSLV3_ALERT_BAD_CERTIFICATE": "bad certificate", "TLSV1_ALERT_UNKNOWN_CA": "unknown certificate authority",
              "SSLV3_ALERT_CERTIFICATE_EXPIRED": "expired certificate",
              "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate required",
              "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "bad certificate", "TLSV1_ALERT_DECRYPT_ERROR": "error decrypting message"}
    if reason in alerts:
        return f"remote error: tls: {alerts[reason]}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: failed to verify certificate: x509: {exc.verify_message}"
    if isinstance(exc, (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError)) or not reason:
        return "EOF"
    return f"tls: {reason.lower().replace('_', ' ')}"


class TLSServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """HTTPS with the TLS context chosen per connection by ``context_fn`` (so a reload applies to new
    connections at once) and the handshake done in the connection's own thread."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, context_fn, log):
        self.context_fn = context_fn
        self.log = log
        super().__init__(address, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.context_fn().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        pass        # a client that went away mid-request; the real servers say nothing either


class Handler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.1 handler base: TLS handshake first, JSON/text answers, quiet access log."""

    protocol_version = "HTTP/1.1"
    server_version = "kubepki-lab"
    sys_version = ""

    def setup(self):
        self.request.settimeout(10)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            host, port = self.client_address[:2]
            self.server.log.info("log.go:245", f"http: TLS handshake error from {host}:{port}: {ssl_error_text(exc)}")
            self.request.close()
            raise
        self.request.settimeout(None)
        super().setup()

    def log_message(self, format, *args):        # pylint: disable=redefined-builtin
        pass

    def send(self, code, body, content_type="application/json", headers=()):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body, separators=(",", ":")) + "\n"     # Go's json.Encoder
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        """The request body, read once (later calls return the same bytes)."""
        if getattr(self, "_body", None) is None or self._body[0] is not self.headers:
            length = int(self.headers.get("Content-Length") or 0)
            self._body = (self.headers, self.rfile.read(length) if length else b"")
        return self._body[1]

    def url(self):
        parts = urllib.parse.urlsplit(self.path)
        return parts.path, dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))

    def hold_open(self, seconds, stop):
        """Keep a streaming (watch) response open until the client leaves, ``seconds`` pass or ``stop``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not stop.is_set():
            readable = select.select([self.request], [], [], 1.0)[0]
            if readable:
                try:
                    if not self.request.recv(1):
                        break
                except (OSError, ssl.SSLError):
                    break


def serve_tls(address, handler, context_fn, log):
    """Listen on ``address`` and serve in a daemon thread; a busy port fails the command as in Go."""
    try:
        server = TLSServer(address, handler, context_fn, log)
    except OSError as exc:
        where = f"{address[0]}:{address[1]}"
        raise CommandFailed(f"failed to create listener: failed to listen on {where}: listen tcp {where}: "
                            f"bind: {(exc.strerror or str(exc)).lower()}")
    threading.Thread(target=server.serve_forever, args=(0.2,), name="serve", daemon=True).start()
    return server


def health_body(checks, kind, verbose):
    """(status, text) of /healthz, /livez or /readyz from [(name, error or None)], as healthz.go writes it."""
    failed = any(err for _name, err in checks)
    if not failed and not verbose:
        return 200, "ok"
    lines = [f"[-]{name} failed: reason withheld" if err else f"[+]{name} ok" for name, err in checks]
    lines.append(f"{kind} check failed" if failed else f"{kind} check passed")
    return (500 if failed else 200), "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# HTTPS client with Go-worded failures
# --------------------------------------------------------------------------------------------

class GoError(Exception):
    """An error whose text is what the Go client would print."""


def transport_error_text(exc):
    """Go's text for a failure after connecting: timeouts, TLS alerts from the peer, EOF."""
    if isinstance(exc, socket.timeout):
        return "context deadline exceeded"
    if isinstance(exc, ssl.SSLError):
        return ssl_error_text(exc)
    return "EOF"


class VerifiedConnection(http.client.HTTPSConnection):
    """HTTPS connection that checks the validity dates of the server's chain after the handshake
    (the context carries X509_V_FLAG_NO_CHECK_TIME) and words failures as Go's net/http does."""

    def __init__(self, host, port, context, roots, timeout):
        super().__init__(host, port, context=context, timeout=timeout)
        self.roots = roots

    def connect(self):
        try:
            super().connect()
        except ConnectionRefusedError:
            raise GoError(f"dial tcp {self.host}:{self.port}: connect: connection refused")
        except socket.timeout:
            raise GoError(f"dial tcp {self.host}:{self.port}: i/o timeout")
        except OSError as exc:
            raise GoError(ssl_error_text(exc))
        if self.roots is not None:
            leaf = x509.load_der_x509_certificate(self.sock.getpeercert(binary_form=True))
            err = go_verify(leaf, self.roots, ExtendedKeyUsageOID.SERVER_AUTH)
            if err:
                self.close()
                raise GoError(f"tls: failed to verify certificate: {err}")


def client_context(ca_pem, cert_pem=None, key_pem=None, insecure=False):
    """TLS client context: CA from bytes, optional client pair from bytes, dates left to go_verify."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=ca_pem.decode())
        ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    if cert_pem:
        load_pair(ctx, cert_pem, key_pem)
    return ctx


# --------------------------------------------------------------------------------------------
# kubeconfig client (client-go semantics for client certificates)
# --------------------------------------------------------------------------------------------

def _kubeconfig_entry(config, kind, name):
    for item in config.get(f"{kind}s") or []:
        if item.get("name") == name:
            return item.get(kind) or {}
    return {}


class KubeClient:
    """What client-go builds from a kubeconfig: the file is read once; an embedded client cert stays
    in memory until restart; a client cert given as file paths is re-read every
    KUBEPKI_LAB_CERT_REFRESH seconds (client-go's CertCallbackRefreshDuration, 5 min) and, when it
    changed, open connections are dropped (cert_rotation.go)."""

    def __init__(self, log, path):
        self.log = log
        if not os.path.exists(path):
            raise missing(path, "stat")
        config = yaml.safe_load(read_file(path)) or {}
        context = _kubeconfig_entry(config, "context", config.get("current-context"))
        cluster = _kubeconfig_entry(config, "cluster", context.get("cluster"))
        user = _kubeconfig_entry(config, "user", context.get("user"))
        base = os.path.dirname(os.path.abspath(path))
        if not cluster.get("server"):
            raise CommandFailed("invalid configuration: no configuration has been provided")
        url = urllib.parse.urlsplit(cluster["server"])
        self.server = cluster["server"].rstrip("/")
        self.host, self.port = url.hostname, url.port or 443
        self.insecure = bool(cluster.get("insecure-skip-tls-verify"))
        self.ca_pem = self._data(cluster, "certificate-authority", base) or b""
        self.roots = None if self.insecure else load_pem_certs(self.ca_pem)
        self.cert_files = None
        if user.get("client-certificate") and user.get("client-key") and not user.get("client-certificate-data") \
                and not user.get("client-key-data"):
            self.cert_files = tuple(os.path.join(base, user[k]) for k in ("client-certificate", "client-key"))
        self.cert_pem = self._data(user, "client-certificate", base)
        self.key_pem = self._data(user, "client-key", base)
        self.refresh = float(os.environ.get("KUBEPKI_LAB_CERT_REFRESH", "300"))
        self.lock = threading.Lock()
        self.conn = None
        self._build()

    @staticmethod
    def _data(section, field, base):
        if section.get(f"{field}-data"):
            return base64.b64decode(section[f"{field}-data"])
        if section.get(field):
            return read_file(os.path.join(base, section[field]))
        return None

    def _build(self):
        try:
            self.ctx = client_context(self.ca_pem, self.cert_pem, self.key_pem, self.insecure)
        except ssl.SSLError as exc:
            raise CommandFailed(tls_pair_error(exc))
        self.cert = load_pem_certs(self.cert_pem)[0] if self.cert_pem else None
        self.loaded_at = time.time()
        self.conn = None

    def cert_status(self):
        info = cert_info(self.cert) if self.cert else {}
        info.update(source=("file:" + self.cert_files[0]) if self.cert_files else "embedded",
                    loaded_at=go_time(datetime.datetime.fromtimestamp(self.loaded_at, UTC)))
        return info

    def _maybe_rotate(self):
        if not self.cert_files or time.time() - self.loaded_at < self.refresh:
            return
        try:
            cert_pem, key_pem = (read_file(p) for p in self.cert_files)
        except CommandFailed:
            self.loaded_at = time.time()
            return
        if (cert_pem, key_pem) == (self.cert_pem, self.key_pem):
            self.loaded_at = time.time()
            return
        old = (self.cert_pem, self.key_pem)
        self.cert_pem, self.key_pem = cert_pem, key_pem
        try:
            self._build()
        except CommandFailed as exc:
            self.cert_pem, self.key_pem = old
            self.loaded_at = time.time()
            self.log.error("cert_rotation.go:168", f"key failed with : {exc}")
            return
        self.log.info("cert_rotation.go:88", "certificate rotation detected, shutting down client connections to start "
                      "using new credentials", v=1)

    def request(self, method, path, body=None, timeout=5):
        """(HTTP status, decoded JSON or text); GoError carries Go's text for transport failures."""
        with self.lock:
            self._maybe_rotate()
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Accept": "application/json", "User-Agent": "kubepki-lab-standin"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            sep = "&" if "?" in path else "?"
            target = f"{path}{sep}timeout={int(timeout)}s"
            for attempt in (0, 1):
                fresh = self.conn is None
                if fresh:
                    self.conn = VerifiedConnection(self.host, self.port, self.ctx, self.roots, timeout)
                try:
                    self.conn.request(method, target, body=payload, headers=headers)
                    resp = self.conn.getresponse()
                    data = resp.read()
                    break
                except GoError as exc:
                    self.conn = None
                    raise GoError(f'{method.capitalize()} "{self.server}{target}": {exc}')
                except (OSError, http.client.HTTPException) as exc:
                    self.conn.close()
                    self.conn = None
                    if fresh or attempt:
                        raise GoError(f'{method.capitalize()} "{self.server}{target}": {transport_error_text(exc)}')
            try:
                return resp.status, json.loads(data)
            except ValueError:
                return resp.status, data.decode(errors="replace")


def status_reason(code, body):
    """client-go's error text for a failed call (StatusError message, or the generic one per code)."""
    if isinstance(body, dict) and body.get("kind") == "Status" and body.get("message"):
        return body["message"]
    generic = {401: "Unauthorized", 403: "Forbidden", 404: "the server could not find the requested resource",
               409: "Conflict", 500: "Internal error"}
    return generic.get(code, f"an error on the server ({code}) has prevented the request from succeeding")


# --------------------------------------------------------------------------------------------
# Status file
# --------------------------------------------------------------------------------------------

def write_status(component, data):
    """Write $KUBEPKI_LAB_STATUS_DIR/<component>.status atomically; silently skipped when impossible."""
    directory = os.environ.get("KUBEPKI_LAB_STATUS_DIR", "/run/kubepki-lab")
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{component}.")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(directory, f"{component}.status"))
    except OSError:
        pass


def rfc3339_micro(value=None):
    value = value or datetime.datetime.now(UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------------------
# kube-controller-manager / kube-scheduler
# --------------------------------------------------------------------------------------------

LEASE_DURATION = 15      # seconds; client-go leader election defaults of both components
RENEW_DEADLINE = 10
RETRY_PERIOD = 2


class LeaderElector:
    """client-go leaderelection on a coordination.k8s.io/v1 Lease, reduced to what shows from outside:
    the Lease object, the log lines, and the exit when a leader cannot renew within the deadline."""

    def __init__(self, log, client, namespace, name):
        self.log, self.client = log, client
        self.lock_name = f"{namespace}/{name}"
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self.namespace, self.name = namespace, name
        self.identity = f"{socket.gethostname()}_{uuid.uuid4()}"
        self.leader = False
        self.last_renew = 0.0
        self.last_result = {"ok": None, "error": "not tried yet", "time": None}

    def _result(self, ok, error=None):
        self.last_result = {"ok": ok, "error": error, "time": rfc3339_micro()}
        return ok

    def try_acquire_or_renew(self):
        now = datetime.datetime.now(UTC)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": LEASE_DURATION,
                "acquireTime": rfc3339_micro(now), "renewTime": rfc3339_micro(now), "leaseTransitions": 0}
        try:
            code, lease = self.client.request("GET", self.path)
            if code == 404:
                body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec}
                code, lease = self.client.request("POST", self.path.rsplit("/", 1)[0], body)
                if code not in (200, 201):
                    self.log.error("leaderelection.go:369", f"error initially creating leader election record: "
                                                            f"{status_reason(code, lease)}")
                    return self._result(False, status_reason(code, lease))
                return self._result(True)
            if code != 200:
                raise GoError(status_reason(code, lease))
        except GoError as exc:
            self.log.error("leaderelection.go:332", f"error retrieving resource lock {self.lock_name}: {exc}")
            return self._result(False, str(exc))
        old = lease.get("spec") or {}
        holder = old.get("holderIdentity") or ""
        renewed = old.get("renewTime")
        expires = parse_time(renewed) + datetime.timedelta(seconds=old.get("leaseDurationSeconds") or LEASE_DURATION) \
            if renewed else now
        if holder and holder != self.identity and expires > now:
            self._result(True)                  # the apiserver answered; someone else leads
            return False
        if holder == self.identity:
            spec.update(acquireTime=old.get("acquireTime", spec["acquireTime"]),
                        leaseTransitions=old.get("leaseTransitions", 0))
        else:
            spec["leaseTransitions"] = old.get("leaseTransitions", 0) + (1 if holder else 0)
        lease["spec"] = spec
        try:
            code, body = self.client.request("PUT", self.path, lease)
        except GoError as exc:
            code, body = 0, str(exc)
        if code != 200:
            reason = body if code == 0 else status_reason(code, body)
            self.log.error("leaderelection.go:369", f"Failed to update lock: {reason}")
            return self._result(False, reason)
        return self._result(True)

    def probe(self):
        """Without leader election it is the controllers' informers that call the apiserver."""
        try:
            code, body = self.client.request("GET", "/api/v1/namespaces/kube-system")
            if code != 200:
                raise GoError(status_reason(code, body))
        except GoError as exc:
            self.log.error("reflector.go:147", "k8s.io/client-go/informers/factory.go:150: Failed to watch "
                                               f"*v1.Namespace: failed to list *v1.Namespace: {exc}")
            return self._result(False, str(exc))
        return self._result(True)

    def step(self):
        """One retry period: returns False when leadership was lost (the caller exits)."""
        ok = self.try_acquire_or_renew()
        if ok:
            if not self.leader:
                self.log.info("leaderelection.go:260", f"successfully acquired lease {self.lock_name}")
            self.leader = True
            self.last_renew = time.monotonic()
        elif self.leader and time.monotonic() - self.last_renew > RENEW_DEADLINE:
            self.log.info("leaderelection.go:285", f"failed to renew lease {self.lock_name}: timed out waiting for "
                                                   "the condition")
            return False
        return True


def run_controller(component, default_port, starting, lost):
    """main() of kube-controller-manager / kube-scheduler.  ``starting`` and ``lost``: (where, message)
    of the start-up line and of the line logged before exiting 1 after losing the lease (OnStoppedLeading)."""

    def main(flags, log, stop):
        kubeconfig = flags.get("kubeconfig") or flags.get("authentication-kubeconfig")
        if not kubeconfig:
            raise CommandFailed("invalid configuration: no configuration has been provided, try setting "
                                "KUBERNETES_MASTER environment variable")
        client = KubeClient(log, kubeconfig)
        require_files(flags, ["authentication-kubeconfig", "authorization-kubeconfig", "client-ca-file",
                              "requestheader-client-ca-file", "root-ca-file", "cluster-signing-cert-file",
                              "cluster-signing-key-file", "service-account-private-key-file"])
        started = datetime.datetime.now(UTC).replace(microsecond=0)
        leaf, chain, key_pem = self_signed_localhost(started)
        log.info("serving.go:348", "Generated self-signed cert in-memory")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        load_pair(ctx, chain, key_pem)
        ctx.set_alpn_protocols(["http/1.1"])
        log.info(starting[0], starting[1], version=VERSION)
        elector = LeaderElector(log, client, "kube-system", component)

        class HealthHandler(Handler):
            def do_GET(self):
                path, query = self.url()
                if path.rstrip("/") in ("/healthz", "/livez", "/readyz"):
                    # the leader election check fails only for a leader overdue by lease duration + 20 s,
                    # which cannot last: a leader that cannot renew exits after RENEW_DEADLINE
                    overdue = elector.leader and time.monotonic() - elector.last_renew > LEASE_DURATION + 20
                    checks = [("leaderElection", "overdue" if overdue else None)]
                    code, text = health_body(checks, path.strip("/"), "verbose" in query)
                    self.send(code, text, "text/plain; charset=utf-8", [("X-Content-Type-Options", "nosniff")])
                else:
                    self.send(403, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                    "message": f'forbidden: User "system:anonymous" cannot get path "{path}"',
                                    "reason": "Forbidden", "details": {}, "code": 403})

        address = (flags.get("bind-address") or "127.0.0.1", int(flags.get("secure-port") or default_port))
        server = serve_tls(address, HealthHandler, lambda: ctx, log)
        log.info("secure_serving.go:213", f"Serving securely on {address[0]}:{address[1]}")

        def status():
            write_status(component, {
                "component": component, "pid": os.getpid(), "started": go_time(started),
                "server": client.server, "client_cert": client.cert_status(), "leader": elector.leader,
                "identity": elector.identity, "last_apiserver_result": elector.last_result,
                "serving_cert": cert_info(leaf), "address": f"{address[0]}:{address[1]}"})

        status()
        elect = flags.get("leader-elect", "true") != "false"
        if elect:
            log.info("leaderelection.go:250", f"attempting to acquire leader lease {elector.lock_name}...")
        while not stop.is_set():
            if not elect:
                elector.probe()
            elif not elector.step():
                status()
                log.line("E", lost[0], go_quote(lost[1]))      # klog.ErrorS(nil, msg)
                server.server_close()
                sys.exit(1)
            status()
            stop.wait(RETRY_PERIOD)
        server.shutdown()
        server.server_close()

    run_main(main)
