# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Restarts a renewal owes: recorded on the node before the first certificate is written, cleared once the restarts
are verified (playbooks/tasks/renew_kubeadm_node.yml). A run killed between the two leaves the record, and the next
run restarts what it names although nothing is due: controller-manager and scheduler read their client certificates
only at start, so their renewed files change nothing until then (docs/interrupted-runs.md)."""

from __future__ import annotations

import json
import os

from ansible_collections.kubepki.fleet.plugins.module_utils import _files, _reload
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

PATH = "/var/lib/kubepki/restart-owed.json"


def read(fs):
    """``{component: {"certs": [...], "since": iso}}`` owed on the node; {} when none. An unreadable record is owed
    as a restart of everything it could name: restarting too much is safe, forgetting one is not."""
    if not fs.exists(PATH):
        return {}
    try:
        owed = json.loads(read_node_file(fs, PATH).decode("utf-8"))
        if isinstance(owed, dict) and all(isinstance(v, dict) for v in owed.values()):
            return {c: v for c, v in owed.items() if c in _reload.RESTART_ORDER}
    except (CertError, OSError, ValueError, UnicodeDecodeError):
        pass
    return {c: {"certs": [], "since": None} for c in _reload.RESTART_ORDER}


def record(fs, restarts, since):
    """Add the components of ``restarts`` (restart plan entries) to the record, atomically and 0600."""
    owed = read(fs)
    for step in restarts:
        entry = owed.setdefault(step["component"], {"certs": [], "since": since})
        entry["certs"] = sorted(set(entry.get("certs") or []) | set(step["certs"]))
    directory = os.path.dirname(fs.real(PATH))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    _files.write_file(fs.real(PATH), json.dumps(owed, sort_keys=True).encode("utf-8"), 0o600)


def merge(restarts, owed):
    """The restart plan ``restarts`` with every owed component added, in restart order, saying why."""
    planned = {step["component"]: step for step in restarts}
    for component, entry in owed.items():
        if component not in planned:
            certs = entry.get("certs") or []
            planned[component] = {"component": component, "certs": certs, "reason": (
                "%s: owed by a run that renewed %s%s and was stopped before restarting it"
                % (component, ", ".join(certs) or "its certificates", " at " + entry["since"] if entry.get("since") else ""))}
    return [planned[c] for c in _reload.RESTART_ORDER if c in planned]
