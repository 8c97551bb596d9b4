# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

import pytest
import yaml

from ansible_collections.kubepki.fleet.plugins.module_utils import _nodelock
from ansible_collections.kubepki.fleet.plugins.modules import rke_kubelet_fix
from ansible_collections.kubepki.fleet.tests.lab import pki
from ansible_collections.kubepki.fleet.tests.unit.plugins.module_utils.test_nodelock import held_by_another_process

PKI_DIR = "var/lib/kubelet/pki"
# Nothing listens there: probing it is quick and says so.
CLOSED_PORT = 1
LOCK = _nodelock.LOCK_PATH.lstrip("/")


def digest(root):
    """Content and mode of every file under ``root`` but the node lock, which a real run leaves behind (empty)."""
    result = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if path == os.path.join(root, LOCK):
                continue
            with open(path, "rb") as handle:
                result[os.path.relpath(path, root)] = (hashlib.sha256(handle.read()).hexdigest(), stat.S_IMODE(os.stat(path).st_mode))
    return result


@pytest.fixture(scope="module")
def admin_dir(tmp_path_factory, now):
    directory = tmp_path_factory.mktemp("rke-admin")
    pki.write_rke1_admin(directory, pki.rke1_cluster([pki.RkeNode("10.0.1.11", ("controlplane", "etcd"))], now))
    return directory


@pytest.fixture
def node(rke1_tree, admin_dir, tmp_path):
    """An RKE1 control plane whose kubelet.crt expired 5 days ago, with the workstation's cluster.yml beside it."""
    root = tmp_path / "cp"
    shutil.copytree(rke1_tree / "cp", root, symlinks=True)
    shutil.copytree(admin_dir, root / "home/rke")
    return root


def fix(run_module, root, **args):
    args.setdefault("probe", False)
    return run_module(rke_kubelet_fix, rootfs=str(root), now="2026-11-23T12:00:00Z", **args)


def restart_kubelet(root, now):
    """What the kubelet does at start when kubelet.crt/kubelet.key are missing."""
    leaf, ca = pki.self_signed_serving("10.0.1.11", now)
    pki.write_file(root / PKI_DIR / "kubelet.crt", pki.cert_pem(leaf.cert, ca.cert), 0o644)
    pki.write_file(root / PKI_DIR / "kubelet.key", pki.key_pem(leaf.key), 0o600)


def test_a_real_regenerate_waits_for_the_node_lock_then_fails_naming_the_holder(run_module, node, monkeypatch):
    monkeypatch.setattr(_nodelock, "WAIT_SECONDS", 0.5)
    before = digest(node)
    with held_by_another_process(node) as holder:
        planned = fix(run_module, node, _ansible_check_mode=True)
        result = fix(run_module, node)
    assert planned["changed"] and planned["restart"] == ["kubelet"]
    assert result["failed"] and "another kubepki renewal runs on this node (pid %d since " % holder.pid in result["msg"]
    assert digest(node) == before
    assert fix(run_module, node)["moved"]


def test_regenerate_moves_the_pair_aside_and_asks_for_a_kubelet_restart(run_module, node, now):
    before = digest(node / PKI_DIR)
    result = fix(run_module, node, _ansible_diff=True)
    assert result["changed"] is True and result["restart"] == ["kubelet"]
    assert result["rke_up_required"] is False and result["skipped_certs"] == []
    renewed = result["renewed"][0]
    assert renewed["name"] == "kubelet.crt" and renewed["days_left"] < 0
    assert renewed["new_not_after"] == "(new at next kubelet start)"
    assert result["diff"]["before"]["kubelet.crt"]["not_after"] == renewed["not_after"]
    assert result["diff"]["after"]["kubelet.crt"]["not_after"] == "(new at next kubelet start)"
    assert "PRIVATE KEY" not in json.dumps(result)

    after = digest(node / PKI_DIR)
    assert set(after) == {os.path.basename(m["dest"]) for m in result["moved"]}
    assert after["kubelet.crt.kubepki-" + result["moved"][0]["dest"].rsplit("-", 1)[1]] == before["kubelet.crt"]
    assert sorted(mode for _sha, mode in after.values()) == [0o600, 0o644]

    restart_kubelet(node, now)
    fresh = digest(node)
    second = fix(run_module, node)
    assert (second["changed"], second["renewed"], second["restart"], second["moved"]) == (False, [], [], [])
    assert "not under threshold_days=30" in second["skipped_certs"][0]["reason"]
    assert digest(node) == fresh


