# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.kubepki.fleet.plugins.module_utils import _managers
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS


def test_files_show_cluster_api_and_rancher(tmp_path):
    fs = NodeFS(str(tmp_path))
    assert _managers.from_files(fs) == []
    (tmp_path / "run/cluster-api").mkdir(parents=True)
    (tmp_path / "run/cluster-api/bootstrap-success.complete").write_text("success\n")
    (tmp_path / "etc/rancher/agent").mkdir(parents=True)
    (tmp_path / "etc/rancher/agent/config.yaml").write_text("workDirectory: /var/lib/rancher/agent/work\n")
    assert [(m["manager"], m["signal"]) for m in _managers.from_files(fs)] == [
        ("Cluster API", "/run/cluster-api/bootstrap-success.complete"), ("Rancher", "/etc/rancher/agent/config.yaml")]


def test_node_annotations_name_the_owner():
    found = _managers.from_node_annotations({"cluster.x-k8s.io/owner-kind": "KubeadmControlPlane",
                                             "cluster.x-k8s.io/owner-name": "prod-cp"})
    assert found[0]["manager"] == "Cluster API" and "KubeadmControlPlane prod-cp" in found[0]["detail"]
    assert _managers.from_node_annotations({"node.alpha.kubernetes.io/ttl": "0"}) == []
    assert _managers.from_node_annotations(None) == []


def test_a_node_without_kubelet_conf_is_judged_by_its_files(tmp_path):
    assert _managers.find(NodeFS(str(tmp_path))) == []
