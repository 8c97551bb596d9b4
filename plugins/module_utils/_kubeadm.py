# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Renewal of kubeadm's certificate set and kubeconfig client certs: plan, refuse, write.

A plan is computed and checked in full before anything is written, so a refusal (external CA,
expired CA) leaves the node untouched.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import re

from ansible.module_utils.common import yaml as common_yaml  # its yaml_* exist only with PyYAML: assert_yaml first

from ansible_collections.kubepki.fleet.plugins.module_utils import _files, _kubeconfig, _layouts, _reload, _sign, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._probe import ProbeError, served_certificate
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

PKI = _layouts.KUBEADM_PKI
KUBELET_CLIENT_CURRENT = _layouts.KUBELET_PKI + "/kubelet-client-current.pem"
_KUBEADM_FILES = _layouts.KUBEADM_CERTS + _layouts.KUBEADM_ETCD_CERTS
CA_FILES = {name: base for name, base, component, _ca in _KUBEADM_FILES if component == "ca"}
# The renewable file certs: kubeadm handle -> (file under pki/ without .crt, signing CA handle).
LEAF_FILES = {name: (base, ca) for name, base, component, ca in _KUBEADM_FILES if component != "ca"}
KUBECONFIGS = tuple(name for name, _component in _layouts.KUBEADM_KUBECONFIGS)
RENEWABLE = tuple(sorted(list(LEAF_FILES) + list(KUBECONFIGS)))
# Bounds of validity_days: a cert valid under a day is renewed again by every run; kubeadm's CAs live ten
# years (3650 days) and no leaf may outlive its CA, so anything longer is a typo (days taken for hours, say).
VALIDITY_DAYS = (1, 3650)


class UsageError(CertError):
    """The request itself is wrong (an unknown name); the message lists what is valid."""


class Item:
    """One certificate that may be renewed, with everything needed to renew it."""

    def __init__(self, name, kind, path, ca_name, cert, key_path=None):
        self.name = name
        self.kind = kind            # "file", "kubeconfig" (embedded), "kubelet-conf" (repair)
        self.path = path
        self.ca_name = ca_name
        self.cert = cert
        self.key_path = key_path
        self.embedded = kind != "kubelet-conf"
        self.predicted_not_after = None
        self.lifetime = None
        self.lifetime_reason = None
        self.new_cert = None
        self.new_key = None
        self.method = "native"
        self.method_reason = None
        self.due_reason = None
        self.ca_key_type = None

    @property
    def new_key_type(self):
        """The key type renewal gives it: the old one (kubeadm gets only what it renews alike, see KubeadmCli.route),
        but the kubelet's own for kubelet.conf."""
        return _sign.KUBELET_KEY_TYPE if self.kind == "kubelet-conf" else _x509.key_type(self.cert.public_key())

    def summary(self, now):
        """What the plan and the result say of this cert: old and new expiry, lifetime and key type, and why."""
        days_left = round((_x509.not_after(self.cert) - now).total_seconds() / 86400.0, 2)
        return {"name": self.name, "path": self.path, "ca": self.ca_name, "not_after": _x509.iso(_x509.not_after(self.cert)),
                "serial": _x509.serial_hex(self.cert), "days_left": days_left,
                "key_type": _x509.key_type(self.cert.public_key()), "new_key_type": self.new_key_type,
                "lifetime_days": _days(_x509.not_after(self.cert) - _x509.not_before(self.cert)),
                "new_lifetime_days": _days(self.lifetime + _sign.BACKDATE) if self.lifetime else None,
                "lifetime_reason": self.lifetime_reason, "method": self.method, "method_reason": self.method_reason,
                "due_reason": self.due_reason}

    def renewed_summary(self, now, new_cert):
        summary = self.summary(now)
        summary.update(new_not_after=_x509.iso(_x509.not_after(new_cert)), new_serial=_x509.serial_hex(new_cert),
                       new_lifetime_days=_days(_x509.not_after(new_cert) - _x509.not_before(new_cert)),
                       new_key_type=_x509.key_type(new_cert.public_key()))
        return summary


def _days(delta):
    return round(delta.total_seconds() / 86400.0, 2)


def _named(config, key, name, path):
    items = config.get(key + "s")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(key), dict):
            return item[key]
    raise CertError("invalid kubeconfig %s: no %s %r for current-context %r" % (path, key, name, config.get("current-context")))


