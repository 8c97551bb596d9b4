#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cert_facts
short_description: Discover every Kubernetes certificate of a node and what its endpoints serve
version_added: 0.1.0
description:
  - Detects the distribution of the node (kubeadm, RKE1, k3s, RKE2) and reads every certificate of its layout
    (PKI files, certificates embedded in or referenced by kubeconfigs, kubelet certificates), plus extra O(paths)
    and O(kubeconfigs).
  - Probes the node's own TLS endpoints (kube-apiserver, etcd client and peer, kubelet, controller-manager,
    scheduler, the k3s/RKE2 supervisor) and marks each certificate file as in use or not, because a renewed
    file is not a renewed certificate until the running component serves it.
  - Checks each certificate's signature against the node's CAs, whether its private key matches, and whether
    the CA key is present (externally managed CA).
  - Bad input (unreadable file, corrupt or truncated PEM, kubeconfig without a client certificate, dangling
    symlink, endpoint that refuses or does not speak TLS) becomes an entry in state V(invalid) or V(missing)
    with a message; the module does not fail on it. A FIFO, socket or device in place of a file, or a file over
    1 MiB, is such bad input too.
  - Fails when O(rootfs) does not exist, or when it holds nothing to report (no Kubernetes files found) unless
    O(distribution=none) - an empty report would read as "nothing expires".
  - Private key material is read only to check that it matches its certificate and is never returned.
author:
  - kubepki.fleet contributors (@kubepki)
extends_documentation_fragment:
  - kubepki.fleet._attributes
  - kubepki.fleet._attributes.facts
  - kubepki.fleet._common
