# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_table
short_description: Render certificate rows as an aligned plain-text table
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - Returns the lines of a table with the columns HOST, CLUSTER, CERT, EXPIRES, DAYS LEFT and
    STATE, soonest expiry first, followed by a line counting certificates per state.
  - Meant for the C(msg) of C(ansible.builtin.debug), which prints a list one line per item.
  - Accepts the rows of P(kubepki.fleet.fleet_rows#filter) or the document of
    P(kubepki.fleet.fleet_report#filter).
options:
  _input:
    description: Rows, or a report document (its C(certs) are used).
    type: raw
    required: true
  columns:
    description: Other columns, as a list of V([header, row key]) pairs.
    type: list
    elements: list
  summary_line:
    description: Append the per-state count line.
    type: bool
    default: true
"""

EXAMPLES = r"""
- name: Print the certificate table
  ansible.builtin.debug:
    msg: "{{ report_rows | kubepki.fleet.fleet_table }}"

- name: Print hosts, ids and messages only
  ansible.builtin.debug:
    msg: "{{ report_rows | kubepki.fleet.fleet_table(columns=[['HOST', 'host'], ['CERT', 'id'], ['WHY', 'message']]) }}"
"""

RETURN = r"""
_value:
  description: Table lines.
  type: list
  elements: str
  sample:
    - "HOST  CLUSTER  CERT               EXPIRES               DAYS LEFT  STATE"
    - "----  -------  -----------------  --------------------  ---------  -------"
    - "cp1   prod     kubeadm/apiserver  2026-12-06T10:00:00Z       12.7  warning"
    - "1 certificate(s) on 1 host(s): 1 warning"
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import ReportError, render_table


def fleet_table(rows, columns=None, summary_line=True):
    try:
        return render_table(rows, columns=columns, summary_line=summary_line)
    except ReportError as exc:
        raise AnsibleFilterError("kubepki.fleet.fleet_table: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"fleet_table": fleet_table}