def _current(config, path):
    """``(cluster, user)`` of the current context, as kubeadm's kubeConfigReadWriter picks them
    (cmd/kubeadm/app/phases/certs/renewal/readwriter.go); the dicts are the config's own."""
    contexts = config.get("contexts")
    context = next((c.get("context") for c in (contexts if isinstance(contexts, list) else [])
                    if isinstance(c, dict) and c.get("name") == config.get("current-context")), None)
    if not isinstance(context, dict):
        raise CertError("invalid kubeconfig %s: missing context %r" % (path, config.get("current-context")))
    return _named(config, "cluster", context.get("cluster"), path), _named(config, "user", context.get("user"), path)


def _current_user(config, path):
    return _current(config, path)[1]


def _load_kubeconfig(fs, path):
    text = read_node_file(fs, path)
    return text, _kubeconfig.load(text, path)


def _leaf(data, what):
    """The certificate to renew in ``data``: its first block, refused when that is a CA (a chain written the
    wrong way round), since renewal copies subject and usages from it and would issue a CA in its place."""
    certs = _x509.load_certificates(data, what)
    problem = _x509.ca_first(certs, what)
    if problem:
        raise CertError(problem)
    return certs[0]


def _embedded_leaf(user, path):
    return _leaf(_kubeconfig.decode(user["client-certificate-data"], "%s: client-certificate-data" % path), path)


def _ca_pairs(fs):
    """``{ca name: (cert, key or None)}`` of the CAs present."""
    pairs = {}
    for name, base in CA_FILES.items():
        path = "%s/%s.crt" % (PKI, base)
        if not fs.exists(path):
            continue
        cert = _x509.load_certificates(read_node_file(fs, path), path)[0]
        key_path = "%s/%s.key" % (PKI, base)
        key = _x509.load_private_key(read_node_file(fs, key_path), key_path) if fs.exists(key_path) else None
        pairs[name] = (cert, key)
    return pairs


def inventory(fs):
    """``(items, skipped)``: kubeadm's renewable certs on this node; absent ones are skipped with a reason."""
    items, skipped = [], []
    local_etcd = _layouts.kubeadm_local_etcd(fs)
    for name in RENEWABLE:
        if name in LEAF_FILES:
            base, ca_name = LEAF_FILES[name]
            path, key_path = "%s/%s.crt" % (PKI, base), "%s/%s.key" % (PKI, base)
            if ca_name == "etcd-ca" and not local_etcd:
                skipped.append({"name": name, "reason": "etcd is external (no etcd static pod): its certificates, "
                                                        "apiserver-etcd-client included, come from the external etcd's CA; "
                                                        "kubeadm does not renew them either"})
                continue
            if not fs.exists(path):
                skipped.append({"name": name, "reason": "%s is absent (external etcd, or not a control-plane node)" % path})
                continue
            items.append(Item(name, "file", path, ca_name, _leaf(read_node_file(fs, path), path), key_path))
        else:
            path = "/etc/kubernetes/" + name
            if not fs.exists(path):
                reason = "absent: kubeadm writes it only on the node that ran kubeadm init" if name == "super-admin.conf" else "%s is absent" % path
                skipped.append({"name": name, "reason": reason})
                continue
            _text, config = _load_kubeconfig(fs, path)
            user = _current_user(config, path)
            if not user.get("client-certificate-data"):
                skipped.append({"name": name, "reason": "%s has no embedded client certificate" % path})
                continue
            items.append(Item(name, "kubeconfig", path, "ca", _embedded_leaf(user, path)))
    return items, skipped


def kubelet_conf_item(fs):
    """kubelet.conf when its client cert cannot rotate by itself any more, else None.

    That is: it embeds its cert (the pre-1.17 init-node bug, kubeadm#1753), or the file it
    points at has expired (rotation failed while the node was down).
    """
    path = "/etc/kubernetes/kubelet.conf"
    if not fs.exists(path):
        return None
    _text, config = _load_kubeconfig(fs, path)
    user = _current_user(config, path)
    if user.get("client-certificate-data"):
        cert = _embedded_leaf(user, path)
    elif isinstance(user.get("client-certificate"), str) and fs.exists(user["client-certificate"]):
        cert = _leaf(read_node_file(fs, user["client-certificate"]), user["client-certificate"])
    else:
        return None
    item = Item("kubelet.conf", "kubelet-conf", path, "ca", cert)
    item.embedded = bool(user.get("client-certificate-data"))
    return item


