#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: rke_kubelet_fix
short_description: Renew the kubelet's self-signed serving certificate that nothing else renews
version_added: 0.1.0
description:
  - Without C(--tls-cert-file) the kubelet serves a self-signed C(/var/lib/kubelet/pki/kubelet.crt) on port 10250,
    valid one year, written at its first start and never renewed - not by C(rke cert rotate), not by Rancher's
    rotation, not by kubeadm. This is the classic gap of RKE1 clusters built before RKE v1.0.0, and also of kubeadm
    nodes without C(serverTLSBootstrap).
  - O(mode=regenerate) works on any distribution - when kubelet.crt is what the kubelet serves and has fewer than
    O(threshold_days) left (or O(force)), it renames C(kubelet.crt) and C(kubelet.key) to
    C(kubelet.crt.kubepki-<UTC time>) and C(kubelet.key.kubepki-<UTC time>) in the same directory, keeping modes
    and owners, and returns RV(restart). The kubelet writes a new pair at its next start; the module restarts nothing.
  - O(mode=generate_serving_certificate) sets C(services.kubelet.generate_serving_certificate) to V(true) in the
    RKE C(cluster.yml) given by O(cluster_yml), so RKE (v1.0.0 and later) issues per-node serving certificates from
    kube-ca that C(rke cert rotate) renews. The file is edited as text - comments, key order and indentation stay
    as they are - and written atomically. C(rke up --config <cluster.yml>) must then run (RV(rke_up_required));
    the module runs it only with O(rke_up).
  - Refuses, changing nothing, when the kubelet serves an expiring certificate that is not kubelet.crt (a
    C(--tls-cert-file) in the C(extra_args) of cluster.yml, C(kubelet-server-current.pem)), when kubelet.crt is
    absent and no run moved it aside, and when cluster.yml is missing, is not valid YAML, or uses flow style or
    anchors where the key goes.
  - A kubelet.crt that an earlier run moved aside, stopped before the kubelet restarted, is due whatever its days left,
    since the restart that run owed finishes its job (C(moved_aside) in RV(renewed)).
  - Backups are the caller's business (role C(kubepki.fleet.fix_rke_kubelet)); the renamed files stay in place.
  - Only O(mode=regenerate) takes the node lock (see the notes); O(mode=generate_serving_certificate) edits a
    cluster.yml, usually on the workstation that runs C(rke up), where no renewal runs.
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._common
  - kubepki.fleet._nodelock
attributes:
  check_mode:
    support: full
    details: Returns the plan (what would be moved aside, or whether cluster.yml would change) and writes nothing.
  diff_mode:
    support: full
    details:
      - O(mode=regenerate) shows the expiry and serial of kubelet.crt before, and that a new one comes at the next
        kubelet start.
      - O(mode=generate_serving_certificate) shows the value of C(services.kubelet.generate_serving_certificate)
        before and after, never the rest of cluster.yml (which can hold SSH keys and registry passwords).
