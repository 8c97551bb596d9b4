# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_rows
short_description: Flatten the kubepki facts of many hosts into one row per certificate
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - Takes the variables of every host (normally C(hostvars)) and returns one flat dictionary
    per certificate found by M(kubepki.fleet.cert_facts), sorted by expiry, soonest first.
  - Each row is the certificate entry of the facts contract (C(id), C(source), C(path),
    C(not_after), C(days_left), C(state), C(message), ...) plus C(host), C(cluster),
    C(node_role), C(host_distribution) and C(now) (when the host was checked).
  - The facts are looked up as C(ansible_facts.kubepki), then as a host variable C(kubepki);
    a value that already is the facts (has C(certs) and C(summary)) is used as is.
  - A selected host without facts (unreachable, failed, not in the play) gets one row with
    C(id=host/no-facts) and C(state=unknown), so it cannot silently drop out of a report.
  - Rows without an expiry date (C(invalid), C(missing), no facts) come last.
positional: hosts
options:
  _input:
    description: Host name to host variables (C(hostvars)), or host name to kubepki facts.
    type: dict
    required: true
  hosts:
    description:
      - Hosts to report on, in any order. Default is every key of the input.
    type: list
    elements: str
  cluster_var:
    description:
      - Host variable naming the cluster a host belongs to. When it is unset the host's
        detected distribution is used, else V(default).
    type: str
    default: kubepki_cluster
  warn_days:
    description:
      - Re-derive V(ok)/V(warning) with this threshold instead of the one
        M(kubepki.fleet.cert_facts) used. Other states are kept.
    type: float
"""

EXAMPLES = r"""
- name: Build the report rows from every host's facts
  ansible.builtin.set_fact:
    report_rows: "{{ hostvars | kubepki.fleet.fleet_rows(groups['k8s']) }}"

- name: Same, with a stricter warning threshold and a custom cluster variable
  ansible.builtin.set_fact:
    report_rows: "{{ hostvars | kubepki.fleet.fleet_rows(ansible_play_hosts_all, cluster_var='cluster_name', warn_days=60) }}"
"""

RETURN = r"""
_value:
  description: One dictionary per certificate, soonest expiry first.
  type: list
  elements: dict
  sample:
    - host: cp1
      cluster: prod
      node_role: control-plane
      host_distribution: kubeadm
      now: "2026-11-23T17:50:00Z"
      id: kubeadm/apiserver
      source: file
      path: /etc/kubernetes/pki/apiserver.crt
      not_after: "2026-12-06T10:00:00Z"
      days_left: 12.68
      state: warning
      message: expires in 12.7 days
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import ReportError
from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import fleet_rows as _fleet_rows


def fleet_rows(data, hosts=None, cluster_var="kubepki_cluster", warn_days=None):
    try:
        return _fleet_rows(data, hosts=hosts, cluster_var=cluster_var, warn_days=warn_days)
    except ReportError as exc:
        raise AnsibleFilterError("kubepki.fleet.fleet_rows: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"fleet_rows": fleet_rows}
