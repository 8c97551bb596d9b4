# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Run a module's main() with arguments as Ansible passes them."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes


class _Exit(Exception):
    def __init__(self, result):
        super(_Exit, self).__init__(result)
        self.result = result


@pytest.fixture
def run_module(monkeypatch):
    def run(module, **args):
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
            module.main()
        return caught.value.result
    return run
