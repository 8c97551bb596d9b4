#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: recover
short_description: Finish or undo what an interrupted renewal left on a node
version_added: 0.1.0
description:
  - A renewal can be killed at any moment (the controller, the SSH connection, the module). Run this first, under the
    node's renewal lock, so that the next ordinary run starts from a node that works.
  - Puts back each static pod manifest parked in O(park_dir) (the role C(kubepki.fleet.restart_control_plane) moves a
    manifest there to restart its component, and the kubelet starts nothing until it is back); removes a parked copy
    that is identical to the manifest in place, and keeps (and reports) one that differs.
  - Removes temp files of the collection's atomic writer (C(.<name>.<random>.kubepki-tmp), some hold private keys)
    from the directories it writes in.
  - A key renamed without its certificate is renewed by M(kubepki.fleet.kubeadm_renew) itself, whatever its days left.
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._common
  - kubepki.fleet._nodelock
attributes:
  check_mode:
    support: full
    details: Reports what it would do and changes nothing.
  diff_mode:
    support: full
    details: Paths only, never file contents.
options:
  manifest_dir:
    description: The kubelet's static pod manifest directory.
    type: path
    default: /etc/kubernetes/manifests
  park_dir:
    description: Where the restart parks manifests.
    type: path
    default: /etc/kubernetes/kubepki-parked
seealso:
  - module: kubepki.fleet.kubeadm_renew
"""

EXAMPLES = r"""
- name: Finish or undo what an interrupted renewal left
  kubepki.fleet.recover:
  register: recovered
"""

RETURN = r"""
put_back:
  description: Manifests moved from O(park_dir) back to O(manifest_dir) (in check mode, that would be).
  returned: always
  type: list
  elements: dict
  contains:
    from:
      description: The parked manifest.
      type: str
    to:
      description: Where it is back.
      type: str
  sample: [{from: /etc/kubernetes/kubepki-parked/kube-apiserver.yaml, to: /etc/kubernetes/manifests/kube-apiserver.yaml}]
removed:
  description: Leftovers removed - temp files of the writer and parked copies identical to the manifest in place.
  returned: always
  type: list
  elements: str
  sample: [/etc/kubernetes/pki/.apiserver.key.k2j4x9.kubepki-tmp]
kept:
  description: Leftovers it would not decide on, with what to do.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The leftover.
      type: str
    reason:
      description: Why it was kept, and what to do.
      type: str
  sample: []
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _nodelock, _recover
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            manifest_dir=dict(type="path", default=_recover.MANIFEST_DIR),
            park_dir=dict(type="path", default=_recover.PARK_DIR),
        ),
        supports_check_mode=True,
    )
    fs = NodeFS(module.params["rootfs"])
    if fs.missing_root():
        module.fail_json(msg=fs.missing_root())
    # under the node lock (a real run): a renewal module running meanwhile may be staging the temp files found here
    with _nodelock.renewal_lock(module, fs, "recover"):
        try:
            found = _recover.find(fs, module.params["manifest_dir"], module.params["park_dir"])
        except OSError as exc:
            module.fail_json(msg="cannot look for what an interrupted renewal left: %s; nothing was changed" % exc)
        changed = bool(found["put_back"] or found["removed"])
        result = dict(changed=changed, **found)
        if module._diff and changed:
            result["diff"] = {"before": {"parked": [m["from"] for m in found["put_back"]], "leftovers": found["removed"]},
                              "after": {"put_back": [m["to"] for m in found["put_back"]], "leftovers": []}}
        if changed and not module.check_mode:
            done = []
            try:
                _recover.apply(fs, found, done)
            except OSError as exc:
                module.fail_json(msg="while recovering, %s; done so far: %s. Fix the cause and run again"
                                 % (exc, ", ".join(done) or "nothing"), exception=traceback.format_exc(), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
