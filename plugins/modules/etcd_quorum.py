#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: etcd_quorum
short_description: Check that a stacked etcd cluster keeps quorum while this node's member restarts, or has it now
version_added: 0.1.0
description:
  - Asks the node's own etcd member for the member list (C(POST /v3/cluster/member/list), with the node's etcd
    healthcheck-client certificate), then every member's C(/health). When this member does not answer, the list comes
    from O(endpoints), and when none answers, from the manifest's C(--initial-cluster).
  - O(purpose=restart) - before anything changes on a node whose renewal restarts etcd - fails when restarting this
    member would leave fewer healthy voting members than a quorum (a majority of the voting members) because another
    member is down, naming the members that are down. A cluster of one or two members has no member to spare; with
    none down it passes, saying so.
  - O(purpose=serving) - after the restart - fails unless this member is healthy and the cluster has quorum, saying
    which members are down when quorum is lost.
  - Read only. A node without an etcd static pod (external etcd) passes with RV(stacked=false).
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._common
attributes:
  check_mode:
    support: full
    details: Only reads; runs the same in check mode.
  diff_mode:
    support: none
options:
  purpose:
    description: V(restart) before this member restarts, V(serving) to check the cluster serves now.
    type: str
    choices: [restart, serving]
    default: restart
  endpoints:
    description:
      - Other members to ask for the member list when this member does not answer - client URLs, or hosts (the other
        control planes' addresses), which mean C(https://<host>:2379) as kubeadm sets them up; each may start with
        C(<member name>=).
      - When no member answers the member list (a member without quorum does not serve clients), the members are the
        manifest's C(--initial-cluster) and these. On the first control plane kubeadm's C(--initial-cluster) names
        that node alone, so give the others here.
    type: list
    elements: str
    default: []
  manifest:
    description: The etcd static pod manifest; its C(--name), C(--advertise-client-urls) and C(--initial-cluster) are read.
    type: path
    default: /etc/kubernetes/manifests/etcd.yaml
  ca_file:
    description: The etcd CA certificate.
    type: path
    default: /etc/kubernetes/pki/etcd/ca.crt
  cert_file:
    description: A client certificate etcd accepts; kubeadm's healthcheck-client is meant for this.
    type: path
    default: /etc/kubernetes/pki/etcd/healthcheck-client.crt
  key_file:
    description: Its private key; read by the TLS library only, never returned.
    type: path
    default: /etc/kubernetes/pki/etcd/healthcheck-client.key
  timeout:
    description: Seconds for each request to a member.
    type: float
    default: 5
  wait:
    description: Seconds to keep asking, every 2 seconds, until the verdict is good (a member restarting needs a moment
      to find its leader); V(0) asks once.
    type: int
    default: 0
seealso:
  - module: kubepki.fleet.kubeadm_renew
  - name: etcd failure tolerance
    description: Why a cluster of n members needs n/2+1 of them.
    link: https://etcd.io/docs/v3.5/faq/#what-is-failure-tolerance
"""

EXAMPLES = r"""
- name: Check etcd keeps quorum while this member restarts
  kubepki.fleet.etcd_quorum:
    endpoints: [cp2=10.0.0.12, "cp3=https://10.0.0.13:2379"]

- name: Wait until etcd serves with quorum again
  kubepki.fleet.etcd_quorum:
    purpose: serving
    wait: 60
"""

RETURN = r"""
stacked:
  description: Whether this node runs an etcd static pod; false means nothing was checked.
  returned: always
  type: bool
  sample: true
member:
  description: This node's member name (the manifest's C(--name)).
  returned: when stacked
  type: str
  sample: alpha-cp1
source:
  description: Where the member list came from - the client URL that answered, or the manifest.
  returned: when stacked
  type: str
  sample: https://127.0.1.11:2379
members:
  description: Every member with its health.
  returned: when stacked
  type: list
  elements: dict
  contains:
    name:
      description: The member's name; empty for a member added but never started.
      type: str
    id:
      description: The member ID in hex (V(0) when read from the manifest).
      type: str
    client_url:
      description: The first client URL it advertises.
      type: str
    learner:
      description: Whether it is a learner, which does not vote.
      type: bool
    healthy:
      description: Whether its C(/health) said true.
      type: bool
    detail:
      description: V(healthy), or why not.
      type: str
  sample: [{name: alpha-cp3, id: 8e9e05c52164694d, client_url: "https://127.0.1.13:2379", learner: false, healthy: false,
            detail: "does not answer ([Errno 111] Connection refused)"}]
voting:
  description: Voting members.
  returned: when stacked
  type: int
  sample: 3
quorum:
  description: Voting members the cluster needs to have a leader.
  returned: when stacked
  type: int
  sample: 2
healthy:
  description: Healthy voting members now.
  returned: when stacked
  type: int
  sample: 2
left:
  description: Healthy voting members while this one restarts (V(restart)), or now (V(serving)).
  returned: when stacked
  type: int
  sample: 1
down:
  description: Names (or IDs) of the other voting members that are not healthy.
  returned: when stacked
  type: list
  elements: str
  sample: [alpha-cp3]
msg:
  description: The verdict, naming the members that are down.
  returned: always
  type: str
  sample: restarting etcd on alpha-cp1 leaves 2 of 3 members
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _etcd
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            purpose=dict(type="str", choices=["restart", "serving"], default="restart"),
            endpoints=dict(type="list", elements="str", default=[]),
            manifest=dict(type="path", default=_etcd.MANIFEST),
            ca_file=dict(type="path", default=_etcd.PKI + "/ca.crt"),
            cert_file=dict(type="path", default=_etcd.PKI + "/healthcheck-client.crt"),
            key_file=dict(type="path", default=_etcd.PKI + "/healthcheck-client.key"),
            timeout=dict(type="float", default=5),
            wait=dict(type="int", default=0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    fs = NodeFS(params["rootfs"])
    if fs.missing_root():
        module.fail_json(msg=fs.missing_root())
    try:
        present = fs.exists(params["manifest"])
    except OSError:
        present = False
    if not present:
        module.exit_json(changed=False, stacked=False, msg="no etcd static pod on this node (%s): nothing to check" % params["manifest"])
    deadline = time.monotonic() + max(params["wait"], 0)
    while True:
        try:
            cluster = _etcd.Cluster(fs, params["manifest"], params["ca_file"], params["cert_file"], params["key_file"],
                                    params["timeout"])
            if not cluster.name:
                raise _etcd.EtcdError("%s has no --name" % params["manifest"])
            listed, source = cluster.members([u for u in params["endpoints"] if u])
        except _etcd.EtcdError as exc:
            module.fail_json(msg="cannot tell whether etcd %s: %s%s" % (
                "keeps quorum" if params["purpose"] == "restart" else "has quorum", exc,
                ". Nothing was changed." if params["purpose"] == "restart" else ""), stacked=True)
        members = [cluster.health(member) for member in listed]
        verdict = _etcd.decide(members, cluster.name, params["purpose"])
        if verdict["ok"] or time.monotonic() + 2 > deadline:
            break
        time.sleep(2)
    result = dict(changed=False, stacked=True, member=cluster.name, source=source,
                  members=[{k: m[k] for k in ("name", "id", "client_url", "learner", "healthy", "detail")} for m in members],
                  **{k: verdict[k] for k in ("voting", "quorum", "healthy", "left", "down", "msg")})
    if not verdict["ok"]:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
