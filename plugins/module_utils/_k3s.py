# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Reset of the k3s/RKE2 supervisor certificate (dynamiclistener) and forced renewal of server/tls leaves.

A restart renews the files of server/tls but not what the supervisor port serves: that comes from
the secret ``kube-system/<p>-serving`` and its cache ``server/tls/dynamic-cert.json``, which must
both go before a restart makes a new one (seed 003, research/rancher.md 1.7). kubectl cannot delete
the secret once the served cert has expired, so the secret is deleted on the loopback apiserver,
whose own serving cert is a file k3s renews at start, with the admin client cert: no clock games.
"""

from __future__ import annotations

import json
import os
import re
import ssl

from ansible_collections.kubepki.fleet.plugins.module_utils import _apiclient, _files, _layouts, _owed, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import _secret_json_chain, read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._probe import ProbeError, served_certificate
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

# Supervisor port, loopback apiserver, systemd units (research/rancher.md 0, 1.1, 3).
PROGRAMS = {
    "k3s": {"supervisor_port": 6443, "api_url": "https://127.0.0.1:6444", "unit": "k3s", "agent_unit": "k3s-agent"},
    "rke2": {"supervisor_port": 9345, "api_url": "https://127.0.0.1:6443", "unit": "rke2-server", "agent_unit": "rke2-agent"},
}
FINGERPRINT_ANNOTATION = "listener.cattle.io/fingerprint"
# a user-provided cert: dynamiclistener never renews it (factory/gen.go IsStatic), but its Regenerate ignores the mark
STATIC_ANNOTATION = "listener.cattle.io/static"
REGENERATE_TRIGGER = "dynamic-cert-regenerate"
# dynamiclistener listener.go WrapExpiration: the served cert is checked at start and every 6 h
RENEW_CHECK_HOURS = 6
# CertificateRenewDays: 90 until the May 2025 releases, 120 from (minor, first patch) on (rancher.md 1.3).
RENEW_DAYS_OLD, RENEW_DAYS_NEW = 90, 120
_RENEW_120_FROM = ({30: 13, 31: 9, 32: 5, 33: 1}, 34)   # as _RENEWS_FROM: a minor's first patch, the first minor
_VERSION_RE = re.compile(r"\bv1\.(\d+)\.(\d+)")
# `<p> certificate rotate -s <service>` per leaf, by path under the data dir (k3s pkg/util/services).
_ROTATE_SERVICES = (
    ("server/tls/client-admin", "admin"),
    ("server/tls/client-kube-apiserver", "api-server"),
    ("server/tls/serving-kube-apiserver", "api-server"),
    ("server/tls/client-controller", "controller-manager"),
    ("server/tls/kube-controller-manager/", "controller-manager"),
    ("server/tls/client-scheduler", "scheduler"),
    ("server/tls/kube-scheduler/", "scheduler"),
    ("server/tls/client-supervisor", "supervisor"),
    ("server/tls/client-{p}-cloud-controller", "cloud-controller"),
    ("server/tls/client-{p}-controller", "{p}-controller"),
    ("server/tls/etcd/", "etcd"),
    ("server/tls/client-auth-proxy", "auth-proxy"),
)


class ResetError(Exception):
    """Something that stops the reset; the message says what to do. ``changed``: the node was already changed."""

    def __init__(self, message, changed=False):
        super(ResetError, self).__init__(message)
        self.changed = changed


def utc_stamp(moment):
    return moment.astimezone(_x509.UTC).strftime("%Y%m%dT%H%M%SZ")


class Server:
    """The paths of a k3s or RKE2 server, as node paths."""

    def __init__(self, fs, program):
        self.fs = fs
        self.program = program
        self.data_dir = "/var/lib/rancher/" + program
        self.tls = self.data_dir + "/server/tls"
        self.dynamic_cert = self.tls + "/dynamic-cert.json"
        self.server_ca = self.tls + "/server-ca.crt"
        self.admin_cert = self.tls + "/client-admin.crt"
        self.admin_key = self.tls + "/client-admin.key"
        self.secret_name = program + "-serving"
        self.unit = PROGRAMS[program]["unit"]


def find_server(fs, program="auto"):
    """The ``Server`` under ``fs``; ResetError when this is not a k3s/RKE2 server."""
    detected, role = _layouts.detect(fs)
    if program == "auto":
        program = detected if detected in PROGRAMS else "k3s"
    if not fs.exists("/var/lib/rancher/%s/server/tls" % program):
        if detected in PROGRAMS and role == "agent":
            raise ResetError("this is a %s agent, not a server: agents renew their certificates at every start; restart "
                             "%s instead (role kubepki.fleet.reset_k3s_serving, tasks_from: agent)"
                             % (detected, PROGRAMS[detected]["agent_unit"]))
        raise ResetError("/var/lib/rancher/%s/server/tls not found under rootfs %s: this is not a %s server (detected: %s %s)"
                         % (program, fs.rootfs, program, detected, role))
    return Server(fs, program)


def describe_cert(cert, now, threshold_days):
    """What the plan and the result say about one served or stored certificate (no key material)."""
    days_left, state, message = _x509.validity(cert, now, threshold_days)
    info = _x509.describe(cert)
    return {"subject": info["subject"], "subject_cn": info["subject_cn"], "not_after": info["not_after"],
            "days_left": days_left, "serial": info["serial"], "fingerprint_sha1": _x509.fingerprint_hex(cert),
            "fingerprint_sha256": info["fingerprint_sha256"], "state": state, "message": message}


def _secret_leaf(data, what):
    """``(leaf cert, annotations)`` of a serialized v1.Secret; the key is dropped at once."""
    chain, _key = _secret_json_chain(data, what)
    leaf = _x509.load_certificates(chain, what + " tls.crt")[0]
    return leaf, (json.loads(data.decode("utf-8")).get("metadata") or {}).get("annotations") or {}


def read_served(host, port, now, threshold_days, timeout):
    endpoint = "%s:%s" % ("[%s]" % host if ":" in host else host, port)
    try:
        cert = _x509.load_certificates(served_certificate(host, port, timeout=timeout), endpoint)[0]
    except (ProbeError, CertError) as exc:
        return None, {"endpoint": endpoint, "state": getattr(exc, "state", "invalid"), "message": str(exc)}
    info = describe_cert(cert, now, threshold_days)
    info["endpoint"] = endpoint
    return cert, info


def read_dynamic_cert(server, now, threshold_days):
    """``(leaf or None, info)``; a missing or corrupt cache is a finding, not an error."""
    info = {"path": server.dynamic_cert, "moved_to": None}
    if not server.fs.exists(server.dynamic_cert):
        info.update(state="missing", message="%s is absent (k3s rewrites it from the secret)" % server.dynamic_cert)
        return None, info
    try:
        cert, annotations = _secret_leaf(read_node_file(server.fs, server.dynamic_cert), server.dynamic_cert)
    except (CertError, ValueError) as exc:
        info.update(state="invalid", message="%s (dynamiclistener storage/file fails every TLS handshake on a corrupt "
                                             "cache, and on an empty one before v0.9.1)" % exc)
        return None, info
    info.update(describe_cert(cert, now, threshold_days))
    info["annotation_fingerprint"] = annotations.get(FINGERPRINT_ANNOTATION)
    return cert, info


class Api:
    """The loopback kube-apiserver, reached with the admin client cert as files: the key never leaves its file."""

    def __init__(self, server, url=None, timeout=10.0):
        self.server = server
        self.url = url or PROGRAMS[server.program]["api_url"]
        self.timeout = timeout
        self.secret_path = "/api/v1/namespaces/kube-system/secrets/" + server.secret_name

    def _unreachable(self, why):
        unit = self.server.unit
        return ResetError("cannot reach the %s apiserver at %s (%s): is %s running? Check with 'systemctl status %s' and "
                          "'journalctl -u %s'; start it with 'systemctl start %s' and run again. Nothing was changed."
                          % (self.server.program, self.url, why, unit, unit, unit, unit))

    def _context(self):
        fs = self.server.fs
        for path in (self.server.admin_cert, self.server.admin_key, self.server.server_ca):
            if not fs.exists(path):
                raise ResetError("%s is absent, so the apiserver cannot be reached as admin; restart %s to have it "
                                 "regenerated, then run again. Nothing was changed." % (path, self.server.unit))
        try:
            context = _apiclient.client_context(fs.real(self.server.admin_cert), fs.real(self.server.admin_key))
        except (ssl.SSLError, OSError) as exc:
            raise ResetError("cannot use %s with %s (%s); restore the pair from a backup or restart %s to regenerate it. "
                             "Nothing was changed." % (self.server.admin_cert, self.server.admin_key, exc, self.server.unit))
        ca = _x509.load_certificates(read_node_file(fs, self.server.server_ca), self.server.server_ca)[0]
        return context, ca

    def request(self, method):
        """``(status, body)`` of ``method`` on the secret; ResetError when the API cannot be used."""
        context, ca = self._context()
        try:
            return _apiclient.request(self.url, self.secret_path, context, ca, method, self.timeout)
        except _apiclient.Unreachable as exc:
            raise self._unreachable(exc)
        except _apiclient.NotOurServer as exc:
            raise ResetError("%s serves %s, which %s did not sign: that is not this %s's apiserver; refusing to send it "
                             "the admin credentials. Set api_url. Nothing was changed."
                             % (self.url, exc, self.server.server_ca, self.server.program))

    def _refused(self, method, status, body):
        try:
            detail = json.loads(body.decode("utf-8")).get("message")
        except (ValueError, UnicodeDecodeError, AttributeError):
            detail = None
        hint = ""
        if status in (401, 403):
            hint = ("; %s is rejected (expired, or signed by another client CA): restart %s so it renews server/tls, "
                    "then run again" % (self.server.admin_cert, self.server.unit))
        return ResetError("%s %s%s answered HTTP %s%s%s. Nothing was changed."
                          % (method, self.url, self.secret_path, status, ": " + detail if detail else "", hint))

    def read_secret(self, now, threshold_days):
        """``(leaf or None, info)``; ``state`` is ``present``, ``absent`` (404) or ``unknown`` with the reason."""
        info = {"name": self.server.secret_name, "namespace": "kube-system", "api_url": self.url, "deleted": False}
        try:
            status, body = self.request("GET")
            if status == 404:
                info.update(state="absent", message="secret kube-system/%s does not exist" % self.server.secret_name)
                return None, info
            if status != 200:
                raise self._refused("GET", status, body)
            cert, annotations = _secret_leaf(body, "secret kube-system/" + self.server.secret_name)
        except (ResetError, CertError, ValueError) as exc:
            info.update(state="unknown", message=str(exc))
            return None, info
        info.update(describe_cert(cert, now, threshold_days))
        info.update(state="present", annotation_fingerprint=annotations.get(FINGERPRINT_ANNOTATION),
                    static=annotations.get(STATIC_ANNOTATION) == "true")
        return cert, info

    def delete_secret(self):
        """True when deleted, False when it was already gone (404): both leave no secret behind."""
        status, body = self.request("DELETE")
        if status == 404:
            return False
        if status not in (200, 202):
            raise self._refused("DELETE", status, body)
        return True


def stale_reasons(served_info, cached, cached_info, secret, secret_info):
    """Why the supervisor cert must be reset; empty when it is fine."""
    reasons = []
    if served_info["state"] == "expired":
        reasons.append("the served certificate expired on %s" % served_info["not_after"])
    elif served_info["state"] == "warning":
        reasons.append("the served certificate expires in %.1f days (%s)" % (served_info["days_left"], served_info["not_after"]))
    if cached_info["state"] == "invalid":
        reasons.append("dynamic-cert.json is corrupt")
    elif cached is not None and _x509.fingerprint_hex(cached) != served_info["fingerprint_sha1"]:
        reasons.append("dynamic-cert.json holds another certificate (SHA1=%s) than the one served"
                       % cached_info["fingerprint_sha1"])
    if secret is not None and secret_info["fingerprint_sha1"] != served_info.get("fingerprint_sha1") \
            and secret_info["state"] in ("expired", "warning"):
        reasons.append("the secret holds another certificate, which expires %s: k3s may load it at the next start"
                       % secret_info["not_after"])
    return reasons


def issued_lifetime_days(server, cert):
    """Days dynamiclistener gives a supervisor cert: NotAfter - NotBefore, except where NotBefore is pinned to the CA's
    (before dynamiclistener v0.7.3), which inflates it: there its default of 365 days (factory/cert_utils.go, unless
    CATTLE_NEW_SIGNED_CERT_EXPIRATION_DAYS is set)."""
    ca = _x509.load_certificates(read_node_file(server.fs, server.server_ca), server.server_ca)[0] \
        if server.fs.exists(server.server_ca) else None
    if ca is not None and _x509.not_before(cert) == _x509.not_before(ca):
        return 365.0
    return round((_x509.not_after(cert) - _x509.not_before(cert)).total_seconds() / 86400.0, 2)


def supervisor_plan(release, served_info, cached_info, stale, secret_info, window_days, threshold_days, force):
    """``(how, reasons, why not)`` for the supervisor cert on this release line: ``reset`` (seed 003: delete the
    secret and the cache) before the fix, ``regenerate`` (the trigger file, read at start) after it, ``cache`` (a
    corrupt dynamic-cert.json moved aside), or None."""
    if cached_info["state"] == "invalid" and (release["line"] != "legacy" or "days_left" not in served_info):
        # dynamiclistener storage/file Get fails on it until v0.9.1 (0 bytes) or always (corrupt JSON): every
        # handshake, and a regeneration at start (listener.go regenerateCerts), fail; k3s reloads the secret without it
        return "cache", ["%s: moved aside, k3s loads the secret from its datastore at start" % cached_info["message"]], None
    if secret_info.get("static"):
        return None, [], ("a user-provided certificate (%s=true): dynamiclistener never renews it, and a regeneration "
                          "would replace it; replace it where it comes from" % STATIC_ANNOTATION)
    if release["line"] == "legacy":
        return ("reset" if stale else None), stale, None
    if force:
        return "regenerate", ["force=true"], None
    days_left = served_info["days_left"]
    if days_left >= threshold_days:
        return None, [], None
    if days_left > window_days:
        return "regenerate", ["%.1f days left, under threshold_days=%s; %s keeps it until %d days before it expires"
                              % (days_left, threshold_days, release["name"], window_days)], None
    hours_inside = (window_days - days_left) * 24
    if hours_inside <= RENEW_CHECK_HOURS + 1:
        return None, [], ("%.1f days left, inside the %d-day window of %s for %.1f h: it renews the certificate by itself "
                          "at its next check (every %d h, dynamiclistener listener.go WrapExpiration), without a restart"
                          % (days_left, window_days, release["name"], hours_inside, RENEW_CHECK_HOURS))
    return "regenerate", ["%.1f days left, %.1f days inside the %d-day window, yet not renewed: its renewal fails (see "
                          "journalctl); a regeneration at start makes a new certificate and key"
                          % (days_left, hours_inside / 24, window_days)], None


def write_trigger(server):
    """The file k3s reads once at start to regenerate the supervisor cert (k3s pkg/cluster/https.go RegenerateCerts,
    which `certificate rotate` writes too: pkg/cli/cert/cert.go); returns its path."""
    path = "%s/%s" % (server.tls, REGENERATE_TRIGGER)
    _files.write_file(server.fs.real(path), b"", 0o600)
    return path


def in_sync(served_info, cached_info, secret_info):
    """Served, cached and stored are one certificate, and the secret's fingerprint annotation says so."""
    fingerprint = served_info.get("fingerprint_sha1")
    return bool(fingerprint) and cached_info.get("fingerprint_sha1") == fingerprint \
        and secret_info.get("fingerprint_sha1") == fingerprint \
        and secret_info.get("annotation_fingerprint") == "SHA1=" + fingerprint


