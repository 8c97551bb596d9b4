# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Is a renewed certificate in use? Evidence per component, taken before and after restarts, judged once.

What proves it differs by component (research/corrections.md §2-§3):
- a renewed serving cert: its endpoint serves exactly that file;
- controller-manager, scheduler: their serving cert lives in memory and is new at every start
  (research/reload.md §5), so a new fingerprint shows a new process, which read the new kubeconfig;
- a kubelet restarted for a repaired kubelet.conf: it gets no new serving cert. A new main PID and
  its node Lease renewed after that process started show it authenticates with its client cert;
  the Lease is read with kubelet.conf's own credentials, so the read proves the new cert works;
- kube-apiserver or etcd restarted: a new container (crictl); their serving certs reload without one;
- a kubelet's self-signed serving cert moved aside and the kubelet restarted: :10250 serves the kubelet.crt it
  wrote, new and valid (cmd/kubelet/app/server.go InitializeTLS makes one when the file is absent); put back:
  :10250 serves the restored file; RKE's generate_serving_certificate: :10250 serves a new cert from kube-ca;
- a k3s or RKE2 supervisor cert reset or regenerated: the supervisor port serves a new CN=<program> cert, and the
  leaves it re-issues at start are valid; on every server of the cluster (HA servers share the secret), the secret
  and dynamic-cert.json hold the served cert and the secret's fingerprint annotation names it.
"""

from __future__ import annotations

import datetime
import json

from ansible_collections.kubepki.fleet.plugins.module_utils import _apiclient, _x509

KUBELET_CONF = _apiclient.KubeletCredentials.PATH
IN_MEMORY_SERVING = ("kube-controller-manager", "kube-scheduler")
CONTAINERS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
# kubernetes pkg/kubelet/kubelet.go: the node Lease is renewed every nodeLeaseDurationSeconds (40) x 0.25.
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/"


def served(facts):
    """``{component: sha256 fingerprint}`` of what the node's endpoints serve now."""
    return {e["component"]: e.get("fingerprint_sha256") for e in facts["certs"] if e["source"] == "endpoint"}


def containers(run_command):
    """``{name: container id}`` of the running control-plane containers, or None without crictl."""
    try:
        rc, out, _err = run_command(["crictl", "ps", "-o", "json"])
    except OSError:
        return None
    if rc != 0:
        return None
    try:
        listed = json.loads(out).get("containers") or []
    except (ValueError, AttributeError):
        return None
    return {c.get("metadata", {}).get("name"): c.get("id") for c in listed if c.get("metadata", {}).get("name") in CONTAINERS}


