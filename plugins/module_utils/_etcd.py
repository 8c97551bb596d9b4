# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Whether a stacked etcd cluster keeps quorum while one member restarts, and whether it has quorum now.

Upstream behaviour relied on:
- etcd's raft needs a majority of the voting members, ``n // 2 + 1`` (etcd docs, "FAQ: What is failure tolerance?";
  learners do not vote: etcd ``server/etcdserver/api/membership``). A member that restarts does not count while it
  is down, so restarting one leaves the *other* healthy voting members, which must still be a majority.
- ``GET /health`` answers ``{"health":"true"}`` (200) only while the member sees a leader, else 503 with
  ``{"health":"false","reason":"RAFT NO LEADER"}`` (etcd ``server/etcdserver/api/etcdhttp/health.go`` checkLeader;
  3.4 answers ``{"health":"false"}`` without a reason).
- ``POST /v3/cluster/member/list`` (the grpc-gateway of ``etcdserverpb.Cluster/MemberList``, ``api/etcdserverpb/
  rpc.proto``) lists every member with its ``clientURLs`` from the member's own copy of the membership, so it answers
  without quorum too; IDs are uint64 sent as strings.
- kubeadm refuses to touch a stacked etcd whose cluster is not healthy (``cmd/kubeadm/app/phases/upgrade/
  staticpods.go`` performEtcdStaticPodUpgrade and ``cmd/kubeadm/app/phases/etcd/local.go``
  CheckLocalEtcdClusterStatus, through ``cmd/kubeadm/app/util/etcd/etcd.go`` CheckClusterHealth: "etcd cluster is not
  healthy"). It asks every member; this asks the same, and refuses only what would lose quorum.
- A member's client URL is ``https://<its peer host>:2379`` in kubeadm (``cmd/kubeadm/app/util/etcd/etcd.go``
  GetClientURLByIP): the fallback when no member answers the member list.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from ansible_collections.kubepki.fleet.plugins.module_utils import _apiclient, _layouts, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

MANIFEST = "/etc/kubernetes/manifests/etcd.yaml"
PKI = "/etc/kubernetes/pki/etcd"


class EtcdError(Exception):
    """The etcd cluster cannot be asked at all; the message says why."""


def quorum(voting):
    """Members a raft cluster of ``voting`` members needs to have a leader."""
    return voting // 2 + 1


def _join(items):
    items = list(items)
    if len(items) < 2:
        return "".join(items)
    return "%s and %s" % (", ".join(items[:-1]), items[-1])


def _describe(member):
    return "%s (%s)" % (member["name"] or "unnamed member %s" % member["id"], member["client_url"] or "no client URL")


def _trouble(members):
    """``etcd member X (url) does not answer`` / ``etcd members X (url) and Y (url) answer unhealthy (reason)``."""
    parts = []
    silent = [m for m in members if m["detail"].startswith("does not answer")]
    unhealthy = [m for m in members if m not in silent]
    if silent:
        parts.append("%s %s %s" % ("etcd member" if len(silent) == 1 else "etcd members", _join(_describe(m) for m in silent),
                                   "does not answer" if len(silent) == 1 else "do not answer"))
    for member in unhealthy:
        parts.append("%s %s" % ("etcd member " + _describe(member) if not parts else _describe(member), member["detail"]))
    return "; ".join(parts)


def decide(members, local, purpose="restart"):
    """The verdict on ``members`` (dicts: name, id, client_url, learner, healthy, detail) for member ``local`` (a name).

    ``purpose`` restart: may ``local`` restart now? Yes when the other healthy voting members are a quorum of the
    voting members, or when none of them is down (a one- or two-member cluster has no member to spare: that is its
    design, not something to wait for). serving: has the cluster quorum now, as seen from ``local``?
    Returns ``dict(ok, voting, quorum, healthy, left, down, msg)``.
    """
    voting = [m for m in members if not m["learner"]]
    need = quorum(len(voting))
    healthy = [m for m in voting if m["healthy"]]
    others = [m for m in voting if m["name"] != local]
    down = [m for m in others if not m["healthy"]]
    result = dict(voting=len(voting), quorum=need, healthy=len(healthy), down=[m["name"] or m["id"] for m in down])
    if purpose == "restart":
        left = len(others) - len(down)
        result["left"] = left
        if left >= need or not down:
            result["ok"] = True
            result["msg"] = "restarting etcd on %s leaves %d of %d members%s" % (
                local, left, len(voting), "" if left >= need else ", below quorum (%d) while it restarts: the cluster has "
                "no member to spare" % need)
            return result
        result["ok"] = False
        result["msg"] = ("%s: restarting etcd on %s would leave %d of %d members, below quorum (%d). Bring %s back, then run "
                         "renew.yml again." % (_trouble(down), local, left, len(voting), need, "it" if len(down) == 1 else "them"))
        return result
    me = next((m for m in voting if m["name"] == local), None)
    result["left"] = len(healthy)
    if me is not None and me["healthy"] and len(healthy) >= need:
        result["ok"] = True
        result["msg"] = "etcd on %s is healthy; %d of %d members are" % (local, len(healthy), len(voting))
        return result
    result["ok"] = False
    if len(healthy) >= need:
        # the cluster has quorum; this member does not take part (yet)
        result["msg"] = "etcd on %s is not healthy - %s - while %d of %d members are: see its log (crictl logs on the etcd " \
                        "container of %s)" % (local, (me or {}).get("detail", "not a member of the cluster"), len(healthy),
                                              len(voting), local)
        return result
    trouble = [m for m in voting if not m["healthy"]]
    result["msg"] = ("etcd lost quorum: %d of %d members healthy, below quorum (%d) - %s. Bring %s back (crictl ps -a and "
                     "journalctl -u kubelet on %s); etcd on %s rejoins by itself" % (
                         len(healthy), len(voting), need, _trouble(trouble),
                         "the members" if len(trouble) > 1 else "the member",
                         _join(m["name"] or m["id"] for m in trouble if m["name"] != local) or local, local))
    return result