def renew_window(version_output):
    """``(days, source)``: k3s's own start-up renewal window for the version ``<p> --version`` printed."""
    match = _VERSION_RE.search(version_output or "")
    if not match:
        return RENEW_DAYS_OLD, "assumed: version unknown, %d days as before the May 2025 releases" % RENEW_DAYS_OLD
    version = (int(match.group(1)), int(match.group(2)))
    return (RENEW_DAYS_NEW if _has(version, _RENEW_120_FROM) else RENEW_DAYS_OLD), "v1.%d.%d" % version


# What each release line's dynamiclistener does with the supervisor cert (research/corrections.md §1): a minor's
# first patch that has it, and the first minor that has it from its start.
# - "renews": Merge() refuses a secret within ExpirationDaysCheck days of expiry, so the cert renews while running and
#   at start (dynamiclistener v0.3.4, factory/gen.go fdf983a, k3s#5896: k3s v1.22.13, v1.23.10, v1.24.4; never
#   v1.21). RKE2 pinned v0.3.3 in its go.mod until rancher/rke2#4324 (v1.24.15, v1.25.11, v1.26.6, v1.27.3+rke2r1).
# - "recreates": a deleted secret is queued and created again from memory (v0.6.4 / v0.7.1,
#   storage/kubernetes/controller.go, dynamiclistener#202): k3s and RKE2 v1.31.14, v1.32.10, v1.33.6, v1.34.2; never v1.30.
# Before "renews" a restart can serve an expired secret again (seed 003): only there is deleting it the repair.
_RENEWS_FROM = {"k3s": ({22: 13, 23: 10, 24: 4}, 25), "rke2": ({24: 15, 25: 11, 26: 6, 27: 3}, 28)}
_RECREATES_FROM = ({31: 14, 32: 10, 33: 6, 34: 2}, 35)


