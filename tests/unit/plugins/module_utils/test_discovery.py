# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import base64
import json
import os
import shutil

import pytest
import yaml
from cryptography import x509

from ansible_collections.kubepki.fleet.plugins.module_utils import _layouts
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import gather
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS, detect
from ansible_collections.kubepki.fleet.tests.lab import pki
from ansible_collections.kubepki.fleet.tests.unit.tlsserver import TLSServer

# `kubeadm certs check-expiration` rows (local etcd, >= 1.29) and their CA column.
CHECK_EXPIRATION = {
    "admin.conf": "ca", "apiserver": "ca", "apiserver-etcd-client": "etcd-ca", "apiserver-kubelet-client": "ca",
    "controller-manager.conf": "ca", "etcd-healthcheck-client": "etcd-ca", "etcd-peer": "etcd-ca",
    "etcd-server": "etcd-ca", "front-proxy-client": "front-proxy-ca", "scheduler.conf": "ca", "super-admin.conf": "ca",
}
CHECK_EXPIRATION_CAS = ("ca", "etcd-ca", "front-proxy-ca")


def facts_of(root, now, **kwargs):
    kwargs.setdefault("probe", False)
    return gather(NodeFS(str(root)), now=now, **kwargs)


def by_id(facts):
    return {entry["id"]: entry for entry in facts["certs"]}


def first_cert_of(path, kubeconfig=False):
    with open(path, "rb") as handle:
        data = handle.read()
    if kubeconfig:
        user = yaml.safe_load(data)["users"][0]["user"]
        data = base64.b64decode(user["client-certificate-data"])
    return x509.load_pem_x509_certificate(data)


def test_kubeadm_lists_every_check_expiration_row_with_its_expiry_and_ca(kubeadm_tree, now):
    root = kubeadm_tree / "cp1"
    facts = facts_of(root, now)
    assert (facts["distribution"], facts["node_role"]) == ("kubeadm", "control-plane")
    kubeadm_rows = {e["name"]: e for e in facts["certs"] if e["distribution"] == "kubeadm"}
    for name, ca in CHECK_EXPIRATION.items():
        entry = kubeadm_rows[name]
        if name.endswith(".conf"):
            cert = first_cert_of(root / "etc/kubernetes" / name, kubeconfig=True)
        else:
            cert = first_cert_of(root / ("etc/kubernetes" + entry["path"][len("/etc/kubernetes"):]).lstrip("/"))
        assert entry["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"), name
        assert entry["ca"] == ca, name
        assert entry["externally_managed"] is False, name
        assert entry["key_matches"] is True, name
        assert entry["state"] == "warning", name
        assert 19.9 < entry["days_left"] < 20.1, name
    for name in CHECK_EXPIRATION_CAS:
        assert kubeadm_rows[name]["is_ca"] and kubeadm_rows[name]["ca"] == name
        assert kubeadm_rows[name]["state"] == "ok"
    # What kubeadm does not list: kubelet.conf and the kubelet's own certs.
    entries = by_id(facts)
    assert entries["kubeconfig/kubelet.conf"]["ca"] == "ca"
    assert entries["kubelet/kubelet-client-current.pem"]["key_matches"] is True
    assert entries["kubelet/kubelet.crt"]["ca"] == "kubelet/kubelet.crt#chain"
    assert entries["kubeadm/apiserver"]["subject"] == "CN=kube-apiserver"
    assert "DNS:lb.example.com" in entries["kubeadm/apiserver"]["sans"]
    assert facts["summary"]["soonest"]["days_left"] < 21
    assert facts["certs"] == sorted(facts["certs"], key=lambda e: (e.get("not_after") is None, e.get("not_after") or ""))


def test_no_key_material_in_facts(kubeadm_tree, now):
    text = json.dumps(facts_of(kubeadm_tree / "cp1", now))
    assert "PRIVATE KEY" not in text
    assert "client-key-data" not in text
    key = (kubeadm_tree / "cp1/etc/kubernetes/pki/apiserver.key").read_bytes()
    assert base64.b64encode(key).decode()[:40] not in text


