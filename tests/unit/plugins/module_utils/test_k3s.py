# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""k3s supervisor certificate reset over trees from tests/lab/pki.py, against local stand-ins for the
supervisor port (serves the secret's cert) and the loopback apiserver (holds the secret, demands the
admin client cert)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ansible_collections.kubepki.fleet.plugins.module_utils import _k3s, _nodelock
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.tests.lab import pki
from ansible_collections.kubepki.fleet.tests.unit.tlsserver import TLSServer
from ansible_collections.kubepki.fleet.tests.unit.conftest import DAY, NOW

TLS = "var/lib/rancher/k3s/server/tls"
SECRET_PATH = "/api/v1/namespaces/kube-system/secrets/k3s-serving"
LOCK = _nodelock.LOCK_PATH.lstrip("/")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def digest(root):
    """sha256 of every file under ``root`` but the node lock, which a real run leaves behind (empty)."""
    return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _dirs, files in os.walk(root) for f in files if os.path.join(d, f) != os.path.join(root, LOCK)}


def secret_files(tmp_path, secret, name):
    """tls.crt/tls.key of a secret as files a TLS server can load."""
    crt, key = tmp_path / (name + ".crt"), tmp_path / (name + ".key")
    crt.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    key.write_bytes(base64.b64decode(secret["data"]["tls.key"]))
    return str(crt), str(key)


class Api:
    """The loopback kube-apiserver: serves ``cert``, demands a client cert of ``client_ca``, GET/DELETE the secret."""

    def __init__(self, cert_file, key_file, client_ca, secret, secret_path=SECRET_PATH, status=None):
        self.secret, self.status, self.requests = secret, status, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                api.requests.append((self.command, self.path, self.connection.getpeercert()["subject"]))
                if api.status:
                    code, body = api.status, {"kind": "Status", "message": "Unauthorized"}
                elif self.path != secret_path:
                    code, body = 404, {"kind": "Status"}
                elif api.secret is None:
                    code, body = 404, {"kind": "Status", "reason": "NotFound", "message": 'secrets "k3s-serving" not found'}
                elif self.command == "DELETE":
                    api.secret, code, body = None, 200, {"kind": "Status", "status": "Success"}
                else:
                    code, body = 200, dict(api.secret, kind="Secret", apiVersion="v1")
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = "https://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# the last v1.23 before dynamiclistener v0.3.4: the seed-003 state arises there (research/corrections.md §1)
LEGACY = "k3s version v1.23.9+k3s1 (f5b3a3ef)\ngo version go1.17.5"
CURRENT = "k3s version v1.33.6+k3s1 (0d08c226)\ngo version go1.24.9"


class K3sNode:
    """A k3s server tree in the seed-003 state, with its supervisor port and loopback apiserver running."""

    def __init__(self, tmp_path, serving_issued_at=NOW - 400 * DAY, leaf_issued_at=NOW - 30 * DAY, program="k3s"):
        self.tmp = tmp_path
        self.root = tmp_path / "server"
        self.cluster = pki.k3s_cluster(program, NOW, ca_issued_at=NOW - 500 * DAY)
        tree = pki.build_k3s_server(self.root, self.cluster, "server", "127.0.0.1", now=NOW, leaf_issued_at=leaf_issued_at,
                                    serving_issued_at=serving_issued_at)
        self.tls = self.root / TLS.replace("k3s", program)
        self.supervisor = TLSServer(*secret_files(tmp_path, tree.secret, "served"))
        self.api = Api(str(self.tls / "serving-kube-apiserver.crt"), str(self.tls / "serving-kube-apiserver.key"),
                       str(self.tls / "client-ca.crt"), tree.secret, "/api/v1/namespaces/kube-system/secrets/%s-serving" % program)

    def restart(self):
        """What k3s does at the next start with neither secret nor cache: a new cert, stored and cached."""
        secret = pki.serving_secret(self.cluster, "server", "127.0.0.1", issued_at=NOW)
        pki.write_dynamic_cert(self.root, self.cluster, secret)
        self.api.secret = secret
        self.supervisor.load(*secret_files(self.tmp, secret, "served-new"))
        return secret

    def options(self, **extra):
        options = dict(threshold_days=30, supervisor_port=self.supervisor.port, api_url=self.api.url, timeout=3.0,
                       version_output=LEGACY)
        options.update(extra)
        return options

    def reset(self, check_mode=False, now=NOW, **extra):
        server = _k3s.find_server(NodeFS(str(self.root)))
        return _k3s.reset(server, now, now, check_mode, **self.options(**extra))

    def close(self):
        self.supervisor.close()
        self.api.close()


