# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime

from ansible_collections.kubepki.fleet.plugins.filter.agent_renewal import FilterModule
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import gather
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.tests.lab import pki
from ansible_collections.kubepki.fleet.tests.unit.tlsserver import TLSServer

agent_renewal = FilterModule().filters()["agent_renewal"]
HOST = "127.0.2.31"
DAY = datetime.timedelta(days=1)
LEAVES = ["k3s/agent/client-k3s-controller", "k3s/agent/client-kube-proxy", "k3s/agent/client-kubelet", "k3s/agent/serving-kubelet"]


def test_a_restart_is_done_once_every_leaf_due_is_fresh_and_the_kubelet_serves_a_new_certificate(tmp_path, now):
    """A k3s agent last started 340 days ago (25 days left), its kubelet on a real TLS listener."""
    cluster = pki.k3s_cluster("k3s", now, ca_issued_at=now - 500 * DAY)
    pki.build_k3s_agent(tmp_path, cluster, "agent", HOST, agent_issued_at=now - 340 * DAY)
    agent = tmp_path / "var/lib/rancher/k3s/agent"
    kubelet = TLSServer(agent / "serving-kubelet.crt", agent / "serving-kubelet.key", host=HOST, port=10250)
    try:
        def facts():
            return gather(NodeFS(str(tmp_path)), now=now, probe=True, probe_host=HOST, probe_timeout=2)

        plan = agent_renewal(facts(), 30)
        assert sorted(plan["due"]) == LEAVES and len(plan["kubelet"]) == 1      # the CAs are never due
        assert agent_renewal(facts(), 20)["due"] == []

        unchanged = agent_renewal(facts(), 30, plan)
        assert not unchanged["done"] and unchanged["due"] == plan["due"]
        assert any("still the certificate served before the restart" in line for line in unchanged["lines"]), unchanged["lines"]

        pki.build_k3s_agent(tmp_path, cluster, "agent", HOST, agent_issued_at=now)     # what a restart writes
        files_only = agent_renewal(facts(), 30, plan)
        assert not files_only["done"] and files_only["due"] == []      # the kubelet still serves what it loaded

        kubelet.load(agent / "serving-kubelet.crt", agent / "serving-kubelet.key")
        renewed = agent_renewal(facts(), 30, plan)
        assert renewed["done"] and renewed["kubelet"] != plan["kubelet"]
        assert any(line.startswith("endpoint/%s:10250: ok, 365" % HOST) for line in renewed["lines"]), renewed["lines"]
    finally:
        kubelet.close()


def test_facts_without_certificates_plan_nothing_and_are_never_done():
    assert agent_renewal({}, 30) == {"due": [], "kubelet": []}
    outcome = agent_renewal(None, 30, {"due": ["k3s/agent/serving-kubelet"], "kubelet": []})
    assert not outcome["done"] and outcome["lines"] == ["k3s/agent/serving-kubelet: missing, - days left"]
