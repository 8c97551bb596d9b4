# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Every certificate of a node as fact entries (see docs/facts.md): files, kubeconfigs, endpoints.

Bad input never raises out of here: it becomes an entry in state ``invalid`` or ``missing``
whose ``message`` says what is wrong and what to do.
"""

from __future__ import annotations

import base64
import binascii
import json
import os

from ansible_collections.kubepki.fleet.plugins.module_utils import _kubeconfig, _layouts, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import MissingFile as _Missing, read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._probe import ProbeError, served_certificate
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

_STATE_ORDER = {state: index for index, state in enumerate(_x509.STATES)}


class _Found:
    """An entry under construction with the parsed objects it needs; only ``entry`` is returned."""

    def __init__(self, entry, chain=None, key=None, key_path=None):
        self.entry = entry
        self.chain = chain or []
        self.key = key
        self.key_path = key_path
        self.own = 0  # index in chain of the certificate the entry describes
        self.out_of_order = None  # why a leaf's file written CA first is unusable

    @property
    def leaf(self):
        return self.chain[self.own]

    def check_order(self, what, holds_ca=False):
        """A leaf's chain written CA first: the entry describes the leaf behind the CA and is invalid, saying why,
        as kubeadm_renew refuses it (``_x509.ca_first``). A lone CA in a leaf's place is left to the key check."""
        own = None if holds_ca else _x509.own_index(self.chain)
        if own:
            self.own, self.out_of_order = own, _x509.ca_first(self.chain, what)


def _base_entry(entry_id, name, source, distribution, component, **extra):
    entry = {
        "id": entry_id,
        "name": name,
        "source": source,
        "distribution": distribution,
        "component": component,
        "state": None,
        "message": None,
        "ca": None,
        "externally_managed": None,
        "key_matches": None,
        "in_use": None,
        "served_on": None,
    }
    entry.update(extra)
    return entry


def _fail(found, exc):
    found.entry["state"] = "missing" if isinstance(exc, _Missing) else "invalid"
    found.entry["message"] = str(exc)
    return found


def _expected(exc, distribution):
    where = "a %s node" % distribution if distribution in _layouts.DISTRIBUTIONS else "this node"
    return _Missing("%s; expected on %s — restore it from a backup or renew it" % (exc, where))


def _load_key(fs, found, key_path, key_data=None):
    """Attach the private key if there is one; a broken key is a finding, not a failure."""
    found.key_path = key_path
    try:
        if key_data is None:
            if key_path is None or not fs.exists(key_path):
                return
            key_data = read_node_file(fs, key_path)
        found.key = _x509.load_private_key(key_data, key_path or "embedded client-key-data")
    except CertError as exc:
        found.entry["message"] = "key: %s" % exc
        found.entry["key_matches"] = False


def _secret_json_chain(data, path):
    """Cert chain and key bytes of a dynamiclistener cache file (a serialized v1.Secret)."""
    try:
        secret = json.loads(data.decode("utf-8"))
        fields = secret["data"]
        return base64.b64decode(fields["tls.crt"]), base64.b64decode(fields.get("tls.key") or b"")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, binascii.Error) as exc:
        raise CertError("%s is not a valid dynamiclistener secret cache (%s: %s); delete it and restart the service "
                        "to have it rebuilt" % (path, type(exc).__name__, exc))


def read_file_spec(fs, spec):
    entry = _base_entry(spec.id, spec.name, "file", spec.distribution, spec.component, path=spec.path)
    found = _Found(entry)
    try:
        data = read_node_file(fs, spec.path)
        key_data = None
        if spec.kind == "secret-json":
            data, key_data = _secret_json_chain(data, spec.path)
        found.chain = _x509.load_certificates(data, spec.path)
        found.check_order(spec.path, spec.holds_ca)
    except _Missing as exc:
        return _fail(found, _expected(exc, spec.distribution)) if spec.required else None
    except CertError as exc:
        return _fail(found, exc)
    _load_key(fs, found, spec.key_path, key_data or None)
    return found


