#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: verify_in_use
short_description: Prove that renewed certificates are in use, by what each component shows
version_added: 0.2.0
description:
  - Run with O(phase=before) before restarting anything to record what the node shows (served fingerprints,
    control-plane containers, the kubelet's process and node Lease), then with O(phase=after) and that record in
    O(before) to judge.
  - What counts as proof depends on the component. A renewed serving certificate - its endpoint serves that file.
    Controller-manager and scheduler - a new in-memory serving certificate, which only a new process has. A kubelet
    restarted for a repaired C(kubelet.conf) - a new main PID and its node Lease renewed after that process started,
    read back with C(kubelet.conf)'s own client certificate. kube-apiserver or etcd restarted - a new container
    (their serving certificates reload without one, so a new fingerprint proves no restart).
  - With O(phase=after) it fails, naming each component that does not show its proof, so that C(until) can retry
    it and a rescue can roll back.
  - Reads only; changes nothing.
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._common
attributes:
  check_mode:
    support: full
    details: Reads only, also in check mode.
  diff_mode:
    support: none
options:
  phase:
    description:
      - V(before) records the evidence; V(after) compares with O(before) and judges.
    type: str
    choices: [before, after]
    required: true
  renewed:
    description:
      - Names of the renewed certificates (kubeadm handles such as V(apiserver), V(kubelet.conf)).
    type: list
    elements: str
    default: []
  restarted:
    description:
      - Components restarted (or about to be, with O(phase=before)).
    type: list
    elements: str
    default: []
  before:
    description:
      - RV(evidence) of the O(phase=before) run. Required with O(phase=after) unless O(kubelet_serving) is set.
    type: dict
  must_serve:
    description:
      - Components whose endpoints must serve a valid certificate after the restarts.
    type: list
    elements: str
    default: [kube-apiserver, etcd, etcd-peer, kube-controller-manager, kube-scheduler]
  kubelet_serving:
    description:
      - Judge only what the kubelet serves on 10250 after its self-signed serving certificate was moved aside
        (V(new) - the C(kubelet.crt) it wrote, not one of O(old_fingerprints) and valid more than
        O(min_days_left) days), put back (V(old) - the restored C(kubelet.crt)), or replaced by RKE's
        C(generate_serving_certificate) (V(issued) - a new certificate from kube-ca, valid as long).
      - With O(phase=after) only; O(before) is then not needed.
    type: str
    choices: [new, old, issued]
  supervisor:
    description:
      - Judge only what a k3s or RKE2 server serves after its supervisor certificate was reset or regenerated and it
        restarted - a new C(CN=<program>) certificate on the supervisor port, not one of O(old_fingerprints) and valid
        more than O(min_days_left) days - and that each of O(leaves) is valid as long.
      - Also that the C(<program>-serving) secret (read on the loopback apiserver with the admin client certificate)
        and C(dynamic-cert.json) hold the served certificate and that the secret's C(listener.cattle.io/fingerprint)
        annotation names it. Run on every server of an HA cluster, this shows that one server's regenerated
        certificate reached them all.
      - With O(phase=after) only; O(before) is then not needed.
    type: str
    choices: [k3s, rke2]
  leaves:
    description:
      - With O(supervisor), the fact ids (RV(kubepki.fleet.cert_facts#module:ansible_facts.kubepki.certs[].id)) of the
        leaves the server re-issues at start.
    type: list
    elements: str
    default: []
  old_fingerprints:
    description:
      - SHA-256 fingerprints served or held before; a certificate with one of them is not new.
    type: list
    elements: str
    default: []
  min_days_left:
    description:
      - Days a new certificate must be valid for, with O(kubelet_serving) or O(supervisor).
    type: float
    default: 0
  probe_host:
    description:
      - Address the node's endpoints are probed on.
    type: str
    default: 127.0.0.1
  probe_timeout:
    description:
      - Seconds to wait for each endpoint and for the apiserver.
    type: float
    default: 3.0
seealso:
  - module: kubepki.fleet.kubeadm_renew
  - module: kubepki.fleet.cert_facts
"""

EXAMPLES = r"""
- name: Record what the node shows before the restarts
  kubepki.fleet.verify_in_use:
    phase: before
    restarted: "{{ renewal.restart }}"
  register: shown_before

- name: Wait until every renewed certificate is in use
  kubepki.fleet.verify_in_use:
    phase: after
    renewed: "{{ renewal.renewed | map(attribute='name') | list }}"
    restarted: "{{ renewal.restart }}"
    before: "{{ shown_before.evidence }}"
  register: verified
  until: verified is succeeded
  retries: 30
  delay: 2

- name: Wait until the kubelet serves the kubelet.crt it wrote after kubelet.crt was moved aside
  kubepki.fleet.verify_in_use:
    phase: after
    kubelet_serving: new
    old_fingerprints: ["{{ plan.served.fingerprint_sha256 }}"]
    min_days_left: 30
  register: kubelet_verified
  until: kubelet_verified is succeeded
  retries: 30
  delay: 2
"""

RETURN = r"""
evidence:
  description: What the node shows now; pass it as O(before) to the O(phase=after) run.
  returned: always
  type: dict
  contains:
    now:
      description: The node's clock when read.
      type: str
    served:
      description: Endpoint component to the SHA-256 fingerprint it serves.
      type: dict
    containers:
      description: Control-plane container name to running container id, or null without crictl.
      type: dict
    endpoints:
      description: Endpoint component to the C(host:port) probed.
      type: dict
    kubelet:
      description: The kubelet unit's main PID and start time (only when the kubelet is restarted).
      type: dict
    lease:
      description: The node Lease as read with kubelet.conf's credentials - node, client serial, renew time or error.
      type: dict
  sample:
    now: "2026-12-02T00:15:26Z"
    served: {kube-apiserver: "AB:CD:...", kube-scheduler: "12:34:..."}
    containers: {kube-apiserver: 3f2a0c1b9d7e}
verified:
  description: Whether every check passed (O(phase=after) only; false also fails the task).
  returned: always
  type: bool
  sample: true
checks:
  description: One entry per proof looked for (O(phase=after) only).
  returned: always
  type: list
  elements: dict
  contains:
    component:
      description: The component.
      type: str
    evidence:
      description: V(served), V(in-memory serving cert), V(client), V(restart), V(valid), V(renewed) or V(stored).
      type: str
    ok:
      description: Whether the proof was found.
      type: bool
    detail:
      description: What was seen.
      type: str
  sample:
    - component: kubelet
      evidence: client
      ok: true
      detail: kubelet (PID 4242, started 2026-12-02T00:15:20Z) renewed node Lease cp1 at 2026-12-02T00:15:30.123456Z; ...
"""

import datetime
import errno
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _k3s, _verify
from ansible_collections.kubepki.fleet.plugins.module_utils._cryptography_dep import assert_cryptography
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import gather
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS


def _run_command(module):
    """``module.run_command`` that raises OSError for a missing binary (crictl, systemctl), as _verify expects,
    instead of failing the module."""
    def run(argv):
        if not module.get_bin_path(argv[0]):
            raise OSError(errno.ENOENT, "%s is not installed" % argv[0])
        return module.run_command(argv)
    return run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            phase=dict(type="str", required=True, choices=["before", "after"]),
            renewed=dict(type="list", elements="str", default=[]),
            restarted=dict(type="list", elements="str", default=[]),
            before=dict(type="dict"),
            must_serve=dict(type="list", elements="str",
                            default=["kube-apiserver", "etcd", "etcd-peer", "kube-controller-manager", "kube-scheduler"]),
            kubelet_serving=dict(type="str", choices=list(_verify.KUBELET_SERVING_WANTS)),
            supervisor=dict(type="str", choices=["k3s", "rke2"]),
            leaves=dict(type="list", elements="str", default=[]),
            old_fingerprints=dict(type="list", elements="str", default=[], no_log=False),
            min_days_left=dict(type="float", default=0),
            probe_host=dict(type="str", default="127.0.0.1"),
            probe_timeout=dict(type="float", default=3.0),
        ),
        mutually_exclusive=[("kubelet_serving", "supervisor")],
        supports_check_mode=True,
    )
    assert_cryptography(module)
    params = module.params
    served_now = params["kubelet_serving"] or params["supervisor"]
    if params["phase"] == "after" and params["before"] is None and not served_now:
        module.fail_json(msg="phase=after needs before (the evidence of the phase=before run), or kubelet_serving or supervisor")
    if served_now and params["phase"] != "after":
        module.fail_json(msg="kubelet_serving and supervisor judge what is served now: use them with phase=after")
    fs = NodeFS(params["rootfs"])
    try:
        now = datetime.datetime.now(datetime.timezone.utc)
        facts = gather(fs, now=now, user_kubeconfigs=False, probe_host=params["probe_host"], probe_timeout=params["probe_timeout"])
        if params["kubelet_serving"]:
            found = {"now": facts["now"], "served": _verify.served(facts)}
            checks = [_verify.kubelet_serving(facts, params["kubelet_serving"], params["old_fingerprints"], params["min_days_left"])]
        elif params["supervisor"]:
            found = {"now": facts["now"], "served": _verify.served(facts)}
            server = _k3s.find_server(fs, params["supervisor"])
            _secret, secret_info = _k3s.Api(server, timeout=params["probe_timeout"]).read_secret(now, params["min_days_left"])
            _cached, cached_info = _k3s.read_dynamic_cert(server, now, params["min_days_left"])
            checks = _verify.supervisor_served(facts, params["supervisor"], params["old_fingerprints"], params["leaves"],
                                               params["min_days_left"]) \
                + [_verify.supervisor_stored(facts, params["supervisor"], secret_info, cached_info)]
        else:
            found = _verify.evidence(facts, _run_command(module), fs, "kubelet" in params["restarted"])
            if params["phase"] == "before":
                module.exit_json(changed=False, evidence=found, verified=False, checks=[])
            checks = _verify.judge(facts, params["before"], found, params["renewed"], params["restarted"], params["must_serve"])[1]
        ok = all(c["ok"] for c in checks)
    except Exception as exc:  # pylint: disable=broad-except  # a bug here must read as a message, not a traceback
        module.fail_json(msg="cannot verify the renewed certificates: %s" % exc, exception=traceback.format_exc())
    result = dict(changed=False, evidence=found, verified=ok, checks=checks)
    if not ok:
        module.fail_json(msg="not in use yet: " + "; ".join("%s: %s" % (c["component"], c["detail"]) for c in checks if not c["ok"]),
                         **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