def test_worker_reads_kubelet_conf_through_its_file_reference(kubeadm_tree, now):
    facts = facts_of(kubeadm_tree / "w1", now)
    assert facts["node_role"] == "worker"
    entry = by_id(facts)["kubeconfig/kubelet.conf"]
    assert entry["cert_ref"] == "/var/lib/kubelet/pki/kubelet-client-current.pem"
    assert entry["subject"] == "CN=system:node:w1,O=system:nodes"
    assert (entry["ca"], entry["key_matches"], entry["externally_managed"]) == ("ca", True, True)


def test_now_option_answers_what_will_have_expired(kubeadm_tree, now):
    later = facts_of(kubeadm_tree / "cp1", now + 30 * pki.DAY)
    assert by_id(later)["kubeadm/apiserver"]["state"] == "expired"
    assert by_id(later)["kubeadm/ca"]["state"] == "ok"
    earlier = facts_of(kubeadm_tree / "cp1", now - 500 * pki.DAY)
    assert by_id(earlier)["kubeadm/apiserver"]["state"] == "not_yet_valid"


def test_external_ca_marks_ca_and_its_leaves_externally_managed(kubeadm_tree, now, tmp_path):
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    os.remove(root / "etc/kubernetes/pki/ca.key")
    entries = by_id(facts_of(root, now))
    for entry_id in ("kubeadm/ca", "kubeadm/apiserver", "kubeconfig/admin.conf"):
        assert entries[entry_id]["externally_managed"] is True, entry_id
    assert entries["kubeadm/etcd-server"]["externally_managed"] is False


def test_ecdsa_v128_cluster(tmp_path, now):
    cluster = pki.kubeadm_cluster(now, style="v1.28", key="ecdsa")
    pki.build_kubeadm_control_plane(tmp_path, cluster, "cp1", "10.0.0.11", now=now, init_node=True)
    entries = by_id(facts_of(tmp_path, now))
    assert entries["kubeadm/apiserver"]["key_type"] == "ECDSA-P256"
    assert entries["kubeadm/apiserver"]["key_matches"] is True
    assert "kubeconfig/super-admin.conf" not in entries  # kubeadm < 1.29 has none
    assert entries["kubeconfig/admin.conf"]["subject_o"] == ["system:masters"]


