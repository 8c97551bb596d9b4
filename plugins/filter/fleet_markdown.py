# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_markdown
short_description: Render the certificate report as Markdown
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - Returns a Markdown page with a per-state summary table, the soonest expiry, hosts without
    facts, the certificates under the fail threshold and one table row per certificate
    (host, cluster, certificate id, source, subject CN, expiry, days left, state, message).
  - Pipes, backslashes and line breaks in values are escaped so the table keeps its shape.
options:
  _input:
    description:
      - A report document from P(kubepki.fleet.fleet_report#filter) (preferred, it carries the
        query and threshold), or rows from P(kubepki.fleet.fleet_rows#filter).
    type: raw
    required: true
  title:
    description: Page title.
    type: str
    default: Kubernetes certificate report
  generated_at:
    description: Report time when the input is a row list. Default is the controller's clock.
    type: str
"""

EXAMPLES = r"""
- name: Write the Markdown report
  ansible.builtin.copy:
    content: "{{ report_document | kubepki.fleet.fleet_markdown(title='Prod certificates') }}"
    dest: /srv/reports/kubepki-report.md
    mode: "0644"
"""

RETURN = r"""
_value:
  description: The Markdown text, ending with a newline.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.kubepki.fleet.plugins.plugin_utils._report import ReportError, render_markdown


def fleet_markdown(data, title="Kubernetes certificate report", generated_at=None):
    try:
        return render_markdown(data, title=title, generated_at=generated_at)
    except ReportError as exc:
        raise AnsibleFilterError("kubepki.fleet.fleet_markdown: %s" % exc) from exc


class FilterModule:
    def filters(self):
        return {"fleet_markdown": fleet_markdown}
