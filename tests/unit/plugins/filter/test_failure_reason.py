# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.kubepki.fleet.plugins.filter.failure_reason import FilterModule
from ansible_collections.kubepki.fleet.plugins.test.unreported import TestModule as UnreportedTest

failure_reason = FilterModule().filters()["failure_reason"]
unreported = UnreportedTest().tests()["unreported"]

# What ansible-core 2.19 registers for a module SIGKILLed over SSH (ActionBase._parse_returned_data: no JSON found)
KILLED = {"failed": True, "changed": False, "msg": "Module result deserialization failed: No start of json char found",
          "_ansible_parsed": False, "module_stdout": "", "module_stderr": "Shared connection closed.\r\nKilled\n", "rc": 137}


def test_a_killed_module_is_unreported_and_said_to_have_ended_before_saying_what_it_wrote():
    assert unreported(KILLED)
    assert failure_reason(KILLED, "Renew") == "Renew: its process ended before it said what it wrote (exit status 137: Killed)"
    assert failure_reason(dict(KILLED, module_stderr=""), "Renew").endswith("(exit status 137: no output)")


def test_a_reported_failure_is_its_message_without_final_full_stops():
    result = {"failed": True, "changed": True, "msg": "kube-apiserver does not serve the renewed certificate.. "}
    assert not unreported(result) and not unreported({}) and not unreported(None)
    assert failure_reason(result, "Verify") == "Verify: kube-apiserver does not serve the renewed certificate"
    assert failure_reason({}, None) == "?: "
