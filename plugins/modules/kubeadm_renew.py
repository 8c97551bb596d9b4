#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: kubeadm_renew
short_description: Renew kubeadm's certificates and the client certs embedded in its kubeconfigs
version_added: 0.1.0
description:
  - Renews what is under O(threshold_days) (or everything with O(force)) among kubeadm's certificate set
    (C(apiserver), C(apiserver-kubelet-client), C(front-proxy-client), C(apiserver-etcd-client), C(etcd-server),
    C(etcd-peer), C(etcd-healthcheck-client)) and the client certs embedded in C(admin.conf), C(super-admin.conf),
    C(controller-manager.conf) and C(scheduler.conf).
  - Repairs a C(kubelet.conf) that embeds its client cert, or whose rotating client cert has expired, the way
    kubeadm's troubleshooting guide does it - a new C(kubelet-client-current.pem) and C(kubelet.conf) pointing at it.
  - Refuses, changing nothing, when a needed CA key is absent (externally managed CA) or the CA has expired or would
    expire before the renewed certificate, or when a certificate has a key of a type no Kubernetes component can use
    (DSA, Ed448, ECDSA off P-256/P-384/P-521, RSA under 1024 or over 8192 bits), since renewal keeps the key type,
    or a CA has such a key; check mode refuses alike.
  - Returns RV(restart), the components that will not use their new certificates until restarted, in restart order,
    with the reason for each in RV(restart_plan); certificates their component picks up by itself (by its version, read
    from the static pod image) are listed in RV(reloads) and restart nothing. The module restarts nothing itself; restarts
    that a stopped run owes are returned too (RV(restart_owed)).
  - A failure after something was written reports C(changed=true) and lists what was written in RV(renewed), so the
    caller can roll back.
  - Each certificate and its key are replaced together by atomic renames (key first), keeping modes and owners.
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._common
  - kubepki.fleet._nodelock
attributes:
  check_mode:
    support: full
    details: Returns the plan (which certificates, their predicted expiry, what restarts) and writes nothing.
  diff_mode:
    support: full
    details: Shows the expiry and serial of each certificate before and after.