@pytest.fixture
def node(tmp_path):
    k3s = K3sNode(tmp_path)
    yield k3s
    k3s.close()


def test_the_seed_003_state_is_planned_and_check_mode_changes_nothing(node):
    before = digest(node.root)
    result = node.reset(check_mode=True)
    assert digest(node.root) == before and node.api.secret is not None
    assert [(r["name"], r["how"]) for r in result["renewed"]] == [("k3s-serving", "reset")]
    assert result["renewed"][0]["reasons"][0].startswith("the served certificate expired on ")
    assert (result["served"]["subject_cn"], result["served"]["state"]) == ("k3s", "expired")
    assert (result["secret"]["state"], result["dynamic_cert"]["state"]) == ("present", "expired")
    assert result["in_sync"] is True   # one stale cert everywhere: that is the trap
    assert result["restart"] == ["k3s"] and result["moved"] == []
    assert [m for m in node.api.requests if m[0] != "GET"] == []


def test_reset_deletes_the_secret_on_the_loopback_api_and_keeps_the_cache(node):
    cache = node.tls / "dynamic-cert.json"
    old = cache.read_bytes()
    result = node.reset()
    assert node.api.secret is None and result["secret"]["deleted"] is True
    # The admin client cert was presented: the stand-in demands one signed by client-ca.
    assert {r[0] for r in node.api.requests} == {"GET", "DELETE"}
    assert all(dict(x[0] for x in r[2])["commonName"] == "system:admin" for r in node.api.requests)
    moved = node.root / result["dynamic_cert"]["moved_to"].lstrip("/")
    assert not cache.exists() and moved.read_bytes() == old
    assert moved.name == "dynamic-cert.json.kubepki-20261123T120000Z"
    assert result["moved"] == [{"from": "/" + TLS + "/dynamic-cert.json", "to": result["dynamic_cert"]["moved_to"]}]
    assert result["restart"] == ["k3s"]
    assert "tls.key" not in json.dumps(result) and "PRIVATE KEY" not in json.dumps(result)

    node.restart()
    again = node.reset()
    assert (again["renewed"], again["restart"], again["in_sync"]) == ([], [], True)
    assert again["served"]["days_left"] > 360 and again["secret"]["annotation_fingerprint"] == "SHA1=" + again["served"]["fingerprint_sha1"]
    assert "the same certificate as dynamic-cert.json and the secret" in again["skipped_certs"][0]["reason"]


def test_a_secret_already_gone_is_fine(node):
    node.api.secret = None
    result = node.reset()
    assert result["secret"]["state"] == "absent" and result["secret"]["deleted"] is False
    assert "secret kube-system/k3s-serving was already gone" in result["notes"]
    assert not (node.tls / "dynamic-cert.json").exists()


def test_api_unreachable_stops_before_anything_changes(node):
    before = digest(node.root)
    url = "https://127.0.0.1:%d" % free_port()
    plan = node.reset(check_mode=True, api_url=url)
    assert plan["secret"]["state"] == "unknown" and "connection refused" in plan["secret"]["message"].lower()
    assert plan["renewed"][0]["name"] == "k3s-serving"
    with pytest.raises(_k3s.ResetError) as caught:
        node.reset(api_url=url)
    message = str(caught.value)
    assert "cannot reach the k3s apiserver at %s" % url in message
    assert "systemctl status k3s" in message and "Nothing was changed." in message
    assert digest(node.root) == before


def test_nothing_served_means_k3s_is_not_running(node):
    node.supervisor.close()
    with pytest.raises(_k3s.ResetError) as caught:
        node.reset(check_mode=True)
    assert "connection refused" in str(caught.value) and "systemctl status k3s" in str(caught.value)


def test_a_rejected_admin_cert_says_to_restart_first(node):
    node.api.status = 401
    with pytest.raises(_k3s.ResetError) as caught:
        node.reset()
    assert "HTTP 401: Unauthorized" in str(caught.value) and "restart k3s so it renews server/tls" in str(caught.value)
    assert (node.tls / "dynamic-cert.json").exists()


def test_an_apiserver_of_another_cluster_gets_no_request(node, tmp_path):
    other = pki.k3s_cluster("k3s", NOW)
    pki.build_k3s_server(tmp_path / "other", other, "other", "127.0.0.1", now=NOW)
    other_tls = tmp_path / "other" / TLS
    impostor = Api(str(other_tls / "serving-kube-apiserver.crt"), str(other_tls / "serving-kube-apiserver.key"),
                   str(node.tls / "client-ca.crt"), None)
    try:
        plan = node.reset(check_mode=True, api_url=impostor.url)
    finally:
        impostor.close()
    assert "did not sign: that is not this k3s's apiserver" in plan["secret"]["message"]
    assert impostor.requests == []


