# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""What a renewal killed half-way leaves on a node, and how the next run finishes or undoes it.

- A static pod manifest parked in ``/etc/kubernetes/kubepki-parked`` (role restart_control_plane moves it there to
  restart the component): the kubelet stopped the pod and nothing starts it again until the manifest is back.
- Temp files of the atomic writer (``_files``: ``.<name>.<random>.kubepki-tmp`` beside the target), some holding
  private keys.
A key renamed without its cert is found by kubeadm_renew itself (``_kubeadm._key_mismatch``).
"""

from __future__ import annotations

import os

from ansible_collections.kubepki.fleet.plugins.module_utils import _files

PARK_DIR = "/etc/kubernetes/kubepki-parked"
MANIFEST_DIR = "/etc/kubernetes/manifests"
TEMP_SUFFIX = ".kubepki-tmp"
# Where the collection writes (each dir alone, not below it: /var/lib/kubelet and /var/lib/rancher also hold pod
# volumes and container images): kubeadm's tree, RKE1's, the kubelet's pki, k3s/RKE2's server/tls and kubeconfig.
TEMP_DIRS = ("/etc/kubernetes", "/etc/kubernetes/pki", "/etc/kubernetes/pki/etcd", "/etc/kubernetes/ssl",
             "/var/lib/kubelet/pki") + tuple(d % p for p in ("k3s", "rke2") for d in (
                 "/var/lib/rancher/%s/server/tls", "/var/lib/rancher/%s/server/tls/etcd", "/etc/rancher/%s"))


def _same(path_a, path_b):
    with open(path_a, "rb") as a, open(path_b, "rb") as b:
        return a.read() == b.read()


def find(fs, manifest_dir=MANIFEST_DIR, park_dir=PARK_DIR, temp_dirs=TEMP_DIRS):
    """``{"put_back": [{from, to}], "removed": [paths], "kept": [{path, reason}]}``: what ``apply`` would do."""
    found = {"put_back": [], "removed": [], "kept": []}
    parked_dir = fs.real(park_dir)
    if os.path.isdir(parked_dir):
        for name in sorted(os.listdir(parked_dir)):
            parked, target = "%s/%s" % (park_dir, name), "%s/%s" % (manifest_dir, name)
            if not name.endswith(".yaml") or not os.path.isfile(fs.real(parked)):
                continue
            if not fs.exists(target):
                found["put_back"].append({"from": parked, "to": target})
            elif _same(fs.real(parked), fs.real(target)):
                found["removed"].append(parked)
            else:
                found["kept"].append({"path": parked, "reason": "differs from %s, which is in place: compare the two and "
                                                                "remove the one that is not wanted" % target})
    for directory in temp_dirs:
        real = fs.real(directory)
        if os.path.isdir(real):
            found["removed"] += ["%s/%s" % (directory, f) for f in sorted(os.listdir(real)) if f.endswith(TEMP_SUFFIX)]
    return found


def apply(fs, found, done):
    """Put parked manifests back and remove leftovers; ``done`` gets each node path as it is done, so that a failure
    can say what was."""
    for move in found["put_back"]:
        os.rename(fs.real(move["from"]), fs.real(move["to"]))
        _files.fsync_dir(os.path.dirname(fs.real(move["to"])))
        done.append(move["to"])
    for path in found["removed"]:
        os.unlink(fs.real(path, follow=False))
        done.append(path)