options:
  mode:
    description:
      - V(regenerate) moves kubelet.crt and kubelet.key aside so the kubelet makes a new self-signed pair.
      - V(generate_serving_certificate) sets the RKE option in O(cluster_yml) (on the host that holds it).
    type: str
    choices: [regenerate, generate_serving_certificate]
    default: regenerate
  threshold_days:
    description:
      - O(mode=regenerate) acts when kubelet.crt (which the kubelet serves) has fewer days left than this.
      - O(mode=generate_serving_certificate) sets the option whatever the expiry; choose the nodes in the play.
    type: int
    default: 30
  force:
    description:
      - O(mode=regenerate) moves the pair aside whatever its expiry.
      - O(mode=generate_serving_certificate) runs C(rke up) (with O(rke_up)) also when the option was already true.
    type: bool
    default: false
  cluster_yml:
    description:
      - Path of the RKE C(cluster.yml) that C(rke up) uses, under O(rootfs). Required by
        O(mode=generate_serving_certificate).
      - With O(mode=regenerate), optional - its C(services.kubelet.extra_args) are checked for a C(tls-cert-file).
    type: path
  rke_up:
    description:
      - Run C(rke up --config <cluster_yml>) in the directory of O(cluster_yml) after changing it (needs O(rootfs=/)
        and the C(rke) binary, checked before anything is written).
    type: bool
    default: false
  rke_binary:
    description:
      - The C(rke) executable, a name looked up in C(PATH) or a path.
    type: str
    default: rke
  probe:
    description:
      - Probe O(probe_host):O(port) to see whether the kubelet serves kubelet.crt. Without it, kubelet.crt is assumed
        to be in use.
    type: bool
    default: true
  probe_host:
    description:
      - Address the kubelet listens on.
    type: str
    default: 127.0.0.1
  port:
    description:
      - The kubelet's HTTPS port.
    type: int
    default: 10250
  probe_timeout:
    description:
      - Seconds to wait for the TLS handshake.
    type: float
    default: 3.0
  now:
    description:
      - Evaluate expiry at this ISO 8601 instant instead of the clock (planning; file names use the clock).
    type: str
notes:
  - On RKE1 restart the kubelet with C(docker restart kubelet), on kubeadm with C(systemctl restart kubelet); then check
    that port 10250 serves the new certificate, as the role C(kubepki.fleet.fix_rke_kubelet) does.
seealso:
  - module: kubepki.fleet.cert_facts
  - name: RKE kubelet serving certificate (generate_serving_certificate)
    description: RKE documentation of the option and of certificate rotation.
    link: https://rke.docs.rancher.com/cert-mgmt
"""

EXAMPLES = r"""
- name: Move an expiring self-signed kubelet.crt aside
  kubepki.fleet.rke_kubelet_fix:
    probe_host: "{{ ansible_host }}"
    threshold_days: 30
  register: kubelet_fix

- name: Restart the RKE kubelet container so that it writes a new pair
  ansible.builtin.command: docker restart kubelet
  changed_when: true
  when: "'kubelet' in kubelet_fix.restart"

- name: Let RKE issue kubelet serving certificates from kube-ca, then rke up
  kubepki.fleet.rke_kubelet_fix:
    mode: generate_serving_certificate
    cluster_yml: /home/rke/clusters/prod/cluster.yml
    rke_up: true
  delegate_to: localhost
  run_once: true
"""

RETURN = r"""
renewed:
  description:
    - O(mode=regenerate) - kubelet.crt moved aside (in check mode, to be), with its old expiry, serial and fingerprint,
      why, and where the files went. The new certificate exists only after the kubelet restarts.
    - C(moved_aside) is where an earlier run moved kubelet.crt when the kubelet has not written a new one since (that
      run was stopped before its restart); the entry describes that certificate, and the restart is still due.
  returned: always
  type: list
  elements: dict
  sample:
    - name: kubelet.crt
      path: /var/lib/kubelet/pki/kubelet.crt
      key_path: /var/lib/kubelet/pki/kubelet.key
      subject: CN=node1@1623070697
      not_after: "2022-06-07T11:58:16Z"
      serial: "2"
      fingerprint_sha256: "AB:CD:..."
      days_left: -35.2
      in_use: true
      reason: "-35.2 days left, under threshold_days=30"
      moved_aside: null
      new_not_after: (new at next kubelet start)
skipped_certs:
  description:
    - Certificates left alone, with the reason (fresh enough, or not what the kubelet serves).
    - Not named C(skipped), which Ansible reserves.
  returned: always
  type: list
  elements: dict
  sample:
    - name: kubelet.crt
      reason: "364.9 days left, not under threshold_days=30"
moved:
  description:
    - The renames done (none in check mode), node paths; what to rename back to undo.
    - Also those of an earlier run that moved the pair aside and was stopped before the kubelet's restart.
  returned: always
  type: list
  elements: dict
  sample:
    - src: /var/lib/kubelet/pki/kubelet.crt
      dest: /var/lib/kubelet/pki/kubelet.crt.kubepki-20261123T180000Z
    - src: /var/lib/kubelet/pki/kubelet.key
      dest: /var/lib/kubelet/pki/kubelet.key.kubepki-20261123T180000Z
