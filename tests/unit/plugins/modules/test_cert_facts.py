# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.kubepki.fleet.plugins.modules import cert_facts


def test_module_sets_facts_in_check_mode(run_module, kubeadm_tree):
    result = run_module(cert_facts, rootfs=str(kubeadm_tree / "cp1"), probe=False, now="2026-12-31T00:00:00Z",
                        _ansible_check_mode=True)
    facts = result["ansible_facts"]["kubepki"]
    assert result["changed"] is False and not result.get("failed")
    assert facts["now"] == "2026-12-31T00:00:00Z"
    assert {e["id"]: e["state"] for e in facts["certs"]}["kubeadm/apiserver"] == "expired"
    assert facts["summary"]["by_state"]["expired"] >= 11


def test_module_rejects_a_bad_now_with_the_fix(run_module, kubeadm_tree):
    result = run_module(cert_facts, rootfs=str(kubeadm_tree / "cp1"), now="next tuesday")
    assert result["failed"] and "2027-01-31T00:00:00Z" in result["msg"]


def test_module_fails_on_a_root_without_kubernetes_files(run_module, tmp_path):
    for distribution, named in (("auto", "Kubernetes"), ("k3s", "k3s")):
        result = run_module(cert_facts, rootfs=str(tmp_path), distribution=distribution, probe=False)
        assert result["failed"] and result["msg"].startswith("rootfs %s holds no %s files" % (tmp_path, "Kubernetes"))
        assert "no %s certificates" % named in result["msg"]
    result = run_module(cert_facts, rootfs=str(tmp_path), distribution="none", probe=False)
    assert result["ansible_facts"]["kubepki"]["summary"]["total"] == 0


def test_module_fails_on_a_rootfs_that_does_not_exist(run_module, tmp_path):
    result = run_module(cert_facts, rootfs=str(tmp_path / "cp9"), probe=False)
    assert result["failed"] and result["msg"].startswith("rootfs %s does not exist: give the directory" % (tmp_path / "cp9"))
