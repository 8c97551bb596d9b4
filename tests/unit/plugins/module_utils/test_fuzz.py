# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Fuzzing the PEM and kubeconfig parsers: they return what they promise or raise CertError, nothing else."""

from __future__ import annotations

import base64
import datetime

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kubepki.fleet.plugins.module_utils import _kubeconfig, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

# Modest: the whole file stays within a few seconds.
FUZZ = settings(max_examples=150, deadline=None)


def _pair():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = datetime.datetime(2026, 1, 1)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


CERT_PEM, KEY_PEM = _pair()
# Pieces a broken or hostile file is made of: markers, real blocks, halves of them, and noise.
PIECES = st.one_of(
    st.sampled_from([CERT_PEM, KEY_PEM, CERT_PEM[:len(CERT_PEM) // 2], KEY_PEM[len(KEY_PEM) // 2:],
                     b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n",
                     b"-----END PRIVATE KEY-----\n", b"-----BEGIN RSA PRIVATE KEY-----\n", b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
                     b"-----BEGIN ", b"-----", b"MIIB\n", b"\n"]),
    st.binary(max_size=48),
)
PEM_FILES = st.lists(PIECES, max_size=24).map(b"".join)


@FUZZ
@given(PEM_FILES)
def test_pem_parser_returns_certificates_or_raises_cert_error(data):
    try:
        certs = _x509.load_certificates(data, "fuzz.crt")
    except CertError:
        return
    assert certs and all(isinstance(cert, x509.Certificate) for cert in certs)


@FUZZ
@given(PEM_FILES)
def test_key_parser_returns_a_key_or_raises_cert_error(data):
    try:
        key = _x509.load_private_key(data, "fuzz.key")
    except CertError:
        return
    assert key.public_key() is not None


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                    st.sampled_from([base64.b64encode(CERT_PEM).decode(), base64.b64encode(KEY_PEM).decode(),
                                     "relative.crt", "/etc/kubernetes/pki/ca.crt", "c", "u", "not base64!"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)
USER_FIELDS = ("client-certificate-data", "client-certificate", "client-key-data", "client-key")
KUBECONFIGS = st.fixed_dictionaries({}, optional={
    "current-context": VALUES,
    "users": st.one_of(VALUES, st.lists(st.fixed_dictionaries({}, optional={
        "name": VALUES, "user": st.one_of(VALUES, st.dictionaries(st.sampled_from(USER_FIELDS), VALUES))}), max_size=3)),
    "contexts": st.one_of(VALUES, st.lists(st.fixed_dictionaries({}, optional={
        "name": VALUES, "context": st.dictionaries(st.sampled_from(("user", "cluster")), VALUES)}), max_size=2)),
    "clusters": st.one_of(VALUES, st.lists(st.fixed_dictionaries({}, optional={
        "name": VALUES, "cluster": st.dictionaries(st.sampled_from(("server", "certificate-authority-data")), VALUES)}),
        max_size=2)),
})


def _parses_or_cert_error(text):
    try:
        users = _kubeconfig.parse(text, "/etc/kubernetes/fuzz.conf")
    except CertError:
        return
    for user in users:
        assert user.cert_data is None or isinstance(user.cert_data, bytes)
        assert user.cert_path is None or isinstance(user.cert_path, str)


@FUZZ
@given(KUBECONFIGS)
def test_kubeconfig_parser_on_odd_structures(config):
    _parses_or_cert_error(yaml.safe_dump(config).encode("utf-8"))


@FUZZ
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8"))))
def test_kubeconfig_parser_on_any_bytes(text):
    _parses_or_cert_error(text)
