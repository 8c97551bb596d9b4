# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: agent_renewal
short_description: Which certificates of a k3s or RKE2 agent are due, and whether its restart renewed them
version_added: 0.1.0
author: kubepki.fleet contributors
description:
  - >-
    Reads an agent's C(ansible_facts.kubepki) from M(kubepki.fleet.cert_facts). An agent re-issues the leaves under
    C(/var/lib/rancher/<program>/agent/) at every start (k3s C(pkg/agent/config/config.go): C(get) requests each from a
    server, C(getServingCert) the kubelet's), so a restart is what renews them.
  - >-
    Without O(before), says which of those leaves are under O(threshold_days) and what the kubelet serves now: the
    plan. With the plan as O(before), says whether the restart renewed them: each leaf due then now has more than
    O(threshold_days) left, and the kubelet serves exactly one certificate with more than O(threshold_days) left that it
    did not serve before.
positional: threshold_days, before
options:
  _input:
    description: The agent's C(ansible_facts.kubepki), with C(certs).
    type: dict
    required: true
  threshold_days:
    description: A leaf with fewer days left is due.
    type: float
    required: true
  before:
    description: The plan this filter returned before the restart.
    type: dict
"""

EXAMPLES = r"""
- name: Plan the agent's restart
  ansible.builtin.set_fact:
    agent_plan: "{{ ansible_facts.kubepki | kubepki.fleet.agent_renewal(30) }}"

- name: Wait until the restart renewed what was due
  kubepki.fleet.cert_facts:
  register: agent_facts
  until: (agent_facts.ansible_facts.kubepki | kubepki.fleet.agent_renewal(30, agent_plan)).done
  retries: 30
  delay: 2
"""

RETURN = r"""
_value:
  description: The plan, or with O(before) the outcome.
  type: dict
  contains:
    due:
      description: Ids of the agent's leaves under O(threshold_days); with O(before), those of the plan still under it.
      type: list
      elements: str
    kubelet:
      description: SHA-256 fingerprints of the certificates the kubelet serves.
      type: list
      elements: str
    done:
      description: With O(before), whether the restart renewed every leaf due and the kubelet serves a new certificate.
      type: bool
    lines:
      description: >-
        With O(before), one line per leaf due before and per kubelet endpoint: its state, days left, and whether it is
        still what was served before the restart.
      type: list
      elements: str
"""

import re

_AGENT_FILE = re.compile(r"/var/lib/rancher/[^/]+/agent/")


def _days(entry):
    days = entry.get("days_left")
    return None if days is None else float(days)


def _renewed(entry, threshold_days):
    days = _days(entry)
    return days is not None and days > threshold_days


def agent_renewal(facts, threshold_days, before=None):
    threshold_days = float(threshold_days)
    certs = list((facts or {}).get("certs") or [])
    kubelet = [c for c in certs if c.get("source") == "endpoint" and c.get("component") == "kubelet"]
    served = [c["fingerprint_sha256"] for c in kubelet if c.get("fingerprint_sha256")]
    if before is None:
        due = [c["id"] for c in certs if c.get("source") == "file" and _AGENT_FILE.match(str(c.get("path", "")))
               and not c.get("is_ca") and _days(c) is not None and _days(c) < threshold_days]
        return {"due": due, "kubelet": served}
    was_due, was_served = list(before.get("due") or []), list(before.get("kubelet") or [])
    by_id = {c.get("id"): c for c in certs}
    still_due = [i for i in was_due if not _renewed(by_id.get(i, {}), threshold_days)]
    new = [c for c in kubelet if _renewed(c, threshold_days) and c.get("fingerprint_sha256") not in was_served]
    lines = []
    for entry in [by_id.get(i, {"id": i, "state": "missing"}) for i in was_due] + kubelet:
        line = "%s: %s, %s days left" % (entry.get("id"), entry.get("state"), "-" if _days(entry) is None else entry["days_left"])
        if entry in kubelet and entry.get("fingerprint_sha256") in was_served:
            line += " - still the certificate served before the restart"
        if entry.get("message"):
            line += " - %s" % entry["message"]
        lines.append(line)
    return {"due": still_due, "kubelet": served, "done": len(new) == 1 and not still_due, "lines": lines}


class FilterModule:
    def filters(self):
        return {"agent_renewal": agent_renewal}