def _has(version, table):
    patches, every_from = table
    minor, patch = version
    return minor >= every_from or patch >= patches.get(minor, 10 ** 6)


def release_line(program, version_output):
    """``{line, version, source}``: ``legacy``, ``renews`` or ``recreates`` (see _RENEWS_FROM) for what
    ``<program> --version`` printed. An unreadable version is taken as current, which never deletes the secret."""
    match = _VERSION_RE.search(version_output or "")
    if not match:
        return {"line": "recreates", "version": None, "name": program,
                "source": "assumed current: the version is unknown (%r); the secret is not deleted, since current "
                          "releases create it again" % (version_output or "").strip()[:80]}
    version = (int(match.group(1)), int(match.group(2)))
    text = "v1.%d.%d" % version
    if _has(version, _RECREATES_FROM):
        line, why = "recreates", "renews its supervisor certificate while running and creates a deleted secret again"
    elif _has(version, _RENEWS_FROM[program]):
        line, why = "renews", "renews its supervisor certificate while running and at start"
    else:
        line, why = "legacy", "may serve an expired secret again after a restart (seed 003)"
    return {"line": line, "version": text, "name": "%s %s" % (program, text), "source": "%s %s %s" % (program, text, why)}


def rotate_service(program, rel):
    """The ``certificate rotate`` service of a leaf path relative to the data dir, or None."""
    for prefix, service in _ROTATE_SERVICES:
        if rel.startswith(prefix.replace("{p}", program)):
            return service.replace("{p}", program)
    return None


