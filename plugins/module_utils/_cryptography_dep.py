# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""The one place that imports cryptography (and checks PyYAML), so a missing library gives one clear error."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common import yaml as common_yaml

MINIMUM_CRYPTOGRAPHY_VERSION = "3.4"

# Re-exported for the other module_utils, hence unused here.
# pylint: disable=unused-import
try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
except ImportError:
    x509 = InvalidSignature = hashes = serialization = None
    ec = ed448 = ed25519 = padding = rsa = None
    ExtendedKeyUsageOID = ExtensionOID = NameOID = None
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
# pylint: enable=unused-import


def assert_cryptography(module):
    """Fail the module with an actionable message when cryptography is absent on the node."""
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg=missing_required_lib(
                "cryptography >= %s" % MINIMUM_CRYPTOGRAPHY_VERSION,
                reason="to parse certificates (Debian/Ubuntu: apt install python3-cryptography; RHEL: dnf install python3-cryptography)",
            ),
            exception=CRYPTOGRAPHY_IMPORT_ERROR,
        )


def assert_yaml(module):
    """Fail the module, naming the package, when PyYAML is absent on the node (kubeconfigs are YAML)."""
    if not common_yaml.HAS_YAML:
        module.fail_json(msg=missing_required_lib(
            "PyYAML", reason="to read and rewrite kubeconfigs (Debian/Ubuntu: apt install python3-yaml; RHEL: dnf install "
                             "python3-pyyaml); nothing was changed"))
