# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The one judgement of "is the renewed certificate in use", component by component."""

from __future__ import annotations

import json

from ansible_collections.kubepki.fleet.plugins.module_utils import _verify

MUST_SERVE = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]


def endpoint(component, fingerprint, state="ok"):
    return {"id": "endpoint/10.0.0.11:%s" % component, "source": "endpoint", "component": component, "name": component,
            "endpoint": "10.0.0.11:1", "fingerprint_sha256": fingerprint, "state": state}


def facts(*entries):
    return {"now": "2026-12-02T00:00:00Z", "certs": list(entries)}


def evidence(served, containers=None, pid=None, started=None, lease=None):
    found = {"served": served, "containers": containers}
    if pid:
        found.update(kubelet={"pid": pid, "started": started}, lease=lease or {})
    return found


def failing(checks):
    return [(c["component"], c["detail"]) for c in checks if not c["ok"]]


def test_controller_manager_restart_is_proven_by_a_new_in_memory_cert():
    now = facts(endpoint("kube-controller-manager", "NEW"), endpoint("kube-apiserver", "A"))
    ok, checks = _verify.judge(now, evidence({"kube-controller-manager": "OLD"}), evidence({"kube-controller-manager": "NEW"}),
                               ["controller-manager.conf"], ["kube-controller-manager"], MUST_SERVE)
    assert ok, failing(checks)
    ok, checks = _verify.judge(now, evidence({"kube-controller-manager": "NEW"}), evidence({"kube-controller-manager": "NEW"}),
                               ["controller-manager.conf"], ["kube-controller-manager"], MUST_SERVE)
    assert not ok and failing(checks) == [("kube-controller-manager", "still serves what it served before the restart")]


def test_apiserver_restarted_only_for_client_certs_needs_a_new_container_not_a_new_serving_cert():
    now = facts(endpoint("kube-apiserver", "SAME"))
    before = evidence({"kube-apiserver": "SAME"}, {"kube-apiserver": "c1"})
    ok, checks = _verify.judge(now, before, evidence({"kube-apiserver": "SAME"}, {"kube-apiserver": "c2"}),
                               ["apiserver-kubelet-client"], ["kube-apiserver"], MUST_SERVE)
    assert ok, failing(checks)
    ok, checks = _verify.judge(now, before, evidence({"kube-apiserver": "SAME"}, {"kube-apiserver": "c1"}),
                               ["apiserver-kubelet-client"], ["kube-apiserver"], MUST_SERVE)
    assert failing(checks) == [("kube-apiserver", "still runs container c1")]


def test_a_renewed_serving_cert_must_be_the_one_served():
    cert = {"id": "kubeadm/apiserver", "source": "file", "component": "kube-apiserver", "name": "apiserver",
            "served_on": "endpoint/10.0.0.11:kube-apiserver", "in_use": False, "state": "ok"}
    now = facts(endpoint("kube-apiserver", "OLD"), cert)
    ok, checks = _verify.judge(now, evidence({}), evidence({}), ["apiserver"], [], MUST_SERVE)
    assert not ok and "still serves another certificate than renewed apiserver" in failing(checks)[0][1]
    cert["in_use"] = True
    assert _verify.judge(now, evidence({}), evidence({}), ["apiserver"], [], MUST_SERVE)[0]