def _key_mismatch(fs, item):
    """Why a cert with time left is due all the same: its key is another one. A renewal killed between the key's
    rename and the cert's leaves that pair, which kube-apiserver (or etcd) refuses at its next start."""
    if item.kind != "file" or not fs.exists(item.key_path):
        return None
    key = _x509.load_private_key(read_node_file(fs, item.key_path), item.key_path)
    if _x509.key_matches(item.cert, key):
        return None
    return "%s does not match its certificate (a renewal interrupted between key and certificate)" % item.key_path


def plan(fs, now, threshold_days, force=False, names=None, validity_days=None, repair_kubelet_conf=True,
         configured_validity=None):
    """``(due, skipped)``; raises SigningError naming every cert it refuses to renew.

    ``configured_validity``: the kubeadm configuration's ``certificateValidityPeriod``, if known.
    """
    if validity_days is not None and not VALIDITY_DAYS[0] <= validity_days <= VALIDITY_DAYS[1]:
        raise UsageError("validity_days=%s is out of range: give %d to %d days (a kubeadm CA lives %d days and no "
                         "certificate may outlive it), or leave it unset to keep each certificate's lifetime; nothing "
                         "was changed" % (validity_days, VALIDITY_DAYS[0], VALIDITY_DAYS[1], VALIDITY_DAYS[1]))
    items, skipped = inventory(fs)
    if names:
        unknown = sorted(set(names) - set(RENEWABLE) - {"kubelet.conf"})
        if unknown:
            raise UsageError("unknown certificate name(s) %s; kubeadm's are: %s, kubelet.conf" % (", ".join(unknown), ", ".join(RENEWABLE)))
        items = [i for i in items if i.name in names]
    if repair_kubelet_conf and (not names or "kubelet.conf" in names):
        kubelet = kubelet_conf_item(fs)
        # A kubelet that rotates through its file is left to itself until that file has expired.
        if kubelet is not None and (kubelet.embedded or _x509.not_after(kubelet.cert) <= now):
            items.append(kubelet)
    threshold = datetime.timedelta(days=threshold_days)
    due = []
    for item in items:
        left = _x509.not_after(item.cert) - now
        item.due_reason = "force=true" if force else "%.1f days left, under threshold_days=%s" % (
            left.total_seconds() / 86400, threshold_days) if left < threshold else _key_mismatch(fs, item)
        if item.due_reason:
            due.append(item)
        else:
            skipped.append({"name": item.name, "reason": "%.1f days left, not under threshold_days=%s" % (left.total_seconds() / 86400, threshold_days)})
    cas = _ca_pairs(fs)
    version = component_versions(fs)["kube-apiserver"]
    refusals = []
    for item in due:
        if item.ca_name not in cas:
            refusals.append("%s: CA %s is absent (%s/%s.crt)" % (item.name, item.ca_name, PKI, CA_FILES[item.ca_name]))
            continue
        if item.kind != "kubelet-conf":  # which gets a new key of the kubelet's own type
            try:
                _sign.check_key_type(item.cert.public_key(), item.path if item.kind == "file" else
                                     "the client certificate in %s" % item.path)
            except _sign.SigningError as exc:
                refusals.append("%s: %s" % (item.name, exc))
                continue
        ca_cert, ca_key = cas[item.ca_name]
        item.ca_key_type = _x509.key_type(ca_cert.public_key())
        # kubeadm's certificateValidityPeriod is for its own certs; the kubelet's comes from the controller-manager
        item.lifetime, item.lifetime_reason = _sign.lifetime_of(
            item.cert, ca_cert, validity_days, None if item.kind == "kubelet-conf" else configured_validity, version)
        not_after = now + item.lifetime
        if not force and item.lifetime <= threshold:
            days = item.lifetime.total_seconds() / 86400
            refusals.append("%s: threshold_days=%s is not below the %.0f-day lifetime it would be renewed with, so every "
                            "run would renew it again; use a smaller threshold_days" % (item.name, threshold_days, days))
            continue
        try:
            _sign.check_ca(ca_cert, ca_key, item.ca_name, now, not_after)
        except _sign.SigningError as exc:
            refusals.append("%s: %s" % (item.name, exc))
        item.predicted_not_after = not_after
    if refusals:
        raise _sign.SigningError("refusing to renew, nothing was changed: " + "; ".join(refusals))
    return due, skipped


def planned(due, now):
    """What check mode returns: each due cert's summary with its predicted expiry (no serial before it is issued)."""
    return [dict(item.summary(now), new_not_after=_x509.iso(item.predicted_not_after), new_serial=None) for item in due]


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|\u00b5s|ns)")
_GO_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "ns": 1e-9}


