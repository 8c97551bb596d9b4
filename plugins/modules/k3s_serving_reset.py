#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: k3s_serving_reset
short_description: Reset the k3s or RKE2 supervisor certificate that a restart does not renew
version_added: 0.1.0
description:
  - Compares the certificate the supervisor port serves (k3s C(:6443), RKE2 C(:9345)) with its cache
    C(server/tls/dynamic-cert.json) and the secret C(kube-system/k3s-serving) (RKE2 C(rke2-serving)).
  - What repairs a bad supervisor certificate depends on the release line (C(<program> --version), RV(release)).
  - Releases before the July 2022 dynamiclistener fix (k3s before v1.22.13, v1.23.10, v1.24.4; RKE2 before v1.24.15,
    v1.25.11, v1.26.6, v1.27.3) can serve an expired secret again after a restart (seed 003). When the served
    certificate has expired, has fewer than O(threshold_days) left, or differs from the cache (or the cache is
    corrupt), the secret is deleted and C(dynamic-cert.json) moved aside to C(dynamic-cert.json.kubepki-<UTC time>),
    so that the next start issues a new certificate (RV(renewed) C(how=reset)).
  - Later releases renew it by themselves, while running (every 6 hours) and at start, once it is inside their window
    (RV(renew_window_days)); from November 2025 (v1.31.14, v1.32.10, v1.33.6, v1.34.2) they also create a deleted secret
    again, with the same certificate. There the secret is never deleted. A certificate that k3s will renew by itself
    plans nothing. One that it keeps (O(threshold_days) beyond its window, or O(force)) or that it failed to renew
    (inside the window for more than a check) gets the trigger file C(server/tls/dynamic-cert-regenerate), which k3s
    reads once at its next start to make a new certificate and key (RV(renewed) C(how=regenerate)), as
    C(k3s certificate rotate) does.
  - A user-provided certificate (secret annotation C(listener.cattle.io/static=true)) is never touched.
  - A corrupt or empty C(dynamic-cert.json) makes dynamiclistener fail every handshake (before v0.9.1 for an empty
    one) and any regeneration; it is moved aside, so that k3s loads the secret at start.
  - The secret is deleted on the loopback kube-apiserver (k3s C(https://127.0.0.1:6444), RKE2
    C(https://127.0.0.1:6443)) with the admin client certificate C(server/tls/client-admin.crt). That apiserver serves
    C(serving-kube-apiserver.crt), a file k3s renews at start, so this works when the supervisor certificate has
    expired and C(kubectl) fails, without setting the clock back. Its certificate is checked against
    C(server-ca.crt) by signature, not by date. A secret that is already gone is fine.
  - Also renews the server's leaf certificates (C(server/tls) and the embedded agent's) with fewer than
    O(threshold_days) left. k3s re-issues them at start when they are inside its own window (RV(renew_window_days),
    120 days from the May 2025 releases, 90 before); beyond it they are forced with C(k3s certificate rotate)
    or, without the binary, by moving them aside so that k3s re-issues them.
  - Restarts nothing. Returns RV(restart), the unit to restart (C(k3s) or C(rke2-server)).
  - Never returns private key material; the admin key is read from its file by the TLS library only.
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._common
  - kubepki.fleet._nodelock
attributes:
  check_mode:
    support: full
    details: Reads what is served, cached and stored (a GET on the secret) and returns the plan; changes nothing.
  diff_mode:
    support: full
    details: Shows the expiry of each certificate before and V((new at next start)) after.
options:
  program:
    description:
      - V(k3s) or V(rke2). V(auto) detects it from C(/var/lib/rancher).
    type: str
    choices: [auto, k3s, rke2]
    default: auto
  threshold_days:
    description:
      - Reset or renew certificates with fewer days left than this.
    type: int
    default: 30
  force:
    description:
      - Reset the supervisor certificate whatever its state, like C(k3s certificate rotate -s k3s-server).
    type: bool
    default: false
  probe_host:
    description:
      - Address to dial for the supervisor port, for servers started with C(--bind-address).
    type: str
    default: 127.0.0.1
  supervisor_port:
    description:
      - The supervisor port. Default V(6443) for k3s (its C(--https-listen-port)), V(9345) for RKE2.
    type: int
  api_url:
    description:
      - The loopback kube-apiserver. Default for k3s V(https://127.0.0.1:6444) (O(supervisor_port) + 1), for RKE2
        V(https://127.0.0.1:6443).
    type: str
  timeout:
    description:
      - Seconds to wait for each TLS handshake and API answer.
    type: float
    default: 10.0
  method:
    description:
      - How to force leaves that k3s would not renew at start because they are outside its window.
      - V(rotate) runs C(<program> certificate rotate -s <service>...), which keeps its own backup in
        C(server/tls-<unix time>) (k3s and RKE2 since December 2021; only with O(rootfs=/)).
      - V(native) moves the certificate and key to C(server/tls-kubepki-<UTC time>/); k3s re-issues missing leaves at start.
      - V(auto) uses V(rotate) when the binary is installed and O(rootfs) is V(/), else V(native), and falls back to
        V(native) if C(certificate rotate) fails.
    type: str
    choices: [auto, rotate, native]
    default: auto
  version:
    description:
      - The k3s or RKE2 version, as C(<program> --version) prints it, when the binary cannot be run here (O(rootfs)
        other than V(/)). Default from the binary; an unknown version is taken as a current release.
    type: str
  renew_window_days:
    description:
      - k3s's own start-up renewal window. Default from C(<program> --version) (120 from v1.30.13, v1.31.9, v1.32.5
        and v1.33.1, else 90); 90 when the version is unknown.
    type: int
  renew_managed:
    description:
      - A node Rancher provisioned (rancher-system-agent configured) or Cluster API bootstrapped has its certificates
        rotated by them; it is left alone, each due certificate listed in RV(skipped_certs) with the reason and
        RV(managed_by) saying why, unless this is V(true).
    type: bool
    default: false
  now:
    description:
      - Evaluate expiry at this ISO 8601 instant instead of the clock (planning only).
    type: str
notes:
  - Restart the unit in RV(restart) right after a real run. The role C(kubepki.fleet.reset_k3s_serving) does that,
    verifies what is served, and rolls back on failure.
seealso:
  - module: kubepki.fleet.cert_facts
  - name: k3s certificate management
    description: Start-up renewal, C(certificate rotate) and C(check).
    link: https://docs.k3s.io/cli/certificate
"""

EXAMPLES = r"""
- name: Reset the served certificate when it expires within 30 days
  kubepki.fleet.k3s_serving_reset:
    probe_host: "{{ ansible_host }}"
  register: reset

- name: Restart k3s so that it issues the new certificate
  ansible.builtin.systemd_service:
    name: "{{ item }}"
    state: restarted
  loop: "{{ reset.restart }}"

- name: Plan only - is the served certificate in sync with the secret?
  kubepki.fleet.k3s_serving_reset:
    probe_host: "{{ ansible_host }}"
  check_mode: true
  register: plan
"""

RETURN = r"""
renewed:
  description:
    - What was reset or renewed (in check mode, what would be). C(how) is V(reset) for the supervisor certificate
      (secret deleted, cache moved aside), V(regenerate) for it on later releases (trigger file written), V(cache) for
      a corrupt C(dynamic-cert.json) moved aside (it fails every handshake), V(restart) for a leaf k3s re-issues at
      start, V(rotate) for a leaf forced.
    - C(new_not_after) is null; the certificates are issued at the next start.
  returned: always
  type: list
  elements: dict
  sample:
    - name: k3s-serving
      path: /var/lib/rancher/k3s/server/tls/dynamic-cert.json
      endpoint: 10.0.0.5:6443
      how: reset
      reasons: [the served certificate expired on 2026-10-19T12:00:00Z]
      not_after: "2026-10-19T12:00:00Z"
      days_left: -35.0
      fingerprint_sha1: 6EAFF55DD0CF29A6554263EEA617D26B5F187D3B
      new_not_after: null
    - name: k3s/server/client-admin
      path: /var/lib/rancher/k3s/server/tls/client-admin.crt
      how: restart
      service: admin
      days_left: 20.5
skipped_certs:
  description:
    - Certificates left alone, with the reason.
    - Not named C(skipped), which Ansible reserves - a non-empty list there would mark the whole task as skipped.
  returned: always
  type: list
  elements: dict
  sample:
    - name: k3s/server/client-admin
      reason: 335.0 days left, not under threshold_days=30
restart:
  description: Units to restart for the new certificates to be issued and served.
  returned: always
  type: list
  elements: str
  sample: [k3s]
restart_owed:
  description:
    - The unit whose restart a stopped run owes - it reset or regenerated the supervisor certificate, recorded the restart
      in C(/var/lib/kubepki/restart-owed.json) before its first write, and was stopped before restarting (killed, or its
      connection lost). The unit still serves the certificate it served then; RV(renewed) plans the same reset again,
      with that reason, whatever the days left. The caller removes the record once the restart is verified.
  returned: always
  type: list
  elements: str
  sample: []
served:
  description: The certificate the supervisor port serves (before any restart).
  returned: always
  type: dict
  sample: {endpoint: "10.0.0.5:6443", subject_cn: k3s, not_after: "2026-10-19T12:00:00Z", days_left: -35.0,
           fingerprint_sha1: 6EAFF55DD0CF29A6554263EEA617D26B5F187D3B, fingerprint_sha256: "AB:CD:...", state: expired}
dynamic_cert:
  description:
    - The cache file. C(state) is V(missing), V(invalid) (corrupt), or the certificate's state. C(moved_to) is where it
      was moved aside.
  returned: always
  type: dict
  sample: {path: /var/lib/rancher/k3s/server/tls/dynamic-cert.json, state: expired,
           moved_to: /var/lib/rancher/k3s/server/tls/dynamic-cert.json.kubepki-20261123T120000Z}
secret:
  description:
    - The secret. C(state) is V(present), V(absent) or V(unknown) (API not reachable, C(message) says why).
      C(deleted) tells whether this run deleted it; C(annotation_fingerprint) is its C(listener.cattle.io/fingerprint);
      C(static) whether it is marked user-provided.
  returned: always
  type: dict
  sample: {name: k3s-serving, namespace: kube-system, state: present, deleted: true,
           annotation_fingerprint: SHA1=6EAFF55DD0CF29A6554263EEA617D26B5F187D3B}
release:
  description:
    - The release line, from C(<program> --version) or O(version). C(line) is V(legacy) (before the July 2022 fix),
      V(renews) (renews the supervisor certificate by itself) or V(recreates) (also creates a deleted secret again);
      C(version), C(name) and C(source), which says what that line does or what was assumed.
  returned: always
  type: dict
  sample: {line: recreates, version: v1.33.6, name: k3s v1.33.6,
           source: k3s v1.33.6 renews its supervisor certificate while running and creates a deleted secret again}
in_sync:
  description: The served certificate is the one in C(dynamic-cert.json) and in the secret, whose fingerprint annotation matches.
  returned: always
  type: bool
renew_window_days:
  description: The start-up renewal window of this k3s or RKE2, and C(renew_window_source) where it comes from.
  returned: always
  type: int
  sample: 120
leaf_method:
  description: V(rotate) or V(native) when leaves outside the window were (or would be) forced; else null.
  returned: always
  type: str
moved:
  description: Files moved aside, C(from) and C(to); nothing is deleted.
  returned: always
  type: list
  elements: dict
notes:
  description: What was done, in words.
  returned: always
  type: list
  elements: str
managed_by:
  description: Cluster managers the node shows (C(manager), C(signal), C(detail)); non-empty means it was left alone.
  returned: always
  type: list
  elements: dict
  sample:
    - manager: Rancher
      signal: /etc/rancher/agent/config.yaml
      detail: "rancher-system-agent is configured: Rancher provisioned this node and rotates its certificates"
"""

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _k3s, _managers, _nodelock, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._cryptography_dep import assert_cryptography
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS


def _binary(module, program):
    """The program's path when it can act on this node (rootfs=/), else None."""
    return module.get_bin_path(program) if module.params["rootfs"] == "/" else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            program=dict(type="str", default="auto", choices=["auto", "k3s", "rke2"]),
            threshold_days=dict(type="int", default=30),
            force=dict(type="bool", default=False),
            probe_host=dict(type="str", default="127.0.0.1"),
            supervisor_port=dict(type="int"),
            api_url=dict(type="str"),
            timeout=dict(type="float", default=10.0),
            method=dict(type="str", default="auto", choices=["auto", "rotate", "native"]),
            version=dict(type="str"),
            renew_window_days=dict(type="int"),
            renew_managed=dict(type="bool", default=False),
            now=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    assert_cryptography(module)
    params = module.params
    clock = datetime.datetime.now(datetime.timezone.utc)
    try:
        now = _x509.parse_time(params["now"]) if params["now"] else clock
        server = _k3s.find_server(NodeFS(params["rootfs"]), params["program"])
        binary = _binary(module, server.program)
        version = params["version"] or (module.run_command([binary, "--version"])[1] if binary else None)
        with _nodelock.renewal_lock(module, server.fs, "k3s_serving_reset"):
            result = _k3s.reset(server, now, clock, module.check_mode, threshold_days=params["threshold_days"],
                                force=params["force"], probe_host=params["probe_host"],
                                supervisor_port=params["supervisor_port"], api_url=params["api_url"],
                                timeout=params["timeout"], method=params["method"], window_days=params["renew_window_days"],
                                version_output=version, binary=binary, run_command=module.run_command,
                                managed_by=[] if params["renew_managed"] else _managers.from_files(server.fs))
    except (_k3s.ResetError, _x509.CertError) as exc:
        module.fail_json(msg=str(exc), changed=getattr(exc, "changed", False))

    result["changed"] = bool(result["renewed"])
    if module._diff:
        result["diff"] = {
            "before": {r["name"]: {"not_after": r["not_after"]} for r in result["renewed"]},
            "after": {r["name"]: {"not_after": "(new at next start)"} for r in result["renewed"]},
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
