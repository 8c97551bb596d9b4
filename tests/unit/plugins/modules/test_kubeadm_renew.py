# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ansible_collections.kubepki.fleet.plugins.module_utils import _files, _nodelock, _x509
from ansible_collections.kubepki.fleet.plugins.modules import cert_facts, kubeadm_renew
from ansible_collections.kubepki.fleet.tests.unit import keytypes
from ansible_collections.kubepki.fleet.tests.unit.plugins.module_utils.test_nodelock import held_by_another_process

LOCK = _nodelock.LOCK_PATH.lstrip("/")


def digest(root):
    """sha256 of every file under ``root`` but links and the node lock, which a real run leaves behind (empty)."""
    return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _dirs, files in os.walk(root) for f in files
            if not os.path.islink(os.path.join(d, f)) and os.path.join(d, f) != os.path.join(root, LOCK)}


@pytest.fixture
def node(kubeadm_node):
    return kubeadm_node


def test_check_mode_plans_and_writes_nothing(run_module, node):
    before = digest(node)
    result = run_module(kubeadm_renew, rootfs=str(node), _ansible_check_mode=True, _ansible_diff=True)
    assert result["changed"] is True and len(result["renewed"]) == 11
    assert result["restart"] == ["kube-controller-manager", "kube-scheduler"]
    assert {r["cert"] for r in result["reloads"]} >= {"apiserver", "apiserver-kubelet-client", "apiserver-etcd-client"}
    assert result["method"] == "native"
    apiserver = next(r for r in result["renewed"] if r["name"] == "apiserver")
    assert apiserver["new_not_after"] > apiserver["not_after"]
    assert result["diff"]["before"]["apiserver"]["not_after"] == apiserver["not_after"]
    assert digest(node) == before


def test_renew_then_second_run_changes_nothing(run_module, node):
    first = run_module(kubeadm_renew, rootfs=str(node), _ansible_diff=True)
    assert first["changed"] and first["diff"]["after"]["apiserver"]["serial"] != first["diff"]["before"]["apiserver"]["serial"]
    # the restarts it planned are owed until the playbook has made them and clears the record
    os.unlink(node / "var/lib/kubepki/restart-owed.json")
    after_first = digest(node)
    second = run_module(kubeadm_renew, rootfs=str(node))
    assert (second["changed"], second["renewed"], second["restart"]) == (False, [], [])
    assert digest(node) == after_first


def test_a_real_run_waits_for_the_node_lock_then_fails_naming_the_holder(run_module, node, monkeypatch):
    monkeypatch.setattr(_nodelock, "WAIT_SECONDS", 0.5)
    before = digest(node)
    with held_by_another_process(node) as holder:
        planned = run_module(kubeadm_renew, rootfs=str(node), _ansible_check_mode=True)
        result = run_module(kubeadm_renew, rootfs=str(node))
    assert planned["changed"] and len(planned["renewed"]) == 11  # check mode writes nothing, the lock included
    assert result["failed"] and "another kubepki renewal runs on this node (pid %d since " % holder.pid in result["msg"]
    assert digest(node) == before
    renewed = run_module(kubeadm_renew, rootfs=str(node))
    assert renewed["changed"] and oct(os.stat(node / LOCK).st_mode & 0o777) == "0o600" and (node / LOCK).read_bytes() == b""


def test_refusal_fails_with_what_to_do(run_module, node):
    os.remove(node / "etc/kubernetes/pki/front-proxy-ca.key")
    before = digest(node)
    result = run_module(kubeadm_renew, rootfs=str(node))
    assert result["failed"] and "front-proxy-client" in result["msg"] and "externally managed CA" in result["msg"]
    assert digest(node) == before


def test_not_a_kubeadm_node(run_module, tmp_path):
    result = run_module(kubeadm_renew, rootfs=str(tmp_path))
    assert result["failed"] and "not a kubeadm control-plane node" in result["msg"]
    result = run_module(kubeadm_renew, rootfs=str(tmp_path / "cp9"))
    assert result["failed"] and result["msg"].startswith("rootfs %s does not exist" % (tmp_path / "cp9"))


