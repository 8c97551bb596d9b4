# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import shutil
import stat

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID

from ansible_collections.kubepki.fleet.plugins.module_utils import _kubeadm, _sign
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import gather
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.tests.lab import pki

DAY = pki.DAY
ALL = {"admin.conf", "apiserver", "apiserver-etcd-client", "apiserver-kubelet-client", "controller-manager.conf",
       "etcd-healthcheck-client", "etcd-peer", "etcd-server", "front-proxy-client", "scheduler.conf", "super-admin.conf"}


def tree_digest(root):
    digest = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with open(path, "rb") as handle:
                    digest[os.path.relpath(path, root)] = (hashlib.sha256(handle.read()).hexdigest(), stat.S_IMODE(os.stat(path).st_mode))
    return digest


@pytest.fixture
def node(kubeadm_tree, tmp_path):
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    return root


def load(path):
    return x509.load_pem_x509_certificate(open(path, "rb").read())


def test_plan_takes_what_is_under_threshold_and_names_the_restarts(node, now):
    fs = NodeFS(str(node))
    due, skipped = _kubeadm.plan(fs, now, threshold_days=30)
    assert {item.name for item in due} == ALL
    # kubeadm v1.31 (the tree's static pod images): the apiserver reloads all of its certs, etcd too
    restarts, reloads = _kubeadm.restart_plan(fs, [item.name for item in due])
    assert [r["component"] for r in restarts] == ["kube-controller-manager", "kube-scheduler"]
    assert {r["cert"] for r in reloads} == {
        "apiserver", "front-proxy-client", "apiserver-kubelet-client", "apiserver-etcd-client", "etcd-server", "etcd-peer"}
    assert all("v1.31" in r["reason"] or "etcd v3.5" in r["reason"] for r in reloads)
    always = _kubeadm.restart_plan(fs, [item.name for item in due], policy="always")[0]
    assert [r["component"] for r in always] == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    due, skipped = _kubeadm.plan(NodeFS(str(node)), now, threshold_days=10)
    assert due == [] and {s["name"] for s in skipped} == ALL


def test_native_renewal_keeps_identity_and_modes_and_is_idempotent(node, now):
    fs = NodeFS(str(node))
    old = load(node / "etc/kubernetes/pki/apiserver.crt")
    before_modes = {p: stat.S_IMODE(os.stat(node / "etc/kubernetes/pki" / p).st_mode) for p in ("apiserver.crt", "apiserver.key")}
    admin_before = yaml.safe_load((node / "etc/kubernetes/admin.conf").read_text())
    due, _skipped = _kubeadm.plan(fs, now, threshold_days=30)
    renewed = _kubeadm.apply(fs, due, now)
    assert {r["name"] for r in renewed} == ALL

    new = load(node / "etc/kubernetes/pki/apiserver.crt")
    assert new.subject == old.subject and new.serial_number != old.serial_number
    for oid in (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.EXTENDED_KEY_USAGE, ExtensionOID.KEY_USAGE):
        assert new.extensions.get_extension_for_oid(oid).value == old.extensions.get_extension_for_oid(oid).value
    assert new.not_valid_after_utc - now == 365 * DAY  # the old lifetime (8760h + 5m backdate) minus the backdate
    assert new.not_valid_before_utc == now - _sign.BACKDATE
    assert before_modes == {p: stat.S_IMODE(os.stat(node / "etc/kubernetes/pki" / p).st_mode) for p in before_modes}

    admin_after = yaml.safe_load((node / "etc/kubernetes/admin.conf").read_text())
    assert admin_after["clusters"] == admin_before["clusters"] and admin_after["contexts"] == admin_before["contexts"]
    assert admin_after["users"][0]["user"]["client-key-data"] != admin_before["users"][0]["user"]["client-key-data"]

    facts = gather(fs, now=now, probe=False)
    kubeadm_entries = [e for e in facts["certs"] if e["name"] in ALL]
    assert len(kubeadm_entries) == len(ALL)
    assert all(e["state"] == "ok" and e["key_matches"] is True for e in kubeadm_entries), kubeadm_entries
    assert {e["name"]: e["ca"] for e in kubeadm_entries}["etcd-server"] == "etcd-ca"
    assert _kubeadm.plan(fs, now, threshold_days=30)[0] == []