def _systemd_time(text):
    """systemd's ``Wed 2026-12-02 00:15:26 UTC`` as an aware datetime, or None."""
    parts = (text or "").split()
    if len(parts) < 3:
        return None
    try:
        moment = datetime.datetime.strptime(" ".join(parts[1:3]), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    zone = parts[3] if len(parts) > 3 else "UTC"
    return moment.replace(tzinfo=_x509.UTC) if zone in ("UTC", "GMT") else moment.astimezone(_x509.UTC)


def kubelet_process(run_command):
    """``{pid, started}`` of the kubelet unit, or None without systemd."""
    try:
        rc, out, _err = run_command(["systemctl", "show", "-p", "MainPID", "-p", "ExecMainStartTimestamp", "kubelet"])
    except OSError:
        return None
    if rc != 0:
        return None
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    started = _systemd_time(values.get("ExecMainStartTimestamp"))
    return {"pid": values.get("MainPID"), "started": _x509.iso(started) if started else None}


def kubelet_lease(fs, timeout=5.0):
    """This node's Lease as the kubelet's own credentials (kubelet.conf) read it: ``{node, client_serial, renew_time}``
    or ``{error}``. A read that succeeds shows the client cert kubelet.conf points at authenticates."""
    try:
        kubelet = _apiclient.KubeletCredentials(fs)
        status, body = kubelet.get(LEASE_PATH + kubelet.node, timeout)
    except (_apiclient.CredentialsError, _apiclient.Unreachable, _apiclient.NotOurServer) as exc:
        return {"error": "cannot read the node Lease with %s: %s" % (KUBELET_CONF, exc)}
    info = {"node": kubelet.node, "client_serial": _x509.serial_hex(kubelet.cert), "status": status}
    if status != 200:
        info["error"] = "GET %s%s%s with %s's client certificate answered HTTP %s" % (
            kubelet.server, LEASE_PATH, kubelet.node, KUBELET_CONF, status)
        return info
    try:
        info["renew_time"] = (json.loads(body.decode("utf-8")).get("spec") or {}).get("renewTime")
    except (ValueError, UnicodeDecodeError, AttributeError):
        info["error"] = "the node Lease is not JSON"
    return info


def evidence(facts, run_command, fs, with_kubelet):
    """What the node shows now; taken before the restarts and again after them."""
    found = {"now": facts["now"], "served": served(facts), "containers": containers(run_command),
             "endpoints": {e["component"]: e["endpoint"] for e in facts["certs"] if e["source"] == "endpoint"}}
    if with_kubelet:
        found["kubelet"] = kubelet_process(run_command)
        found["lease"] = kubelet_lease(fs)
    return found


def _check(component, proof, ok, detail):
    return {"component": component, "evidence": proof, "ok": bool(ok), "detail": detail}


def _kubelet_check(before, after, client):
    process, lease = after.get("kubelet") or {}, after.get("lease") or {}
    old_pid = (before.get("kubelet") or {}).get("pid")
    if not process.get("pid") or process["pid"] in ("0", old_pid):
        return _check("kubelet", "restart", False, "the kubelet has not restarted (main PID %s, was %s)" % (process.get("pid"), old_pid))
    if not client:
        return _check("kubelet", "restart", True, "runs as a new process (main PID %s, was %s)" % (process["pid"], old_pid))
    if lease.get("error"):
        return _check("kubelet", "client", False, lease["error"])
    renewed, started = lease.get("renew_time"), process.get("started")
    # systemd prints seconds: a renewal a full second after the start was made by the new process
    if not renewed or not started or _x509.parse_time(renewed) < _x509.parse_time(started) + datetime.timedelta(seconds=1):
        return _check("kubelet", "client", False, "node Lease %s last renewed %s, not yet by the kubelet started %s"
                      % (lease.get("node"), renewed, started))
    return _check("kubelet", "client", True, "kubelet (PID %s, started %s) renewed node Lease %s at %s; read back with "
                  "kubelet.conf's client cert %s" % (process["pid"], started, lease["node"], renewed, lease["client_serial"]))


def _restart_check(component, before, after):
    if component in IN_MEMORY_SERVING:
        old, new = (before.get("served") or {}).get(component), after["served"].get(component)
        return _check(component, "in-memory serving cert", new and new != old,
                      "serves a new in-memory certificate: a new process, which read its renewed kubeconfig" if new and new != old
                      else "still serves what it served before the restart" if new else "serves nothing")
    old, new = (before.get("containers") or {}).get(component), (after.get("containers") or {}).get(component)
    if after.get("containers") is None:
        return _check(component, "restart", True, "crictl is absent, so the new container cannot be seen; health is checked next")
    return _check(component, "restart", new and new != old,
                  "runs in a new container %s (was %s)" % (new, old) if new and new != old
                  else "still runs container %s" % old if new else "no running container")


KUBELET_FILE = "kubelet/kubelet.crt"
RKE_KUBE_CA = "rke1/kube-ca"
KUBELET_SERVING_WANTS = ("new", "old", "issued")


def _endpoint(facts, component):
    return next((e for e in facts["certs"] if e["source"] == "endpoint" and e["component"] == component), {})


def _fresh(entry, old_fingerprints, min_days_left):
    return bool(entry.get("fingerprint_sha256")) and entry["fingerprint_sha256"] not in old_fingerprints \
        and (entry.get("days_left") or 0) > min_days_left


def _shown(endpoint, default):
    """What an endpoint serves, in words (no key material)."""
    if not endpoint.get("fingerprint_sha256"):
        return "%s serves nothing%s" % (endpoint.get("endpoint", default),
                                        " (%s)" % endpoint["message"] if endpoint.get("message") else "")
    return "%s serves %s, %s, expires %s (%s days), signed by %s" % (
        endpoint.get("endpoint"), endpoint.get("subject"), endpoint.get("state"), endpoint.get("not_after"),
        endpoint.get("days_left"), endpoint.get("ca") or endpoint.get("issuer") or "an unknown issuer")


def kubelet_serving(facts, want, old_fingerprints, min_days_left):
    """The check that :10250 serves what a kubelet serving cert fix wants (``KUBELET_SERVING_WANTS``): ``new``, the
    kubelet.crt it wrote, not one of ``old_fingerprints`` and valid more than ``min_days_left`` days; ``old``, the
    restored kubelet.crt; ``issued``, a new cert signed by RKE's kube-ca, valid as long."""
    endpoint = _endpoint(facts, "kubelet")
    on_disk = next((e for e in facts["certs"] if e["id"] == KUBELET_FILE), {})
    file_served = bool(on_disk.get("in_use"))
    fresh = _fresh(endpoint, old_fingerprints, min_days_left)
    ok = {"old": file_served, "new": file_served and fresh, "issued": fresh and endpoint.get("ca") == RKE_KUBE_CA}[want]
    seen = _shown(endpoint, ":10250")
    if endpoint.get("fingerprint_sha256"):
        seen += "; " + ("the kubelet.crt on disk" if file_served else "not the kubelet.crt on disk (%s)" % on_disk.get("state", "absent"))
    wanted = {"new": "the kubelet.crt it wrote, new and valid for more than %g days" % min_days_left,
              "old": "its restored kubelet.crt", "issued": "a new certificate from kube-ca valid for more than %g days" % min_days_left}[want]
    return _check("kubelet", "served", ok, seen if ok else "wants %s; %s" % (wanted, seen))


def supervisor_served(facts, program, old_fingerprints, leaves, min_days_left):
    """Checks that a k3s or RKE2 server serves a new supervisor cert (CN=<program>, not one of ``old_fingerprints``,
    valid more than ``min_days_left`` days) and that each of ``leaves`` (fact ids of the leaves it re-issues at start)
    is valid as long."""
    component = program + "-supervisor"
    endpoint = _endpoint(facts, component)
    ok = endpoint.get("subject_cn") == program and _fresh(endpoint, old_fingerprints, min_days_left)
    seen = _shown(endpoint, component)
    checks = [_check(component, "served", ok, seen if ok else "wants a new CN=%s certificate valid for more than %g days%s; %s"
                     % (program, min_days_left, "" if endpoint.get("fingerprint_sha256") not in old_fingerprints
                        else " (it still serves the one from before the restart)", seen))]
    for leaf in leaves:
        entry = next((e for e in facts["certs"] if e["id"] == leaf), {})
        ok = (entry.get("days_left") or 0) > min_days_left
        checks.append(_check(component, "renewed", ok, "%s: %s, %s days left%s" % (
            leaf, entry.get("state", "absent"), entry.get("days_left", "-"), "" if ok else ", wants more than %g" % min_days_left)))
    return checks


def supervisor_stored(facts, program, secret_info, cached_info):
    """Checks that the secret a k3s or RKE2 server stores (``_k3s.Api.read_secret`` info) and its dynamic-cert.json
    (``_k3s.read_dynamic_cert`` info) hold what its supervisor port serves, and that the secret's
    ``listener.cattle.io/fingerprint`` annotation names that cert (dynamiclistener factory/gen.go generateCert), as
    every server of an HA cluster must after one of them regenerated it."""
    component = program + "-supervisor"
    fingerprint = _endpoint(facts, component).get("fingerprint_sha256")
    wrong = []
    if secret_info.get("state") != "present":
        wrong.append(secret_info.get("message") or "secret kube-system/%s-serving: %s" % (program, secret_info.get("state")))
    else:
        if secret_info.get("fingerprint_sha256") != fingerprint:
            wrong.append("the secret holds another certificate (expires %s)" % secret_info.get("not_after"))
        if secret_info.get("annotation_fingerprint") != "SHA1=" + secret_info.get("fingerprint_sha1", ""):
            wrong.append("the secret's fingerprint annotation is %s, not its certificate's SHA1=%s"
                         % (secret_info.get("annotation_fingerprint"), secret_info.get("fingerprint_sha1")))
    if cached_info.get("state") != "missing" and cached_info.get("fingerprint_sha256") != fingerprint:
        detail = " (%s)" % cached_info["message"] if cached_info.get("message") else ""
        wrong.append("%s holds another certificate%s" % (cached_info.get("path"), detail))
    return _check(component, "stored", fingerprint and not wrong,
                  "; ".join(wrong) if fingerprint else "nothing served to compare the secret with")


def judge(facts, before, after, renewed, restarted, must_serve):
    """``(ok, checks)``: every renewed cert in use, each restart shown by its component's own evidence."""
    checks = []
    files = [e for e in facts["certs"] if e["source"] != "endpoint" and e["name"] in renewed and e.get("served_on")]
    components_of = {e["id"]: e["component"] for e in facts["certs"] if e["source"] == "endpoint"}
    for entry in files:
        checks.append(_check(components_of.get(entry["served_on"], entry["served_on"]), "served", entry["in_use"],
                             "%s serves renewed %s" % (entry["served_on"], entry["name"]) if entry["in_use"]
                             else "%s still serves another certificate than renewed %s" % (entry["served_on"], entry["name"])))
    for component in restarted:
        if component == "kubelet":
            checks.append(_kubelet_check(before, after, "kubelet.conf" in renewed))
        else:
            checks.append(_restart_check(component, before, after))
    for entry in facts["certs"]:
        if entry["source"] == "endpoint" and entry["component"] in must_serve and entry["state"] not in ("ok", "warning"):
            checks.append(_check(entry["component"], "valid", False, "%s: %s%s" % (
                entry["id"], entry["state"], " - " + entry["message"] if entry.get("message") else "")))
    return all(c["ok"] for c in checks), checks