def test_missing_cache_with_a_fresh_served_cert_needs_no_reset(tmp_path):
    k3s = K3sNode(tmp_path, serving_issued_at=NOW - 10 * DAY)
    try:
        os.remove(k3s.tls / "dynamic-cert.json")
        result = k3s.reset()
        assert result["renewed"] == [] and result["dynamic_cert"]["state"] == "missing"
        assert result["in_sync"] is False and "served for 355.0 more days" == result["skipped_certs"][0]["reason"]
    finally:
        k3s.close()


def test_missing_cache_with_a_stale_served_cert_resets_the_secret_only(node):
    os.remove(node.tls / "dynamic-cert.json")
    result = node.reset()
    assert node.api.secret is None and result["moved"] == [] and result["dynamic_cert"]["moved_to"] is None


def test_a_corrupt_cache_is_stale_and_moved_aside(tmp_path):
    k3s = K3sNode(tmp_path, serving_issued_at=NOW - 10 * DAY)
    try:
        (k3s.tls / "dynamic-cert.json").write_text('{"metadata": {"name": "k3s-serv')
        plan = k3s.reset(check_mode=True)
        assert plan["dynamic_cert"]["state"] == "invalid" and "fails every TLS handshake" in plan["dynamic_cert"]["message"]
        assert plan["renewed"][0]["reasons"] == ["dynamic-cert.json is corrupt"]
        result = k3s.reset()
        assert (k3s.root / result["dynamic_cert"]["moved_to"].lstrip("/")).read_text().startswith('{"metadata"')
    finally:
        k3s.close()


def test_a_cache_that_differs_from_what_is_served_is_stale(node):
    fresh = pki.serving_secret(node.cluster, "server", "127.0.0.1", issued_at=NOW)
    pki.write_dynamic_cert(node.root, node.cluster, fresh)
    reasons = node.reset(check_mode=True)["renewed"][0]["reasons"]
    assert reasons[1].startswith("dynamic-cert.json holds another certificate (SHA1=")


def test_force_resets_a_fresh_cert(tmp_path):
    k3s = K3sNode(tmp_path, serving_issued_at=NOW - 10 * DAY)
    try:
        assert k3s.reset(check_mode=True)["renewed"] == []
        assert k3s.reset(check_mode=True, force=True)["renewed"][0]["reasons"] == ["force=true"]
    finally:
        k3s.close()


def test_not_a_server(k3s_tree):
    with pytest.raises(_k3s.ResetError) as caught:
        _k3s.find_server(NodeFS(str(k3s_tree / "agent")))
    assert "this is a k3s agent, not a server" in str(caught.value) and "restart k3s-agent" in str(caught.value)
    with pytest.raises(_k3s.ResetError) as caught:
        _k3s.find_server(NodeFS("/nonexistent"))
    assert "this is not a k3s server (detected: none unknown)" in str(caught.value)


@pytest.mark.parametrize("output, days", [
    ("k3s version v1.33.1+k3s1 (99d91538)\ngo version go1.24.2", 120),
    ("k3s version v1.32.4+k3s1 (0d0e6b5f)", 90),
    ("k3s version v1.31.9+k3s1 (kubepki-lab)", 120),
    ("rke2 version v1.30.13+rke2r1 (x)", 120),
    ("k3s version v1.28.15+k3s1 (x)", 90),
    ("k3s version v1.34.0+k3s1 (x)", 120),
])
def test_renew_window_follows_the_may_2025_releases(output, days):
    assert _k3s.renew_window(output)[0] == days


def test_renew_window_of_an_unknown_version_is_the_old_one():
    assert _k3s.renew_window("usage: k3s server|agent")[0] == 90
    assert "assumed" in _k3s.renew_window(None)[1]


def test_rotate_services():
    assert _k3s.rotate_service("k3s", "server/tls/client-admin.crt") == "admin"
    assert _k3s.rotate_service("k3s", "server/tls/etcd/peer-server-client.crt") == "etcd"
    assert _k3s.rotate_service("k3s", "server/tls/client-k3s-cloud-controller.crt") == "cloud-controller"
    assert _k3s.rotate_service("rke2", "server/tls/client-rke2-controller.crt") == "rke2-controller"
    assert _k3s.rotate_service("k3s", "server/tls/kube-scheduler/kube-scheduler.crt") == "scheduler"
    assert _k3s.rotate_service("k3s", "server/tls/something-else.crt") is None


