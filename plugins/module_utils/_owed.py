# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Restarts a renewal owes: recorded on the node before the first certificate is written, cleared once the restarts
are verified (playbooks/tasks/renew_kubeadm_node.yml, roles/reset_k3s_serving). A run killed between the two leaves the
record, and the next run restarts what it names although nothing is due: controller-manager and scheduler read their
client certificates only at start, and k3s/RKE2 make the supervisor certificate a reset asks for only at start
(docs/interrupted-runs.md)."""

from __future__ import annotations

import json
import os

from ansible_collections.kubepki.fleet.plugins.module_utils import _files, _reload
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

PATH = "/var/lib/kubepki/restart-owed.json"


def read(fs, components=_reload.RESTART_ORDER):
    """``{component: {"certs": [...], "since": iso}}`` owed on the node among ``components`` (kubeadm's by default, or
    a k3s/RKE2 unit); {} when none. An unreadable record is owed as a restart of every one of them: restarting too much
    is safe, forgetting one is not."""
    if not fs.exists(PATH):
        return {}
    try:
        owed = json.loads(read_node_file(fs, PATH).decode("utf-8"))
        if isinstance(owed, dict) and all(isinstance(v, dict) for v in owed.values()):
            return {c: v for c, v in owed.items() if c in components}
    except (CertError, OSError, ValueError, UnicodeDecodeError):
        pass
    return {c: {"certs": [], "since": None} for c in components}


def record(fs, restarts, since, components=_reload.RESTART_ORDER):
    """Add the components of ``restarts`` (restart plan entries, among ``components``) to the record, atomically and
    0600."""
    owed = read(fs, components)
    for step in restarts:
        entry = owed.setdefault(step["component"], {"certs": [], "since": since})
        entry["certs"] = sorted(set(entry.get("certs") or []) | set(step["certs"]))
        if "served" in step:    # what it served before this run: owed while it still serves that (see owed_while_served)
            entry.update(served=step["served"], since=since)
    directory = os.path.dirname(fs.real(PATH))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    _files.write_file(fs.real(PATH), json.dumps(owed, sort_keys=True).encode("utf-8"), 0o600)


def clear(fs):
    if fs.exists(PATH):
        os.unlink(fs.real(PATH))


def merge(restarts, owed):
    """The restart plan ``restarts`` with every owed component added, in restart order, saying why."""
    planned = {step["component"]: step for step in restarts}
    for component, entry in owed.items():
        if component not in planned:
            planned[component] = {"component": component, "certs": entry.get("certs") or [],
                                  "reason": "%s: %s" % (component, reason(entry))}
    return [planned[c] for c in _reload.RESTART_ORDER if c in planned]


def owed_while_served(owed, fingerprint):
    """The entries of ``owed`` whose restart has not happened: the component still serves the certificate it served
    when the record was made (an entry without one, from an unreadable record, is owed)."""
    return {c: e for c, e in owed.items() if e.get("served") in (None, fingerprint)}


def reason(entry):
    """Why an owed restart is due though nothing is: the run that owed it."""
    return "owed by a run that renewed %s%s and was stopped before restarting it" % (
        ", ".join(entry.get("certs") or []) or "its certificates", " at " + entry["since"] if entry.get("since") else "")
