# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Who else manages this node's certificates: renewing underneath a cluster manager fights it.

Cluster API replaces control-plane machines whose certificates near expiry (KubeadmControlPlane
``rolloutBefore.certificatesExpiryDays``); Rancher rotates the certificates of the RKE2/k3s clusters
it provisions through rancher-system-agent. What a node shows of them:
- the Node's annotations ``cluster.x-k8s.io/owner-kind`` / ``owner-name``, which Cluster API's
  machine controller sets on every node it owns (cluster-api api/v1beta1/common_types.go
  OwnerKindAnnotation; internal/controllers/machine/machine_controller_noderef.go);
- ``/run/cluster-api/bootstrap-success.complete``, the sentinel of the bootstrap provider contract
  (cluster-api docs/book/src/developer/providers/contracts/bootstrap-config.md; in /run, so gone
  after a reboot: the annotations are the lasting signal);
- ``/etc/rancher/agent/config.yaml``, rancher-system-agent's configuration (rancher/system-agent
  main.go defaultConfigFile), on nodes Rancher (or cluster-api-provider-rke2) provisions.
"""

from __future__ import annotations

import json

from ansible_collections.kubepki.fleet.plugins.module_utils import _apiclient

CAPI_SENTINEL = "/run/cluster-api/bootstrap-success.complete"
RANCHER_AGENT_CONFIG = "/etc/rancher/agent/config.yaml"
OWNER_KIND = "cluster.x-k8s.io/owner-kind"
OWNER_NAME = "cluster.x-k8s.io/owner-name"

_FILES = (
    (CAPI_SENTINEL, "Cluster API", "the Cluster API bootstrap sentinel file is present; Cluster API rolls out new machines "
                                   "before certificates expire (KubeadmControlPlane rolloutBefore.certificatesExpiryDays)"),
    (RANCHER_AGENT_CONFIG, "Rancher", "rancher-system-agent is configured: Rancher provisioned this node and rotates its "
                                      "certificates (Cluster Management > Rotate Certificates)"),
)


def from_files(fs):
    return [{"manager": manager, "signal": path, "detail": detail} for path, manager, detail in _FILES if fs.exists(path)]


def from_node_annotations(annotations):
    kind = (annotations or {}).get(OWNER_KIND)
    if not kind:
        return []
    return [{"manager": "Cluster API", "signal": "Node annotation %s=%s" % (OWNER_KIND, kind),
             "detail": "the node belongs to %s %s, which replaces or renews its machines' certificates itself"
                       % (kind, (annotations or {}).get(OWNER_NAME, "?"))}]


def node_annotations(kubelet, timeout=5.0):
    """The Node's annotations, read with the kubelet's credentials (the Node authorizer lets a kubelet get its own
    Node); None when the API cannot tell."""
    try:
        status, body = kubelet.get("/api/v1/nodes/" + kubelet.node, timeout)
        if status != 200:
            return None
        return (json.loads(body.decode("utf-8")).get("metadata") or {}).get("annotations") or {}
    except (_apiclient.Unreachable, _apiclient.NotOurServer, ValueError, UnicodeDecodeError, AttributeError):
        return None


def find(fs, timeout=3.0):
    """Every manager the node shows, from its files and (through kubelet.conf) its Node's annotations."""
    found = from_files(fs)
    try:
        kubelet = _apiclient.KubeletCredentials(fs)
    except _apiclient.CredentialsError:
        return found
    return found + from_node_annotations(node_annotations(kubelet, timeout))