def read_kubeconfig(fs, spec_id, name, path, component, distribution, required):
    """One entry per user with a client cert; a problem with the file itself is one entry."""
    base = dict(source="kubeconfig", distribution=distribution, component=component, path=path)
    try:
        users = _kubeconfig.parse(read_node_file(fs, path), path)
    except _Missing as exc:
        return [_fail(_Found(_base_entry(spec_id, name, **base)), _expected(exc, distribution))] if required else []
    except CertError as exc:
        return [_fail(_Found(_base_entry(spec_id, name, **base)), exc)]
    with_cert = [user for user in users if user.has_cert]
    if not with_cert:
        found = _Found(_base_entry(spec_id, name, **base))
        return [_fail(found, _Missing("%s has no client certificate (token or exec authentication?)" % path))] if required else []

    results = []
    for index, user in enumerate(with_cert):
        entry_id = spec_id if index == 0 else "%s#%s" % (spec_id, user.name)
        found = _Found(_base_entry(entry_id, name, kubeconfig_user=user.name, kubeconfig_server=user.server,
                                   cert_ref=user.cert_path, **base))
        try:
            data = user.cert_data if user.cert_data is not None else read_node_file(fs, user.cert_path)
            found.chain = _x509.load_certificates(data, "%s (user %s)" % (path, user.name))
            found.check_order(user.cert_path if user.cert_data is None else "%s (user %s)" % (path, user.name))
        except CertError as exc:
            if isinstance(exc, _Missing):
                exc = _Missing("%s references %s" % (path, exc))
            results.append(_fail(found, exc))
            continue
        _load_key(fs, found, user.key_path, user.key_data)
        results.append(found)
    return results


def probe_endpoint(spec, distribution, timeout):
    found = _Found(_base_entry(spec.id, spec.component, "endpoint", distribution, spec.component,
                               endpoint=spec.id[len("endpoint/"):], expected=None, serves_expected=None))
    try:
        der = served_certificate(spec.host, spec.port, timeout=timeout)
        found.chain = _x509.load_certificates(der, spec.id)
    except ProbeError as exc:
        found.entry["state"] = exc.state
        found.entry["message"] = str(exc)
    except CertError as exc:
        _fail(found, exc)
    return found


def _resolve_cas(found_list):
    """Fill ``ca`` and ``externally_managed`` by checking signatures against the node's CAs."""
    cas = [f for f in found_list if f.chain and f.entry["source"] == "file" and _x509.is_ca(f.leaf)]
    for found in found_list:
        if not found.chain:
            continue
        leaf = found.leaf
        entry = found.entry
        if found in cas and _x509.signed_by(leaf, leaf):
            signer = found
        else:
            signer = next((ca for ca in cas if ca is not found and _x509.signed_by(leaf, ca.leaf)), None)
        if signer is not None:
            # kubeadm names its CAs by handle; other layouts by the CA file's id.
            entry["ca"] = signer.entry["name"] if signer.entry["distribution"] == "kubeadm" else signer.entry["id"]
            entry["externally_managed"] = signer.key is None
        elif any(_x509.signed_by(leaf, other) for other in found.chain if other is not leaf):
            entry["ca"] = "%s#chain" % entry["id"]
            entry["externally_managed"] = False


def _finish(found, now, warn_days):
    entry = found.entry
    if found.key is not None:
        entry["key_matches"] = _x509.key_matches(found.leaf, found.key) if found.chain else None
        if entry["key_matches"] is False:
            entry["message"] = "%s does not match the certificate: restore cert and key from the same backup" % found.key_path
    if found.key is not None or entry["key_matches"] is False:
        entry["key_path"] = found.key_path
    if not found.chain:
        return
    leaf = found.leaf
    entry.update(_x509.describe(leaf))
    entry["chain_length"] = len(found.chain)
    entry["days_left"], state, message = _x509.validity(leaf, now, warn_days)
    if entry["state"] is None:
        entry["state"] = "invalid" if found.out_of_order or entry["key_matches"] is False else state
        entry["message"] = "; ".join(m for m in (found.out_of_order, entry["message"], message) if m) or None