def test_check_mode_changes_no_byte(run_module, node):
    before = digest(node)
    result = fix(run_module, node, _ansible_check_mode=True)
    assert result["changed"] is True and result["moved"] == [] and result["restart"] == ["kubelet"]
    assert digest(node) == before


def test_probe_that_finds_no_kubelet_does_not_stop_the_fix(run_module, node):
    result = fix(run_module, node, probe=True, port=CLOSED_PORT, _ansible_check_mode=True)
    assert "connection refused" in result["served"]["error"] and result["renewed"][0]["in_use"] is None


def test_kubeadm_node(run_module, kubeadm_tree, tmp_path):
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    result = fix(run_module, root)
    assert result["changed"] and result["renewed"][0]["subject"].startswith("CN=cp1@")
    assert not (root / PKI_DIR / "kubelet.crt").exists()
    assert (root / PKI_DIR / "kubelet-client-current.pem").exists()


def test_absent_kubelet_crt_fails_with_what_to_do(run_module, node):
    os.remove(node / PKI_DIR / "kubelet.crt")
    before = digest(node)
    result = fix(run_module, node)
    assert result["failed"] and "kubelet.crt is absent" in result["msg"] and "restart the kubelet" in result["msg"]
    assert digest(node) == before


def test_regenerate_skips_when_cluster_yml_gives_a_tls_cert_file(run_module, node):
    cluster_yml = node / "home/rke/cluster.yml"
    cluster_yml.write_text(cluster_yml.read_text().replace(
        "    extra_args: {}\n    cluster_domain:", "    extra_args:\n      tls-cert-file: /etc/ssl/kubelet.pem\n    cluster_domain:"))
    before = digest(node)
    result = fix(run_module, node, cluster_yml="/home/rke/cluster.yml")
    assert result["changed"] is False and "--tls-cert-file=/etc/ssl/kubelet.pem" in result["skipped_certs"][0]["reason"]
    assert digest(node) == before


# -- generate_serving_certificate --------------------------------------------------------------------------

def serving(run_module, node, **args):
    return fix(run_module, node, mode="generate_serving_certificate", cluster_yml="/home/rke/cluster.yml", **args)


def test_sets_the_option_keeping_every_other_byte_and_mode(run_module, node):
    cluster_yml = node / "home/rke/cluster.yml"
    text = cluster_yml.read_text()
    others = {k: v for k, v in digest(node).items() if k != "home/rke/cluster.yml"}
    result = serving(run_module, node, _ansible_diff=True)
    assert result["changed"] is True and result["rke_up_required"] is True and result["rke_up_ran"] is False
    assert result["cluster_yml"] == {"path": "/home/rke/cluster.yml", "generate_serving_certificate_before": None}
    assert result["restart"] == [] and result["renewed"] == []
    new = cluster_yml.read_text()
    assert new == text.replace("    fail_swap_on: false\n", "    fail_swap_on: false\n    generate_serving_certificate: true\n")
    assert (result["diff"]["before"], result["diff"]["after"]) == (
        "services.kubelet.generate_serving_certificate: (absent)\n", "services.kubelet.generate_serving_certificate: true\n")
    assert stat.S_IMODE(cluster_yml.stat().st_mode) == 0o640
    assert {k: v for k, v in digest(node).items() if k != "home/rke/cluster.yml"} == others

    again = serving(run_module, node)
    assert (again["changed"], again["rke_up_required"]) == (False, False)
    assert again["cluster_yml"]["generate_serving_certificate_before"] is True
    assert cluster_yml.read_text() == new


def test_check_mode_shows_the_diff_and_writes_nothing(run_module, node):
    before = digest(node)
    result = serving(run_module, node, _ansible_check_mode=True, _ansible_diff=True)
    assert result["changed"] is True and "generate_serving_certificate: true" in result["diff"]["after"]
    assert digest(node) == before


@pytest.mark.parametrize("content, message", [
    (None, "cluster_yml: /home/rke/cluster.yml is absent; give the path of the cluster.yml that rke up uses"),
    ("nodes: [\nservices:\n", "is not valid YAML, and rke up would reject it too: line 3, column 1"),
    ("services:\n  kubelet: {image: x}\n", "services.kubelet is written in flow style"),
    ("services:\n  kubelet:\n    extra_args:\n      tls-cert-file: /etc/ssl/k.pem\n",
     "gives the kubelet tls-cert-file=/etc/ssl/k.pem in services.kubelet.extra_args: the kubelet serves that file"),
])
def test_bad_cluster_yml_fails_and_loses_nothing(run_module, node, content, message):
    cluster_yml = node / "home/rke/cluster.yml"
    if content is None:
        cluster_yml.unlink()
    else:
        cluster_yml.write_text(content)
    before = digest(node)
    result = serving(run_module, node)
    assert result["failed"] and message in result["msg"]
    assert digest(node) == before