def plan_leaves(server, now, threshold_days, window_days):
    """``(due, skipped)``: server/tls and agent leaves under the threshold, with how each gets renewed."""
    layout = _layouts.rancher_layout(server.fs, server.program, "server", "127.0.0.1")
    due, skipped = [], []
    for spec in layout.files:
        if spec.kind != "pem":
            continue
        try:
            cert = _x509.load_certificates(read_node_file(server.fs, spec.path), spec.path)[0]
        except CertError as exc:
            reason = "unreadable (%s); k3s regenerates a missing file at start: move it aside and restart" % exc
            skipped.append({"name": spec.id, "path": spec.path, "reason": reason})
            continue
        days_left = round((_x509.not_after(cert) - now).total_seconds() / 86400.0, 2)
        if _x509.is_ca(cert):
            if days_left < threshold_days and not spec.path.startswith(server.data_dir + "/agent/"):
                reason = "CA with %.1f days left: k3s never renews CAs; see '%s certificate rotate-ca'" % (days_left, server.program)
                skipped.append({"name": spec.id, "path": spec.path, "reason": reason})
            continue
        if days_left >= threshold_days:
            skipped.append({"name": spec.id, "path": spec.path,
                            "reason": "%.1f days left, not under threshold_days=%s" % (days_left, threshold_days)})
            continue
        rel = spec.path[len(server.data_dir) + 1:]
        if rel.startswith("agent/"):
            how = "restart"       # the embedded agent's certs are re-issued at every start
        elif days_left <= window_days:
            how = "restart"       # inside k3s's own start-up window
        else:
            how = "rotate"        # k3s would keep it: force it
        due.append({"name": spec.id, "path": spec.path, "key_path": spec.key_path, "not_after": _x509.iso(_x509.not_after(cert)),
                    "days_left": days_left, "serial": _x509.serial_hex(cert), "how": how,
                    "service": rotate_service(server.program, rel), "new_not_after": None})
    return due, skipped


