# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.kubepki.fleet.plugins.module_utils import _etcd
from ansible_collections.kubepki.fleet.plugins.modules import etcd_quorum

ANSWERS = {"https://10.0.0.11:2379": (200, '{"health":"true"}'), "https://10.0.0.12:2379": (200, '{"health":"true"}')}
LISTED = [dict(name="cp%d" % i, id=str(i), client_url="https://10.0.0.1%d:2379" % i, peer_url=None, learner=False)
          for i in (1, 2, 3)]


def fake_cluster(monkeypatch, asked):
    def members(self, endpoints=()):
        asked.append(list(endpoints))
        return LISTED, self.local_url

    def ask(self, url, path, method="GET", body=None):
        if url not in ANSWERS:
            raise _etcd.EtcdError("does not answer ([Errno 111] Connection refused)")
        return ANSWERS[url]

    monkeypatch.setattr(_etcd.Cluster, "members", members)
    monkeypatch.setattr(_etcd.Cluster, "_ask", ask)


def test_without_an_etcd_manifest_nothing_is_checked(run_module, tmp_path):
    result = run_module(etcd_quorum, rootfs=str(tmp_path))
    assert not result.get("failed") and result["stacked"] is False and not result["changed"]


def test_a_member_down_fails_the_restart_check_and_names_it(run_module, kubeadm_node, monkeypatch):
    asked = []
    fake_cluster(monkeypatch, asked)
    result = run_module(etcd_quorum, rootfs=str(kubeadm_node), endpoints=["10.0.0.12", ""], _ansible_check_mode=True)
    assert result["failed"] and result["member"] == "cp1" and result["down"] == ["cp3"]
    assert result["msg"].startswith("etcd member cp3 (https://10.0.0.13:2379) does not answer: restarting etcd on cp1")
    assert asked == [["10.0.0.12"]]
    assert [m["healthy"] for m in result["members"]] == [True, True, False]
    assert "key" not in str(result).replace("key_file", "")


def test_serving_with_two_of_three(run_module, kubeadm_node, monkeypatch):
    fake_cluster(monkeypatch, [])
    result = run_module(etcd_quorum, rootfs=str(kubeadm_node), purpose="serving")
    assert not result.get("failed") and result["healthy"] == 2 and result["quorum"] == 2