def parse_member_list(body):
    """Members of a ``/v3/cluster/member/list`` answer: dicts name, id, client_url, peer_url, learner."""
    try:
        answer = json.loads(body)
        listed = answer["members"]
        if not isinstance(listed, list):
            raise TypeError("members is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise EtcdError("the member list is not etcd's answer (%s)" % exc)
    members = []
    for item in listed:
        if not isinstance(item, dict):
            continue
        clients = [u for u in item.get("clientURLs") or [] if isinstance(u, str)]
        peers = [u for u in item.get("peerURLs") or [] if isinstance(u, str)]
        members.append(dict(name=str(item.get("name") or ""), id="%x" % int(item.get("ID") or 0),
                            client_url=clients[0] if clients else None, peer_url=peers[0] if peers else None,
                            learner=bool(item.get("isLearner"))))
    return members


def client_url(host_or_url):
    """A client URL as given, or kubeadm's ``https://<host>:2379`` for a bare host."""
    text = host_or_url.strip()
    if "://" in text:
        return text
    return "https://%s:2379" % ("[%s]" % text if ":" in text and not text.startswith("[") else text)


def endpoint(text):
    """``(name, client URL)`` of an endpoint given as ``name=URL-or-host`` or as a URL or host alone (name "")."""
    name, sep, rest = text.strip().partition("=")
    if sep and "://" not in name:
        return name.strip(), client_url(rest)
    return "", client_url(text)


def members_from_manifest(flags):
    """Members named by the manifest's ``--initial-cluster`` (``name=peerURL,...``), with kubeadm's client URL."""
    members = []
    for entry in (flags.get("initial-cluster") or "").split(","):
        name, _sep, peer = entry.partition("=")
        host = urlsplit(peer.strip()).hostname if peer else None
        if name and host:
            members.append(dict(name=name.strip(), id="0", client_url=client_url(host), peer_url=peer.strip(), learner=False))
    return members


def interpret_health(status, body):
    """``(healthy, detail)`` of a ``/health`` answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if status == 200 and str(answer.get("health")) == "true":
        return True, "healthy"
    reason = answer.get("reason") or ("HTTP %d" % status if status != 503 else "no leader")
    return False, "answers unhealthy (%s)" % reason


class Cluster:
    """The node's etcd cluster, asked with the node's etcd client certificate (kubeadm's healthcheck-client)."""

    def __init__(self, fs, manifest=MANIFEST, ca_file=PKI + "/ca.crt", cert_file=PKI + "/healthcheck-client.crt",
                 key_file=PKI + "/healthcheck-client.key", timeout=5.0):
        self.fs, self.timeout = fs, timeout
        self.flags = _layouts.static_pod_flags(fs, manifest)
        self.name = self.flags.get("name")
        advertised = (self.flags.get("advertise-client-urls") or "").split(",")
        self.local_url = advertised[0].strip() or None
        try:
            self.ca = _x509.load_certificates(read_node_file(fs, ca_file), ca_file)[0]
            self.context = _apiclient.client_context(fs.real(cert_file), fs.real(key_file))
        except (CertError, OSError) as exc:
            raise EtcdError("cannot use the etcd client certificate %s: %s" % (cert_file, exc))

    def _ask(self, url, path, method="GET", body=None):
        try:
            return _apiclient.request(url, path, self.context, self.ca, method=method, timeout=self.timeout, body=body)
        except _apiclient.Unreachable as exc:
            raise EtcdError("does not answer (%s)" % exc)
        except _apiclient.NotOurServer as exc:
            raise EtcdError("does not answer with a certificate of the etcd CA (%s)" % exc)

    def members(self, endpoints=()):
        """``(members, source)``: the member list from the first of this member and ``endpoints`` that answers, else the
        manifest's --initial-cluster and ``endpoints`` themselves."""
        errors = []
        named = [endpoint(u) for u in endpoints if u and u.strip()]
        urls = []
        for url in [self.local_url] + [url for _name, url in named]:
            if url and url not in urls:
                urls.append(url)
        for url in urls:
            try:
                status, body = self._ask(url, "/v3/cluster/member/list", method="POST", body={})
            except EtcdError as exc:
                errors.append("%s %s" % (url, exc))
                continue
            if status == 200:
                return parse_member_list(body), url
            errors.append("%s answered HTTP %d" % (url, status))
        members = members_from_manifest(self.flags)
        for name, url in named:
            same = [m for m in members if m["client_url"] == url or (name and m["name"] == name)]
            if not same:
                members.append(dict(name=name, id="0", client_url=url, peer_url=None, learner=False))
        if not members:
            raise EtcdError("no etcd member answers the member list (%s) and the manifest names none" % "; ".join(errors))
        return members, "the manifest's --initial-cluster and the endpoints given (no member answered the member list: %s)" % (
            "; ".join(errors))

    def health(self, member):
        """``member`` with ``healthy`` and ``detail`` filled in from its /health."""
        if not member["client_url"]:
            return dict(member, healthy=False, detail="does not answer (not started: no client URL)")
        try:
            status, body = self._ask(member["client_url"], "/health")
        except EtcdError as exc:
            return dict(member, healthy=False, detail=str(exc))
        healthy, detail = interpret_health(status, body)
        return dict(member, healthy=healthy, detail=detail)