restart:
  description: Components to restart for the fix to take effect (V(kubelet) after a regenerate).
  returned: always
  type: list
  elements: str
  sample: [kubelet]
served:
  description:
    - What the kubelet served before the fix (O(mode=regenerate) with O(probe)) - C(endpoint), C(fingerprint_sha256),
      C(subject), C(issuer), C(serial), C(not_after), C(days_left); or C(endpoint) and C(error) when it did not answer.
  returned: when O(mode=regenerate) and O(probe)
  type: dict
  sample:
    endpoint: "10.0.0.21:10250"
    fingerprint_sha256: "AB:CD:..."
    subject: CN=node1@1623070697
    not_after: "2022-06-07T11:58:16Z"
    days_left: -35.2
cluster_yml:
  description: O(mode=generate_serving_certificate) - the file, the option's value before (null when absent).
  returned: when O(mode=generate_serving_certificate)
  type: dict
  sample:
    path: /home/rke/clusters/prod/cluster.yml
    generate_serving_certificate_before: false
rke_up_required:
  description: True when C(rke up --config <cluster_yml>) must run for the new option to reach the nodes.
  returned: always
  type: bool
  sample: true
rke_up_ran:
  description: True when the module ran C(rke up) (O(rke_up)) and it succeeded.
  returned: always
  type: bool
  sample: false
rke_up_output:
  description: The last lines of the output of C(rke up).
  returned: when the module ran C(rke up)
  type: list
  elements: str