def test_method_kubeadm_without_the_binary(run_module, node):
    result = run_module(kubeadm_renew, rootfs=str(node), method="kubeadm")
    assert result["failed"] and "method=native" in result["msg"]


def test_unreadable_current_cert_fails_with_what_to_do(run_module, node):
    (node / "etc/kubernetes/pki/apiserver.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB\n")
    before = digest(node)
    result = run_module(kubeadm_renew, rootfs=str(node))
    assert result["failed"] and "apiserver.crt" in result["msg"] and "restore it from a backup" in result["msg"]
    assert digest(node) == before


def test_unknown_name_lists_the_valid_ones(run_module, node):
    result = run_module(kubeadm_renew, rootfs=str(node), certs=["apiservr"])
    assert result["failed"] and "apiservr" in result["msg"] and "front-proxy-client" in result["msg"]
    assert "restore" not in result["msg"]


def test_failure_half_way_reports_what_was_written(run_module, node, monkeypatch):
    """Disk full at scheduler.conf: the certs written before it are reported, changed=true, so the play rolls back."""
    real_write = _files.write_file

    def write_file(path, data, *args, **kwargs):
        if path.endswith("scheduler.conf"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data, *args, **kwargs)

    monkeypatch.setattr(_files, "write_file", write_file)
    result = run_module(kubeadm_renew, rootfs=str(node))
    written = [r["name"] for r in result["renewed"]]
    assert result["failed"] and result["changed"] is True
    assert "admin.conf" in written and "apiserver" in written and "scheduler.conf" not in written
    assert "No space left on device" in result["msg"] and "written before the failure: " + ", ".join(written) in result["msg"]
    assert "Traceback" not in result["msg"] and "exception" in result
    assert result["restart"] == ["kube-controller-manager", "kube-scheduler"]   # for the rollback


def test_a_node_cluster_api_manages_is_left_alone_unless_told(run_module, node):
    (node / "run/cluster-api").mkdir(parents=True)
    (node / "run/cluster-api/bootstrap-success.complete").write_text("success\n")
    before = digest(node)
    result = run_module(kubeadm_renew, rootfs=str(node), method="native")
    assert (result["changed"], result["renewed"]) == (False, [])
    assert result["managed_by"][0]["manager"] == "Cluster API" and "renew_managed=true" in result["msg"]
    assert digest(node) == before
    result = run_module(kubeadm_renew, rootfs=str(node), method="native", renew_managed=True)
    assert result["changed"] is True and result["managed_by"][0]["manager"] == "Cluster API"


def test_a_node_without_pyyaml_is_told_which_package(run_module, node, monkeypatch):
    from ansible.module_utils.common import yaml as common_yaml
    monkeypatch.setattr(common_yaml, "HAS_YAML", False)
    before = digest(node)
    result = run_module(kubeadm_renew, rootfs=str(node))
    assert result["failed"] and "PyYAML" in result["msg"] and "python3-yaml" in result["msg"]
    assert digest(node) == before


def test_links_out_of_rootfs_are_neither_read_nor_written(run_module, node, tmp_path):
    """apiserver.crt/.key as relative links climbing out of rootfs, pki/etcd as an absolute link to elsewhere."""
    outside = tmp_path / "outside"
    outside.mkdir()
    pki = node / "etc/kubernetes/pki"
    for name in ("apiserver.crt", "apiserver.key"):
        shutil.move(str(pki / name), str(outside / name))
        os.symlink("../../../../outside/" + name, pki / name)
    shutil.move(str(pki / "etcd"), str(outside / "etcd"))
    os.symlink(str(outside / "etcd"), pki / "etcd")
    before = digest(outside)
    result = run_module(kubeadm_renew, rootfs=str(node))
    assert result["failed"] and "/etc/kubernetes/pki/apiserver.crt is a dangling symlink" in result["msg"]
    assert digest(outside) == before