options:
  distribution:
    description:
      - The layout to read. V(auto) detects it from the files present.
    type: str
    choices: [auto, kubeadm, rke1, k3s, rke2, none]
    default: auto
  warn_days:
    description:
      - Certificates expiring in fewer days than this are in state V(warning).
    type: int
    default: 30
  now:
    description:
      - The instant to evaluate expiry at, as ISO 8601 (V(2027-06-30T00:00:00Z)) or a date (V(2027-06-30)).
      - Answers "what will have expired by then". Defaults to the current time.
    type: str
  paths:
    description:
      - Extra certificate files or shell globs to read, as node paths (under O(rootfs)).
    type: list
    elements: path
    default: []
  kubeconfigs:
    description:
      - Extra kubeconfig files to read, as node paths (under O(rootfs)).
    type: list
    elements: path
    default: []
  user_kubeconfigs:
    description:
      - Also read C(/root/.kube/config) and C(/home/*/.kube/config), copies that go stale after renewals.
    type: bool
    default: true
  probe:
    description:
      - Probe the node's TLS endpoints to see which certificate each one serves.
    type: bool
    default: true
  probe_host:
    description:
      - Address to dial for endpoints that listen on all interfaces.
      - Addresses found in static pod manifests take precedence.
    type: str
    default: 127.0.0.1
  probe_timeout:
    description:
      - Seconds to wait for each endpoint's TLS handshake.
    type: float
    default: 3.0
  rke1_address:
    description:
      - RKE1 only - the node's C(internal_address) in C(cluster.yml) when it is set and differs from its C(address).
        RKE names the node's C(kube-etcd-<addr>.pem) and C(kube-kubelet-<addr>.pem) after it (rancher/rke
        C(pki/util.go) C(GetCrtNameForHost)). Default - O(probe_host).
    type: str
notes:
  - An absent C(super-admin.conf) is not reported, because kubeadm only writes it on the node that ran C(kubeadm init).
seealso:
  - name: kubeadm certs check-expiration
    description: The per-node view this module extends with kubelet, kubeconfig and served certificates.
    link: https://kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-certs/
"""

EXAMPLES = r"""
- name: Read every certificate of the node and what its endpoints serve
  kubepki.fleet.cert_facts:
    probe_host: "{{ ansible_host }}"

- name: What will have expired by the end of next quarter?
  kubepki.fleet.cert_facts:
    now: "2027-03-31T00:00:00Z"
    probe: false

- name: Analyse a copied kubeadm tree offline
  kubepki.fleet.cert_facts:
    rootfs: /srv/backups/cp1
    distribution: kubeadm
    probe: false

- name: Show what is not fine
  ansible.builtin.debug:
    msg: "{{ ansible_facts.kubepki.certs | selectattr('state', 'ne', 'ok') | map(attribute='id') }}"
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to ansible_facts.
  returned: always
  type: dict
  contains:
    kubepki:
      description: Certificates of the node; the full schema is in docs/facts.md of the collection.
      returned: always
      type: dict
      contains:
        distribution:
          description: The layout read.
          type: str
          returned: always
          sample: kubeadm
        node_role:
          description: Role detected from the files present.
          type: str
          returned: always
          sample: control-plane
        now:
          description: The instant states were computed for.
          type: str
          returned: always
          sample: "2026-11-23T17:50:00Z"
        warn_days:
          description: The warning threshold used.
          type: int
          returned: always
          sample: 30
        rootfs:
          description: The prefix paths were read under.
          type: str
          returned: always
          sample: /
        certs:
          description:
            - One entry per certificate, soonest expiry first.
            - Keys include C(id), C(name), C(source), C(path) or C(endpoint), C(subject), C(issuer), C(serial),
              C(fingerprint_sha256), C(not_before), C(not_after), C(days_left), C(state), C(message), C(is_ca),
              C(ca), C(sans), C(key_usage), C(extended_key_usage), C(key_matches), C(externally_managed),
              C(in_use), C(served_on).
          type: list
          elements: dict
          returned: always
          sample:
            - id: kubeadm/apiserver
              name: apiserver
              source: file
              path: /etc/kubernetes/pki/apiserver.crt
              subject: CN=kube-apiserver
              not_after: "2026-12-13T10:00:00Z"
              days_left: 19.68
              state: warning
              ca: ca
              in_use: true
              served_on: endpoint/10.0.0.11:6443
        managed_by:
          description:
            - Cluster managers that renew or replace this node's certificates themselves (Cluster API, Rancher), each with
              C(manager), C(signal) and C(detail). The renewal modules leave such nodes alone unless told otherwise.
            - The Node annotations are read through the API with C(kubelet.conf) only when O(probe) is true.
          type: list
          elements: dict
          returned: always
          sample:
            - manager: Rancher
              signal: /etc/rancher/agent/config.yaml
              detail: "rancher-system-agent is configured: Rancher provisioned this node and rotates its certificates"
        summary:
          description: Counts by state, the soonest expiry, and file certs whose endpoint serves something else.
          type: dict
          returned: always
          sample:
            total: 31
            by_state: {ok: 26, warning: 5, expired: 0, not_yet_valid: 0, invalid: 0, missing: 0}
            soonest: {id: kubeadm/apiserver, not_after: "2026-12-13T10:00:00Z", days_left: 19.68}
            not_in_use: []
"""

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kubepki.fleet.plugins.module_utils import _managers
from ansible_collections.kubepki.fleet.plugins.module_utils._cryptography_dep import assert_cryptography
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import gather
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError, parse_time


def main():
    module = AnsibleModule(
        argument_spec=dict(
            rootfs=dict(type="path", default="/"),
            distribution=dict(type="str", default="auto", choices=["auto", "kubeadm", "rke1", "k3s", "rke2", "none"]),
            warn_days=dict(type="int", default=30),
            now=dict(type="str"),
            paths=dict(type="list", elements="path", default=[]),
            kubeconfigs=dict(type="list", elements="path", default=[]),
            user_kubeconfigs=dict(type="bool", default=True),
            probe=dict(type="bool", default=True),
            probe_host=dict(type="str", default="127.0.0.1"),
            probe_timeout=dict(type="float", default=3.0),
            rke1_address=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    assert_cryptography(module)
    params = module.params
    try:
        now = parse_time(params["now"]) if params["now"] else datetime.datetime.now(datetime.timezone.utc)
    except CertError as exc:
        module.fail_json(msg="now: %s" % exc)

    fs = NodeFS(params["rootfs"])
    if fs.missing_root():
        module.fail_json(msg=fs.missing_root())
    facts = gather(
        fs,
        distribution=params["distribution"],
        now=now,
        warn_days=params["warn_days"],
        paths=params["paths"],
        kubeconfigs=params["kubeconfigs"],
        user_kubeconfigs=params["user_kubeconfigs"],
        probe=params["probe"],
        probe_host=params["probe_host"],
        probe_timeout=params["probe_timeout"],
        rke1_address=params["rke1_address"],
    )
    if not facts["certs"] and params["distribution"] != "none":
        # an empty report would read as "nothing expires"
        module.fail_json(msg="rootfs %s holds no Kubernetes files (no %s certificates, kubeconfigs or paths found): check "
                             "rootfs and distribution, or set distribution=none to read only paths and kubeconfigs"
                             % (fs.rootfs, "Kubernetes" if facts["distribution"] == "none" else facts["distribution"]))
    facts["managed_by"] = _managers.find(fs, params["probe_timeout"]) if params["probe"] else _managers.from_files(fs)
    module.exit_json(changed=False, ansible_facts={"kubepki": facts})


if __name__ == "__main__":
    main()