def move_aside(fs, path, suffix):
    """Rename ``path`` to ``path + suffix`` (a fresh name); returns the new node path."""
    target, count = path + suffix, 1
    while fs.exists(target):
        count += 1
        target = "%s%s.%d" % (path, suffix, count)
    os.rename(fs.real(path), fs.real(target))
    return target


def rotate_natively(server, leaves, stamp):
    """What ``certificate rotate`` does without the binary: leaves moved (not deleted) to server/tls-kubepki-<ts>/.

    k3s re-issues a missing leaf at start (rancher.md 1.3, rule 1).
    """
    backup = "%s/server/tls-kubepki-%s" % (server.data_dir, stamp)
    moved = []
    for leaf in leaves:
        for path in (leaf["path"], leaf["key_path"]):
            if not path or not server.fs.exists(path):
                continue
            target = backup + path[len(server.tls):]
            os.makedirs(os.path.dirname(server.fs.real(target)), mode=0o700, exist_ok=True)
            os.rename(server.fs.real(path), server.fs.real(target))
            moved.append({"from": path, "to": target})
    return moved


def rotate_with_binary(binary, leaves, run_command):
    """``<p> certificate rotate -s ...``: it backs up server/tls to server/tls-<unix> itself. Returns None if it fails."""
    services = sorted({leaf["service"] for leaf in leaves})
    argv = [binary, "certificate", "rotate"]
    for service in services:
        argv += ["-s", service]
    rc, out, err = run_command(argv)
    return None if rc != 0 else {"argv": argv, "output": (out + err).strip()[-500:]}


