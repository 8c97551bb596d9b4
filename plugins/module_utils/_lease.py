# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""The cluster-wide renewal lock: a coordination.k8s.io/v1 Lease that every run renewing one of the cluster's control
planes must hold, wherever it runs (AWX job slices put a cluster's control planes in different, concurrent jobs).

Taken and given back as client-go's leader election does (kubernetes/client-go tools/leaderelection/leaderelection.go
tryAcquireOrRenew, resourcelock/leaselock.go; v0.31): create it when absent, hold it when ours, take it when its
holder is empty (released) or its renewTime + leaseDurationSeconds has passed, and write only with the resourceVersion
read, so that of two runs exactly one wins. Released by emptying holderIdentity (ReleaseOnCancel). Expiry is judged
by the node's clock against a renewTime another control plane of the cluster wrote: their clocks must agree (as etcd
and TLS already require), not the controller's.
"""

from __future__ import annotations

import datetime
import json

from ansible_collections.kubepki.fleet.plugins.module_utils import _apiclient, _kubeconfig, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

_MICROTIME = "%Y-%m-%dT%H:%M:%S.%fZ"   # metav1.MicroTime's RFC3339Micro, always UTC here
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubepki.fleet"}


class LeaseError(Exception):
    """The lease cannot be read or written; the message says why and what to do."""


def format_time(moment):
    return moment.astimezone(datetime.timezone.utc).strftime(_MICROTIME)


def parse_time(value):
    """A Lease's MicroTime (or a plain RFC 3339 time), or None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    for fmt in (_MICROTIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.datetime.strptime(value, fmt).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            continue
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def expires(spec):
    """When the holder's claim ends: renewTime (or acquireTime) + leaseDurationSeconds; None when unknown."""
    since = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    duration = spec.get("leaseDurationSeconds")
    if since is None or not isinstance(duration, int) or isinstance(duration, bool):
        return None
    return since + datetime.timedelta(seconds=duration)


def decide(lease, holder, now, take_over=None):
    """``(action, previous_holder)`` for a run ``holder`` that wants the Lease object ``lease`` (None: absent).

    ``create``, ``renew`` (ours already), ``take`` (released, expired, or held by ``take_over``, a run known to be
    gone) or ``wait`` (another holder's claim runs)."""
    if lease is None:
        return "create", None
    spec = lease.get("spec") or {}
    current = spec.get("holderIdentity") or ""
    if current == holder:
        return "renew", None
    if not current:
        return "take", None
    ends = expires(spec)
    if current == take_over or ends is None or ends <= now:
        return "take", current
    return "wait", current


def claimed(lease, holder, lease_seconds, now, taking):
    """The Lease object with ``holder``'s claim written into a copy of ``lease`` (None: a new one)."""
    new = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"labels": dict(MANAGED_BY)}, "spec": {}}
    obj = json.loads(json.dumps(lease)) if lease else new
    spec = obj.setdefault("spec", {})
    stamp = format_time(now)
    if taking or lease is None:
        spec["acquireTime"] = stamp
        if lease is not None:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
    spec.update(holderIdentity=holder, leaseDurationSeconds=int(lease_seconds), renewTime=stamp)
    return obj


