# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import shutil
import stat

import pytest
import yaml

from ansible_collections.kubepki.fleet.plugins.module_utils import _rke, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.tests.lab import pki
from ansible_collections.kubepki.fleet.tests.unit.tlsserver import TLSServer

DAY = pki.DAY
PKI_DIR = "var/lib/kubelet/pki"


@pytest.fixture(scope="module")
def cluster_yml_text(tmp_path_factory, now):
    """The cluster.yml `rke config` style the lab writes: comments, block style, no generate_serving_certificate."""
    directory = tmp_path_factory.mktemp("rke-admin")
    cluster = pki.rke1_cluster([pki.RkeNode("10.0.1.11", ("controlplane", "etcd"))], now)
    pki.write_rke1_admin(directory, cluster)
    return (directory / "cluster.yml").read_text()


@pytest.fixture
def node(rke1_tree, tmp_path):
    root = tmp_path / "cp"
    shutil.copytree(rke1_tree / "cp", root, symlinks=True)
    return root


def served_by(pair_dir, now):
    server = TLSServer(pair_dir / "kubelet.crt", pair_dir / "kubelet.key")
    try:
        return _rke.probe_served("127.0.0.1", server.port, now)
    finally:
        server.close()


# -- regenerate -------------------------------------------------------------------------------------

def test_expired_kubelet_crt_is_due_and_moved_aside_keeping_modes(node, now):
    fs = NodeFS(str(node))
    due, skipped = _rke.plan_regenerate(fs, now, 30)
    assert skipped == [] and len(due) == 1
    item = due[0]
    assert item["subject"].startswith("CN=10.0.1.11@") and item["serial"] == "2" and item["days_left"] < 0
    assert item["in_use"] is None and "under threshold_days=30" in item["reason"]
    crt, key = (node / PKI_DIR / "kubelet.crt").read_bytes(), (node / PKI_DIR / "kubelet.key").read_bytes()

    moves = _rke.move_aside(fs, now)
    assert [m["src"] for m in moves] == [_rke.KUBELET_CRT, _rke.KUBELET_KEY]
    assert moves[0]["dest"] == _rke.KUBELET_CRT + ".kubepki-20261123T120000Z"
    assert not (node / PKI_DIR / "kubelet.crt").exists() and not (node / PKI_DIR / "kubelet.key").exists()
    aside_crt, aside_key = node / moves[0]["dest"].lstrip("/"), node / moves[1]["dest"].lstrip("/")
    assert (aside_crt.read_bytes(), aside_key.read_bytes()) == (crt, key)
    assert stat.S_IMODE(aside_crt.stat().st_mode) == 0o644 and stat.S_IMODE(aside_key.stat().st_mode) == 0o600


def test_move_aside_never_replaces_an_earlier_copy(node, now):
    fs = NodeFS(str(node))
    (node / PKI_DIR / "kubelet.crt.kubepki-20261123T120000Z").write_bytes(b"earlier")
    moves = _rke.move_aside(fs, now)
    assert moves[0]["dest"].endswith(".kubepki-20261123T120000Z-1")
    assert (node / PKI_DIR / "kubelet.crt.kubepki-20261123T120000Z").read_bytes() == b"earlier"


def test_fresh_certificate_is_skipped_and_force_makes_it_due(rke1_tree, now):
    fs = NodeFS(str(rke1_tree / "worker"))
    due, skipped = _rke.plan_regenerate(fs, now, 30)
    assert due == [] and "not under threshold_days=30" in skipped[0]["reason"]
    due, skipped = _rke.plan_regenerate(fs, now, 30, force=True)
    assert due[0]["reason"] == "force" and skipped == []


def test_served_kubelet_crt_is_in_use(node, now):
    served = served_by(node / PKI_DIR, now)
    assert served["subject"].startswith("CN=10.0.1.11@") and served["days_left"] < 0
    due, _skipped = _rke.plan_regenerate(NodeFS(str(node)), now, 30, served=served)
    assert due[0]["in_use"] is True and due[0]["fingerprint_sha256"] == served["fingerprint_sha256"]


def test_other_served_certificate_skips_when_fresh_and_refuses_when_expiring(node, rke1_tree, now):
    fs = NodeFS(str(node))
    fresh = served_by(rke1_tree / "worker" / PKI_DIR, now)
    due, skipped = _rke.plan_regenerate(fs, now, 30, served=fresh)
    assert due == [] and skipped[0]["reason"].startswith("not in use: 127.0.0.1:")

    expiring = dict(fresh, days_left=3.0)
    before = (node / PKI_DIR / "kubelet.crt").read_bytes()
    with pytest.raises(_rke.FixError, match="would not change what is served. Renew the certificate the kubelet serves"):
        _rke.plan_regenerate(fs, now, 30, served=expiring)
    assert (node / PKI_DIR / "kubelet.crt").read_bytes() == before