def leaves_node(tmp_path):
    """Served cert fresh, every leaf with 335 days left: a threshold of 340 is beyond k3s's 120-day window."""
    return K3sNode(tmp_path, serving_issued_at=NOW - 10 * DAY, leaf_issued_at=NOW - 30 * DAY)


def test_leaves_beyond_the_window_are_rotated_with_the_binary(tmp_path):
    k3s = leaves_node(tmp_path)
    calls = []
    try:
        result = k3s.reset(threshold_days=340, window_days=120, binary="/usr/local/bin/k3s",
                           run_command=lambda argv: calls.append(argv) or (0, "Successfully backed up certificates", ""))
    finally:
        k3s.close()
    how = {r["name"]: r["how"] for r in result["renewed"]}
    assert how["k3s/server/client-admin"] == "rotate" and how["k3s/agent/serving-kubelet"] == "restart"
    assert "k3s-serving" not in how and "k3s/server/server-ca" not in how
    assert result["leaf_method"] == "rotate" and result["restart"] == ["k3s"]
    assert calls == [["/usr/local/bin/k3s", "certificate", "rotate", "-s", "admin", "-s", "api-server", "-s", "auth-proxy",
                      "-s", "cloud-controller", "-s", "controller-manager", "-s", "etcd", "-s", "scheduler", "-s", "supervisor"]]


def test_leaves_beyond_the_window_are_moved_aside_without_the_binary(tmp_path):
    k3s = leaves_node(tmp_path)
    try:
        plan = k3s.reset(check_mode=True, threshold_days=340, window_days=120)
        assert plan["leaf_method"] == "native" and plan["moved"] == []
        admin = (k3s.tls / "client-admin.crt").read_bytes()
        result = k3s.reset(threshold_days=340, window_days=120)
    finally:
        k3s.close()
    backup = k3s.root / "var/lib/rancher/k3s/server/tls-kubepki-20261123T120000Z"
    assert (backup / "client-admin.crt").read_bytes() == admin and (backup / "etcd/server-client.key").exists()
    assert not (k3s.tls / "client-admin.crt").exists() and (k3s.tls / "server-ca.crt").exists()
    assert len(result["moved"]) == 2 * 13


def test_leaves_inside_the_window_only_need_a_restart(tmp_path):
    k3s = leaves_node(tmp_path)
    try:
        result = k3s.reset(threshold_days=340, window_days=340)
    finally:
        k3s.close()
    assert {r["how"] for r in result["renewed"]} == {"restart"} and result["moved"] == [] and result["leaf_method"] is None


def test_a_failing_rotate_falls_back_to_moving_aside(tmp_path):
    k3s = leaves_node(tmp_path)
    try:
        result = k3s.reset(threshold_days=340, window_days=120, binary="/usr/bin/k3s",
                           run_command=lambda argv: (1, "", "No help topic for 'certificate'"))
    finally:
        k3s.close()
    assert result["leaf_method"] == "native" and result["moved"]


def test_rke2_uses_its_own_names(tmp_path):
    rke2 = K3sNode(tmp_path, program="rke2")
    try:
        result = rke2.reset()
    finally:
        rke2.close()
    assert (result["program"], result["restart"], result["served"]["subject_cn"]) == ("rke2", ["rke2-server"], "rke2")
    assert result["renewed"][0]["name"] == "rke2-serving" and rke2.api.secret is None
    assert result["moved"][0]["from"] == "/var/lib/rancher/rke2/server/tls/dynamic-cert.json"
    assert _k3s.PROGRAMS["rke2"]["supervisor_port"] == 9345 and _k3s.PROGRAMS["rke2"]["api_url"] == "https://127.0.0.1:6443"


@pytest.mark.parametrize("program, output, line", [
    ("k3s", "k3s version v1.21.14+k3s1 (982252d7)", "legacy"),
    ("k3s", LEGACY, "legacy"),
    ("k3s", "k3s version v1.23.10+k3s1 (d6bfd5e9)", "renews"),
    ("k3s", "k3s version v1.25.0+k3s1 (26e94057)", "renews"),
    ("k3s", "k3s version v1.30.14+k3s1 (1b1c9a2e)", "renews"),
    ("k3s", "k3s version v1.31.13+k3s1 (4d8a2f1c)", "renews"),
    ("k3s", "k3s version v1.31.14+k3s1 (0deb8663)", "recreates"),
    ("k3s", CURRENT, "recreates"),
    ("k3s", "k3s version v1.35.0+k3s1 (bdb92296)", "recreates"),
    ("rke2", "rke2 version v1.24.14+rke2r1 (5a3b1c2d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b)", "legacy"),
    ("rke2", "rke2 version v1.24.15+rke2r1 (6b4c2d3e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c)", "renews"),
    ("rke2", "rke2 version v1.27.2+rke2r1 (7c5d3e4f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d)", "legacy"),
    ("rke2", "rke2 version v1.28.1+rke2r1 (8d6e4f5a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e)", "renews"),
    ("rke2", "rke2 version v1.34.2+rke2r1 (9e7f5a6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f)", "recreates"),
])
def test_release_lines(program, output, line):
    assert _k3s.release_line(program, output)["line"] == line


