# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Which component picks up a renewed certificate by itself and which must restart, by version.

The one table the modules and roles use (research/corrections.md §2-§3, research/reload.md). A
version we cannot read is treated as one that does not reload: a restart too many costs seconds,
one too few leaves an old certificate in use.
"""

from __future__ import annotations

import re

RESTART_ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
NEVER = None
ALWAYS = (0, 0)  # reloads on every version, also one we cannot read


class Rule:
    """How ``component`` loads one certificate: by itself from version ``since`` on (NEVER: only at start).

    ``does`` says what it does with the file (from ``since`` on, for a rule that reloads).
    """

    def __init__(self, component, since, does, source):
        self.component = component
        self.since = since
        self.does = does
        self.source = source

    def reloads_on(self, version):
        if self.since is NEVER:
            return False
        return self.since == ALWAYS or (version is not None and version >= self.since)


_SERVING = ("reloads its serving and front-proxy client certificates on file change (fsnotify, 1-minute resync)",
            "kubernetes staging/src/k8s.io/apiserver/pkg/server/dynamiccertificates/dynamic_serving_content.go "
            "(since v1.17; measured on v1.28, research/reload.md §1)")
_CLIENT_FILE = ("reads a client certificate given as files at each new connection (open connections keep the old one, "
                "harmless while it is valid)",
                "kubernetes staging/src/k8s.io/client-go/transport/transport.go loadTLSFiles -> ReloadTLSFiles, "
                "cachingCertificateLoader (kubernetes#79083, v1.18); used by pkg/kubelet/client/kubelet_client.go")
_ETCD_CLIENT = ("reads --etcd-certfile at each new etcd connection (open connections keep the old one, harmless while "
                "it is valid)",
                "etcd client/pkg/transport/listener.go TLSInfo.ClientConfig GetClientCertificate; measured on v1.28, "
                "research/reload.md §2")
_ETCD_SERVING = ("reads its serving and peer certificates at every handshake",
                 "etcd client/pkg/transport/listener.go TLSInfo.ServerConfig GetCertificate; measured on etcd 3.4.23, "
                 "research/reload.md §3")
_EMBEDDED = ("reads the client certificate embedded in its kubeconfig (*-data) once, at start",
             "kubernetes staging/src/k8s.io/client-go/transport/transport.go TLSConfigFor: cert or key as data is static")
_KUBELET_CLIENT = ("loads its client certificate (kubelet.conf, kubelet-client-current.pem) at start only",
                   "kubernetes pkg/kubelet/certificate/kubelet.go NewKubeletClientCertificateManager; kubeadm docs "
                   "troubleshooting-kubeadm.md 'Kubelet client certificate rotation fails': restart the kubelet")
_KUBELET_SERVING = ("reloads a serving certificate file (tlsCertFile or the default kubelet.crt) on change",
                    "kubernetes pkg/features/kube_features.go ReloadKubeletServerCertificateFile (beta, on by default "
                    "since v1.31); pkg/kubelet/kubelet.go NewKubeletServerCertificateDynamicFileManager")
_KUBELET_GENERATED = ("generates a self-signed kubelet.crt only at start, when the file is absent",
                      "kubernetes cmd/kubelet/app/server.go InitializeTLS (GenerateSelfSignedCertKey)")

# kubeadm handle (or kubelet cert) -> Rule. Certs nothing running holds (admin.conf,
# super-admin.conf, etcd healthcheck-client: read per use by kubectl and probes) have no rule.
KUBEADM = {
    "apiserver": Rule("kube-apiserver", (1, 17), *_SERVING),
    "front-proxy-client": Rule("kube-apiserver", (1, 17), *_SERVING),
    "apiserver-kubelet-client": Rule("kube-apiserver", (1, 18), *_CLIENT_FILE),
    "apiserver-etcd-client": Rule("kube-apiserver", (1, 28), *_ETCD_CLIENT),
    "etcd-server": Rule("etcd", ALWAYS, *_ETCD_SERVING),
    "etcd-peer": Rule("etcd", ALWAYS, *_ETCD_SERVING),
    "controller-manager.conf": Rule("kube-controller-manager", NEVER, *_EMBEDDED),
    "scheduler.conf": Rule("kube-scheduler", NEVER, *_EMBEDDED),
    "kubelet.conf": Rule("kubelet", NEVER, *_KUBELET_CLIENT),
    "kubelet-serving-file": Rule("kubelet", (1, 31), *_KUBELET_SERVING),
    "kubelet-serving-regenerate": Rule("kubelet", NEVER, *_KUBELET_GENERATED),
}

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text):
    """``(major, minor)`` of the first ``vX.Y[.Z]`` in ``text`` (an image tag, ``kubelet --version``), or None."""
    match = _VERSION.search(text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def version_text(version):
    return "v%d.%d" % version if version else "unknown"


def decide(names, versions, rules=None, policy="needed", down=()):
    """``(restarts, reloads)`` for the renewed certs ``names``.

    ``versions`` maps a component to its ``(major, minor)`` (or None); ``down`` names components that do
    not serve now - one that reloads by itself is restarted anyway, since a container crash-looping on its old
    certificates waits out the kubelet's back-off (up to 5 minutes) before it tries the new ones
    (kubernetes pkg/kubelet/kubelet.go MaxContainerBackOff = 300 s). ``restarts`` lists, in
    restart order, ``{component, certs, reason}``; ``reloads`` lists ``{cert, component, reason}``
    for certs picked up without a restart. ``policy`` ``always`` restarts those too, as runbooks do.
    """
    rules = KUBEADM if rules is None else rules
    restart, reloads = {}, []
    for name in names:
        rule = rules.get(name)
        if rule is None:
            continue
        version = versions.get(rule.component)
        if rule.reloads_on(version) and rule.component in down:
            restart.setdefault(rule.component, []).append(
                (name, "it is not serving now (crash-looping on its old certificates?): a restart skips the kubelet's back-off"))
            continue
        if rule.reloads_on(version):
            if policy == "always":
                why = "restart_policy=always (it %s: %s)" % (rule.does, rule.source)
                restart.setdefault(rule.component, []).append((name, why))
            else:
                reloads.append({"cert": name, "component": rule.component,
                                "reason": "%s %s %s (%s)" % (rule.component, version_text(version), rule.does, rule.source)})
            continue
        if rule.since is NEVER:
            why = "it %s (%s)" % (rule.does, rule.source)
        elif version is None:
            why = "its version could not be read, so it is assumed not to reload by itself"
        else:
            why = "%s %s is older than v%d.%d, from which it %s (%s)" % (
                rule.component, version_text(version), rule.since[0], rule.since[1], rule.does, rule.source)
        restart.setdefault(rule.component, []).append((name, why))
    restarts = []
    for component in RESTART_ORDER:
        if component in restart:
            certs = [name for name, _why in restart[component]]
            reasons = sorted({why for _name, why in restart[component]})
            restarts.append({"component": component, "certs": certs,
                             "reason": "%s for %s: %s" % (component, ", ".join(certs), "; ".join(reasons))})
    return restarts, reloads