def test_a_chain_that_starts_with_its_ca_is_refused_as_cert_facts_reports_it(run_module, node):
    pki = node / "etc/kubernetes/pki"
    (pki / "apiserver.crt").write_bytes((pki / "ca.crt").read_bytes() + (pki / "apiserver.crt").read_bytes())
    before = digest(node)
    planned = run_module(kubeadm_renew, rootfs=str(node), force=True, _ansible_check_mode=True)
    result = run_module(kubeadm_renew, rootfs=str(node), force=True)
    assert result["failed"] and "/etc/kubernetes/pki/apiserver.crt starts with a CA certificate (CN=kubernetes)" in result["msg"]
    assert "nothing was changed" in result["msg"] and planned == result
    assert digest(node) == before
    entries = run_module(cert_facts, rootfs=str(node), probe=False)["ansible_facts"]["kubepki"]["certs"]
    entry = next(e for e in entries if e["id"] == "kubeadm/apiserver")
    assert entry["state"] == "invalid" and entry["message"].split("; ")[0] in result["msg"]


@pytest.mark.parametrize("days", [0, -30, 3651, 365000])
def test_absurd_validity_days_is_refused(run_module, node, days):
    before = digest(node)
    result = run_module(kubeadm_renew, rootfs=str(node), validity_days=days)
    assert result["failed"] and "validity_days=%d is out of range: give 1 to 3650 days" % days in result["msg"]
    assert digest(node) == before


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("users:", "users: [", 1), "/etc/kubernetes/admin.conf is not valid YAML ("),
    (lambda text: "- just\n- a list\n", "/etc/kubernetes/admin.conf is not a kubeconfig"),
    (lambda text: text.replace("client-certificate-data: ", "client-certificate-data: ABC$", 1),
     "/etc/kubernetes/admin.conf: client-certificate-data is not valid base64"),
])
def test_a_broken_kubeconfig_fails_naming_it(run_module, node, edit, message):
    conf = node / "etc/kubernetes/admin.conf"
    conf.write_text(edit(conf.read_text()))
    before = digest(node)
    result = run_module(kubeadm_renew, rootfs=str(node))
    assert result["failed"] and message in result["msg"] and "client-key-data" not in result["msg"]
    assert digest(node) == before


