# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import shutil

import pytest

from ansible_collections.kubepki.fleet.plugins.modules import recover

MANIFESTS, PARKED = "etc/kubernetes/manifests", "etc/kubernetes/kubepki-parked"


@pytest.fixture
def node(kubeadm_node):
    return kubeadm_node


def test_a_parked_manifest_and_leftover_temp_files_from_a_killed_run(run_module, node):
    """The run was killed with kube-apiserver's manifest parked and a key staged but not renamed."""
    (node / PARKED).mkdir(mode=0o700)
    os.rename(node / MANIFESTS / "kube-apiserver.yaml", node / PARKED / "kube-apiserver.yaml")
    staged = node / "etc/kubernetes/pki/.apiserver.key.x1y2z3.kubepki-tmp"
    staged.write_bytes((node / "etc/kubernetes/pki/apiserver.key").read_bytes())
    planned = run_module(recover, rootfs=str(node), _ansible_check_mode=True, _ansible_diff=True)
    assert planned["changed"] and planned["put_back"] == [{"from": "/etc/kubernetes/kubepki-parked/kube-apiserver.yaml",
                                                           "to": "/etc/kubernetes/manifests/kube-apiserver.yaml"}]
    assert planned["removed"] == ["/etc/kubernetes/pki/.apiserver.key.x1y2z3.kubepki-tmp"]
    assert "PRIVATE KEY" not in str(planned)
    assert staged.exists() and not (node / MANIFESTS / "kube-apiserver.yaml").exists()

    done = run_module(recover, rootfs=str(node))
    assert done["changed"] and (node / MANIFESTS / "kube-apiserver.yaml").exists()
    assert not staged.exists() and not list((node / PARKED).iterdir())
    again = run_module(recover, rootfs=str(node))
    assert (again["changed"], again["put_back"], again["removed"], again["kept"]) == (False, [], [], [])


def test_a_parked_copy_beside_its_manifest_is_removed_when_identical_and_kept_when_not(run_module, node):
    (node / PARKED).mkdir(mode=0o700)
    shutil.copy(node / MANIFESTS / "kube-scheduler.yaml", node / PARKED / "kube-scheduler.yaml")
    (node / PARKED / "etcd.yaml").write_text("# an older etcd manifest\n")
    result = run_module(recover, rootfs=str(node))
    assert result["removed"] == ["/etc/kubernetes/kubepki-parked/kube-scheduler.yaml"]
    assert result["kept"] == [{"path": "/etc/kubernetes/kubepki-parked/etcd.yaml", "reason": (
        "differs from /etc/kubernetes/manifests/etcd.yaml, which is in place: compare the two and remove the one that "
        "is not wanted")}]
    assert (node / PARKED / "etcd.yaml").exists() and (node / MANIFESTS / "etcd.yaml").read_text() != "# an older etcd manifest\n"


def test_a_rootfs_that_does_not_exist_fails(run_module, tmp_path):
    result = run_module(recover, rootfs=str(tmp_path / "nowhere"))
    assert result["failed"] and "does not exist" in result["msg"]