BAD_INPUT = [
    ("truncated", b"-----BEGIN CERTIFICATE-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n", "invalid", "truncated"),
    ("garbage", b"not a certificate at all\n", "invalid", "neither a PEM nor a DER"),
    ("empty", b"", "invalid", "is empty"),
    ("corrupt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "invalid", "corrupt"),
]


@pytest.mark.parametrize("label,content,state,words", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_cert_file_becomes_an_entry_and_nothing_is_lost(kubeadm_tree, now, tmp_path, label, content, state, words):
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    target = root / "etc/kubernetes/pki/apiserver.crt"
    target.write_bytes(content)
    entry = by_id(facts_of(root, now))["kubeadm/apiserver"]
    assert entry["state"] == state, label
    assert words in entry["message"] and "/etc/kubernetes/pki/apiserver.crt" in entry["message"]
    assert target.read_bytes() == content


def test_dangling_symlink_and_absent_file_are_missing(kubeadm_tree, now, tmp_path):
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    os.remove(root / "etc/kubernetes/pki/front-proxy-client.crt")
    os.remove(root / "var/lib/kubelet/pki/kubelet-client-current.pem")
    os.symlink("/var/lib/kubelet/pki/kubelet-client-gone.pem", root / "var/lib/kubelet/pki/kubelet-client-current.pem")
    entries = by_id(facts_of(root, now))
    assert entries["kubeadm/front-proxy-client"]["state"] == "missing"
    assert "restore it from a backup or renew it" in entries["kubeadm/front-proxy-client"]["message"]
    kubelet_conf = entries["kubeconfig/kubelet.conf"]
    assert kubelet_conf["state"] == "missing"
    assert "dangling symlink" in kubelet_conf["message"]


def test_key_that_does_not_match_makes_the_pair_invalid(kubeadm_tree, now, tmp_path):
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    shutil.copy(root / "etc/kubernetes/pki/apiserver-kubelet-client.key", root / "etc/kubernetes/pki/apiserver.key")
    entry = by_id(facts_of(root, now))["kubeadm/apiserver"]
    assert (entry["state"], entry["key_matches"]) == ("invalid", False)
    assert "apiserver.key does not match" in entry["message"]


def _ca_first(path, ca_pem):
    """Rewrite the PEM file ``path`` with ``ca_pem`` before what it holds; returns the new bytes."""
    data = ca_pem + path.read_bytes()
    path.write_bytes(data)
    return data


def _ca_first_in_kubeconfig(path, ca_pem):
    config = yaml.safe_load(path.read_text())
    user = config["users"][0]["user"]
    user["client-certificate-data"] = base64.b64encode(ca_pem + base64.b64decode(user["client-certificate-data"])).decode()
    path.write_text(yaml.safe_dump(config))
    return path.read_bytes()


# (entry, file rewritten, how, the file the message names)
CA_FIRST = [
    ("kubeadm/apiserver", "etc/kubernetes/pki/apiserver.crt", _ca_first, "/etc/kubernetes/pki/apiserver.crt"),
    ("kubeconfig/admin.conf", "etc/kubernetes/admin.conf", _ca_first_in_kubeconfig,
     "/etc/kubernetes/admin.conf (user kubernetes-admin)"),
    ("kubeconfig/kubelet.conf", "var/lib/kubelet/pki/kubelet-client-current.pem", _ca_first,
     "/var/lib/kubelet/pki/kubelet-client-current.pem"),
]


@pytest.mark.parametrize("entry_id, rel, rewrite, named", CA_FIRST, ids=[c[0] for c in CA_FIRST])
def test_a_leaf_written_after_its_ca_is_invalid_and_described_by_the_leaf(kubeadm_tree, now, tmp_path, entry_id, rel,
                                                                          rewrite, named):
    """Go's tls.X509KeyPair takes a file's first certificate as the leaf, so no component loads a leaf's file written
    CA first; kubeadm_renew refuses it. Before, the entry described the CA (ten years left) as the file's certificate,
    blamed the key, and made the file a CA of its own."""
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    before = by_id(facts_of(root, now))[entry_id]
    data = rewrite(root / rel, (root / "etc/kubernetes/pki/ca.crt").read_bytes())
    entries = by_id(facts_of(root, now))
    entry = entries[entry_id]
    assert entry["state"] == "invalid"
    assert entry["message"].startswith("%s starts with a CA certificate (CN=kubernetes) before its own (%s)"
                                       % (named, before["subject"]))
    assert "Put the leaf first" in entry["message"] and "expires" in entry["message"]  # and when the leaf does
    for key in ("subject", "not_after", "days_left", "fingerprint_sha256", "is_ca", "ca", "key_matches"):
        assert entry[key] == before[key], key
    assert entry["chain_length"] == before["chain_length"] + 1
    assert entries["kubeadm/ca"]["state"] == "ok" and entries["kubeadm/apiserver-kubelet-client"]["ca"] == "ca"
    assert (root / rel).read_bytes() == data


def test_a_ca_file_with_more_after_its_ca_is_not_a_chain_the_wrong_way_round(kubeadm_tree, now, tmp_path):
    """A CA's own file starts with the CA; whatever follows (a bundle, a stray leaf) does not make it a leaf's file."""
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    pki_dir = root / "etc/kubernetes/pki"
    ca = pki_dir / "ca.crt"
    ca.write_bytes(ca.read_bytes() + (pki_dir / "apiserver.crt").read_bytes())
    entry = by_id(facts_of(root, now))["kubeadm/ca"]
    assert (entry["state"], entry["subject"], entry["is_ca"], entry["chain_length"]) == ("ok", "CN=kubernetes", True, 2)


def test_kubeconfigs_without_cert_or_unparsable(kubeadm_tree, now, tmp_path):
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    (root / "etc/kubernetes/scheduler.conf").write_text("users: [unclosed\n")
    config = yaml.safe_load((root / "etc/kubernetes/controller-manager.conf").read_text())
    config["users"][0]["user"] = {"token": "abc"}
    (root / "etc/kubernetes/controller-manager.conf").write_text(yaml.safe_dump(config))
    os.makedirs(root / "root/.kube")
    (root / "root/.kube/config").write_text(yaml.safe_dump(config))
    entries = by_id(facts_of(root, now))
    assert entries["kubeconfig/scheduler.conf"]["state"] == "invalid"
    assert "not valid YAML" in entries["kubeconfig/scheduler.conf"]["message"]
    assert entries["kubeconfig/controller-manager.conf"]["state"] == "missing"
    assert "no client certificate" in entries["kubeconfig/controller-manager.conf"]["message"]
    assert entries["kubeconfig/root/.kube/config"]["state"] == "missing"


def test_extra_paths_and_globs(kubeadm_tree, now):
    facts = facts_of(kubeadm_tree / "cp1", now, distribution="none", paths=["/etc/kubernetes/pki/etcd/*.crt", "/nope.crt"])
    entries = by_id(facts)
    assert {"file/etc/kubernetes/pki/etcd/ca.crt", "file/etc/kubernetes/pki/etcd/server.crt"} <= set(entries)
    assert entries["file/etc/kubernetes/pki/etcd/server.crt"]["ca"] == "file/etc/kubernetes/pki/etcd/ca.crt"
    assert entries["file/nope.crt"]["state"] == "missing"


def test_rke1_control_plane_and_worker(rke1_tree, now):
    facts = facts_of(rke1_tree / "cp", now)
    assert (facts["distribution"], facts["node_role"]) == ("rke1", "control-plane")
    entries = by_id(facts)
    assert entries["rke1/kube-apiserver"]["ca"] == "rke1/kube-ca"
    assert entries["rke1/kube-apiserver-proxy-client"]["ca"] == "rke1/kube-apiserver-requestheader-ca"
    assert entries["rke1/kube-etcd-10-0-1-11"]["component"] == "etcd"
    assert entries["kubeconfig/kubecfg-kube-node.yaml"]["cert_ref"] == "/etc/kubernetes/ssl/kube-node.pem"
    kubelet = entries["kubelet/kubelet.crt"]
    assert (kubelet["state"], kubelet["ca"]) == ("expired", "kubelet/kubelet.crt#chain")
    worker = by_id(facts_of(rke1_tree / "worker", now))
    assert worker["rke1/kube-node"]["externally_managed"] is True  # kube-ca-key.pem lives on controlplanes only
    assert "rke1/kube-apiserver" not in worker


def test_k3s_server_sees_expired_dynamic_cert_behind_fresh_files(k3s_tree, now):
    facts = facts_of(k3s_tree / "server", now)
    assert (facts["distribution"], facts["node_role"]) == ("k3s", "server")
    entries = by_id(facts)
    serving = entries["k3s/server/dynamic-cert.json"]
    assert (serving["subject"], serving["state"], serving["ca"]) == ("CN=k3s,O=k3s", "expired", "k3s/server/server-ca")
    assert serving["key_matches"] is True
    assert entries["k3s/server/serving-kube-apiserver"]["state"] == "ok"
    assert entries["k3s/server/client-admin"]["ca"] == "k3s/server/client-ca"
    assert entries["k3s/server/etcd/peer-server-client"]["ca"] == "k3s/server/etcd/peer-ca"
    assert entries["kubeconfig/k3s.yaml"]["subject"] == "CN=system:admin,O=system:masters"
    assert not any(i.endswith(".nochain") or "temporary-certs" in i for i in entries)
    agent = facts_of(k3s_tree / "agent", now)
    assert (agent["distribution"], agent["node_role"]) == ("k3s", "agent")
    assert by_id(agent)["k3s/agent/serving-kubelet"]["ca"] == "k3s/agent/server-ca"


def test_corrupt_dynamic_cert_json(k3s_tree, now, tmp_path):
    root = tmp_path / "server"
    shutil.copytree(k3s_tree / "server", root, symlinks=True)
    (root / "var/lib/rancher/k3s/server/tls/dynamic-cert.json").write_text('{"metadata": {}, "data": {"tls.crt": "%%"')
    entry = by_id(facts_of(root, now))["k3s/server/dynamic-cert.json"]
    assert entry["state"] == "invalid" and "delete it and restart" in entry["message"]


def test_detect_empty_root(tmp_path):
    assert detect(NodeFS(str(tmp_path))) == ("none", "unknown")


# --- endpoints: real TLS servers on a loopback address of their own --------------------------------------------


def test_endpoints_tell_which_file_is_served(kubeadm_tree, now, tmp_path):
    host = "127.0.2.11"
    root = tmp_path / "cp1"
    cluster = pki.kubeadm_cluster(now)
    net = pki.KubeadmNet(apiserver_bind_address=host, etcd_local_host=host)
    pki.build_kubeadm_control_plane(root, cluster, "cp1", host, now=now, init_node=True, net=net)
    pki_dir = root / "etc/kubernetes/pki"
    servers = [
        TLSServer(pki_dir / "apiserver.crt", pki_dir / "apiserver.key", host=host, port=6443),
        # etcd serves a stale pair: the peer cert instead of the server cert.
        TLSServer(pki_dir / "etcd/peer.crt", pki_dir / "etcd/peer.key", host=host, port=2379),
        TLSServer(host=host, port=10250),  # speaks no TLS
    ]
    try:
        facts = gather(NodeFS(str(root)), now=now, probe=True, probe_host=host, probe_timeout=2)
    finally:
        for server in servers:
            server.close()
    entries = by_id(facts)
    api = entries["endpoint/%s:6443" % host]
    assert (api["state"], api["expected"], api["serves_expected"], api["ca"]) == ("ok", "kubeadm/apiserver", True, "ca")
    assert entries["kubeadm/apiserver"]["in_use"] is True
    assert entries["kubeadm/apiserver"]["served_on"] == "endpoint/%s:6443" % host
    assert entries["kubeadm/etcd-server"]["in_use"] is False
    assert "serves a different certificate" in entries["kubeadm/etcd-server"]["message"]
    assert facts["summary"]["not_in_use"] == ["kubeadm/etcd-server"]
    assert entries["endpoint/%s:10250" % host]["state"] == "invalid"
    assert entries["endpoint/%s:2380" % host]["state"] == "missing"
    assert "connection refused" in entries["endpoint/%s:2380" % host]["message"]


def test_absolute_symlinks_resolve_inside_rootfs(kubeadm_tree, now, tmp_path):
    """The kubelet writes kubelet-client-current.pem as an absolute link; a copied tree must not escape to this host."""
    root = tmp_path / "w1"
    shutil.copytree(kubeadm_tree / "w1", root, symlinks=True)
    link = root / "var/lib/kubelet/pki/kubelet-client-current.pem"
    target = os.path.basename(os.path.realpath(link))
    os.remove(link)
    os.symlink("/var/lib/kubelet/pki/" + target, link)
    entry = by_id(facts_of(root, now))["kubeconfig/kubelet.conf"]
    assert (entry["state"], entry["subject"]) == ("ok", "CN=system:node:w1,O=system:nodes")


def test_kubelet_endpoint_expects_what_upstream_serves(kubeadm_tree, tmp_path):
    """A leftover kubelet-server-current.pem is not served without serverTLSBootstrap (corrections.md §2)."""
    root = tmp_path / "w1"
    shutil.copytree(kubeadm_tree / "w1", root, symlinks=True)
    fs = NodeFS(str(root))
    (root / "var/lib/kubelet/pki/kubelet-server-current.pem").write_bytes(b"")

    def expected():
        layout = _layouts.layout_for(fs, "kubeadm", "worker", "127.0.0.1")
        return list(next(e.expects for e in layout.endpoints if e.component == "kubelet"))

    assert expected() == ["/var/lib/kubelet/pki/kubelet.crt"]
    config = root / "var/lib/kubelet/config.yaml"
    config.write_text(config.read_text() + "serverTLSBootstrap: true\n")
    assert expected() == ["/var/lib/kubelet/pki/kubelet-server-current.pem"]


def test_rke1_node_certs_are_named_after_the_internal_address(tmp_path, now):
    """rke pki/util.go GetCrtNameForHost: internal_address when set and not the address (corrections.md §5)."""
    nodes = [pki.RkeNode("203.0.113.11", ("controlplane", "etcd"), internal_address="10.0.1.11")]
    cluster = pki.rke1_cluster(nodes, now, leaf_issued_at=now - 100 * pki.DAY)
    pki.build_rke1_node(tmp_path, cluster, "203.0.113.11")
    assert (tmp_path / "etc/kubernetes/ssl/kube-etcd-10-0-1-11.pem").exists()

    def etcd_expects(**kwargs):
        layout = _layouts.layout_for(NodeFS(str(tmp_path)), "rke1", "control-plane", "203.0.113.11", **kwargs)
        return [list(e.expects) for e in layout.endpoints if e.component == "etcd"]

    assert etcd_expects() == []   # the inventory address names no cert: etcd would go unchecked
    assert etcd_expects(rke1_address="10.0.1.11") == [["/etc/kubernetes/ssl/kube-etcd-10-0-1-11.pem"]]