class Client:
    """The Lease ``namespace/name`` through the API, reached with a kubeconfig's client certificate.

    ``urls`` are tried in order until one answers (the kubeconfig's server may be a load balancer, or in a small
    cluster the very control plane that is restarting)."""

    def __init__(self, fs, kubeconfig, namespace, name, urls=(), timeout=10.0):
        try:
            user = _kubeconfig.parse(read_node_file(fs, kubeconfig), kubeconfig)[0]
            ca_pem = user.ca_pem(kubeconfig)
            if not ca_pem or not user.server:
                raise CertError("%s names no server or certificate-authority-data" % kubeconfig)
            self.ca = _x509.load_certificates(ca_pem, kubeconfig)[0]
            if user.cert_data is not None and user.key_data is not None:
                self.context = _apiclient.memory_context(user.cert_data, user.key_data)
            elif user.cert_path and user.key_path:
                self.context = _apiclient.client_context(fs.real(user.cert_path), fs.real(user.key_path))
            else:
                raise CertError("%s has no client certificate and key" % kubeconfig)
        except (CertError, IndexError, OSError, ValueError) as exc:  # OSError includes ssl.SSLError: a key that does not fit
            raise LeaseError("cannot use %s to reach the API (%s); renew it, or set kubeconfig to another admin "
                             "kubeconfig" % (kubeconfig, exc))
        self.kubeconfig = kubeconfig
        self.urls = list(dict.fromkeys([user.server] + [u for u in urls if u]))
        self.url = None
        self.path = "/apis/coordination.k8s.io/v1/namespaces/%s/leases" % namespace
        self.name = name
        self.what = "lease %s/%s" % (namespace, name)
        self.timeout = timeout

    def _call(self, method, path, body=None):
        failures = []
        for url in ([self.url] if self.url else []) + [u for u in self.urls if u != self.url]:
            try:
                status, raw = _apiclient.request(url, path, self.context, self.ca, method, self.timeout, body)
            except _apiclient.Unreachable as exc:
                failures.append("%s: %s" % (url, exc))
                continue
            except _apiclient.NotOurServer as exc:
                failures.append("%s serves %s, which the cluster CA of %s did not sign" % (url, exc, self.kubeconfig))
                continue
            self.url = url
            try:
                answer = json.loads(raw.decode("utf-8")) if raw else {}
            except (ValueError, UnicodeDecodeError):
                answer = {}
            if status in (401, 403):
                raise LeaseError("%s %s at %s answered HTTP %s (%s): the client certificate of %s is rejected (expired, "
                                 "or not allowed to write leases in that namespace); renew it, or set kubeconfig to "
                                 "another admin kubeconfig" % (method, self.what, url, status,
                                                               answer.get("message", ""), self.kubeconfig))
            return status, answer
        raise LeaseError("cannot reach the API for the %s: %s. Start an apiserver of the cluster, or give its URL in "
                         "api_urls" % (self.what, "; ".join(failures)))

    def _expect(self, method, status, answer, wanted):
        if status not in wanted:
            detail = answer.get("message") or answer
            raise LeaseError("%s %s at %s answered HTTP %s: %s" % (method, self.what, self.url, status, detail))

    def get(self):
        status, answer = self._call("GET", "%s/%s" % (self.path, self.name))
        if status == 404:
            return None
        self._expect("GET", status, answer, (200,))
        return answer

    def write(self, lease, obj):
        """True when written; False when another run wrote first (409: created, or changed since read)."""
        if lease is None:
            obj["metadata"]["name"] = self.name
            status, answer = self._call("POST", self.path, obj)
            wanted = (201, 200)
        else:
            status, answer = self._call("PUT", "%s/%s" % (self.path, self.name), obj)
            wanted = (200,)
        if status == 409:
            return False
        self._expect("PUT" if lease else "POST", status, answer, wanted)
        return True


def acquire(client, holder, lease_seconds, now, take_over=None, check_mode=False):
    """Take or hold the lease for ``holder``; a dict saying whether it is held, by whom, and until when."""
    lease = client.get()
    action, previous = decide(lease, holder, now, take_over)
    result = {"acquired": False, "changed": False, "holder": previous, "previous_holder": None,
              "expires": None, "api_url": client.url}
    if action == "wait":
        result["expires"] = format_time(expires(lease["spec"]))
        return result
    obj = claimed(lease, holder, lease_seconds, now, action == "take")
    if not check_mode and not client.write(lease, obj):
        # another run wrote between our read and write: it won
        lease = client.get()
        result.update(holder=((lease or {}).get("spec") or {}).get("holderIdentity"), api_url=client.url)
        return result
    result.update(acquired=True, changed=not check_mode, holder=holder, previous_holder=previous,
                  expires=format_time(expires(obj["spec"])), api_url=client.url)
    return result


def release(client, holder, check_mode=False):
    """Give the lease back when ``holder`` holds it; another holder's claim is never touched."""
    lease = client.get()
    current = ((lease or {}).get("spec") or {}).get("holderIdentity") or ""
    result = {"released": False, "changed": False, "holder": current or None, "api_url": client.url}
    if current != holder:
        return result
    obj = json.loads(json.dumps(lease))
    obj["spec"]["holderIdentity"] = ""
    if check_mode or client.write(lease, obj):
        result.update(released=True, changed=not check_mode, holder=None)
    else:
        result["holder"] = ((client.get() or {}).get("spec") or {}).get("holderIdentity") or None
    return result