def test_repaired_kubelet_conf_is_proven_by_the_lease_its_new_process_renewed():
    now = facts(endpoint("kube-apiserver", "A"))
    before = evidence({}, pid="100", started="2026-12-01T10:00:00Z")
    lease = {"node": "cp1", "client_serial": "0A", "renew_time": "2026-12-02T00:00:12.500000Z"}
    after = evidence({}, pid="200", started="2026-12-02T00:00:10Z", lease=lease)
    ok, checks = _verify.judge(now, before, after, ["kubelet.conf"], ["kubelet"], MUST_SERVE)
    assert ok, failing(checks)
    assert "renewed node Lease cp1" in checks[0]["detail"]
    # renewed in the second the new process started: could be the old one's last renewal
    after["lease"] = dict(lease, renew_time="2026-12-02T00:00:10.400000Z")
    assert not _verify.judge(now, before, after, ["kubelet.conf"], ["kubelet"], MUST_SERVE)[0]
    after.update(kubelet={"pid": "100", "started": "2026-12-01T10:00:00Z"}, lease=lease)
    assert failing(_verify.judge(now, before, after, ["kubelet.conf"], ["kubelet"], MUST_SERVE)[1]) == [
        ("kubelet", "the kubelet has not restarted (main PID 100, was 100)")]
    after.update(kubelet={"pid": "200", "started": "2026-12-02T00:00:10Z"}, lease={"error": "HTTP 401"})
    assert failing(_verify.judge(now, before, after, ["kubelet.conf"], ["kubelet"], MUST_SERVE)[1]) == [("kubelet", "HTTP 401")]


def test_an_endpoint_that_serves_an_expired_cert_fails_the_node():
    now = facts(endpoint("kube-scheduler", "X", state="expired"))
    ok, checks = _verify.judge(now, evidence({}), evidence({}), [], [], MUST_SERVE)
    assert not ok and failing(checks)[0][0] == "kube-scheduler"


def test_containers_and_kubelet_process_are_read_from_crictl_and_systemctl():
    listing = {"containers": [{"id": "abc", "metadata": {"name": "kube-apiserver"}}, {"id": "x", "metadata": {"name": "coredns"}}]}

    def run(argv):
        if argv[0] == "crictl":
            return 0, json.dumps(listing), ""
        return 0, "MainPID=4242\nExecMainStartTimestamp=Wed 2026-12-02 00:15:26 UTC\n", ""

    assert _verify.containers(run) == {"kube-apiserver": "abc"}
    assert _verify.kubelet_process(run) == {"pid": "4242", "started": "2026-12-02T00:15:26Z"}
    assert _verify.containers(lambda argv: (1, "", "crictl: not found")) is None


def kubelet_facts(fingerprint, days_left, ca, file_in_use):
    served = dict(endpoint("kubelet", fingerprint), endpoint="10.0.1.11:10250", subject="CN=cp@1", not_after="2027-12-01T00:00:00Z",
                  days_left=days_left, ca=ca)
    on_disk = {"id": _verify.KUBELET_FILE, "source": "file", "component": "kubelet", "name": "kubelet.crt",
               "in_use": file_in_use, "state": "ok"}
    return facts(served, on_disk)


def test_regenerated_kubelet_crt_must_be_served_new_and_long_enough():
    fresh = kubelet_facts("NEW", 365.0, "kubelet/kubelet.crt#chain", True)
    assert _verify.kubelet_serving(fresh, "new", ["OLD"], 30)["ok"]
    assert not _verify.kubelet_serving(kubelet_facts("OLD", 365.0, None, True), "new", ["OLD"], 30)["ok"]
    short = _verify.kubelet_serving(fresh, "new", ["OLD"], 400)
    assert not short["ok"] and short["detail"].startswith("wants the kubelet.crt it wrote, new and valid for more than 400 days; ")
    # a new cert that is not the file on disk (a tlsCertFile elsewhere) is not the regenerated kubelet.crt
    assert not _verify.kubelet_serving(kubelet_facts("NEW", 365.0, None, False), "new", ["OLD"], 30)["ok"]


def test_restored_and_rke_issued_kubelet_certs():
    assert _verify.kubelet_serving(kubelet_facts("OLD", -35.0, None, True), "old", ["OLD"], 30)["ok"]
    assert not _verify.kubelet_serving(kubelet_facts("NEW", 365.0, None, False), "old", ["OLD"], 30)["ok"]
    assert _verify.kubelet_serving(kubelet_facts("RKE", 3650.0, _verify.RKE_KUBE_CA, False), "issued", ["OLD"], 30)["ok"]
    self_signed = _verify.kubelet_serving(kubelet_facts("NEW", 365.0, None, True), "issued", ["OLD"], 30)
    assert not self_signed["ok"] and "signed by an unknown issuer" in self_signed["detail"]