def _link_endpoints(files, endpoints, specs):
    by_path = {}
    for found in files:
        if found.entry["source"] == "file":
            by_path.setdefault(found.entry["path"], found)
    for spec, probe in zip(specs, endpoints):
        target = next((by_path[path] for path in spec.expects if path in by_path), None)
        if target is None:
            continue
        probe.entry["expected"] = target.entry["id"]
        target.entry["served_on"] = probe.entry["id"]
        if probe.chain and target.chain:
            same = _x509.fingerprint_sha256(probe.leaf) == _x509.fingerprint_sha256(target.leaf)
            probe.entry["serves_expected"] = target.entry["in_use"] = same


def _extra_paths(fs, patterns, known_paths):
    specs = []
    for pattern in patterns:
        matches = fs.glob(pattern) or [pattern]
        for path in matches:
            if path in known_paths:
                continue
            known_paths.add(path)
            specs.append(_layouts.FileSpec("file" + path, os.path.basename(path).rsplit(".", 1)[0], path, None, "extra",
                                           required=True))
    return specs


def _sort_key(entry):
    return (entry.get("not_after") is None, entry.get("not_after") or "", _STATE_ORDER.get(entry["state"], 9), entry["id"])


def summarize(entries):
    by_state = {state: 0 for state in _x509.STATES}
    for entry in entries:
        by_state[entry["state"]] = by_state.get(entry["state"], 0) + 1
    dated = [e for e in entries if e.get("not_after")]
    soonest = min(dated, key=lambda e: e["not_after"]) if dated else None
    return {
        "total": len(entries),
        "by_state": by_state,
        "soonest": {k: soonest[k] for k in ("id", "not_after", "days_left")} if soonest else None,
        "not_in_use": [e["id"] for e in entries if e.get("source") == "file" and e.get("in_use") is False],
    }


def gather(fs, distribution="auto", now=None, warn_days=30, paths=(), kubeconfigs=(), user_kubeconfigs=True,
           probe=True, probe_host=None, probe_timeout=3.0, rke1_address=None):
    """The ``ansible_facts.kubepki`` dictionary of the node under ``fs``."""
    detected, node_role = _layouts.detect(fs)
    if distribution == "auto":
        distribution = detected
    elif distribution != detected:
        node_role = "unknown" if detected == "none" else node_role
    layout = _layouts.layout_for(fs, distribution, node_role, probe_host or "127.0.0.1", rke1_address)

    found_list = [f for f in (read_file_spec(fs, spec) for spec in layout.files) if f is not None]
    for spec in layout.kubeconfigs:
        found_list.extend(read_kubeconfig(fs, spec.id, spec.name, spec.path, spec.component, spec.distribution, spec.required))

    known = {spec.path for spec in layout.files} | {spec.path for spec in layout.kubeconfigs}
    for spec in _extra_paths(fs, paths, known):
        found_list.append(read_file_spec(fs, spec))
    extra_kubeconfigs = list(kubeconfigs) + (_layouts.user_kubeconfigs(fs) if user_kubeconfigs else [])
    for path in extra_kubeconfigs:
        if path in known:
            continue
        known.add(path)
        found_list.extend(read_kubeconfig(fs, "kubeconfig" + path, os.path.basename(path), path, "user", "extra", True))

    probes = [probe_endpoint(spec, layout.distribution, probe_timeout) for spec in layout.endpoints] if probe else []
    everything = found_list + probes
    _resolve_cas(everything)
    for found in everything:
        _finish(found, now, warn_days)
    if probe:
        _link_endpoints(found_list, probes, layout.endpoints)
        for found in found_list:
            entry = found.entry
            if entry["in_use"] is False and entry["state"] in ("ok", "warning"):
                entry["message"] = "%s serves a different certificate: the component has not loaded this file (restart it)%s" % (
                    entry["served_on"], "; " + entry["message"] if entry["message"] else "")

    entries = sorted((f.entry for f in everything), key=_sort_key)
    return {
        "distribution": distribution,
        "node_role": node_role,
        "rootfs": fs.rootfs,
        "now": _x509.iso(now),
        "warn_days": warn_days,
        "certs": entries,
        "summary": summarize(entries),
    }