def test_tls_cert_file_and_rotated_serving_cert_mean_kubelet_crt_is_not_in_use(node, now):
    fs = NodeFS(str(node))
    due, skipped = _rke.plan_regenerate(fs, now, 30, tls_cert_file="/etc/kubernetes/ssl/kube-kubelet-10-0-1-11.pem")
    assert due == [] and "--tls-cert-file=/etc/kubernetes/ssl/kube-kubelet-10-0-1-11.pem" in skipped[0]["reason"]
    (node / PKI_DIR / "kubelet-server-current.pem").write_bytes(b"")
    # a leftover rotating cert is not served without serverTLSBootstrap (cmd/kubelet/app/server.go InitializeTLS)
    due, skipped = _rke.plan_regenerate(fs, now, 30)
    assert [i["name"] for i in due] == ["kubelet.crt"]
    (node / "var/lib/kubelet/config.yaml").write_text("kind: KubeletConfiguration\nserverTLSBootstrap: true\n")
    due, skipped = _rke.plan_regenerate(fs, now, 30)
    assert due == [] and "serverTLSBootstrap" in skipped[0]["reason"]
    (node / "var/lib/kubelet/config.yaml").write_text("kind: KubeletConfiguration\ntlsCertFile: /etc/pki/kubelet.pem\n")
    (node / PKI_DIR / "kubelet-server-current.pem").unlink()
    due, skipped = _rke.plan_regenerate(fs, now, 30)
    assert due == [] and "tlsCertFile /etc/pki/kubelet.pem" in skipped[0]["reason"]


def test_a_pair_an_earlier_run_moved_aside_is_due_until_the_kubelet_writes_a_new_one(node, now):
    """A run killed after the move, before the kubelet's restart: the next run finishes it, though the old cert is
    fresh, and can put back that run's pair - never an older run's key."""
    fs = NodeFS(str(node))
    crt = (node / PKI_DIR / "kubelet.crt").read_bytes()
    older = _rke.move_aside(fs, now - 300 * DAY)
    shutil.copy(node / older[0]["dest"].lstrip("/"), node / PKI_DIR / "kubelet.crt")
    shutil.copy(node / older[1]["dest"].lstrip("/"), node / PKI_DIR / "kubelet.key")
    assert _rke.plan_regenerate(fs, now, -9999)[0] == []       # not due by its days
    moved = _rke.move_aside(fs, now)
    due, _skipped = _rke.plan_regenerate(fs, now, -9999)
    assert due[0]["moved_aside"] == moved[0]["dest"]
    assert due[0]["fingerprint_sha256"] == _x509.fingerprint_sha256(_x509.load_certificates(crt, "kubelet.crt")[0])
    assert due[0]["reason"].startswith("moved aside to /var/lib/kubelet/pki/kubelet.crt.kubepki-20261123T120000Z by an earlier run")
    assert _rke.earlier_moves(fs, due[0]) == moved
    # killed between the two renames: the key is still in place and moves now
    os.rename(node / moved[1]["dest"].lstrip("/"), node / PKI_DIR / "kubelet.key")
    assert _rke.earlier_moves(fs, due[0]) == moved[:1]


def test_absent_kubelet_crt_says_what_to_do(node, now):
    fs = NodeFS(str(node))
    for name in os.listdir(node / PKI_DIR):
        os.remove(node / PKI_DIR / name)
    with pytest.raises(_rke.FixError, match="kubelet.crt is absent: .*--tls-cert-file"):
        _rke.plan_regenerate(fs, now, 30)


