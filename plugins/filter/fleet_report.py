# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_report
short_description: Build the JSON report document from certificate rows
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - Takes the rows of P(kubepki.fleet.fleet_rows#filter), optionally narrowed by a JMESPath
    O(query), and returns the report document the C(kubepki.fleet.report) role writes as
    C(kubepki-report.json) and sends to C(ansible.builtin.set_stats).
  - The document holds C(generated_at), C(query), C(warn_days), C(fail_under_days),
    C(unfiltered_total), C(summary) (counts per state, hosts, clusters, hosts without facts,
    hosts needing attention, soonest expiry, how many are under O(fail_under_days)),
    C(below_fail_under_days) (short rows) and C(certs) (the rows, soonest first).
options:
  _input:
    description: Rows from P(kubepki.fleet.fleet_rows#filter).
    type: list
    elements: dict
    required: true
  query:
    description:
      - JMESPath filter expression applied to the rows first; must keep whole rows,
        for example V([?state!='ok']). Empty keeps every row.
    type: str
  generated_at:
    description: Report time, ISO 8601 UTC. Default is the controller's clock.
    type: str
  warn_days:
    description: Recorded in the document (the threshold the rows were computed with).
    type: float
  fail_under_days:
    description: Rows whose C(days_left) is below this are listed in C(below_fail_under_days).
    type: float
requirements:
  - jmespath (on the controller, only when O(query) is set)
"""

EXAMPLES = r"""
- name: Build the report document of certificates that need attention
  ansible.builtin.set_fact:
    report_document: "{{ report_rows | kubepki.fleet.fleet_report(query=\"[?state!='ok']\", fail_under_days=14) }}"

- name: Fail when something expires within 14 days
  ansible.builtin.fail:
    msg: "{{ report_document.below_fail_under_days | map(attribute='id') | join(', ') }}"
  when: report_document.below_fail_under_days | length > 0
"""

RETURN = r"""
_value:
  description: The report document.
  type: dict
  sample:
    kind: kubepki.fleet/report
    version: 1
    generated_at: "2026-11-23T18:00:00Z"
    query: "[?state!='ok']"
    warn_days: 30
    fail_under_days: 14
    unfiltered_total: 62
    summary:
      total: 2
      by_state: {ok: 0, warning: 1, expired: 1, not_yet_valid: 0, invalid: 0, missing: 0}
      hosts: 1
      clusters: [prod]
      hosts_without_facts: []
      hosts_needing_attention: [cp1]
      soonest: {host: cp1, cluster: prod, id: kubeadm/apiserver, not_after: "2026-11-20T10:00:00Z", days_left: -3.33, state: expired}
      below_fail_under_days: 1
      hosts_below_fail_under_days: [cp1]
    below_fail_under_days:
      - {host: cp1, cluster: prod, id: kubeadm/apiserver, not_after: "2026-11-20T10:00:00Z", days_left: -3.33, state: expired, message: expired 3.3 days ago}
    certs: []
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import (
    NO_FACTS_ID,
    ReportError,
    check_rows,
    report_document,
    select_rows,
)


def fleet_report(rows, query=None, generated_at=None, warn_days=None, fail_under_days=None):
    try:
        all_rows = check_rows(rows, "kubepki.fleet.fleet_report")
        selected = select_rows(all_rows, query)
        total = sum(1 for r in all_rows if r.get("id") != NO_FACTS_ID)
        return report_document(selected, generated_at=generated_at, query_expr=query,
                               warn_days=warn_days, fail_under_days=fail_under_days,
                               total_rows=total)
    except ReportError as exc:
        raise AnsibleFilterError("kubepki.fleet.fleet_report: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"fleet_report": fleet_report}