options:
  threshold_days:
    description:
      - Renew certificates with fewer days left than this.
    type: int
    default: 30
  force:
    description:
      - Renew every selected certificate whatever its expiry, like C(kubeadm certs renew all).
    type: bool
    default: false
  certs:
    description:
      - Limit renewal to these kubeadm handles (for example V(apiserver), V(admin.conf), V(kubelet.conf)).
      - Empty means all of them.
    type: list
    elements: str
    default: []
  method:
    description:
      - V(native) re-issues each certificate with Python cryptography - subject, SANs and usages of the old one,
        a new key of the same type, validity from O(validity_days) or the old lifetime.
      - V(kubeadm) runs the node's C(kubeadm certs renew <name>) (only with O(rootfs=/)) for each certificate that
        kubeadm version has a subcommand for (from C(kubeadm certs renew --help); C(super-admin.conf) from v1.29) and
        would renew with the planned lifetime and key type; the rest, kubelet.conf included, is renewed natively.
        Each entry of RV(renewed) says which way it went and why. O(kubeadm_config) is passed as C(--config) to a
        kubeadm that reads its API version (v1beta4 from v1.31).
      - V(auto) uses kubeadm when it is installed and O(rootfs) is V(/), else native.
    type: str
    choices: [auto, kubeadm, native]
    default: auto
  validity_days:
    description:
      - Lifetime of renewed certificates with the native method. Default is O(kubeadm_config)'s
        C(certificateValidityPeriod), else the old certificate's lifetime, so longer validities are not reset to a year;
        certificates whose lifetime kubeadm before v1.31 inflated (NotBefore pinned to the CA's) get one year.
      - RV(renewed) shows the old and new lifetime of each certificate and why.
      - From 1 to 3650 (ten years, the lifetime of a kubeadm CA, which no certificate may outlive); other values
        are refused, changing nothing.
    type: int
  kubeadm_config:
    description:
      - A kubeadm configuration file on the node (the one given to C(kubeadm init --config), or C(kubectl -n kube-system
        get cm kubeadm-config) saved to a file). Its C(ClusterConfiguration) C(certificateValidityPeriod) (v1beta4,
        kubeadm v1.31+) is the lifetime of renewed kubeadm certificates unless O(validity_days) is set.
      - Without it each certificate keeps its own lifetime; see O(validity_days).
    type: path
  repair_kubelet_conf:
    description:
      - Repair C(kubelet.conf) when it embeds its client cert or its rotating client cert has expired.
    type: bool
    default: true
  restart_policy:
    description:
      - V(needed) restarts only the components that do not load their renewed certificates by themselves.
      - V(always) also restarts those that would (kube-apiserver for its client certificates, etcd), as older runbooks do.
    type: str
    choices: [needed, always]
    default: needed
  probe:
    description:
      - Probe the node's control-plane endpoints first (with O(rootfs=/) only); a component that does not serve is
        restarted even when it would load its renewed certificates by itself, since a crash-looping container waits out
        the kubelet's back-off.
    type: bool
    default: true
  probe_host:
    description:
      - Address the node's endpoints are probed on.
    type: str
    default: 127.0.0.1
  renew_managed:
    description:
      - A node whose certificates a cluster manager renews or replaces itself - Cluster API (its Node carries
        C(cluster.x-k8s.io/owner-kind), or the bootstrap sentinel file is present) or Rancher (rancher-system-agent is
        configured) - is left alone and RV(managed_by) says why, unless this is V(true).
    type: bool
    default: false
  now:
    description:
      - Evaluate expiry at this ISO 8601 instant instead of the clock (planning only; certificates are issued at the clock).
    type: str
seealso:
  - module: kubepki.fleet.cert_facts
"""

EXAMPLES = r"""
- name: Renew what expires within 30 days and learn what must restart
  kubepki.fleet.kubeadm_renew:
    threshold_days: 30
  register: renewal

- name: Everything, like kubeadm certs renew all, keeping the old lifetimes
  kubepki.fleet.kubeadm_renew:
    force: true
    method: native

- name: Only the controller-manager's and scheduler's kubeconfigs
  kubepki.fleet.kubeadm_renew:
    certs: [controller-manager.conf, scheduler.conf]
"""

RETURN = r"""
renewed:
  description:
    - Certificates renewed (or, in check mode, that would be), with old and new expiry, serial and lifetime
      (C(lifetime_days), C(new_lifetime_days), C(lifetime_reason)), old and new key type (C(key_type),
      C(new_key_type) - the old type, but the kubelet's own ECDSA-P256 for C(kubelet.conf)), and the method that renews each
      (C(method) V(kubeadm) or V(native), C(method_reason)), and why it is due (C(due_reason) - under the
      threshold, V(force=true), or a key that does not match its certificate, from a renewal interrupted between the
      two, which is renewed whatever its days left).
    - After a failure, a certificate that kubeadm had half written (its key but not its certificate, say) is listed
      with C(partial) naming the files written and C(new_serial) null; the node's backup holds the pair.
  returned: always
  type: list
  elements: dict
  sample:
    - name: apiserver
      path: /etc/kubernetes/pki/apiserver.crt
      ca: ca
      not_after: "2026-12-13T10:00:00Z"
      serial: 3F2A0C1B9D
      days_left: 19.9
      new_not_after: "2027-11-23T10:00:00Z"
      new_serial: 7C01D2E3F4
      lifetime_days: 365.0
      new_lifetime_days: 365.0
      lifetime_reason: its own lifetime
      key_type: RSA-2048
      new_key_type: RSA-2048
      method: kubeadm
      method_reason: kubeadm v1.31.4 certs renew apiserver
      due_reason: 19.9 days left, under threshold_days=30
skipped_certs:
  description:
    - Certificates left alone, with the reason.
    - Not named C(skipped), which Ansible reserves - a non-empty list there would mark the whole task as skipped.
  returned: always
  type: list
  elements: dict
  sample:
    - name: super-admin.conf
      reason: "absent: kubeadm writes it only on the node that ran kubeadm init"
restart:
  description: Components that must restart for the renewed certificates to be in use, in restart order.
  returned: always
  type: list
  elements: str
  sample: [kube-controller-manager, kube-scheduler]
restart_plan:
  description: Why each component in RV(restart) must restart.
  returned: always
  type: list
  elements: dict
  contains:
    component:
      description: The component to restart.
      type: str
    certs:
      description: The renewed certificates it loads only at start.
      type: list
      elements: str
    reason:
      description: Why it does not pick them up by itself, with the upstream source.
      type: str
  sample:
    - component: kube-controller-manager
      certs: [controller-manager.conf]
      reason: "kube-controller-manager for controller-manager.conf: it reads the client certificate embedded in its kubeconfig once, at start (...)"
restart_owed:
  description:
    - Components a run renewed certificates for but was stopped before it restarted them (recorded on the node in
      C(/var/lib/kubepki/restart-owed.json) before the first certificate is written, removed by the playbook once the
      restarts are verified). They are in RV(restart) whether or not anything is due now.
  returned: always
  type: list
  elements: str
  sample: [kube-controller-manager, kube-scheduler]
reloads:
  description: Renewed certificates their component picks up without a restart, and how.
  returned: always
  type: list
  elements: dict
  contains:
    cert:
      description: The renewed certificate.
      type: str
    component:
      description: The component that uses it.
      type: str
    reason:
      description: How and from which version it reloads, with the upstream source.
      type: str
  sample:
    - cert: apiserver
      component: kube-apiserver
      reason: "kube-apiserver v1.31 reloads its serving certificates on file change (...)"
managed_by:
  description: The cluster managers the node shows, each with the signal seen; non-empty means the node was left alone.
  returned: always
  type: list
  elements: dict
  contains:
    manager:
      description: V(Cluster API) or V(Rancher).
      type: str
    signal:
      description: What shows it (a file, a Node annotation).
      type: str
    detail:
      description: What that manager does with the certificates.
      type: str
  sample:
    - manager: Cluster API
      signal: Node annotation cluster.x-k8s.io/owner-kind=KubeadmControlPlane
      detail: the node belongs to KubeadmControlPlane cp, which replaces or renews its machines' certificates itself
msg:
  description: Why the node was left alone, when it was.
  returned: when RV(managed_by) is not empty
  type: str
method:
  description: V(kubeadm) when the node's kubeadm is used (for what it renews), else V(native).
  returned: always
  type: str
  sample: kubeadm
kubeadm_version:
  description: What C(kubeadm version -o short) printed, when kubeadm is used.
  returned: always
  type: str
  sample: v1.31.4
"""

import datetime
import os
import shutil
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _kubeadm, _managers, _nodelock, _owed, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._cryptography_dep import assert_cryptography, assert_yaml
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.plugins.module_utils._sign import SigningError
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError


def _kubeadm_cli(module):
    """The node's kubeadm when the method allows it and it can be used, else None (native)."""
    method = module.params["method"]
    usable = module.params["rootfs"] == "/" and shutil.which("kubeadm") is not None
    if method == "kubeadm" and not usable:
        module.fail_json(msg="method=kubeadm needs the kubeadm binary on the node and rootfs=/; use method=native or auto")
    if method == "native" or not usable:
        return None
    try:
        return _kubeadm.KubeadmCli(module.run_command)
    except CertError as exc:
        module.fail_json(msg="%s; nothing was changed" % exc)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            threshold_days=dict(type="int", default=30),
            force=dict(type="bool", default=False),
            certs=dict(type="list", elements="str", default=[]),
            method=dict(type="str", default="auto", choices=["auto", "kubeadm", "native"]),
            validity_days=dict(type="int"),
            kubeadm_config=dict(type="path"),
            repair_kubelet_conf=dict(type="bool", default=True),
            restart_policy=dict(type="str", default="needed", choices=["needed", "always"]),
            renew_managed=dict(type="bool", default=False),
            probe=dict(type="bool", default=True),
            probe_host=dict(type="str", default="127.0.0.1"),
            now=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    assert_cryptography(module)
    assert_yaml(module)
    params = module.params
    fs = NodeFS(params["rootfs"])
    if fs.missing_root():
        module.fail_json(msg=fs.missing_root())
    if not os.path.isdir(fs.real(_kubeadm.PKI)):
        module.fail_json(msg="%s not found under rootfs %s: this is not a kubeadm control-plane node" % (_kubeadm.PKI, params["rootfs"]))
    clock = datetime.datetime.now(datetime.timezone.utc)
    try:
        config = _kubeadm.cluster_configuration(fs, params["kubeadm_config"]) if params["kubeadm_config"] else {}
        configured = _kubeadm.certificate_validity_period(config, params["kubeadm_config"])
    except CertError as exc:
        module.fail_json(msg="kubeadm_config: %s; nothing was changed" % exc)
    # held from the plan on: a run that waited plans on what the other one renewed
    with _nodelock.renewal_lock(module, fs, "kubeadm_renew"):
        try:
            now = _x509.parse_time(params["now"]) if params["now"] else clock
            due, skipped = _kubeadm.plan(fs, now, params["threshold_days"], params["force"], params["certs"],
                                         params["validity_days"], params["repair_kubelet_conf"], configured)
        except (SigningError, _kubeadm.UsageError) as exc:
            module.fail_json(msg=str(exc))
        except CertError as exc:
            module.fail_json(msg="cannot read what to renew: %s. Renewal copies subject, SANs and usages from the current "
                                 "certificate: restore it from a backup (playbooks/rollback.yml) first; nothing was changed" % exc)

        kubeadm = _kubeadm_cli(module)
        method = "kubeadm" if kubeadm else "native"
        if kubeadm:
            try:
                kubeadm.route(due, configured, config, params["kubeadm_config"])
            except CertError as exc:  # only a kubeadm_config that this kubeadm refuses
                module.fail_json(msg="kubeadm_config %s: %s; nothing was changed" % (params["kubeadm_config"], exc))
        managers = _managers.find(fs)
        if managers and not params["renew_managed"]:
            module.exit_json(changed=False, renewed=[], skipped_certs=[], restart=[], restart_plan=[], reloads=[], restart_owed=[],
                             method=method,
                             kubeadm_version=kubeadm.version_text if kubeadm else None,
                             managed_by=managers,
                             msg="left alone: %s. Renewing underneath it would fight it; let it renew, or set renew_managed=true "
                                 "to renew anyway" % "; ".join("%s (%s)" % (m["manager"], m["detail"]) for m in managers))
        # a copied tree (rootfs other than /) serves nothing
        down = _kubeadm.not_serving(fs, params["probe_host"]) if due and params["probe"] and params["rootfs"] == "/" else []
        restart_plan, reloads = _kubeadm.restart_plan(fs, [item.name for item in due], params["restart_policy"], down)
        owed = _owed.read(fs)
        restart_plan = _owed.merge(restart_plan, owed)
        if module.check_mode:
            renewed = _kubeadm.planned(due, now)
        else:
            renewed = []
            try:
                if due and restart_plan:  # before the first cert is written: a run killed after it still owes them
                    _owed.record(fs, restart_plan, _x509.iso(clock))
                _kubeadm.apply(fs, due, clock, renewed, kubeadm)
            except Exception as exc:  # pylint: disable=broad-except  # whatever it is, say what was already written
                written = ", ".join(r["name"] + (" (%s)" % r["partial"] if r.get("partial") else "") for r in renewed)
                module.fail_json(msg="renewal failed: %s; %s. Each cert and key pair is replaced atomically: restore the "
                                     "node's backup (playbooks/rollback.yml), or fix the cause and run again"
                                     % (exc, "written before the failure: " + written if written else "nothing was written"),
                                 changed=bool(renewed), renewed=renewed, restart=[r["component"] for r in restart_plan],
                                 restart_owed=sorted(owed), exception=traceback.format_exc())

        result = dict(changed=bool(renewed), renewed=renewed, skipped_certs=skipped, method=method, managed_by=managers,
                      kubeadm_version=kubeadm.version_text if kubeadm else None,
                      restart=[r["component"] for r in restart_plan], restart_plan=restart_plan, reloads=reloads,
                      restart_owed=sorted(owed))
        if module._diff:
            result["diff"] = {
                "before": {r["name"]: {"not_after": r["not_after"], "serial": r["serial"]} for r in renewed},
                "after": {r["name"]: {"not_after": r["new_not_after"], "serial": r["new_serial"] or "(new)"} for r in renewed},
            }
        module.exit_json(**result)


if __name__ == "__main__":
    main()