def test_a_key_that_no_longer_matches_its_cert_is_renewed_whatever_its_days_left(run_module, node):
    """A run killed between the key's rename and the cert's leaves a new key beside the old cert: kube-apiserver would
    refuse that pair at its next start, so the next ordinary run renews it though the cert has a year left."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    run_module(kubeadm_renew, rootfs=str(node))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    (node / "etc/kubernetes/pki/apiserver.key").write_bytes(other)
    result = run_module(kubeadm_renew, rootfs=str(node))
    assert result["changed"] and [r["name"] for r in result["renewed"]] == ["apiserver"]
    assert result["renewed"][0]["due_reason"] == ("/etc/kubernetes/pki/apiserver.key does not match its certificate (a "
                                                  "renewal interrupted between key and certificate)")
    assert run_module(kubeadm_renew, rootfs=str(node))["renewed"] == []


def test_a_run_stopped_before_its_restarts_owes_them_to_the_next(run_module, node):
    """controller-manager and scheduler read their client certs only at start: a run stopped after renewing their
    kubeconfigs and before restarting them leaves fresh files that the next run would not renew again, so the
    restarts are recorded before the first write and owed until the playbook clears the record."""
    first = run_module(kubeadm_renew, rootfs=str(node), force=True, certs=["controller-manager.conf", "scheduler.conf"])
    assert first["restart"] == ["kube-controller-manager", "kube-scheduler"] and first["restart_owed"] == []
    record = node / "var/lib/kubepki/restart-owed.json"
    assert oct(record.stat().st_mode & 0o777) == "0o600"
    assert sorted(json.loads(record.read_text())) == ["kube-controller-manager", "kube-scheduler"]
    planned = run_module(kubeadm_renew, rootfs=str(node), certs=["controller-manager.conf", "scheduler.conf"],
                         _ansible_check_mode=True)
    assert planned["renewed"] == [] and planned["restart_owed"] == ["kube-controller-manager", "kube-scheduler"]
    assert planned["restart"] == ["kube-controller-manager", "kube-scheduler"]
    assert planned["restart_plan"][0]["reason"].startswith(
        "kube-controller-manager: owed by a run that renewed controller-manager.conf at ")
    record.write_text("{not json")     # unreadable: restarting too much is safe, forgetting one is not
    assert run_module(kubeadm_renew, rootfs=str(node), _ansible_check_mode=True)["restart"] == [
        "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"]
    record.unlink()                    # the playbook, once the restarts are verified
    assert run_module(kubeadm_renew, rootfs=str(node), _ansible_check_mode=True)["restart_owed"] == []


RENEWED_KEYS = ("name", "method", "method_reason", "due_reason", "key_type", "new_key_type")


@pytest.mark.parametrize("kind", sorted(keytypes.RENEWED) + sorted(keytypes.REFUSED))
def test_check_mode_says_what_the_run_does_with_a_key_type_kubeadm_never_issues(run_module, node, kind):
    """Renewal keeps the key type where a Go component can use it, and refuses it in the plan otherwise. Before, check
    mode promised to renew DSA and Ed448 certs that the run then failed on, after renewing the certs before them,
    and renewed secp256k1 (which it called ECDSA-P256) though no component can load it."""
    keytypes.give_key(node, "apiserver", kind)
    before = digest(node)
    planned = run_module(kubeadm_renew, rootfs=str(node), certs=["apiserver", "admin.conf"], _ansible_check_mode=True)
    assert digest(node) == before
    result = run_module(kubeadm_renew, rootfs=str(node), certs=["apiserver", "admin.conf"])
    if kind in keytypes.REFUSED:
        assert planned["failed"] and planned == result
        assert result["msg"].startswith("refusing to renew, nothing was changed: apiserver: /etc/kubernetes/pki/apiserver.crt "
                                        "has a %s key, which no Kubernetes component can use" % kind)
        assert "admin.conf" not in result["msg"] and digest(node) == before
        return
    assert planned["changed"] and result["changed"] and not result.get("failed")
    assert [{k: r[k] for k in RENEWED_KEYS} for r in planned["renewed"]] == [{k: r[k] for k in RENEWED_KEYS} for r in result["renewed"]]
    apiserver = next(r for r in result["renewed"] if r["name"] == "apiserver")
    assert (apiserver["key_type"], apiserver["new_key_type"], apiserver["method"]) == (kind, kind, "native")
    pki = node / "etc/kubernetes/pki"
    cert = x509.load_pem_x509_certificate((pki / "apiserver.crt").read_bytes())
    key = serialization.load_pem_private_key((pki / "apiserver.key").read_bytes(), None)
    assert _x509.key_type(cert.public_key()) == kind and _x509.key_matches(cert, key)


def test_a_ca_key_no_component_verifies_is_refused_by_the_plan(run_module, node):
    """Before, check mode promised front-proxy-client and the run failed signing it with the Ed448 CA key."""
    keytypes.give_key(node, "front-proxy-ca", "Ed448", signer="front-proxy-ca")
    keytypes.give_key(node, "front-proxy-client", signer="front-proxy-ca")
    before = digest(node)
    planned = run_module(kubeadm_renew, rootfs=str(node), _ansible_check_mode=True)
    result = run_module(kubeadm_renew, rootfs=str(node))
    assert result["failed"] and planned == result and digest(node) == before
    assert result["msg"] == ("refusing to renew, nothing was changed: front-proxy-client: CA front-proxy-ca has a Ed448 key, "
                             "whose signatures no Kubernetes component verifies: rotate the CA first "
                             "(https://kubernetes.io/docs/tasks/tls/manual-rotation-of-ca-certificates/)")