def test_rke_up_without_the_binary_or_under_a_rootfs_fails_before_writing(run_module, node):
    before = digest(node)
    cluster_yml = str(node / "home/rke/cluster.yml")
    result = run_module(rke_kubelet_fix, mode="generate_serving_certificate", cluster_yml=cluster_yml, rke_up=True,
                        rke_binary="rke-not-installed-here")
    assert result["failed"] and "rke binary (rke-not-installed-here) is not found" in result["msg"]
    assert "run 'rke up --config %s' yourself" % cluster_yml in result["msg"]
    result = serving(run_module, node, rke_up=True)
    assert result["failed"] and "rke_up needs rootfs=/" in result["msg"]
    assert digest(node) == before


@pytest.fixture
def fake_rke(tmp_path):
    """An `rke` that records its arguments and working directory, and fails when asked to."""
    script = tmp_path / "bin/rke"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho \"$PWD $*\" > \"$(dirname \"$0\")/called\"\necho 'INFO[0042] Finished building Kubernetes cluster'\n"
                      "[ -e \"$(dirname \"$0\")/fail\" ] && { echo 'FATA[0001] cannot reach 10.0.1.11' >&2; exit 1; }\nexit 0\n")
    script.chmod(0o755)
    return script


def test_rke_up_runs_once_when_the_option_changes(run_module, node, fake_rke):
    # rke up needs rootfs=/: the file is given by its real path.
    cluster_yml = str(node / "home/rke/cluster.yml")
    result = run_module(rke_kubelet_fix, mode="generate_serving_certificate", cluster_yml=cluster_yml, rke_up=True,
                        rke_binary=str(fake_rke))
    assert result["changed"] and result["rke_up_ran"] is True and result["rke_up_required"] is False
    assert result["rke_up_output"] == ["INFO[0042] Finished building Kubernetes cluster"]
    assert (fake_rke.parent / "called").read_text() == "%s up --config %s\n" % (os.path.dirname(cluster_yml), cluster_yml)

    (fake_rke.parent / "called").unlink()
    again = run_module(rke_kubelet_fix, mode="generate_serving_certificate", cluster_yml=cluster_yml, rke_up=True,
                       rke_binary=str(fake_rke))
    assert again["changed"] is False and not (fake_rke.parent / "called").exists()

    (fake_rke.parent / "fail").write_text("")
    forced = run_module(rke_kubelet_fix, mode="generate_serving_certificate", cluster_yml=cluster_yml, rke_up=True,
                        rke_binary=str(fake_rke), force=True)
    assert forced["failed"] and "failed (rc 1); cluster.yml is unchanged" in forced["msg"]
    assert "cannot reach 10.0.1.11" in forced["msg"]


SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\\n        b3BlbnNzaC1rZXktdjEAAAAA-planted\\n        -----END OPENSSH PRIVATE KEY-----"
REGISTRY_PASSWORD = "hunter2-registry-planted"


@pytest.mark.parametrize("check_mode", [True, False])
def test_diff_shows_the_changed_key_and_no_secret(run_module, node, check_mode):
    cluster_yml = node / "home/rke/cluster.yml"
    text = cluster_yml.read_text().replace("ssh_key: ''", 'ssh_key: "%s"' % SSH_KEY, 1)
    text += "private_registries:\n- url: registry.example.com\n  user: ci\n  password: %s\n" % REGISTRY_PASSWORD
    cluster_yml.write_text(text)
    assert "planted" in yaml.safe_load(text)["nodes"][0]["ssh_key"]
    result = serving(run_module, node, _ansible_diff=True, _ansible_check_mode=check_mode)
    assert result["changed"] is True
    assert result["diff"]["before"] == "services.kubelet.generate_serving_certificate: (absent)\n"
    assert result["diff"]["after"] == "services.kubelet.generate_serving_certificate: true\n"
    shown = json.dumps(result)
    assert "b3BlbnNzaC1rZXktdjEAAAAA-planted" not in shown and REGISTRY_PASSWORD not in shown