def cluster_configuration(fs, path):
    """The ClusterConfiguration document of the kubeadm config file ``path`` ({} when it has none)."""
    try:
        documents = list(common_yaml.yaml_load_all(read_node_file(fs, path)))
    except Exception as exc:  # pylint: disable=broad-except  # any YAML error is bad input here
        raise CertError("%s is not valid YAML (%s): fix it or leave kubeadm_config unset" % (path, str(exc).splitlines()[0]))
    return next((doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "ClusterConfiguration"), {})


def certificate_validity_period(config, path):
    """``certificateValidityPeriod`` of a ClusterConfiguration (kubeadm.k8s.io/v1beta4, kubeadm v1.31+:
    cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go), or None; ``path`` names the file in errors."""
    if not config.get("certificateValidityPeriod"):
        return None
    text = str(config["certificateValidityPeriod"])
    parts = _GO_DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CertError("%s: certificateValidityPeriod %r is not a duration like 8760h0m0s" % (path, text))
    return datetime.timedelta(seconds=sum(float(n) * _GO_UNITS[u] for n, u in parts))


def kubeadm_key_types(version):
    """The key types kubeadm ``version`` issues (cmd/kubeadm/app/util/pkiutil GeneratePrivateKey): RSA-2048, or
    ECDSA-P256 with the PublicKeysECDSA gate; v1beta4's encryptionAlgorithm (v1.31) adds RSA-3072 and RSA-4096,
    and ECDSA-P384 from v1.34 (kubernetes#131677). Nothing else: no P-521, Ed25519, DSA or other RSA sizes."""
    return ("RSA-2048", "ECDSA-P256") + (("RSA-3072", "RSA-4096") if version >= (1, 31) else ()) + (
        ("ECDSA-P384",) if version >= (1, 34) else ())


def configured_key_type(config, version):
    """The key type kubeadm ``version`` makes for a renewed cert under ClusterConfiguration ``config``: v1beta4's
    ``encryptionAlgorithm`` (v1.31+), the v1beta3 feature gate ``PublicKeysECDSA`` before, else RSA-2048
    (cmd/kubeadm/app/apis/kubeadm/types.go EncryptionAlgorithmType; renewal/manager.go RenewUsingLocalCA).
    CertError for an algorithm that kubeadm does not issue: it refuses such a configuration, whatever the cert."""
    algorithm = config.get("encryptionAlgorithm") if version >= (1, 31) else None
    if not algorithm and (config.get("featureGates") or {}).get("PublicKeysECDSA"):
        algorithm = "ECDSA-P256"
    algorithm = str(algorithm or "RSA-2048")
    if algorithm not in kubeadm_key_types(version):
        raise CertError("encryptionAlgorithm %r is not one kubeadm v%d.%d issues (%s), so it refuses the configuration: "
                        "fix it, or use method=native, which keeps each certificate's key type"
                        % (algorithm, version[0], version[1], ", ".join(kubeadm_key_types(version))))
    return algorithm


