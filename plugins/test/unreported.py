# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: unreported
short_description: Whether a module ended without reporting what it did
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - True for the result of a module whose process ended without printing its JSON result - killed (by the OOM killer,
    a node-side SIGKILL) or crashed. Ansible then sets C(changed) to false and keeps the raw output in
    C(module_stdout), although the module may have written anything before it ended.
  - A rescue must treat such a result as "may have changed the node" and roll back, not as "changed nothing".
options:
  _input:
    description: A registered task result, or C(ansible_failed_result).
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Roll back when the renewal changed something, or cannot say
  ansible.builtin.include_role:
    name: kubepki.fleet.rollback
  when: renew_result.changed | default(false) or renew_result is kubepki.fleet.unreported
"""

RETURN = r"""
_value:
  description: Whether the result lacks the module's report.
  type: bool
"""


def unreported(result):
    # ansible-core's ActionBase._parse_returned_data keeps module_stdout only when it found no JSON in it
    return isinstance(result, dict) and "module_stdout" in result


class TestModule:
    def tests(self):
        return {"unreported": unreported}
