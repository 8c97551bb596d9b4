# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.kubepki.fleet.plugins.modules import cert_facts


class _Exit(Exception):
    def __init__(self, result):
        super(_Exit, self).__init__(result)
        self.result = result


def run_module(monkeypatch, **args):
    """Run cert_facts.main() with ``args`` as Ansible would pass them; return its result dict."""
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
    if hasattr(basic, "_ANSIBLE_PROFILE"):
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")  # ansible-core >= 2.19 needs a serialization profile

    def exit_json(_module, **result):
        raise _Exit(result)

    def fail_json(_module, **result):
        result["failed"] = True
        raise _Exit(result)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    with pytest.raises(_Exit) as caught:
        cert_facts.main()
    return caught.value.result


def test_module_sets_facts_in_check_mode(monkeypatch, kubeadm_tree):
    result = run_module(monkeypatch, rootfs=str(kubeadm_tree / "cp1"), probe=False, now="2026-12-31T00:00:00Z",
                        _ansible_check_mode=True)
    facts = result["ansible_facts"]["kubepki"]
    assert result["changed"] is False and not result.get("failed")
    assert facts["now"] == "2026-12-31T00:00:00Z"
    assert {e["id"]: e["state"] for e in facts["certs"]}["kubeadm/apiserver"] == "expired"
    assert facts["summary"]["by_state"]["expired"] >= 11


def test_module_rejects_a_bad_now_with_the_fix(monkeypatch, kubeadm_tree):
    result = run_module(monkeypatch, rootfs=str(kubeadm_tree / "cp1"), now="next tuesday")
    assert result["failed"] and "2027-01-31T00:00:00Z" in result["msg"]


def test_module_forced_distribution_on_an_empty_root(monkeypatch, tmp_path):
    result = run_module(monkeypatch, rootfs=str(tmp_path), distribution="k3s", probe=False)
    facts = result["ansible_facts"]["kubepki"]
    assert facts["distribution"] == "k3s"
    assert facts["summary"]["total"] == 0
