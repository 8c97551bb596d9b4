# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: cert_query
short_description: Query certificate rows or facts with JMESPath
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - Evaluates a JMESPath expression on the input, usually the rows of
    P(kubepki.fleet.fleet_rows#filter) or a host's C(ansible_facts.kubepki).
  - An empty expression returns the input unchanged.
  - Works with ansible-core 2.19 data (tagged strings, lazy lists) by querying a plain copy.
  - A malformed expression fails with the expression and the parse error.
positional: expr
options:
  _input:
    description: The data to query.
    type: raw
    required: true
  expr:
    description:
      - JMESPath expression. Quote strings with single quotes, numbers with backticks,
        for example V([?state!='ok']) or V([?days_left < `30`].id).
    type: str
    required: true
requirements:
  - jmespath (on the controller)
"""

EXAMPLES = r"""
- name: Certificates that are not OK
  ansible.builtin.debug:
    msg: "{{ report_rows | kubepki.fleet.cert_query(\"[?state!='ok']\") }}"

- name: Ids of certificates expiring within 30 days on one host
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kubepki.certs | kubepki.fleet.cert_query('[?days_left < `30`].id') }}"

- name: Certificates of the etcd component in cluster prod
  ansible.builtin.debug:
    msg: "{{ report_rows | kubepki.fleet.cert_query(\"[?cluster=='prod' && component=='etcd']\") }}"
"""

RETURN = r"""
_value:
  description: Whatever the expression selects (a list of rows for a filter expression).
  type: raw
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import ReportError
from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import query as _query


def cert_query(data, expr):
    try:
        return _query(data, expr)
    except ReportError as exc:
        raise AnsibleFilterError("kubepki.fleet.cert_query: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"cert_query": cert_query}
