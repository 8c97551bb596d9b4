# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""Re-issue a certificate like its old self, signed by the local CA (the ``native`` method)."""

from __future__ import annotations

import datetime

from ansible_collections.kubepki.fleet.plugins.module_utils import _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._cryptography_dep import (
    ExtensionOID,
    ec,
    ed25519,
    hashes,
    rsa,
    serialization,
    x509,
)

BACKDATE = datetime.timedelta(minutes=5)  # kubeadm's CertificateBackdate: tolerates small clock skew
DEFAULT_LIFETIME = datetime.timedelta(days=365)
_RSA_BITS = (1024, 8192)
_TLS_CURVES = ("secp256r1", "secp384r1", "secp521r1")
KUBELET_KEY_TYPE = "ECDSA-P256"  # the kubelet makes its own client keys so, whatever kubeadm's algorithm
_COPIED_EXTENSIONS = (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
                      ExtensionOID.BASIC_CONSTRAINTS) if ExtensionOID else ()


class SigningError(_x509.CertError):
    """Renewal is refused; the message says why and what to do."""


def _usable(public_key):
    """Whether Kubernetes components (Go) can use a key of this type. Go's crypto/tls takes RSA, ECDSA and Ed25519
    keys (tls.go X509KeyPair, parsePrivateKey), signs with ECDSA only on P-256/P-384/P-521 (auth.go
    signatureSchemesForCertificate), verifies RSA keys of at most 8192 bits (handshake_client.go
    defaultMaxRSAKeySize) and from Go 1.24 none under 1024 (GODEBUG rsa1024min); crypto/x509 verifies no DSA
    signature since Go 1.16. DSA and Ed448 are none of these."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return _RSA_BITS[0] <= public_key.key_size <= _RSA_BITS[1]
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return public_key.curve.name in _TLS_CURVES
    return isinstance(public_key, ed25519.Ed25519PublicKey)


def check_key_type(public_key, what):
    """Refuse to renew ``what``, whose key is ``public_key``, when no Kubernetes component can use a key of its type:
    renewal keeps the type, so the plan refuses what the run could not (or should not) make."""
    if not _usable(public_key):
        raise SigningError("%s has a %s key, which no Kubernetes component can use (Go's TLS takes RSA of %d to %d bits, "
                           "ECDSA P-256/P-384/P-521 and Ed25519 keys); renewal keeps the key type, so it does not renew "
                           "it: re-issue it with an RSA or ECDSA P-256 key, as kubeadm does, or restore it from a backup"
                           % (what, _x509.key_type(public_key), _RSA_BITS[0], _RSA_BITS[1]))


def new_key_like(public_key):
    """A fresh private key of the same type and size as ``public_key`` (of a type check_key_type takes)."""
    check_key_type(public_key, "the certificate")
    if isinstance(public_key, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public_key.curve)
    return ed25519.Ed25519PrivateKey.generate()


def _whole_hours(delta):
    seconds = delta.total_seconds() % 3600
    return min(seconds, 3600 - seconds) < 2


def lifetime_of(old, ca_cert, validity_days=None, configured=None, version=None):
    """``(lifetime, why)`` of the renewed cert: ``validity_days``, else the kubeadm configuration's
    ``certificateValidityPeriod`` (``configured``), else the old cert's own lifetime.

    kubeadm before v1.31 pinned every leaf's NotBefore to its CA's, so a renewed leaf's lifetime grew
    by the time since the CA was made; such a cert gets kubeadm's one year back. From v1.31 kubeadm
    backdates CA and leaves alike from one start time (cmd/kubeadm/app/phases/certs/certlist.go,
    ``creationTime``; corrections.md §4), so a leaf made with its CA at ``kubeadm init`` also shares its
    NotBefore: there the lifetime is a configured validity (whole hours) and is kept. ``version``
    is the node's kubeadm ``(major, minor)``, or None.
    """
    if validity_days:
        return datetime.timedelta(days=validity_days), "validity_days=%d" % validity_days
    if configured:
        return configured, "certificateValidityPeriod of the kubeadm configuration (v1beta4)"
    lifetime = _x509.not_after(old) - _x509.not_before(old)
    issued_lifetime = lifetime - BACKDATE if lifetime > 2 * BACKDATE else lifetime
    pinned = _x509.not_before(old) == _x509.not_before(ca_cert)
    if pinned and lifetime > DEFAULT_LIFETIME + BACKDATE:
        if (version is None or version >= (1, 31)) and _whole_hours(issued_lifetime):
            return issued_lifetime, "its own lifetime (made with its CA by kubeadm v1.31+, which backdates both alike)"
        return DEFAULT_LIFETIME, ("kubeadm's one year: kubeadm before v1.31 pinned its NotBefore to the CA's, which "
                                  "inflated its lifetime to %.0f days" % (lifetime.total_seconds() / 86400))
    return issued_lifetime, "its own lifetime"


def check_ca(ca_cert, ca_key, ca_name, now, not_after):
    """Refuse to sign with a CA that cannot vouch for the new leaf until ``not_after``."""
    if ca_key is None:
        raise SigningError("the key of CA %s is absent on this node (externally managed CA): have the external CA sign "
                           "a new certificate, or run on a node that holds the CA key" % ca_name)
    if not _x509.is_ca(ca_cert):
        raise SigningError("%s is not a CA certificate (no basicConstraints CA:TRUE)" % ca_name)
    if not _x509.key_matches(ca_cert, ca_key):
        raise SigningError("the key of CA %s does not match its certificate: restore both from the same backup" % ca_name)
    if not _usable(ca_cert.public_key()):
        raise SigningError("CA %s has a %s key, whose signatures no Kubernetes component verifies: rotate the CA first "
                           "(https://kubernetes.io/docs/tasks/tls/manual-rotation-of-ca-certificates/)"
                           % (ca_name, _x509.key_type(ca_cert.public_key())))
    if now > _x509.not_after(ca_cert):
        raise SigningError("CA %s expired %s: renewing leaves with it is useless; rotate the CA first "
                           "(https://kubernetes.io/docs/tasks/tls/manual-rotation-of-ca-certificates/)"
                           % (ca_name, _x509.iso(_x509.not_after(ca_cert))))
    if not_after > _x509.not_after(ca_cert):
        raise SigningError("CA %s expires %s, before the renewed certificate would (%s): rotate the CA first, or set a "
                           "shorter validity_days" % (ca_name, _x509.iso(_x509.not_after(ca_cert)), _x509.iso(not_after)))


def new_p256_key():
    return ec.generate_private_key(ec.SECP256R1())


def reissue(old, ca_cert, ca_key, now, lifetime, ca_name="ca", key=None):
    """``(certificate, private_key)``: subject, SANs and usages of ``old``, valid ``lifetime`` from ``now``;
    ``key`` or a new one of the old type."""
    not_after = now + lifetime
    check_ca(ca_cert, ca_key, ca_name, now, not_after)
    key = key or new_key_like(old.public_key())
    builder = (x509.CertificateBuilder()
               .subject_name(old.subject)
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number() >> 97 or 1)  # < 2^63 like Go's kubeadm
               .not_valid_before(now - BACKDATE)
               .not_valid_after(not_after))
    for extension in old.extensions:
        if extension.oid in _COPIED_EXTENSIONS:
            builder = builder.add_extension(extension.value, critical=extension.critical)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False)
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(ca_key, algorithm), key


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key):
    """PEM as Go's keyutil writes it: PKCS#1 for RSA, SEC1 for ECDSA (PKCS#8 for Ed25519)."""
    fmt = serialization.PrivateFormat.PKCS8 if isinstance(key, ed25519.Ed25519PrivateKey) else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
