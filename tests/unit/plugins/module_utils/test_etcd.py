# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

import pytest

from ansible_collections.kubepki.fleet.plugins.module_utils import _etcd

DOWN = "does not answer ([Errno 111] Connection refused)"


def member(name, healthy=True, detail=None, learner=False, number=None):
    number = number or int(name[-1])
    return dict(name=name, id="%x" % number, client_url="https://127.0.1.1%d:2379" % number, learner=learner,
                healthy=healthy, detail=detail or ("healthy" if healthy else DOWN))


@pytest.mark.parametrize("voting, need", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum_is_a_majority_of_the_voting_members(voting, need):
    assert _etcd.quorum(voting) == need


def test_a_member_down_of_three_refuses_the_restart_naming_it():
    verdict = _etcd.decide([member("alpha-cp1"), member("alpha-cp2"), member("alpha-cp3", False)], "alpha-cp1")
    assert not verdict["ok"] and verdict["left"] == 1 and verdict["down"] == ["alpha-cp3"]
    assert verdict["msg"] == ("etcd member alpha-cp3 (https://127.0.1.13:2379) does not answer: restarting etcd on alpha-cp1 "
                              "would leave 1 of 3 members, below quorum (2). Bring it back, then run renew.yml again.")


def test_all_three_healthy_allow_the_restart():
    verdict = _etcd.decide([member("alpha-cp1"), member("alpha-cp2"), member("alpha-cp3")], "alpha-cp2")
    assert verdict["ok"] and verdict["msg"] == "restarting etcd on alpha-cp2 leaves 2 of 3 members"


def test_the_restarting_member_itself_down_does_not_count():
    """Its etcd is down already: restarting it takes nothing away (and may be what brings it back)."""
    verdict = _etcd.decide([member("alpha-cp1", False), member("alpha-cp2"), member("alpha-cp3")], "alpha-cp1")
    assert verdict["ok"] and verdict["left"] == 2


def test_five_members_spare_one_more_but_not_two():
    five = [member("m%d" % i, number=i) for i in range(1, 6)]
    five[4] = member("m5", False, number=5)
    assert _etcd.decide(five, "m1")["ok"]
    five[3] = member("m4", False, "answers unhealthy (RAFT NO LEADER)", number=4)
    verdict = _etcd.decide(five, "m1")
    assert not verdict["ok"]
    assert verdict["msg"].startswith("etcd member m5 (https://127.0.1.15:2379) does not answer; m4 (https://127.0.1.14:2379) "
                                     "answers unhealthy (RAFT NO LEADER): restarting etcd on m1 would leave 2 of 5 members, "
                                     "below quorum (3). Bring them back")


def test_two_members_down_are_named_together():
    verdict = _etcd.decide([member("a1"), member("a2", False), member("a3", False)], "a1")
    assert verdict["msg"].startswith("etcd members a2 (https://127.0.1.12:2379) and a3 (https://127.0.1.13:2379) do not answer: "
                                     "restarting etcd on a1 would leave 0 of 3 members")


def test_learners_do_not_vote():
    members = [member("a1"), member("a2"), member("a3", False), member("a4", False, learner=True)]
    verdict = _etcd.decide(members, "a1")
    assert verdict["voting"] == 3 and verdict["down"] == ["a3"] and not verdict["ok"]


@pytest.mark.parametrize("members", [[member("solo1")], [member("pair1"), member("pair2")]])
def test_a_cluster_with_no_member_to_spare_restarts_when_none_is_down(members):
    verdict = _etcd.decide(members, members[0]["name"])
    assert verdict["ok"] and "no member to spare" in verdict["msg"]


def test_a_two_member_cluster_with_its_other_member_down_refuses():
    verdict = _etcd.decide([member("pair1"), member("pair2", False)], "pair1")
    assert not verdict["ok"] and "would leave 0 of 2 members, below quorum (2)" in verdict["msg"]


def test_serving_with_quorum_passes():
    verdict = _etcd.decide([member("a1"), member("a2"), member("a3", False)], "a1", "serving")
    assert verdict["ok"] and verdict["msg"] == "etcd on a1 is healthy; 2 of 3 members are"


def test_serving_without_quorum_says_etcd_lost_it_and_names_the_members_down():
    members = [member("a1", False, "answers unhealthy (RAFT NO LEADER)"), member("a2", False), member("a3", False)]
    verdict = _etcd.decide(members, "a1", "serving")
    assert not verdict["ok"]
    assert verdict["msg"] == (
        "etcd lost quorum: 0 of 3 members healthy, below quorum (2) - etcd members a2 (https://127.0.1.12:2379) and a3 "
        "(https://127.0.1.13:2379) do not answer; a1 (https://127.0.1.11:2379) answers unhealthy (RAFT NO LEADER). Bring "
        "the members back (crictl ps -a and journalctl -u kubelet on a2 and a3); etcd on a1 rejoins by itself")


def test_serving_member_unhealthy_while_the_cluster_has_quorum():
    members = [member("a1", False, DOWN), member("a2"), member("a3")]
    verdict = _etcd.decide(members, "a1", "serving")
    assert not verdict["ok"] and verdict["msg"].startswith("etcd on a1 is not healthy - %s - while 2 of 3 members are" % DOWN)


def test_member_list_of_the_grpc_gateway():
    body = json.dumps({"header": {"cluster_id": "14841639068965178418"}, "members": [
        {"ID": "10501334649042878790", "name": "alpha-cp1", "peerURLs": ["https://127.0.1.11:2380"],
         "clientURLs": ["https://127.0.1.11:2379"]},
        {"ID": "2", "peerURLs": ["https://127.0.1.13:2380"], "isLearner": True}]})
    assert _etcd.parse_member_list(body) == [
        dict(name="alpha-cp1", id="%x" % 10501334649042878790, client_url="https://127.0.1.11:2379", peer_url="https://127.0.1.11:2380",
             learner=False),
        dict(name="", id="2", client_url=None, peer_url="https://127.0.1.13:2380", learner=True)]


@pytest.mark.parametrize("body", ["", "[]", '{"members": 3}', '{"error": "etcdserver: no leader"}'])
def test_an_answer_that_is_not_a_member_list(body):
    with pytest.raises(_etcd.EtcdError, match="not etcd's answer"):
        _etcd.parse_member_list(body)


@pytest.mark.parametrize("status, body, expected", [
    (200, '{"health":"true","reason":""}', (True, "healthy")),
    (503, '{"health":"false","reason":"RAFT NO LEADER"}', (False, "answers unhealthy (RAFT NO LEADER)")),
    (503, '{"health":"false"}', (False, "answers unhealthy (no leader)")),     # etcd 3.4 gives no reason
    (404, "404 page not found", (False, "answers unhealthy (HTTP 404)")),
])
def test_health_answers(status, body, expected):
    assert _etcd.interpret_health(status, body) == expected


def test_members_named_by_the_manifest_get_kubeadms_client_url():
    flags = {"initial-cluster": "cp1=https://10.0.0.11:2380,cp2=https://[fd00::12]:2380"}
    assert [(m["name"], m["client_url"]) for m in _etcd.members_from_manifest(flags)] == [
        ("cp1", "https://10.0.0.11:2379"), ("cp2", "https://[fd00::12]:2379")]
    assert _etcd.members_from_manifest({}) == []


@pytest.mark.parametrize("given, url", [("10.0.0.12", "https://10.0.0.12:2379"), ("fd00::12", "https://[fd00::12]:2379"),
                                        ("https://etcd.example:2379", "https://etcd.example:2379")])
def test_endpoints_as_hosts_or_urls(given, url):
    assert _etcd.client_url(given) == url


@pytest.mark.parametrize("given, expected", [("cp2=10.0.0.12", ("cp2", "https://10.0.0.12:2379")),
                                             ("cp3=https://10.0.0.13:2379", ("cp3", "https://10.0.0.13:2379")),
                                             ("=https://10.0.0.13:2379", ("", "https://10.0.0.13:2379")),
                                             ("10.0.0.14", ("", "https://10.0.0.14:2379"))])
def test_endpoints_may_name_their_member(given, expected):
    assert _etcd.endpoint(given) == expected


def test_without_quorum_no_member_lists_and_the_first_control_plane_names_only_itself(monkeypatch, kubeadm_node):
    """kubeadm's init node has --initial-cluster=<itself>; its peers come from the endpoints given, named."""
    from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS

    def silent(self, url, path, method="GET", body=None):
        raise _etcd.EtcdError("does not answer (timed out)")

    monkeypatch.setattr(_etcd.Cluster, "_ask", silent)
    cluster = _etcd.Cluster(NodeFS(str(kubeadm_node)))
    members, source = cluster.members(["cp1=https://10.0.0.11:2379", "cp2=10.0.0.12", "cp3=https://10.0.0.13:2379"])
    assert [(m["name"], m["client_url"]) for m in members] == [
        ("cp1", "https://10.0.0.11:2379"), ("cp2", "https://10.0.0.12:2379"), ("cp3", "https://10.0.0.13:2379")]
    assert source.startswith("the manifest's --initial-cluster and the endpoints given (no member answered the member list: "
                             "https://10.0.0.11:2379 does not answer (timed out); https://10.0.0.12:2379")
    verdict = _etcd.decide([cluster.health(m) for m in members], cluster.name, "serving")
    assert verdict["msg"].startswith("etcd lost quorum: 0 of 3 members healthy, below quorum (2) - etcd members cp1 "
                                     "(https://10.0.0.11:2379), cp2 (https://10.0.0.12:2379) and cp3 (https://10.0.0.13:2379) "
                                     "do not answer. Bring the members back (crictl ps -a and journalctl -u kubelet on cp2 "
                                     "and cp3); etcd on cp1 rejoins by itself")


def test_a_single_member_without_quorum_is_named(monkeypatch):
    verdict = _etcd.decide([member("solo1", False, "does not answer (timed out)")], "solo1", "serving")
    assert not verdict["ok"] and "on solo1); etcd on solo1 rejoins by itself" in verdict["msg"]