def leaves_via_rotate(due):
    return [leaf for leaf in due if leaf["how"] == "rotate"]


def choose_leaf_method(method, server, leaves, binary):
    """``rotate`` (the k3s binary) or ``native``; a leaf no rotate service covers goes native."""
    if not leaves:
        return None
    if method == "rotate" and not binary:
        raise ResetError("method=rotate needs the %s binary on the node and rootfs=/; use method=native or auto. "
                         "Nothing was changed." % server.program)
    if method == "native" or not binary or any(leaf["service"] is None for leaf in leaves):
        return "native"
    return "rotate"


def _supervisor_entry(server, served_info, how, reasons):
    entry = {"name": server.secret_name, "path": server.dynamic_cert, "endpoint": served_info["endpoint"], "how": how,
             "reasons": reasons, "new_not_after": None}
    entry.update({k: served_info.get(k) for k in ("not_after", "days_left", "serial", "fingerprint_sha1")})
    return entry


def _reset_supervisor(server, api, cached_info, secret_info, stamp):
    """Delete the secret, then move dynamic-cert.json aside; returns notes. ResetError says what is left to do."""
    if secret_info["state"] == "unknown":
        raise ResetError(secret_info["message"])
    deleted = api.delete_secret()
    secret_info["deleted"] = deleted
    notes = ["secret kube-system/%s %s" % (server.secret_name, "deleted" if deleted else "was already gone")]
    done = "the secret kube-system/%s is gone" % server.secret_name
    return notes + _move_cache(server, cached_info, stamp, done, "restart %s now to have the secret recreated from it "
                               "unchanged" % server.unit, deleted)