def test_v128_inflated_lifetime_gets_one_year_and_ecdsa_stays_ecdsa(tmp_path, now):
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 1200 * DAY, style="v1.28", key="ecdsa")
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=now, init_node=True, leaf_issued_at=now - 360 * DAY)
    fs = NodeFS(str(tmp_path))
    old = load(tmp_path / "etc/kubernetes/pki/apiserver.crt")
    assert old.not_valid_after_utc - old.not_valid_before_utc > 900 * DAY  # NotBefore pinned to the CA's
    _kubeadm.apply(fs, _kubeadm.plan(fs, now, 30, names=["apiserver"])[0], now)
    new = load(tmp_path / "etc/kubernetes/pki/apiserver.crt")
    assert new.not_valid_after_utc - now == 365 * DAY
    assert new.public_key().curve.name == "secp256r1"


def test_longer_validity_is_kept(tmp_path, now):
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 10 * DAY)
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=now, init_node=True)
    fs = NodeFS(str(tmp_path))
    due = _kubeadm.plan(fs, now, 30, force=True, names=["front-proxy-client"], validity_days=1000)[0]
    _kubeadm.apply(fs, due, now)
    assert load(tmp_path / "etc/kubernetes/pki/front-proxy-client.crt").not_valid_after_utc - now == 1000 * DAY


def test_external_ca_is_refused_and_nothing_changes(node, now):
    os.remove(node / "etc/kubernetes/pki/ca.key")
    before = tree_digest(node)
    with pytest.raises(_sign.SigningError) as caught:
        _kubeadm.plan(NodeFS(str(node)), now, threshold_days=30)
    assert "externally managed CA" in str(caught.value) and "nothing was changed" in str(caught.value)
    assert tree_digest(node) == before


def test_ca_expiring_before_the_new_leaf_is_refused(tmp_path, now):
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 3600 * DAY)  # CA has 50 days left
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=now, init_node=True, leaf_issued_at=now - 350 * DAY)
    with pytest.raises(_sign.SigningError) as caught:
        _kubeadm.plan(NodeFS(str(tmp_path)), now, threshold_days=30)
    assert "rotate the CA first" in str(caught.value)
    due = _kubeadm.plan(NodeFS(str(tmp_path)), now, 30, validity_days=40)[0]
    assert due


def init_node_with_embedded_expired_kubelet_conf(root, now):
    """The pre-1.17 init node (kubeadm#1753): kubelet.conf embeds a client cert, here expired."""
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 800 * DAY)
    pki.build_kubeadm_control_plane(root, cluster, "cp1", "10.0.0.11", now=now, init_node=True)
    old = pki.new_leaf("system:node:cp1", cluster.ca, cluster.profile, now - 400 * DAY, "ecdsa", orgs=["system:nodes"])
    conf_path = root / "etc/kubernetes/kubelet.conf"
    conf = yaml.safe_load(conf_path.read_text())
    conf["users"][0]["user"] = {"client-certificate-data": base64.b64encode(pki.cert_pem(old.cert)).decode(),
                                "client-key-data": base64.b64encode(pki.key_pem(old.key)).decode()}
    conf_path.write_text(yaml.safe_dump(conf))
    return conf_path


def test_embedded_expired_kubelet_conf_is_repaired(tmp_path, now):
    conf_path = init_node_with_embedded_expired_kubelet_conf(tmp_path, now)
    fs = NodeFS(str(tmp_path))
    due = _kubeadm.plan(fs, now, threshold_days=30)[0]
    assert [i.name for i in due] == ["kubelet.conf"]
    assert [r["component"] for r in _kubeadm.restart_plan(fs, ["kubelet.conf"])[0]] == ["kubelet"]
    _kubeadm.apply(fs, due, now)
    user = yaml.safe_load(conf_path.read_text())["users"][0]["user"]
    assert user == {"client-certificate": "/var/lib/kubelet/pki/kubelet-client-current.pem",
                    "client-key": "/var/lib/kubelet/pki/kubelet-client-current.pem"}
    entry = {e["id"]: e for e in gather(fs, now=now, probe=False)["certs"]}["kubeconfig/kubelet.conf"]
    assert (entry["state"], entry["subject"], entry["key_matches"], entry["key_type"]) == (
        "ok", "CN=system:node:cp1,O=system:nodes", True, "ECDSA-P256")
    assert stat.S_IMODE(os.stat(fs.real("/var/lib/kubelet/pki/kubelet-client-current.pem")).st_mode) == 0o600


