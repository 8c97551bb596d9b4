# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_prometheus
short_description: Render certificate rows in the Prometheus text format
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - Returns a Prometheus text exposition (format 0.0.4) for node_exporter's textfile collector.
  - Metric names follow enix/x509-certificate-exporter where they fit -
    C(x509_cert_not_after), C(x509_cert_not_before), C(x509_cert_expired),
    C(x509_cert_expires_in_seconds), C(x509_cert_error) - so its alerts and dashboards work.
    One sample per certificate and metric; certificates without dates only get
    C(x509_cert_error).
  - "Labels, the same on every sample: C(host), C(cluster), C(cert_id), C(source),
    C(component), C(state), and the enix labels C(filename), C(filepath), C(embedded_kind)
    (V(user) for kubeconfig entries), C(embedded_key) (the kubeconfig user), C(endpoint),
    C(serial_number) (decimal, as enix), C(subject_CN), C(subject_O), C(issuer_CN)."
  - Also C(kubepki_host_facts) (1 per host with facts, 0 per host without) and
    C(kubepki_report_timestamp_seconds).
  - C(x509_cert_expires_in_seconds) is frozen at check time; compute the remaining time in
    PromQL from C(x509_cert_not_after) and the current time instead.
  - Write the result atomically (temporary file in the same directory, then rename), as
    the textfile collector requires; the C(kubepki.fleet.report) role does.
options:
  _input:
    description: Rows from P(kubepki.fleet.fleet_rows#filter), or a report document.
    type: raw
    required: true
  generated_at:
    description: Report time, ISO 8601 UTC. Default is the controller's clock.
    type: str
"""

EXAMPLES = r"""
- name: Render the metrics of every certificate
  ansible.builtin.set_fact:
    report_prom: "{{ report_rows | kubepki.fleet.fleet_prometheus }}"
"""

RETURN = r"""
_value:
  description: The exposition text, ending with a newline.
  type: str
  sample: |
    # HELP x509_cert_not_after Unix timestamp of the certificate's NotAfter (kubepki.fleet).
    # TYPE x509_cert_not_after gauge
    x509_cert_not_after{host="cp1",cluster="prod",cert_id="kubeadm/apiserver",...} 1796551200
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import ReportError, render_prometheus


def fleet_prometheus(rows, generated_at=None):
    try:
        return render_prometheus(rows, generated_at=generated_at)
    except ReportError as exc:
        raise AnsibleFilterError("kubepki.fleet.fleet_prometheus: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"fleet_prometheus": fleet_prometheus}
