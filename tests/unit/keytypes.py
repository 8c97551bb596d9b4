# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Key types kubeadm never issues (cmd/kubeadm/app/util/pkiutil: RSA-2048/3072/4096, ECDSA-P256, ECDSA-P384 from
v1.34), put on a kubeadm node's certificate for the unit tests."""

from __future__ import annotations

import functools
import warnings

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

# What renewal keeps (a Go component uses it), and what it refuses, plan and run alike.
RENEWED = {
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
    "ECDSA-P521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "RSA-1024": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
    "RSA-8192": lambda: rsa.generate_private_key(public_exponent=65537, key_size=8192),
}
REFUSED = {
    "DSA-2048": lambda: dsa.generate_private_key(2048),
    "Ed448": ed448.Ed448PrivateKey.generate,
    "ECDSA-secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
}


@functools.lru_cache(maxsize=None)
def private_key(kind):
    """One key per kind and test session: an RSA-8192 key takes seconds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates DSA
        return {**RENEWED, **REFUSED}[kind]()


def give_key(root, base, kind=None, signer="ca"):
    """Re-issue ``pki/<base>.crt`` of the kubeadm node ``root`` (a copy) with a ``kind`` key (None: its own): same
    subject, validity and extensions, signed by ``pki/<signer>.key`` (by the new key when ``signer`` is ``base``);
    a new key is written as PKCS#8."""
    pki_dir = root / "etc/kubernetes/pki"
    old = x509.load_pem_x509_certificate((pki_dir / (base + ".crt")).read_bytes())
    key = private_key(kind) if kind else serialization.load_pem_private_key((pki_dir / (base + ".key")).read_bytes(), None)
    signer_key = key if signer == base else serialization.load_pem_private_key((pki_dir / (signer + ".key")).read_bytes(), None)
    builder = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(old.not_valid_before_utc)
               .not_valid_after(old.not_valid_after_utc))
    for extension in old.extensions:
        if not isinstance(extension.value, (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier)):  # of the old keys
            builder = builder.add_extension(extension.value, critical=extension.critical)
    algorithm = None if isinstance(signer_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    (pki_dir / (base + ".crt")).write_bytes(builder.sign(signer_key, algorithm).public_bytes(serialization.Encoding.PEM))
    if kind:
        (pki_dir / (base + ".key")).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                  serialization.NoEncryption()))