def test_an_unreadable_version_is_taken_as_current_and_says_so():
    release = _k3s.release_line("k3s", "k3s: command not found")
    assert release["line"] == "recreates" and release["source"].startswith("assumed current: the version is unknown")


def test_current_release_renews_by_itself_inside_its_window(tmp_path):
    """Inside k3s's 120-day window for less than its 6-hour check: nothing to do, no restart."""
    k3s = K3sNode(tmp_path, serving_issued_at=NOW - 245 * DAY - 2 * pki.HOUR)     # 119.9 days left: 2 h inside
    try:
        plan = k3s.reset(check_mode=True, threshold_days=150, version_output=CURRENT)
        assert 119.5 < plan["served"]["days_left"] < 120.0
        assert plan["renewed"] == [] and plan["restart"] == []
        assert "renews the certificate by itself at its next check" in plan["skipped_certs"][0]["reason"]
        overdue = k3s.reset(check_mode=True, threshold_days=150, version_output=CURRENT, now=NOW + DAY)
        assert [(r["how"], "yet not renewed" in r["reasons"][0]) for r in overdue["renewed"]] == [("regenerate", True)]
    finally:
        k3s.close()


def test_current_release_regenerates_what_it_keeps_beyond_its_window(tmp_path):
    k3s = K3sNode(tmp_path, serving_issued_at=NOW - 200 * DAY)      # 165 days left
    try:
        before = digest(k3s.root)
        plan = k3s.reset(check_mode=True, threshold_days=200, version_output=CURRENT)
        assert [(r["name"], r["how"]) for r in plan["renewed"]] == [("k3s-serving", "regenerate")]
        assert "k3s v1.33.6 keeps it until 120 days before it expires" in plan["renewed"][0]["reasons"][0]
        assert digest(k3s.root) == before
        nothing = k3s.reset(check_mode=True, threshold_days=30, version_output=CURRENT)
        assert nothing["renewed"] == [] and nothing["skipped_certs"][0]["reason"].startswith("served for 165.")
    finally:
        k3s.close()


def test_a_static_cert_is_never_touched(node):
    node.api.secret["metadata"]["annotations"]["listener.cattle.io/static"] = "true"
    before = digest(node.root)
    for version in (LEGACY, CURRENT):
        result = node.reset(force=True, version_output=version)
        assert result["renewed"] == [] and result["secret"]["static"] is True
        assert result["skipped_certs"][0]["reason"].startswith("a user-provided certificate (listener.cattle.io/static=true)")
    assert digest(node.root) == before and node.api.secret is not None


def test_a_threshold_beyond_the_lifetime_is_refused(node):
    before = digest(node.root)
    # issued with its NotBefore pinned to the CA's (465 days on paper): dynamiclistener's 365 days count
    with pytest.raises(_k3s.ResetError, match=r"threshold_days=400 is not below the 365-day lifetime"):
        node.reset(threshold_days=400)
    assert digest(node.root) == before


def test_a_corrupt_cache_that_breaks_every_handshake_is_moved_aside_and_the_secret_kept(tmp_path):
    """Current k3s with an empty dynamic-cert.json serves nothing (storage/file Get fails); the secret is good."""
    k3s = K3sNode(tmp_path, serving_issued_at=NOW - 10 * DAY)
    try:
        (k3s.tls / "dynamic-cert.json").write_bytes(b"")
        k3s.supervisor.close()
        result = k3s.reset(version_output=CURRENT)
        assert [(r["name"], r["how"]) for r in result["renewed"]] == [("k3s-serving", "cache")]
        assert result["restart"] == ["k3s"] and k3s.api.secret is not None and not result["secret"]["deleted"]
        assert result["moved"] == [{"from": "/var/lib/rancher/k3s/server/tls/dynamic-cert.json",
                                    "to": result["dynamic_cert"]["moved_to"]}]
        assert not (k3s.tls / "dynamic-cert.json").exists() and not (k3s.tls / "dynamic-cert-regenerate").exists()
    finally:
        k3s.close()