def _move_cache(server, cached_info, stamp, done="nothing was changed", otherwise="", changed=False):
    """Move dynamic-cert.json aside, if there is one; returns notes."""
    if not server.fs.exists(server.dynamic_cert):
        return []
    try:
        cached_info["moved_to"] = move_aside(server.fs, server.dynamic_cert, ".kubepki-" + stamp)
    except OSError as exc:
        raise ResetError("%s but %s could not be moved aside (%s): move it yourself (mv %s %s.kubepki-%s) and restart %s%s"
                         % (done, server.dynamic_cert, exc.strerror or exc, server.dynamic_cert, server.dynamic_cert, stamp,
                            server.unit, ", or " + otherwise if otherwise else ""), changed=changed)
    return ["%s moved to %s" % (server.dynamic_cert, cached_info["moved_to"])]


def _force_leaves(server, leaves, method, binary, run_command, stamp):
    """``(method used, moved, notes)`` for the leaves k3s would not renew by itself."""
    used = choose_leaf_method(method, server, leaves, binary)
    if used == "rotate":
        rotated = rotate_with_binary(binary, leaves, run_command)
        if rotated is not None:
            return used, [], ["%s: %s" % (" ".join(rotated["argv"]), rotated["output"])]
        if method == "rotate":
            raise ResetError("'%s certificate rotate' failed on this node; use method=native (moves the leaves aside so "
                             "k3s re-issues them at start)" % server.program)
        used = "native"
    moved = rotate_natively(server, leaves, stamp)
    return used, moved, ["%d file(s) moved to %s/server/tls-kubepki-%s; %s re-issues them at start"
                         % (len(moved), server.data_dir, stamp, server.program)]