def test_unknown_names_are_rejected(node, now):
    with pytest.raises(Exception) as caught:
        _kubeadm.plan(NodeFS(str(node)), now, 30, names=["apiservr"])
    assert "apiservr" in str(caught.value) and "apiserver" in str(caught.value)


def _lifetime_days(cert):
    return (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() / 86400


def test_three_year_leaves_made_with_their_ca_at_init_keep_three_years(tmp_path, now):
    """kubeadm v1.31+ init node, certificateValidityPeriod 26280h: leaves share the CA's NotBefore (corrections §4)."""
    three_years = pki.KUBEADM.leaf_lifetime * 3
    init = now - 1080 * DAY   # 15 days left
    cluster = pki.kubeadm_cluster(now, ca_issued_at=init)
    cluster.profile = dataclasses.replace(cluster.profile, leaf_lifetime=three_years)
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=now, init_node=True, leaf_issued_at=init)
    fs = NodeFS(str(tmp_path))
    assert load(tmp_path / "etc/kubernetes/pki/apiserver.crt").not_valid_before_utc == cluster.ca.cert.not_valid_before_utc
    due = {i.name: i for i in _kubeadm.plan(fs, now, threshold_days=30)[0]}
    summary = due["apiserver"].summary(now)
    assert round(summary["new_lifetime_days"]) == round(summary["lifetime_days"]) == 1095
    _kubeadm.apply(fs, list(due.values()), now)
    assert round(_lifetime_days(load(tmp_path / "etc/kubernetes/pki/apiserver.crt"))) == 1095


def test_lifetime_inflated_by_kubeadm_before_v131_gets_one_year_and_says_so(tmp_path, now):
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 800 * DAY, style="v1.28")
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=now, init_node=True,
                                    leaf_issued_at=now - 350 * DAY)
    item = next(i for i in _kubeadm.plan(NodeFS(str(tmp_path)), now, threshold_days=30)[0] if i.name == "apiserver")
    summary = item.summary(now)
    assert summary["lifetime_days"] > 800 and round(summary["new_lifetime_days"]) == 365
    assert "kubeadm before v1.31 pinned its NotBefore" in summary["lifetime_reason"]


def test_certificate_validity_period_of_the_kubeadm_config_sets_the_lifetime(node, now):
    fs = NodeFS(str(node))
    config = node / "etc/kubernetes/kubeadm-config.yaml"
    config.write_text("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n---\n"
                      "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\ncertificateValidityPeriod: 26280h0m0s\n")
    path = "/etc/kubernetes/kubeadm-config.yaml"
    configured = _kubeadm.certificate_validity_period(_kubeadm.cluster_configuration(fs, path), path)
    assert configured == 3 * pki.KUBEADM.leaf_lifetime
    item = next(i for i in _kubeadm.plan(fs, now, 30, names=["apiserver"], configured_validity=configured)[0])
    assert round(item.summary(now)["new_lifetime_days"]) == 1095
    assert "certificateValidityPeriod" in item.lifetime_reason
    config.write_text("kind: ClusterConfiguration\ncertificateValidityPeriod: three years\n")
    with pytest.raises(Exception, match="kubeadm-config.yaml: certificateValidityPeriod 'three years' is not a duration"):
        _kubeadm.certificate_validity_period(_kubeadm.cluster_configuration(fs, path), path)