def test_corrupt_kubelet_crt_is_due(node, now):
    (node / PKI_DIR / "kubelet.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
    due, _skipped = _rke.plan_regenerate(NodeFS(str(node)), now, 30)
    assert due[0]["reason"].startswith("unreadable: ") and due[0]["not_after"] is None


def test_kubeadm_kubelet_crt_is_handled_the_same_way(kubeadm_tree, now):
    due, _skipped = _rke.plan_regenerate(NodeFS(str(kubeadm_tree / "cp1")), now, 30)
    assert due[0]["subject"].startswith("CN=cp1@") and 19 < due[0]["days_left"] < 21


# -- cluster.yml --------------------------------------------------------------------------------------------

def edit(text):
    loaded_text, config = _rke.load_cluster_yml(text.encode("utf-8"), "cluster.yml")
    return _rke.set_serving_flag(loaded_text, config, "cluster.yml")


def only_change(before, after, added=(), replaced=()):
    """True when ``after`` is ``before`` plus the ``added`` lines and with the ``replaced`` (old, new) lines."""
    old, new = before.splitlines(True), after.splitlines(True)
    for old_line, new_line in replaced:
        old = [new_line if line == old_line else line for line in old]
    return [line for line in new if line not in added] == old and all(line in new for line in added)


def test_adds_the_key_to_the_kubelet_block_keeping_every_other_byte(cluster_yml_text):
    new, before = edit(cluster_yml_text)
    assert before is None
    assert only_change(cluster_yml_text, new, added=["    generate_serving_certificate: true\n"])
    assert "    fail_swap_on: false\n    generate_serving_certificate: true\n  kubeproxy:\n" in new
    assert new.startswith("# If you intended to deploy Kubernetes in an air-gapped environment,\n")
    assert yaml.safe_load(new)["services"]["kubelet"]["generate_serving_certificate"] is True


def test_replaces_an_existing_false_in_place(cluster_yml_text):
    text = cluster_yml_text.replace("    fail_swap_on: false\n", "    fail_swap_on: false\n    generate_serving_certificate: false  # RKE default\n")
    new, before = edit(text)
    assert before is False
    assert only_change(text, new, replaced=[("    generate_serving_certificate: false  # RKE default\n",
                                             "    generate_serving_certificate: true  # RKE default\n")])


def test_already_true_is_left_alone(cluster_yml_text):
    text, _before = edit(cluster_yml_text)
    again, before = edit(text)
    assert before is True and again == text


def test_creates_the_kubelet_block_when_missing(cluster_yml_text):
    config = yaml.safe_load(cluster_yml_text)
    block = "  kubelet:\n" + "".join("    %s\n" % line for line in
                                     yaml.safe_dump(config["services"]["kubelet"], sort_keys=False).splitlines())
    text = cluster_yml_text.replace(block, "")
    assert text != cluster_yml_text
    new, _before = edit(text)
    assert only_change(text, new, added=["  kubelet:\n", "    generate_serving_certificate: true\n"])
    assert new.index("  kubelet:\n") > new.index("  kubeproxy:\n") and new.index("  kubelet:\n") < new.index("network:")


def test_creates_services_and_keeps_crlf_and_a_missing_final_newline():
    text = "# cluster\r\nnodes:\r\n- address: 10.0.0.1\r\n  role: [worker]"
    new, _before = edit(text)
    assert new == text + "\r\nservices:\r\n  kubelet:\r\n    generate_serving_certificate: true\r\n"


def test_follows_the_file_indentation():
    text = "services:\n    kubelet:\n        image: x\n"
    assert edit(text)[0] == text + "        generate_serving_certificate: true\n"


@pytest.mark.parametrize("text, message", [
    ("nodes: [\nservices:\n", "is not valid YAML, and rke up would reject it too: line 3, column 1"),
    ("services:\n  kubelet: {image: x}\n", "services.kubelet is written in flow style"),
    ("{services: {kubelet: {}}}\n", "the top level is written in flow style"),
    ("services:\n  etcd: &base\n    image: x\n  kubelet: *base\n", "line 2 uses a YAML anchor or alias"),
    ("services:\n  kubelet:\n    <<: *x\n", "is not valid YAML"),
    ("x: &x {image: y}\nservices:\n  kubelet:\n    <<: *x\n", "line 4 uses a YAML anchor or alias"),
    ("- a\n- b\n", "is not one YAML mapping"),
    ("a: 1\n---\nb: 2\n", "is not one YAML mapping"),
    ("services:\n  kubelet:\n  kubelet:\n    image: x\n", "services has kubelet twice (lines 2, 3)"),
    ("services:\n  kubelet: x\n", "services.kubelet is not a mapping (line 2)"),
    ("services:\n  kubelet:\n    generate_serving_certificate: |\n      false\n", "is not a one-line value"),
])
def test_refuses_what_it_cannot_edit_safely(text, message):
    with pytest.raises(_rke.FixError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        edit(text)
    assert "nothing was changed" in str(caught.value)


def test_tls_cert_file_in_extra_args_is_found(cluster_yml_text):
    config = yaml.safe_load(cluster_yml_text)
    assert _rke.kubelet_tls_cert_file(config) is None
    config["services"]["kubelet"]["extra_args"] = {"tls-cert-file": "/etc/ssl/kubelet.pem"}
    assert _rke.kubelet_tls_cert_file(config) == "/etc/ssl/kubelet.pem"
