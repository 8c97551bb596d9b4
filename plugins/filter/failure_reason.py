# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: failure_reason
short_description: Say in one line why a task of a transaction failed
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - >-
    Returns C(<task>: <message>) for a rescue to put in its failure message, the message's final full stops removed.
  - >-
    A module that ended without reporting a result (see P(kubepki.fleet.unreported#test)) is said to have ended before
    it said what it wrote, with its exit status and the last line of its error output (C(137: Killed) for SIGKILL).
positional: task
options:
  _input:
    description: The failed task's result, C(ansible_failed_result) in a rescue.
    type: dict
    required: true
  task:
    description: The failed task's name, C(ansible_failed_task.name).
    type: str
    default: "?"
"""

EXAMPLES = r"""
- name: Fail the node, saying what happened
  ansible.builtin.fail:
    msg: "Renewal of {{ inventory_hostname }} failed - {{ ansible_failed_result | kubepki.fleet.failure_reason(ansible_failed_task.name) }}."
"""

RETURN = r"""
_value:
  description: >-
    The task's name and what went wrong, for example C(Renew: its process ended before it said what it wrote
    (exit status 137: Killed)).
  type: str
"""

from ansible_collections.kubepki.fleet.plugins.test.unreported import unreported


def failure_reason(result, task="?"):
    if unreported(result):
        lines = str(result.get("module_stderr") or "").strip().splitlines()
        why = "its process ended before it said what it wrote (exit status %s: %s)" % (
            result.get("rc", "?"), lines[-1] if lines else "no output")
    else:
        why = str(result.get("msg") or "").strip().rstrip(".")
    return "%s: %s" % (task or "?", why)


class FilterModule:
    def filters(self):
        return {"failure_reason": failure_reason}
