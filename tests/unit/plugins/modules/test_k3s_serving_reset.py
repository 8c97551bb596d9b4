# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

import pytest

from ansible_collections.kubepki.fleet.plugins.module_utils import _nodelock
from ansible_collections.kubepki.fleet.plugins.modules import k3s_serving_reset
from ansible_collections.kubepki.fleet.tests.unit.conftest import DAY, NOW
from ansible_collections.kubepki.fleet.tests.unit.plugins.module_utils.test_k3s import LEGACY, K3sNode, digest
from ansible_collections.kubepki.fleet.tests.unit.plugins.module_utils.test_nodelock import held_by_another_process


@pytest.fixture
def node(tmp_path):
    k3s = K3sNode(tmp_path)
    yield k3s
    k3s.close()


def args(k3s, **extra):
    """The seed-003 state on a release before the July 2022 fix, where it arises."""
    return dict(dict(rootfs=str(k3s.root), probe_host="127.0.0.1", supervisor_port=k3s.supervisor.port, api_url=k3s.api.url,
                     now="2026-11-23T12:00:00Z", timeout=3, version=LEGACY), **extra)


def test_check_mode_and_diff_show_the_plan_and_change_nothing(run_module, node):
    before = digest(node.root)
    result = run_module(k3s_serving_reset, _ansible_check_mode=True, _ansible_diff=True, **args(node))
    assert result["changed"] is True and "skipped" not in result
    assert result["restart"] == ["k3s"] and [r["name"] for r in result["renewed"]] == ["k3s-serving"]
    assert result["diff"]["before"]["k3s-serving"]["not_after"] == result["served"]["not_after"]
    assert result["diff"]["after"] == {"k3s-serving": {"not_after": "(new at next start)"}}
    assert digest(node.root) == before and node.api.secret is not None


def test_reset_then_a_second_run_changes_nothing(run_module, node):
    first = run_module(k3s_serving_reset, **args(node))
    assert first["changed"] and first["secret"]["deleted"] and first["dynamic_cert"]["moved_to"]
    node.restart()
    after = digest(node.root)
    second = run_module(k3s_serving_reset, **args(node))
    assert (second["changed"], second["renewed"], second["restart"], second["in_sync"]) == (False, [], [], True)
    assert digest(node.root) == after


def test_a_reset_stopped_before_its_restart_is_owed_until_k3s_serves_another_certificate(run_module, node):
    """A forced reset of a fresh certificate, then the run stopped before restarting k3s: the next run, not forced,
    plans the same reset with the record's reason; once k3s serves a new certificate, nothing is owed."""
    node.restart()
    forced = run_module(k3s_serving_reset, force=True, **args(node))
    assert forced["changed"] and forced["secret"]["deleted"] and forced["restart_owed"] == []
    record = json.loads((node.root / "var/lib/kubepki/restart-owed.json").read_text())
    assert record["k3s"]["served"] == forced["served"]["fingerprint_sha256"] and record["k3s"]["certs"] == ["k3s-serving"]
    owed = run_module(k3s_serving_reset, _ansible_check_mode=True, **args(node))
    assert owed["restart"] == ["k3s"] and owed["restart_owed"] == ["k3s"]
    assert owed["renewed"][0]["how"] == "reset" and owed["renewed"][0]["reasons"] == [
        "owed by a run that renewed k3s-serving at %s and was stopped before restarting it" % record["k3s"]["since"]]
    assert run_module(k3s_serving_reset, **args(node))["changed"]       # a secret already gone is fine
    node.restart()
    done = run_module(k3s_serving_reset, _ansible_check_mode=True, **args(node))
    assert (done["renewed"], done["restart"], done["restart_owed"]) == ([], [], [])


def test_a_real_run_waits_for_the_node_lock_then_fails_naming_the_holder(run_module, node, monkeypatch):
    monkeypatch.setattr(_nodelock, "WAIT_SECONDS", 0.5)
    before = digest(node.root)
    with held_by_another_process(node.root) as holder:
        planned = run_module(k3s_serving_reset, _ansible_check_mode=True, **args(node))
        result = run_module(k3s_serving_reset, **args(node))
    assert planned["changed"] and planned["restart"] == ["k3s"]
    assert result["failed"] and "another kubepki renewal runs on this node (pid %d since " % holder.pid in result["msg"]
    assert digest(node.root) == before and node.api.secret is not None
    assert run_module(k3s_serving_reset, **args(node))["secret"]["deleted"]


def test_leaves_are_moved_aside_on_a_copied_tree(run_module, tmp_path):
    """With a rootfs the k3s binary cannot act on the tree: leaves beyond the window go native."""
    k3s = K3sNode(tmp_path, serving_issued_at=NOW - 10 * DAY)
    try:
        result = run_module(k3s_serving_reset, threshold_days=340, renew_window_days=120, **args(k3s))
    finally:
        k3s.close()
    assert result["leaf_method"] == "native" and result["renew_window_source"] == "renew_window_days"
    assert "k3s-serving" not in [r["name"] for r in result["renewed"]]


def test_api_unreachable_fails_with_what_to_do(run_module, node):
    before = digest(node.root)
    result = run_module(k3s_serving_reset, **dict(args(node), api_url="https://127.0.0.1:1"))
    assert result["failed"] and "is k3s running? Check with 'systemctl status k3s'" in result["msg"]
    assert digest(node.root) == before


def test_not_a_k3s_server(run_module, tmp_path):
    result = run_module(k3s_serving_reset, rootfs=str(tmp_path))
    assert result["failed"] and "this is not a k3s server" in result["msg"]


def test_bad_now(run_module, node):
    result = run_module(k3s_serving_reset, **dict(args(node), now="tomorrow"))
    assert result["failed"] and "ISO 8601" in result["msg"]


def test_a_node_rancher_provisioned_is_left_alone_unless_told(run_module, node):
    (node.root / "etc/rancher/agent").mkdir(parents=True)
    (node.root / "etc/rancher/agent/config.yaml").write_text("workDirectory: /var/lib/rancher/agent/work\n")
    before = digest(node.root)
    result = run_module(k3s_serving_reset, **args(node))
    assert (result["changed"], result["renewed"], result["restart"]) == (False, [], [])
    assert result["managed_by"][0]["manager"] == "Rancher"
    assert result["skipped_certs"][0]["name"] == "k3s-serving" and "left alone: Rancher" in result["skipped_certs"][0]["reason"]
    assert digest(node.root) == before and node.api.secret is not None
    result = run_module(k3s_serving_reset, renew_managed=True, **args(node))
    assert result["changed"] and result["secret"]["deleted"]


def test_a_current_release_gets_the_trigger_file_and_keeps_its_secret(run_module, node):
    """The same expired served cert on k3s v1.33.6: it should have renewed it by itself; the repair is the trigger
    file read at start, never deleting a secret that k3s would create again."""
    result = run_module(k3s_serving_reset, **args(node, version="k3s version v1.33.6+k3s1 (0d08c226)\ngo version go1.24.9"))
    assert result["changed"] and result["release"]["line"] == "recreates"
    assert [(r["name"], r["how"]) for r in result["renewed"]] == [("k3s-serving", "regenerate")]
    assert "yet not renewed" in result["renewed"][0]["reasons"][0]
    assert node.api.secret is not None and not result["secret"]["deleted"] and result["moved"] == []
    trigger = node.tls / "dynamic-cert-regenerate"
    assert trigger.read_bytes() == b"" and oct(trigger.stat().st_mode & 0o777) == "0o600"
