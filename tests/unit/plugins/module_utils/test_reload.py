# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.kubepki.fleet.plugins.module_utils import _reload

V128 = {"kube-apiserver": (1, 28), "kube-controller-manager": (1, 28), "kube-scheduler": (1, 28), "etcd": (3, 5)}


def components(restarts):
    return [r["component"] for r in restarts]


@pytest.mark.parametrize("text, version", [
    ("registry.k8s.io/kube-apiserver:v1.28.15", (1, 28)), ("v1.31.4", (1, 31)), ("Kubernetes v1.30.0", (1, 30)),
    ("3.5.9-0", (3, 5)), ("latest", None), ("", None), (None, None)])
def test_versions_are_read_from_tags_and_version_output(text, version):
    assert _reload.parse_version(text) == version


def test_client_certs_of_the_apiserver_and_etcd_certs_reload_without_a_restart():
    restarts, reloads = _reload.decide(["apiserver-kubelet-client", "apiserver-etcd-client", "etcd-server", "etcd-peer"], V128)
    assert restarts == []
    assert {r["cert"]: r["component"] for r in reloads} == {
        "apiserver-kubelet-client": "kube-apiserver", "apiserver-etcd-client": "kube-apiserver",
        "etcd-server": "etcd", "etcd-peer": "etcd"}
    assert "kubernetes#79083" in reloads[0]["reason"]


def test_embedded_kubeconfigs_and_kubelet_conf_restart_in_order_with_their_reason():
    restarts, reloads = _reload.decide(["kubelet.conf", "scheduler.conf", "controller-manager.conf", "admin.conf"], V128)
    assert components(restarts) == ["kube-controller-manager", "kube-scheduler", "kubelet"]
    assert reloads == []  # admin.conf is read per use by kubectl: nothing to restart or reload
    assert "embedded" in restarts[0]["reason"] and "at start" in restarts[2]["reason"]


def test_an_unreadable_version_is_restarted_and_says_why():
    restarts = _reload.decide(["apiserver-kubelet-client"], {})[0]
    assert components(restarts) == ["kube-apiserver"]
    assert "could not be read" in restarts[0]["reason"]
    # etcd has reloaded at every handshake on every version
    assert _reload.decide(["etcd-server"], {})[0] == []


def test_a_version_older_than_the_reload_restarts():
    restarts = _reload.decide(["apiserver-etcd-client"], {"kube-apiserver": (1, 27)})[0]
    assert components(restarts) == ["kube-apiserver"] and "older than v1.28" in restarts[0]["reason"]


def test_kubelet_serving_file_reloads_from_v131_only():
    assert _reload.decide(["kubelet-serving-file"], {"kubelet": (1, 31)})[0] == []
    assert components(_reload.decide(["kubelet-serving-file"], {"kubelet": (1, 30)})[0]) == ["kubelet"]
    assert components(_reload.decide(["kubelet-serving-regenerate"], {"kubelet": (1, 33)})[0]) == ["kubelet"]


def test_policy_always_restarts_what_would_reload_and_says_so():
    restarts, reloads = _reload.decide(["apiserver-kubelet-client"], V128, policy="always")
    assert components(restarts) == ["kube-apiserver"] and reloads == []
    assert "restart_policy=always" in restarts[0]["reason"]


def test_a_component_that_is_down_is_restarted_even_if_it_would_reload():
    restarts, reloads = _reload.decide(["apiserver", "apiserver-etcd-client", "etcd-server"], V128, down=["kube-apiserver"])
    assert components(restarts) == ["kube-apiserver"] and "back-off" in restarts[0]["reason"]
    assert [r["cert"] for r in reloads] == ["etcd-server"]
