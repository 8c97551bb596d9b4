# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""The kubelet's self-signed serving certificate (kubelet.crt on :10250), which nothing renews.

Two fixes (research/rancher.md §2.4, seed 000): move kubelet.crt and kubelet.key aside so the
kubelet writes a new pair at its next start (any distribution), or, on RKE1 >= v1.0.0, set
``services.kubelet.generate_serving_certificate: true`` in cluster.yml and run ``rke up``, so that
RKE issues per-node serving certificates from kube-ca which ``rke cert rotate`` then renews.
"""

from __future__ import annotations

import copy
import os
import re

from ansible_collections.kubepki.fleet.plugins.module_utils import _files, _layouts, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._probe import ProbeError, served_certificate
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

try:
    import yaml
except ImportError:
    yaml = None

KUBELET_CRT = _layouts.KUBELET_PKI + "/kubelet.crt"
KUBELET_KEY = _layouts.KUBELET_PKI + "/kubelet.key"
KUBELET_SERVER_CURRENT = _layouts.KUBELET_PKI + "/kubelet-server-current.pem"
ASIDE = ".kubepki-"
FLAG = "generate_serving_certificate"


class FixError(Exception):
    """The fix cannot be applied; the message says why and what to do. Nothing was changed."""


def _days_left(cert, now):
    return round((_x509.not_after(cert) - now).total_seconds() / 86400.0, 2)


def _aside_files(fs, path):
    return fs.glob(path + ASIDE + "*")


# -- served certificate ---------------------------------------------------------------------------

def probe_served(host, port, now, timeout=3.0):
    """What :10250 serves: fingerprint, subject and expiry, or ``error`` when nothing answers."""
    endpoint = "%s:%s" % ("[%s]" % host if ":" in host else host, port)
    try:
        cert = _x509.load_certificates(served_certificate(host, port, timeout=timeout), endpoint)[0]
    except (ProbeError, CertError) as exc:
        return {"endpoint": endpoint, "error": str(exc)}
    return {"endpoint": endpoint, "fingerprint_sha256": _x509.fingerprint_sha256(cert), "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(), "serial": _x509.serial_hex(cert),
            "not_after": _x509.iso(_x509.not_after(cert)), "days_left": _days_left(cert, now)}


# -- regenerate -------------------------------------------------------------------------------------

def _read_kubelet_crt(fs, now, path=KUBELET_CRT):
    """The summary of kubelet.crt (read at ``path``); ``unreadable`` set instead of the cert facts when it is corrupt."""
    summary = {"name": "kubelet.crt", "path": KUBELET_CRT, "key_path": KUBELET_KEY if fs.exists(KUBELET_KEY) else None}
    try:
        leaf = _x509.load_certificates(read_node_file(fs, path), path)[0]
    except CertError as exc:
        summary.update(unreadable=str(exc), not_after=None, serial=None, fingerprint_sha256=None, days_left=None)
        return summary
    summary.update(subject=leaf.subject.rfc4514_string(), not_after=_x509.iso(_x509.not_after(leaf)),
                   serial=_x509.serial_hex(leaf), fingerprint_sha256=_x509.fingerprint_sha256(leaf),
                   days_left=_days_left(leaf, now))
    return summary


def _absent_message(served):
    serving = " (%s serves %s)" % (served["endpoint"], served["subject"]) if served and served.get("subject") else ""
    return ("%s is absent%s: there is no self-signed kubelet serving certificate to regenerate here. If the kubelet "
            "serves a certificate from --tls-cert-file, renew that file instead; otherwise restart the kubelet and it "
            "writes a new kubelet.crt" % (KUBELET_CRT, serving))


def plan_regenerate(fs, now, threshold_days, force=False, served=None, tls_cert_file=None):
    """``(due, skipped)``: kubelet.crt as a one-item ``due`` list when it should be regenerated.

    ``served`` is the result of ``probe_served`` (or None when not probed); ``tls_cert_file``
    the --tls-cert-file cluster.yml gives the kubelet, if any. Raises FixError when the kubelet
    serves an expiring certificate this fix cannot reach, or when kubelet.crt is absent.
    """
    served_ok = served is not None and "fingerprint_sha256" in served
    moved_aside = None
    if not fs.exists(KUBELET_CRT):
        aside = _aside_files(fs, KUBELET_CRT)
        if not aside:
            raise FixError(_absent_message(served))
        # moved by an earlier run that did not get to restart the kubelet (killed, or its connection lost): finish it
        moved_aside = aside[-1]
    item = _read_kubelet_crt(fs, now, moved_aside or KUBELET_CRT)
    item["moved_aside"] = moved_aside

    other = None
    configured_cert, bootstrap = _layouts.kubelet_serving_settings(fs)
    if tls_cert_file:
        other = "the kubelet is given --tls-cert-file=%s (services.kubelet.extra_args in cluster.yml)" % tls_cert_file
    elif configured_cert:
        other = "the kubelet serves tlsCertFile %s (%s)" % (configured_cert, _layouts.KUBELET_CONFIG)
    elif bootstrap and fs.exists(KUBELET_SERVER_CURRENT):
        # without serverTLSBootstrap a leftover kubelet-server-current.pem is not served (corrections.md §2)
        other = "the kubelet rotates its serving certificate through the API (%s, serverTLSBootstrap)" % KUBELET_SERVER_CURRENT
    elif served_ok and item["fingerprint_sha256"] and served["fingerprint_sha256"] != item["fingerprint_sha256"]:
        other = "%s serves %s, not %s" % (served["endpoint"], served["subject"], KUBELET_CRT)
    item["in_use"] = False if other else (True if served_ok else None)

    if other:
        if served_ok and served["days_left"] < threshold_days:
            raise FixError("%s, whose certificate (%s) expires %s, in %.1f days: regenerating %s would not change what "
                           "is served. Renew the certificate the kubelet serves instead; nothing was changed"
                           % (other, served["subject"], served["not_after"], served["days_left"], KUBELET_CRT))
        return [], [{"name": "kubelet.crt", "reason": "not in use: %s" % other}]
    if moved_aside:
        item["reason"] = ("moved aside to %s by an earlier run, and the kubelet has not written a new pair yet: "
                          "its restart does" % moved_aside)
    elif "unreadable" in item:
        item["reason"] = "unreadable: %s" % item.pop("unreadable")
    elif force:
        item["reason"] = "force"
    elif item["days_left"] < threshold_days:
        item["reason"] = "%.1f days left, under threshold_days=%s" % (item["days_left"], threshold_days)
    else:
        return [], [{"name": "kubelet.crt", "reason": "%.1f days left, not under threshold_days=%s" % (item["days_left"], threshold_days)}]
    return [item], []


def _aside_name(real, stamp):
    """``<file>.kubepki-<stamp>``, never an existing name: os.rename would silently replace it."""
    candidate, index = "%s%s%s" % (real, ASIDE, stamp), 1
    while os.path.lexists(candidate):
        candidate, index = "%s%s%s-%d" % (real, ASIDE, stamp, index), index + 1
    return candidate


def earlier_moves(fs, item):
    """The moves of the earlier run that moved ``item`` (plan_regenerate's) aside: kubelet.crt's, and kubelet.key's of
    the same run (same suffix) when the key is gone too - so that a rollback puts back the pair, never a stray key."""
    if not item.get("moved_aside"):
        return []
    moves = [{"src": KUBELET_CRT, "dest": item["moved_aside"]}]
    key_aside = KUBELET_KEY + item["moved_aside"][len(KUBELET_CRT):]
    if not fs.exists(KUBELET_KEY) and fs.exists(key_aside):
        moves.append({"src": KUBELET_KEY, "dest": key_aside})
    return moves


def move_aside(fs, now):
    """Rename kubelet.crt and kubelet.key to ``*.kubepki-<UTC time>`` beside them; returns the moves.

    Renames keep modes and owners, and the kubelet never writes into a renamed inode. If the
    second rename fails, the first is undone.
    """
    stamp = now.astimezone(_x509.UTC).strftime("%Y%m%dT%H%M%SZ")
    moves = []
    try:
        for path in (KUBELET_CRT, KUBELET_KEY):
            real = fs.real(path, follow=False)
            if not os.path.lexists(real):
                continue
            target = _aside_name(real, stamp)
            os.rename(real, target)
            moves.append({"src": path, "dest": fs.node_path(target)})
    except OSError as exc:
        for move in reversed(moves):
            os.rename(fs.real(move["dest"], follow=False), fs.real(move["src"], follow=False))
        raise FixError("cannot move %s aside: %s; nothing was changed" % (path, exc.strerror or exc))
    _files.fsync_dir(os.path.dirname(fs.real(KUBELET_CRT, follow=False)))
    return moves


# -- cluster.yml ----------------------------------------------------------------------------------------

def _require_yaml():
    if yaml is None:
        raise FixError("editing cluster.yml needs PyYAML on the host that holds it (Debian: apt install python3-yaml)")


def _yaml_problem(exc):
    mark = getattr(exc, "problem_mark", None)
    words = " ".join(part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part)
    if mark is None or not words:
        return " ".join(str(exc).split())
    return "line %d, column %d: %s" % (mark.line + 1, mark.column + 1, words)


def load_cluster_yml(data, path):
    """``(text, config)`` of cluster.yml bytes; FixError when it is not one YAML mapping."""
    _require_yaml()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FixError("%s is not UTF-8 text (%s); nothing was changed" % (path, exc))
    try:
        docs = list(yaml.load_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise FixError("%s is not valid YAML, and rke up would reject it too: %s. Fix the file; nothing was changed"
                       % (path, _yaml_problem(exc)))
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise FixError("%s is not one YAML mapping (an RKE cluster.yml has nodes:, services:, ...); nothing was changed" % path)
    return text, docs[0]


def _kubelet_config(config):
    services = config.get("services")
    kubelet = services.get("kubelet") if isinstance(services, dict) else None
    return kubelet if isinstance(kubelet, dict) else {}


def kubelet_tls_cert_file(config):
    """The --tls-cert-file cluster.yml passes to the kubelet through extra_args, or None."""
    extra = _kubelet_config(config).get("extra_args")
    for key, value in extra.items() if isinstance(extra, dict) else ():
        if str(key).lstrip("-") == "tls-cert-file":
            return str(value)
    return None


def flag_value(config):
    return _kubelet_config(config).get(FLAG)


def _last_line(node):
    """Index of the last line holding ``node``'s content (block collections end before trailing comments)."""
    if isinstance(node, yaml.ScalarNode):
        end = node.end_mark
        return end.line - 1 if end.column == 0 and end.line > node.start_mark.line else end.line
    if node.flow_style:
        return node.end_mark.line
    children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
    return max([node.start_mark.line] + [_last_line(child) for child in children])


def _entry(mapping, key, path, where):
    found = [(k, v) for k, v in mapping.value if isinstance(k, yaml.ScalarNode) and k.value == key]
    if len(found) > 1:
        raise FixError("%s: %s has %s twice (lines %s); remove the duplicate; nothing was changed"
                       % (path, where, key, ", ".join(str(k.start_mark.line + 1) for k, _v in found)))
    return found[0] if found else (None, None)


def _block_mapping(node, path, where):
    if not isinstance(node, yaml.MappingNode):
        raise FixError("%s: %s is not a mapping (line %d); an RKE cluster.yml has it as one; nothing was changed"
                       % (path, where, node.start_mark.line + 1))
    if node.flow_style:
        raise FixError("%s: %s is written in flow style ({...}, line %d), which this tool does not edit; rewrite it in "
                       "block style (one key per line) or set %s.%s: true by hand; nothing was changed"
                       % (path, where, node.start_mark.line + 1, "services.kubelet", FLAG))
    return node


def _refuse_anchors(text, first, last, path):
    """Anchors, aliases and merge keys in the edited span would make the edit reach other places."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line
        if first <= line <= last and (isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None)):
            raise FixError("%s: line %d uses a YAML anchor or alias inside services:, so editing it could change other "
                           "keys too; expand it by hand or set services.kubelet.%s: true yourself; nothing was changed"
                           % (path, line + 1, FLAG))


def set_serving_flag(text, config, path):
    """``(new_text, before)``: cluster.yml with ``services.kubelet.generate_serving_certificate: true``.

    Every other byte is kept: the value is replaced in place, or one line (or a ``kubelet:``
    block, or a ``services:`` block) is inserted after the last line of its parent mapping, at
    the indentation its siblings use. ``before`` is the old value (None when absent); when it
    is already true the text is returned unchanged. The result is re-parsed and must equal the
    old configuration with only that key changed, else nothing is returned but an error.
    """
    _require_yaml()
    _text, config = load_cluster_yml(text.encode("utf-8"), path)
    before = flag_value(config)
    if before is True:
        return text, before
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    _block_mapping(root, path, "the top level")
    # Lines as YAML marks count them (splitlines() would also split at \f, \v, ...).
    lines = re.findall(r"[^\n]*\n|[^\n]+$", text)
    newline = "\r\n" if "\r\n" in text else "\n"
    root_col = root.value[0][0].start_mark.column if root.value else 0
    services_key, services = _entry(root, "services", path, "the top level")

    if services is None:
        step = 2
        insert_at, indent, block = _last_line(root) + 1, root_col, ["services:", " " * step + "kubelet:", " " * 2 * step + FLAG + ": true"]
    else:
        _block_mapping(services, path, "services")
        _refuse_anchors(text, services_key.start_mark.line, _last_line(services), path)
        services_col = services.value[0][0].start_mark.column
        step = max(services_col - root_col, 1)
        kubelet_key, kubelet = _entry(services, "kubelet", path, "services")
        if kubelet is None:
            insert_at, indent, block = _last_line(services) + 1, services_col, ["kubelet:", " " * step + FLAG + ": true"]
        else:
            _block_mapping(kubelet, path, "services.kubelet")
            flag_key, flag = _entry(kubelet, FLAG, path, "services.kubelet")
            if flag is None:
                insert_at, indent, block = _last_line(kubelet) + 1, kubelet.value[0][0].start_mark.column, [FLAG + ": true"]
            else:
                if not isinstance(flag, yaml.ScalarNode) or flag.start_mark.line != flag.end_mark.line:
                    raise FixError("%s: services.kubelet.%s (line %d) is not a one-line value; set it to true by hand; "
                                   "nothing was changed" % (path, FLAG, flag_key.start_mark.line + 1))
                line = lines[flag.start_mark.line]
                lines[flag.start_mark.line] = line[:flag.start_mark.column] + "true" + line[flag.end_mark.column:]
                insert_at = None
    if insert_at is not None:
        if insert_at > 0 and insert_at <= len(lines) and not lines[insert_at - 1].endswith(("\n", "\r")):
            lines[insert_at - 1] += newline
        lines[insert_at:insert_at] = [" " * indent + part + newline for part in block]
    new_text = "".join(lines)

    expected = copy.deepcopy(config)
    services_data = expected.setdefault("services", {})
    services_data.setdefault("kubelet", {})[FLAG] = True
    try:
        _new_text, result = load_cluster_yml(new_text.encode("utf-8"), path)
    except FixError:
        result = None
    if result != expected:
        raise FixError("%s is laid out in a way this tool cannot edit safely (the edit would change more than "
                       "services.kubelet.%s); set it to true by hand; nothing was changed" % (path, FLAG))
    return new_text, before
