# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Client certificates inside kubeconfigs: embedded ``*-data`` or file references."""

from __future__ import annotations

import base64
import binascii
import os

from ansible.module_utils.common import yaml as common_yaml  # yaml_load exists only with PyYAML

from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError


class KubeconfigUser:
    """One user of a kubeconfig and where its client certificate and key come from.

    ``cert_data``/``key_data`` hold decoded embedded PEM; ``cert_path``/``key_path`` hold
    referenced files (resolved against the kubeconfig's directory, as kubectl does).
    Key bytes stay in memory only to check that they match the certificate.
    """

    def __init__(self, name, current, cluster):
        self.name = name
        self.current = current
        self.server = cluster.get("server")
        self.ca_data = cluster.get("certificate-authority-data")  # base64, decoded on use: other clusters' CAs are left alone
        self.cert_data = None
        self.cert_path = None
        self.key_data = None
        self.key_path = None

    def ca_pem(self, path):
        """The decoded certificate-authority-data of the user's cluster, or None."""
        return decode(self.ca_data, "%s: certificate-authority-data" % path) if self.ca_data else None

    @property
    def has_cert(self):
        return self.cert_data is not None or self.cert_path is not None


def decode(value, what):
    """Bytes of a kubeconfig ``*-data`` field, strict as client-go is (Go's StdEncoding skips only line breaks)."""
    try:
        return base64.b64decode(value.replace("\n", "").replace("\r", ""), validate=True)
    except (binascii.Error, TypeError, ValueError, AttributeError) as exc:
        raise CertError("%s is not valid base64 (%s): encode the PEM file with base64 -w0, or restore the kubeconfig "
                        "from a backup" % (what, exc))


def load(text, path):
    """The kubeconfig mapping of ``text`` read from ``path``; CertError naming the file when it is not one."""
    if not common_yaml.HAS_YAML:
        raise CertError("PyYAML is missing on the node; install python3-yaml to read %s" % path)
    try:
        config = common_yaml.yaml_load(text)
    except Exception as exc:  # pylint: disable=broad-except  # any YAML error is bad input here
        # problem and position only: PyYAML's own message quotes the line, which may hold key data
        mark = getattr(exc, "problem_mark", None)
        where = ", line %d, column %d" % (mark.line + 1, mark.column + 1) if mark is not None else ""
        raise CertError("%s is not valid YAML (%s%s): fix it or restore it from a backup"
                        % (path, getattr(exc, "problem", None) or type(exc).__name__, where))
    if not isinstance(config, dict):
        raise CertError("%s is not a kubeconfig (not a YAML mapping): restore it from a backup" % path)
    return config


def _what(path, user, field):
    return "%s: %s of user %s" % (path, field, user)


def _path(value, what):
    if not isinstance(value, str):
        raise CertError("%s is not a file path: make it one, or embed the PEM as *-data" % what)
    return value


def _named(items, key):
    """``{name: body}`` of a kubeconfig list such as ``users`` or ``clusters``, tolerating junk."""
    result = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get(key), dict):
            result[item["name"]] = item[key]
    return result


def _ref(value):
    """A name a kubeconfig refers to, or None when it is not a string (and cannot name anything)."""
    return value if isinstance(value, str) else None


def parse(text, path):
    """The users of the kubeconfig ``text`` read from ``path``, current-context's user first."""
    config = load(text, path)
    if not isinstance(config.get("users", []), list):
        raise CertError("%s is not a kubeconfig (no users list)" % path)

    users = _named(config.get("users"), "user")
    clusters = _named(config.get("clusters"), "cluster")
    contexts = _named(config.get("contexts"), "context")
    current_context = contexts.get(_ref(config.get("current-context"))) or {}
    current_user = _ref(current_context.get("user"))
    cluster_of_user = {}
    for context in contexts.values():
        cluster_of_user.setdefault(_ref(context.get("user")), clusters.get(_ref(context.get("cluster"))) or {})

    base_dir = os.path.dirname(path)
    result = []
    for name, body in users.items():
        user = KubeconfigUser(name, name == current_user, cluster_of_user.get(name) or {})
        if body.get("client-certificate-data"):
            user.cert_data = decode(body["client-certificate-data"], _what(path, name, "client-certificate-data"))
        elif body.get("client-certificate"):
            user.cert_path = os.path.join(base_dir, _path(body["client-certificate"], _what(path, name, "client-certificate")))
        if body.get("client-key-data"):
            user.key_data = decode(body["client-key-data"], _what(path, name, "client-key-data"))
        elif body.get("client-key"):
            user.key_path = os.path.join(base_dir, _path(body["client-key"], _what(path, name, "client-key")))
        result.append(user)
    result.sort(key=lambda u: (not u.current, u.name or ""))
    return result