def reset(server, now, clock, check_mode, threshold_days=30, force=False, probe_host="127.0.0.1", supervisor_port=None,
          api_url=None, timeout=10.0, method="auto", window_days=None, version_output=None, binary=None, run_command=None,
          managed_by=()):
    """Plan, and unless ``check_mode`` apply, the reset; returns the module result. ResetError on a stop.

    ``managed_by``: the cluster managers the node shows (_managers.find); with any, nothing is renewed and
    each due cert is listed as left to them.

    ``binary``: path of the program when it may act on this node; ``run_command(argv) -> (rc, out, err)``.
    """
    port = supervisor_port or PROGRAMS[server.program]["supervisor_port"]
    served, served_info = read_served(probe_host, port, now, threshold_days, timeout)
    cached, cached_info = read_dynamic_cert(server, now, threshold_days)
    # a corrupt cache fails every handshake (dynamiclistener storage/file Get before v0.9.1): it is the finding then
    if served is None and cached_info["state"] != "invalid":
        raise ResetError("no %s supervisor certificate to check: %s. Is %s running? Check 'systemctl status %s', start it "
                         "and run again. Nothing was changed." % (server.program, served_info["message"], server.unit, server.unit))
    if api_url is None and server.program == "k3s" and supervisor_port:
        api_url = "https://127.0.0.1:%d" % (supervisor_port + 1)   # k3s: apiserver port = https-listen-port + 1
    api = Api(server, api_url, timeout)
    secret, secret_info = api.read_secret(now, threshold_days)
    if window_days is None:
        window_days, window_source = renew_window(version_output)
    else:
        window_source = "renew_window_days"
    release = release_line(server.program, version_output)
    lifetime = issued_lifetime_days(server, served) if served is not None else None
    if lifetime is not None and threshold_days >= lifetime:
        raise ResetError("threshold_days=%s is not below the %.0f-day lifetime of the supervisor certificate %s issues: "
                         "every run would regenerate it; use a smaller threshold_days. Nothing was changed."
                         % (threshold_days, lifetime, server.program))
    stale = (["force=true"] if force else []) + stale_reasons(served_info, cached, cached_info, secret, secret_info)
    how, reasons, why_not = supervisor_plan(release, served_info, cached_info, stale, secret_info, window_days,
                                            threshold_days, force)
    owed = _owed.owed_while_served(_owed.read(server.fs, (server.unit,)), served_info.get("fingerprint_sha256"))
    if owed and not how and not why_not:
        # a run stopped between its reset and the restart: the certificate it asked for is made only at start
        how, reasons = ("reset" if release["line"] == "legacy" else "regenerate"), [_owed.reason(owed[server.unit])]
    due, skipped = plan_leaves(server, now, threshold_days, window_days)

    renewed = ([_supervisor_entry(server, served_info, how, reasons)] if how else []) + due
    synced = in_sync(served_info, cached_info, secret_info)
    if not how:
        reason = why_not or "served for %.1f more days" % served_info["days_left"]
        if synced and not why_not:
            reason += ", the same certificate as dynamic-cert.json and the secret"
        skipped.insert(0, {"name": server.secret_name, "path": server.dynamic_cert, "reason": reason})
    forced = leaves_via_rotate(due)
    result = {"program": server.program, "release": release, "served": served_info, "dynamic_cert": cached_info, "secret": secret_info,
              "in_sync": synced, "renewed": renewed, "skipped_certs": skipped,
              "restart": [server.unit] if renewed else [], "restart_owed": sorted(owed), "renew_window_days": window_days,
              "renew_window_source": window_source, "leaf_method": None, "moved": [], "notes": [], "managed_by": []}
    if managed_by:
        owners = "; ".join("%s (%s)" % (m["manager"], m["detail"]) for m in managed_by)
        result["skipped_certs"] = [{"name": r["name"], "reason": "left alone: " + owners} for r in renewed] + skipped
        result.update(renewed=[], restart=[], managed_by=list(managed_by))
        return result
    if forced:
        result["leaf_method"] = choose_leaf_method(method, server, forced, binary)
    if check_mode or not renewed:
        return result

    stamp = utc_stamp(clock)
    owed_before = server.fs.exists(_owed.PATH)
    _owed.record(server.fs, [{"component": server.unit, "certs": [entry["name"] for entry in renewed],
                              "served": served_info.get("fingerprint_sha256")}], _x509.iso(clock), (server.unit,))
    try:
        if how in ("reset", "cache"):
            result["notes"] += _reset_supervisor(server, api, cached_info, secret_info, stamp) if how == "reset" \
                else _move_cache(server, cached_info, stamp)
            if cached_info["moved_to"]:
                result["moved"].append({"from": server.dynamic_cert, "to": cached_info["moved_to"]})
        elif how == "regenerate":
            result["notes"].append("wrote %s: %s makes a new supervisor certificate and key at its next start and stores it "
                                   "in the secret, which is not deleted (%s)" % (write_trigger(server), server.unit, release["source"]))
        if forced:
            try:
                result["leaf_method"], moved, notes = _force_leaves(server, forced, method, binary, run_command, stamp)
            except (ResetError, OSError) as exc:
                raise ResetError("%s%s. The leaves under the threshold are not renewed; restart %s anyway to use what was done."
                                 % ("; ".join(result["notes"]) + "; then " if result["notes"] else "", exc, server.unit),
                                 changed=bool(result["notes"]))
            result["moved"] += moved
            result["notes"] += notes
    except ResetError as exc:
        if not exc.changed and not owed_before:
            _owed.clear(server.fs)      # nothing was written, so nothing is owed: "Nothing was changed" holds
        raise
    return result