def test_kubeconfig_in_block_scalars_with_other_clusters_gets_new_cert_and_key_and_leaves_the_others(node, now):
    """Every valid YAML form: block scalars, several users/clusters/contexts; only the current ones change (kubeadm
    readwriter.go), and the other cluster's CA data stays."""
    path = node / "etc/kubernetes/admin.conf"
    conf = yaml.safe_load(path.read_text())
    other_ca = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIBother\n-----END CERTIFICATE-----\n").decode()
    conf["clusters"].append({"name": "other", "cluster": {"server": "https://other:6443", "certificate-authority-data": other_ca}})
    conf["users"].insert(0, {"name": "someone", "user": {"token": "not-a-cert"}})
    conf["contexts"].append({"name": "other", "context": {"cluster": "other", "user": "someone"}})
    user = next(u["user"] for u in conf["users"] if "client-key-data" in u["user"])
    folded = {k: "\n".join(user[k][i:i + 64] for i in range(0, len(user[k]), 64)) + "\n" for k in ("client-certificate-data", "client-key-data")}
    text = yaml.safe_dump(conf, default_flow_style=False)
    for k, v in folded.items():   # the same values as literal block scalars
        text = text.replace("%s: %s" % (k, user[k]), "%s: |\n%s" % (k, "".join("      " + line + "\n" for line in v.splitlines())))
    assert "client-key-data: |" in text
    path.write_text(text)
    fs = NodeFS(str(node))
    due = _kubeadm.plan(fs, now, 30, names=["admin.conf"])[0]
    _kubeadm.apply(fs, due, now)
    after = yaml.safe_load(path.read_text())
    renewed = next(u["user"] for u in after["users"] if u["name"] != "someone")
    cert = x509.load_pem_x509_certificate(base64.b64decode(renewed["client-certificate-data"]))
    key = serialization.load_pem_private_key(base64.b64decode(renewed["client-key-data"]), None)
    assert cert.serial_number == due[0].new_cert.serial_number
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert next(c for c in after["clusters"] if c["name"] == "other")["cluster"]["certificate-authority-data"] == other_ca
    assert next(u for u in after["users"] if u["name"] == "someone")["user"] == {"token": "not-a-cert"}


def test_a_threshold_at_or_above_the_new_lifetime_is_refused(node, now):
    """It would renew on every run: refused, naming the lifetime, and nothing planned."""
    with pytest.raises(_sign.SigningError, match=r"threshold_days=400 is not below the 365-day lifetime"):
        _kubeadm.plan(NodeFS(str(node)), now, threshold_days=400)
    assert _kubeadm.plan(NodeFS(str(node)), now, threshold_days=400, force=True)[0]


def test_kubelet_conf_repair_creates_the_kubelet_cert_dir_when_absent(tmp_path, now):
    """A real kubeadm tree can lack /var/lib/kubelet/pki (embedded kubelet.conf, the pre-1.17 init node)."""
    init_node_with_embedded_expired_kubelet_conf(tmp_path, now)
    shutil.rmtree(tmp_path / "var/lib/kubelet/pki")
    fs = NodeFS(str(tmp_path))
    _kubeadm.apply(fs, _kubeadm.plan(fs, now, threshold_days=30, names=["kubelet.conf"])[0], now)
    assert stat.S_IMODE(os.stat(tmp_path / "var/lib/kubelet/pki").st_mode) == 0o755
    assert os.path.islink(tmp_path / "var/lib/kubelet/pki/kubelet-client-current.pem")
    assert stat.S_IMODE(os.stat(fs.real("/var/lib/kubelet/pki/kubelet-client-current.pem")).st_mode) == 0o600


def test_external_etcd_renews_kubeadms_certs_and_leaves_the_etcd_client_alone(tmp_path, now):
    """kubeadm renews no etcd cert with external etcd (renewal/manager.go GetCertsWithoutEtcd); its CA key is
    not on the node, which must not stop the renewal of the rest."""
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 400 * DAY, external_etcd=True,
                                  external_etcd_url="https://10.0.0.50:2379")
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=now, init_node=True,
                                    leaf_issued_at=now - 350 * DAY)
    fs = NodeFS(str(tmp_path))
    assert not (tmp_path / "etc/kubernetes/pki/etcd/ca.key").exists()
    due, skipped = _kubeadm.plan(fs, now, threshold_days=30)
    assert {i.name for i in due} == ALL - {"apiserver-etcd-client", "etcd-healthcheck-client", "etcd-peer", "etcd-server"}
    assert "etcd is external" in next(s["reason"] for s in skipped if s["name"] == "apiserver-etcd-client")
    entries = {e["id"]: e for e in gather(fs, now=now, probe=False)["certs"]}
    assert entries["kubeadm/apiserver-etcd-client"]["externally_managed"] is True
    assert entries["kubeadm/apiserver-etcd-client"]["state"] == "warning"
    assert "kubeadm/etcd-server" not in entries