def component_versions(fs):
    """``{component: (major, minor) or None}`` from the static pod images kubeadm pins (``kube-apiserver:v1.28.7``)."""
    return {component: _reload.parse_version((_layouts.static_pod_image(fs, component) or "").rpartition(":")[2])
            for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")}


def not_serving(fs, probe_host, timeout=2.0):
    """The control-plane components whose endpoint does not answer TLS now."""
    down = []
    for spec in _layouts.kubeadm_layout(fs, "control-plane", probe_host).endpoints:
        try:
            served_certificate(spec.host, spec.port, timeout=timeout)
        except ProbeError:
            down.append(spec.component)
    return down


def restart_plan(fs, names, policy="needed", down=()):
    """``(restarts, reloads)`` of research/corrections.md §3 for the renewed ``names`` (see _reload.decide)."""
    return _reload.decide(names, component_versions(fs), policy=policy, down=down)


class KubeadmCli:
    """The node's kubeadm: its version and the certs its ``certs renew`` takes.

    The handles are the subcommands ``kubeadm certs renew --help`` lists (cmd/kubeadm/app/cmd/certs.go adds one
    per renewal handler; ``super-admin.conf`` only from v1.29, kubernetes#121305): an older kubeadm asked for a
    newer handle fails ("unknown flag: --cert-dir" on v1.28) after earlier ones were renewed.
    """

    def __init__(self, run_command):
        self.run_command = run_command
        self.config_path = None
        rc, out, err = run_command(["kubeadm", "version", "-o", "short"])
        self.version_text = out.strip()
        self.version = _reload.parse_version(self.version_text) if rc == 0 else None
        if self.version is None:
            raise CertError("`kubeadm version -o short` answered %r (rc %s): use method=native, or repair kubeadm"
                            % ((out or err).strip()[:200], rc))
        rc, out, err = run_command(["kubeadm", "certs", "renew", "--help"])
        listed = out.split("Available Commands:", 1)[1].split("\n\n", 1)[0] if rc == 0 and "Available Commands:" in out else ""
        self.handles = {line.split()[0] for line in listed.splitlines() if line.strip()} - {"all"}
        if not self.handles:
            raise CertError("`kubeadm certs renew --help` (kubeadm %s) lists no certificates: use method=native"
                            % self.version_text)

    def validity(self, configured):
        """Lifetime of what this kubeadm issues: v1beta4's certificateValidityPeriod from v1.31 (given to it with
        --config), else constants.CertificateValidity, one year."""
        return configured if configured and self.version >= (1, 31) else _sign.DEFAULT_LIFETIME

    def route(self, due, configured, config, config_path=None):
        """Send each due cert to kubeadm or native, saying why (item.method, item.method_reason): kubeadm renews
        only what it has a subcommand for, and only when it would issue the lifetime and key type planned.
        ``config_path`` (holding ``config``) goes to kubeadm as --config when that kubeadm reads its API version:
        v1beta4 only from v1.31 (cmd/kubeadm/app/apis/kubeadm/v1beta4). CertError, before any is routed, when
        ``config`` names a key type this kubeadm does not issue (see configured_key_type)."""
        newer = config.get("apiVersion") == "kubeadm.k8s.io/v1beta4" and self.version < (1, 31)
        self.config_path = None if newer else config_path
        validity, key_type = self.validity(configured), configured_key_type(config, self.version)
        for item in due:
            old_key = _x509.key_type(item.cert.public_key())
            if item.kind == "kubelet-conf":
                reason = "the kubelet's client certificate is not kubeadm's to renew (kubeadm troubleshooting: repaired by hand)"
            elif item.name not in self.handles:
                reason = "kubeadm %s has no `certs renew %s`" % (self.version_text, item.name)
            elif abs(item.lifetime - validity) > datetime.timedelta(hours=1):
                reason = "kubeadm %s would issue %.0f days, not the %.0f planned (%s)" % (
                    self.version_text, validity.total_seconds() / 86400, item.lifetime.total_seconds() / 86400, item.lifetime_reason)
            elif old_key != key_type:
                reason = "kubeadm %s would make a %s key; the certificate has %s" % (self.version_text, key_type, old_key)
            elif not item.ca_key_type.startswith(("RSA-", "ECDSA-")):
                reason = "kubeadm loads only RSA and ECDSA CA keys (pkiutil TryLoadKeyFromDisk); CA %s has %s" % (
                    item.ca_name, item.ca_key_type)
            else:
                item.method, item.method_reason = "kubeadm", "kubeadm %s certs renew %s" % (self.version_text, item.name)
                continue
            item.method, item.method_reason = "native", reason

    def renew(self, fs, item):
        """``kubeadm certs renew <name>``; the new cert, or CertError. kubeadm writes key, then cert, in place
        (renewal/filerenewer.go, pkiutil.WriteKey/WriteCert): when it fails, what it wrote is in ``.written``."""
        paths = [item.path] + ([item.key_path] if item.key_path else [])
        before = {path: _digest(fs, path) for path in paths}
        argv = ["kubeadm", "certs", "renew", item.name, "--cert-dir", PKI] + (["--config", self.config_path] if self.config_path else [])
        rc, out, err = self.run_command(argv)
        written = [path for path in paths if _digest(fs, path) != before[path]]
        said = " ".join((err or out).split())[-600:]
        if rc != 0 or len(written) != len(paths):
            error = CertError("`%s` %s: %s" % (" ".join(argv), "failed (rc %s)" % rc if rc else "renewed nothing", said))
            error.written = written
            raise error
        return _x509.load_certificates(_current_cert_pem(fs, item), item.path)[0]


def _digest(fs, path):
    try:
        return hashlib.sha256(read_node_file(fs, path)).hexdigest()
    except (OSError, CertError):
        return None


def _current_cert_pem(fs, item):
    if item.kind == "file":
        return read_node_file(fs, item.path)
    return base64.b64decode(_current_user(_load_kubeconfig(fs, item.path)[1], item.path)["client-certificate-data"])


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _kubeconfig_update(fs, item, ca_pem):
    """The kubeconfig with the new client cert and key, and ca.crt as its cluster's CA, as kubeadm writes it:
    only the current context's user and cluster change. Read back and checked before it is written."""
    config = _load_kubeconfig(fs, item.path)[1]
    cluster, user = _current(config, item.path)
    user["client-certificate-data"] = _b64(_sign.cert_pem(item.new_cert))
    user["client-key-data"] = _b64(_sign.key_pem(item.new_key))
    cluster["certificate-authority-data"] = _b64(ca_pem)
    text = common_yaml.yaml_dump(config, default_flow_style=False).encode("utf-8")
    check = _current_user(common_yaml.yaml_load(text), item.path)
    cert = _x509.load_certificates(base64.b64decode(check["client-certificate-data"]), item.path)[0]
    key = _x509.load_private_key(base64.b64decode(check["client-key-data"]), item.path)
    if _x509.serial_hex(cert) != _x509.serial_hex(item.new_cert) or not _x509.key_matches(cert, key):
        raise CertError("the rewritten %s does not read back as the new certificate and its key; it was not written" % item.path)
    return text


def _kubelet_client_files(fs, item, now):
    """What the documented repair (kubeadm troubleshooting) leaves: a pem the kubelet rotates, and kubelet.conf pointing at it."""
    pem_path = "%s/kubelet-client-%s.pem" % (_layouts.KUBELET_PKI, now.strftime("%Y-%m-%d-%H-%M-%S"))
    config = _load_kubeconfig(fs, item.path)[1]
    user = _current_user(config, item.path)
    for field in ("client-certificate-data", "client-key-data"):
        user.pop(field, None)
    user["client-certificate"] = user["client-key"] = KUBELET_CLIENT_CURRENT
    return pem_path, _sign.cert_pem(item.new_cert) + _sign.key_pem(item.new_key), common_yaml.yaml_dump(config, default_flow_style=False).encode("utf-8")


def apply(fs, due, now, renewed=None, kubeadm=None):
    """Renew every due cert, by ``kubeadm`` (a KubeadmCli) where routed there, else natively; returns the summaries.

    ``renewed`` (a list) receives each summary as soon as its files are written, so a caller
    that catches a failure knows what was changed before it, a half-written kubeadm pair included.
    """
    cas = _ca_pairs(fs)
    renewed = [] if renewed is None else renewed
    for item in due:
        if item.method == "kubeadm":
            try:
                item.new_cert = kubeadm.renew(fs, item)
            except CertError as exc:
                if getattr(exc, "written", None):
                    summary = item.summary(now)
                    summary.update(new_not_after=None, new_serial=None, partial="kubeadm failed after writing %s"
                                   % ", ".join(exc.written))
                    renewed.append(summary)
                raise
            renewed.append(item.renewed_summary(now, item.new_cert))
            continue
        ca_cert, ca_key = cas[item.ca_name]
        # The kubelet makes its own client keys ECDSA P-256 whatever kubeadm's algorithm is.
        key = _sign.new_p256_key() if item.kind == "kubelet-conf" else None
        item.new_cert, item.new_key = _sign.reissue(item.cert, ca_cert, ca_key, now, item.lifetime, item.ca_name, key=key)
        if item.kind == "file":
            _files.write_files([(fs.real(item.key_path), _sign.key_pem(item.new_key), 0o600),
                                (fs.real(item.path), _sign.cert_pem(item.new_cert), 0o644)])
        elif item.kind == "kubeconfig":
            _files.write_file(fs.real(item.path), _kubeconfig_update(fs, item, _sign.cert_pem(ca_cert)))
        else:
            pem_path, pem, conf = _kubelet_client_files(fs, item, now)
            # as the kubelet's certificate store makes its cert dir (drwxr-xr-x on real nodes) when absent
            pki_dir = fs.real(_layouts.KUBELET_PKI)
            if not os.path.isdir(pki_dir):
                os.makedirs(pki_dir)
                os.chmod(pki_dir, 0o755)  # whatever the umask
            _files.write_file(fs.real(pem_path), pem, 0o600)
            link = fs.real(KUBELET_CLIENT_CURRENT, follow=False)
            temp_link = link + ".kubepki-tmp"
            if os.path.lexists(temp_link):
                os.unlink(temp_link)
            os.symlink(pem_path, temp_link)
            os.rename(temp_link, link)
            _files.write_file(fs.real(item.path), conf)
        renewed.append(item.renewed_summary(now, item.new_cert))
    return renewed