def test_a_kubelet_that_serves_nothing_says_so():
    down = facts({"id": "endpoint/10.0.1.11:10250", "source": "endpoint", "component": "kubelet", "endpoint": "10.0.1.11:10250",
                  "message": "connection refused"})
    check = _verify.kubelet_serving(down, "new", [], 30)
    assert not check["ok"] and check["detail"].endswith("10.0.1.11:10250 serves nothing (connection refused)")


def supervisor_facts(fingerprint, days_left, subject_cn="k3s", leaf_days=300.0):
    served = dict(endpoint("k3s-supervisor", fingerprint), endpoint="10.0.2.11:6443", subject="CN=k3s,O=k3s",
                  subject_cn=subject_cn, not_after="2027-12-01T00:00:00Z", days_left=days_left, ca="k3s/server-ca")
    leaf = {"id": "k3s/server/client-admin", "source": "file", "component": "k3s", "state": "ok", "days_left": leaf_days}
    return facts(served, leaf)


def test_a_reset_supervisor_must_serve_a_new_cert_and_its_leaves_be_renewed():
    leaves = ["k3s/server/client-admin"]
    assert all(c["ok"] for c in _verify.supervisor_served(supervisor_facts("NEW", 365.0), "k3s", ["OLD"], leaves, 30))
    same = _verify.supervisor_served(supervisor_facts("OLD", 365.0), "k3s", ["OLD"], leaves, 30)
    assert failing(same) == [("k3s-supervisor", "wants a new CN=k3s certificate valid for more than 30 days (it still serves "
                                                "the one from before the restart); 10.0.2.11:6443 serves CN=k3s,O=k3s, ok, "
                                                "expires 2027-12-01T00:00:00Z (365.0 days), signed by k3s/server-ca")]
    assert failing(_verify.supervisor_served(supervisor_facts("NEW", 365.0, subject_cn="rke2"), "k3s", [], leaves, 30))
    stale_leaf = _verify.supervisor_served(supervisor_facts("NEW", 365.0, leaf_days=10.0), "k3s", [], leaves, 30)
    assert failing(stale_leaf) == [("k3s-supervisor", "k3s/server/client-admin: ok, 10.0 days left, wants more than 30")]


def test_every_server_must_store_what_it_serves_and_the_annotation_must_name_it():
    """HA k3s: the secret is shared; a server that kept an old cert in memory serves what the secret no longer holds."""
    secret = {"state": "present", "fingerprint_sha256": "NEW", "fingerprint_sha1": "AB12", "annotation_fingerprint": "SHA1=AB12",
              "not_after": "2027-12-01T00:00:00Z"}
    cached = {"state": "ok", "fingerprint_sha256": "NEW", "path": "/var/lib/rancher/k3s/server/tls/dynamic-cert.json"}
    assert _verify.supervisor_stored(supervisor_facts("NEW", 365.0), "k3s", secret, cached)["ok"]
    assert _verify.supervisor_stored(supervisor_facts("NEW", 365.0), "k3s", secret, {"state": "missing"})["ok"]
    stale = _verify.supervisor_stored(supervisor_facts("OLD", 365.0), "k3s", secret, cached)
    assert failing([stale]) == [("k3s-supervisor", "the secret holds another certificate (expires 2027-12-01T00:00:00Z); "
                                                   "/var/lib/rancher/k3s/server/tls/dynamic-cert.json holds another certificate")]
    mislabelled = dict(secret, annotation_fingerprint="SHA1=FFFF")
    assert failing([_verify.supervisor_stored(supervisor_facts("NEW", 365.0), "k3s", mislabelled, cached)]) == [
        ("k3s-supervisor", "the secret's fingerprint annotation is SHA1=FFFF, not its certificate's SHA1=AB12")]
    gone = {"state": "absent", "message": "secret kube-system/k3s-serving does not exist"}
    assert failing([_verify.supervisor_stored(supervisor_facts("NEW", 365.0), "k3s", gone, cached)]) == [
        ("k3s-supervisor", "secret kube-system/k3s-serving does not exist")]
