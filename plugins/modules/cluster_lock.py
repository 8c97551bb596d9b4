#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_lock
short_description: Take or give back a cluster's renewal lock, a Lease in its API
version_added: 0.1.0
description:
  - One control plane of a cluster at a time must hold, across every run that renews the cluster - also runs on other
    controllers, such as the concurrent jobs of an AWX sliced job, which put one cluster's control planes in different
    slices. The lock is a C(coordination.k8s.io/v1) Lease in the cluster's own API, which every slice reaches from
    whichever control plane it holds.
  - It is taken and given back as client-go's leader election does - created when absent, taken when released or
    when its claim has expired, written only with the C(resourceVersion) read, so that of two runs exactly one wins -
    and given back by emptying C(spec.holderIdentity).
  - Runs once and says who holds the lock; wait by retrying the task until RV(acquired) is true.
  - A claim expires O(lease_seconds) after it was taken, judged by this node's clock against the time another node of
    the cluster wrote, so a run that died frees the lock at the latest then. O(take_over) frees it at once from a run
    known to be gone.
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._common
attributes:
  check_mode:
    support: full
    details: Says whether the lock would be taken or given back, and writes nothing.
  diff_mode:
    support: none
options:
  state:
    description: V(present) takes (or keeps) the lock for O(holder); V(absent) gives it back when O(holder) holds it.
    type: str
    choices: [present, absent]
    default: present
  holder:
    description: Who takes the lock - a node and a run, for example C(alpha-cp2 from awx-1 (ansible-playbook pid 4711)).
    type: str
    required: true
  lease_seconds:
    description: How long a claim lasts; longer than one node's renewal transaction.
    type: int
    default: 1800
  take_over:
    description: The holder of a run known to be gone; a lock it holds is taken at once.
    type: str
  name:
    description: The Lease's name.
    type: str
    default: kubepki-renewal
  namespace:
    description: The Lease's namespace.
    type: str
    default: kube-system
  kubeconfig:
    description: The kubeconfig on the node whose client certificate may write Leases in O(namespace).
    type: path
    default: /etc/kubernetes/admin.conf
  api_urls:
    description:
      - URLs tried, in order, when the O(kubeconfig)'s server does not answer - for example this node's own
        apiserver, while the control plane the server names restarts.
    type: list
    elements: str
    default: []
seealso:
  - module: kubepki.fleet.kubeadm_renew
  - name: client-go leader election
    description: The algorithm this lock follows.
    link: https://github.com/kubernetes/client-go/blob/master/tools/leaderelection/leaderelection.go
"""

EXAMPLES = r"""
- name: Wait for this cluster's renewal lock
  kubepki.fleet.cluster_lock:
    holder: "{{ inventory_hostname }} from {{ controller }} (ansible-playbook pid {{ pid }})"
    api_urls: ["https://{{ ansible_host }}:6443"]
  register: lease
  until: lease.acquired
  retries: 360
  delay: 5

- name: Give the lock back
  kubepki.fleet.cluster_lock:
    state: absent
    holder: "{{ inventory_hostname }} from {{ controller }} (ansible-playbook pid {{ pid }})"
"""

RETURN = r"""
acquired:
  description: Whether O(holder) holds the lock now (V(present); in check mode, would hold it).
  returned: state is present
  type: bool
  sample: false
released:
  description: Whether the lock was given back (V(absent); in check mode, would be).
  returned: state is absent
  type: bool
  sample: true
holder:
  description: Who holds the lock after this task; null when nobody does.
  returned: always
  type: str
  sample: alpha-cp1 from awx-1 (ansible-playbook pid 4711)
previous_holder:
  description: The holder whose released, expired or gone claim was taken over; null when there was none.
  returned: state is present
  type: str
  sample: null
expires:
  description: When the current claim ends unless renewed, in UTC (RFC 3339).
  returned: state is present
  type: str
  sample: "2026-12-06T18:45:00.000000Z"
api_url:
  description: The apiserver that answered.
  returned: always
  type: str
  sample: https://127.0.1.11:6443
msg:
  description: Who holds the lock and until when.
  returned: state is present
  type: str
  sample: held by alpha-cp1 from awx-1 (ansible-playbook pid 4711) until 2026-12-06T18:45:00.000000Z
lease:
  description: The Lease, as C(namespace/name).
  returned: always
  type: str
  sample: kube-system/kubepki-renewal
"""

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _lease
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            holder=dict(type="str", required=True),
            lease_seconds=dict(type="int", default=1800),
            take_over=dict(type="str"),
            name=dict(type="str", default="kubepki-renewal"),
            namespace=dict(type="str", default="kube-system"),
            kubeconfig=dict(type="path", default="/etc/kubernetes/admin.conf"),
            api_urls=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not params["holder"].strip():
        module.fail_json(msg="holder is empty: name the node and the run that takes the lock")
    if not 10 <= params["lease_seconds"] <= 86400:
        module.fail_json(msg="lease_seconds is %d: give 10 to 86400, longer than one node's renewal" % params["lease_seconds"])
    fs = NodeFS(params["rootfs"])
    if fs.missing_root():
        module.fail_json(msg=fs.missing_root())
    lease = "%s/%s" % (params["namespace"], params["name"])
    try:
        client = _lease.Client(fs, params["kubeconfig"], params["namespace"], params["name"], params["api_urls"])
        if params["state"] == "present":
            result = _lease.acquire(client, params["holder"], params["lease_seconds"],
                                    datetime.datetime.now(datetime.timezone.utc), params["take_over"], module.check_mode)
        else:
            result = _lease.release(client, params["holder"], module.check_mode)
    except _lease.LeaseError as exc:
        module.fail_json(msg="cluster lock %s: %s. Nothing was changed." % (lease, exc), lease=lease)
    if params["state"] == "present":
        result["msg"] = "held by %s until %s" % (result["holder"], result["expires"])
    module.exit_json(lease=lease, **result)


if __name__ == "__main__":
    main()