"""

import datetime
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _files, _nodelock, _rke, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._cryptography_dep import assert_cryptography
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

NEW_AT_RESTART = "(new at next kubelet start)"


def _read_cluster_yml(module, fs):
    path = module.params["cluster_yml"]
    try:
        return (path,) + _rke.load_cluster_yml(read_node_file(fs, path), path)
    except CertError as exc:
        module.fail_json(msg="cluster_yml: %s; give the path of the cluster.yml that rke up uses" % exc)
    except _rke.FixError as exc:
        module.fail_json(msg=str(exc))


def regenerate(module, fs, clock, now):
    params = module.params
    tls_cert_file = None
    if params["cluster_yml"]:
        config = _read_cluster_yml(module, fs)[2]
        tls_cert_file = _rke.kubelet_tls_cert_file(config)
    # held from the probe on: a run that waited sees the pair the other one moved aside
    with _nodelock.renewal_lock(module, fs, "rke_kubelet_fix"):
        served = _rke.probe_served(params["probe_host"], params["port"], now, params["probe_timeout"]) if params["probe"] else None
        try:
            due, skipped = _rke.plan_regenerate(fs, now, params["threshold_days"], params["force"], served, tls_cert_file)
            moved = _rke.earlier_moves(fs, due[0]) + _rke.move_aside(fs, clock) if due and not module.check_mode else []
        except _rke.FixError as exc:
            module.fail_json(msg=str(exc), served=served)
    for item in due:
        item["new_not_after"] = NEW_AT_RESTART
    result = dict(changed=bool(due), renewed=due, skipped_certs=skipped, moved=moved, restart=["kubelet"] if due else [],
                  rke_up_required=False, rke_up_ran=False)
    if served is not None:
        result["served"] = served
    if module._diff:
        result["diff"] = {"before": {i["name"]: {"not_after": i["not_after"], "serial": i["serial"]} for i in due},
                          "after": {i["name"]: {"not_after": NEW_AT_RESTART, "serial": NEW_AT_RESTART} for i in due}}
    return result


def _rke_command(module, fs):
    """argv of rke up, checked before anything is written."""
    params = module.params
    if fs.rootfs != "/":
        module.fail_json(msg="rke_up needs rootfs=/ (rke reaches the nodes itself); nothing was changed")
    binary = params["rke_binary"]
    if os.sep in binary:
        found = binary if os.access(binary, os.X_OK) else None
    else:
        found = module.get_bin_path(binary)
    if not found:
        module.fail_json(msg="rke_up=true but the rke binary (%s) is not found on this host; install RKE here, set "
                             "rke_binary, or set rke_up=false and run 'rke up --config %s' yourself; nothing was changed"
                             % (binary, params["cluster_yml"]))
    return [found, "up", "--config", fs.real(params["cluster_yml"])]


def serving_certificate(module, fs):
    params = module.params
    path, text, config = _read_cluster_yml(module, fs)
    tls_cert_file = _rke.kubelet_tls_cert_file(config)
    if tls_cert_file:
        module.fail_json(msg="%s gives the kubelet tls-cert-file=%s in services.kubelet.extra_args: the kubelet serves that "
                             "file, not a self-signed kubelet.crt, and RKE's generated certificate would conflict with it. "
                             "Renew that file, or remove the extra_arg first; nothing was changed" % (path, tls_cert_file))
    try:
        new_text, before = _rke.set_serving_flag(text, config, path)
    except _rke.FixError as exc:
        module.fail_json(msg=str(exc))
    changed = new_text != text
    run_up = params["rke_up"] and (changed or params["force"])
    argv = _rke_command(module, fs) if run_up else None
    result = dict(changed=changed, renewed=[], skipped_certs=[], moved=[], restart=[], rke_up_required=changed,
                  rke_up_ran=False, cluster_yml={"path": path, "generate_serving_certificate_before": before})
    if module._diff:
        # the changed key only: cluster.yml can hold ssh_key and registry passwords inline
        key = "services.kubelet.%s: " % _rke.FLAG
        result["diff"] = {"before": key + ("(absent)" if before is None else json.dumps(before, default=str)) + "\n",
                          "after": key + "true\n", "before_header": path, "after_header": path}
    if module.check_mode:
        return result
    if changed:
        try:
            _files.write_file(fs.real(path), new_text.encode("utf-8"), 0o640)
        except (IOError, OSError) as exc:
            module.fail_json(msg="cannot write %s: %s; it is unchanged (written atomically)" % (path, exc))
    if argv:
        rc, out, err = module.run_command(argv, cwd=os.path.dirname(argv[-1]))
        tail = (out + err).strip().splitlines()[-20:]
        if rc != 0:
            module.fail_json(msg="%s failed (rc %d); cluster.yml %s. Fix the cause and run it again: %s"
                                 % (" ".join(argv), rc, "now has %s: true" % _rke.FLAG if changed else "is unchanged",
                                    " / ".join(tail[-3:])), rke_up_output=tail, **{k: v for k, v in result.items() if k != "diff"})
        result.update(rke_up_ran=True, rke_up_required=False, rke_up_output=tail, changed=True)
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            mode=dict(type="str", default="regenerate", choices=["regenerate", "generate_serving_certificate"]),
            threshold_days=dict(type="int", default=30),
            force=dict(type="bool", default=False),
            cluster_yml=dict(type="path"),
            rke_up=dict(type="bool", default=False),
            rke_binary=dict(type="str", default="rke"),
            probe=dict(type="bool", default=True),
            probe_host=dict(type="str", default="127.0.0.1"),
            port=dict(type="int", default=10250),
            probe_timeout=dict(type="float", default=3.0),
            now=dict(type="str"),
        ),
        required_if=[("mode", "generate_serving_certificate", ("cluster_yml",))],
        supports_check_mode=True,
    )
    fs = NodeFS(module.params["rootfs"])
    if module.params["mode"] == "generate_serving_certificate":
        module.exit_json(**serving_certificate(module, fs))
    assert_cryptography(module)
    clock = datetime.datetime.now(datetime.timezone.utc)
    try:
        now = _x509.parse_time(module.params["now"]) if module.params["now"] else clock
    except CertError as exc:
        module.fail_json(msg="now: %s" % exc)
    module.exit_json(**regenerate(module, fs, clock, now))


if __name__ == "__main__":
    main()
