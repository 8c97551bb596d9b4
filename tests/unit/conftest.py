# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Node trees generated the way kubeadm, RKE1 and k3s issue them, shared by the unit tests."""

from __future__ import annotations

import datetime

import shutil

import pytest

from ansible_collections.kubepki.fleet.tests.lab import pki

NOW = datetime.datetime(2026, 11, 23, 12, 0, 0, tzinfo=datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="session")
def now():
    return NOW


@pytest.fixture(scope="session")
def kubeadm_tree(tmp_path_factory):
    """An HA kubeadm cluster's init node (style current: kubeadm v1.31+) whose leaves expire in 20 days, and a worker."""
    root = tmp_path_factory.mktemp("kubeadm")
    cluster = pki.kubeadm_cluster(NOW, ca_issued_at=NOW - 400 * DAY, control_plane_endpoint="lb.example.com:6443")
    pki.build_kubeadm_control_plane(root / "cp1", cluster, "cp1", "10.0.0.11", now=NOW, init_node=True,
                                    leaf_issued_at=NOW - 345 * DAY)
    pki.build_kubeadm_worker(root / "w1", cluster, "w1", now=NOW)
    return root


@pytest.fixture
def kubeadm_node(kubeadm_tree, tmp_path):
    """A copy of kubeadm_tree's init node, for a test to change."""
    root = tmp_path / "cp1"
    shutil.copytree(kubeadm_tree / "cp1", root, symlinks=True)
    return root


@pytest.fixture(scope="session")
def rke1_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("rke1")
    nodes = [pki.RkeNode("10.0.1.11", ("controlplane", "etcd")), pki.RkeNode("10.0.1.21", ("worker",))]
    cluster = pki.rke1_cluster(nodes, NOW, leaf_issued_at=NOW - 100 * DAY)
    pki.build_rke1_node(root / "cp", cluster, "10.0.1.11", kubelet_serving_issued_at=NOW - 370 * DAY)
    pki.build_rke1_node(root / "worker", cluster, "10.0.1.21")
    return root


@pytest.fixture(scope="session")
def k3s_tree(tmp_path_factory):
    """A k3s server whose files are fresh but whose dynamic-cert.json cert expired (seed 003)."""
    root = tmp_path_factory.mktemp("k3s")
    cluster = pki.k3s_cluster("k3s", NOW, ca_issued_at=NOW - 500 * DAY)
    pki.build_k3s_server(root / "server", cluster, "server", "10.0.2.11", now=NOW, serving_issued_at=NOW - 400 * DAY)
    pki.build_k3s_agent(root / "agent", cluster, "agent", "10.0.2.21", now=NOW)
    return root
