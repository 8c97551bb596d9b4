# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""The collection's one parser of certificates and keys, and its one notion of a cert's state.

Works with cryptography >= 3.4 (Debian 12 ships 38), so newer conveniences such as
``not_valid_after_utc`` or ``verify_directly_issued_by`` are not used.
"""

from __future__ import annotations

import binascii
import datetime
import re
import warnings

from ansible_collections.kubepki.fleet.plugins.module_utils._cryptography_dep import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    InvalidSignature,
    NameOID,
    ec,
    ed448,
    ed25519,
    hashes,
    padding,
    rsa,
    serialization,
    x509,
)

UTC = datetime.timezone.utc

STATES = ("ok", "warning", "expired", "not_yet_valid", "invalid", "missing")

_PEM_BEGIN_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_CERT_LABELS = (b"CERTIFICATE",)
_KEY_LABELS = (b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"ENCRYPTED PRIVATE KEY")

_KEY_USAGE_NAMES = (
    ("digital_signature", "Digital Signature"),
    ("content_commitment", "Non Repudiation"),
    ("key_encipherment", "Key Encipherment"),
    ("data_encipherment", "Data Encipherment"),
    ("key_agreement", "Key Agreement"),
    ("key_cert_sign", "Certificate Sign"),
    ("crl_sign", "CRL Sign"),
)


class CertError(Exception):
    """A certificate or key that cannot be used; the message says what and why."""


def _eku_names():
    return {
        ExtendedKeyUsageOID.SERVER_AUTH: "TLS Web Server Authentication",
        ExtendedKeyUsageOID.CLIENT_AUTH: "TLS Web Client Authentication",
        ExtendedKeyUsageOID.CODE_SIGNING: "Code Signing",
        ExtendedKeyUsageOID.EMAIL_PROTECTION: "E-mail Protection",
        ExtendedKeyUsageOID.TIME_STAMPING: "Time Stamping",
        ExtendedKeyUsageOID.OCSP_SIGNING: "OCSP Signing",
    }


def _pem_blocks(data, labels):
    """``[(label, block)]`` of the complete PEM blocks in ``data`` with one of ``labels``, in order.

    One pass, linear in ``len(data)`` (a lazy regex per BEGIN line was quadratic: 30 s for 280 KB of
    BEGIN lines). A BEGIN line followed by another BEGIN before its END is a truncated block and is
    skipped, as Go's encoding/pem does, so we read what the components themselves load.
    """
    blocks, pos, ends = [], 0, {}
    while True:
        begin = _PEM_BEGIN_RE.search(data, pos)
        if begin is None:
            return blocks
        label, pos = begin.group(1), begin.end()
        if label not in labels:
            continue
        end_line = b"-----END " + label + b"-----"
        # The next END line of a label is looked for once, not again for every BEGIN before it.
        stop = ends.get(label)
        if stop is None or -1 < stop < pos:
            stop = ends[label] = data.find(end_line, pos)
        if stop == -1 or _PEM_BEGIN_RE.search(data, pos, stop):
            continue
        pos = stop + len(end_line)
        blocks.append((label, data[begin.start():pos]))


def load_certificates(data, what="data"):
    """All certificates in PEM (any number of blocks, other blocks ignored) or DER ``data``."""
    with warnings.catch_warnings():
        # k3s, RKE and kubeadm <= 1.27 CAs have serial 0; newer cryptography warns on each parse.
        warnings.filterwarnings("ignore", message=".*serial number.*")
        return _load_certificates(data, what)


def _load_certificates(data, what):
    if not data or not data.strip():
        raise CertError("%s is empty" % what)
    blocks = _pem_blocks(data, _CERT_LABELS)
    if blocks:
        certs = []
        for index, (_label, block) in enumerate(blocks):
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError as exc:
                raise CertError("%s: PEM certificate #%d is corrupt (%s)" % (what, index + 1, exc))
        return certs
    if b"-----BEGIN" in data:
        if b"-----BEGIN CERTIFICATE-----" in data:
            raise CertError("%s: PEM certificate is truncated (no END CERTIFICATE line)" % what)
        raise CertError("%s holds no certificate (only other PEM blocks)" % what)
    try:
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise CertError("%s is neither a PEM nor a DER certificate" % what)


def load_private_key(data, what="data"):
    """The first private key in PEM ``data`` (a key file or a cert+key bundle)."""
    blocks = _pem_blocks(data or b"", _KEY_LABELS)
    if not blocks:
        raise CertError("%s holds no PEM private key" % what)
    label, block = blocks[0]
    if label == b"ENCRYPTED PRIVATE KEY":
        raise CertError("%s: private key is encrypted" % what)
    try:
        try:
            # We only compare public halves; RSA key validation costs ~30 ms per key (cryptography >= 39).
            return serialization.load_pem_private_key(block, password=None, unsafe_skip_rsa_key_validation=True)
        except TypeError:
            return serialization.load_pem_private_key(block, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError("%s: private key is corrupt (%s)" % (what, exc))


def _public_der(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert, private_key):
    """True when ``private_key`` is the key of ``cert``."""
    return _public_der(cert.public_key()) == _public_der(private_key.public_key())


def signed_by(cert, issuer_cert):
    """True when ``issuer_cert`` names and signed ``cert`` (signature checked, not just names)."""
    if cert.issuer != issuer_cert.subject:
        return False
    public_key = issuer_cert.public_key()
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(cert.signature, cert.tbs_certificate_bytes)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        # RSA-PSS signatures land here too: kubeadm, k3s and RKE never issue them.
        return False
    return True


def not_before(cert):
    # cryptography >= 42 deprecates the naive properties; Debian 12's 38 only has those.
    if hasattr(cert, "not_valid_before_utc"):
        return cert.not_valid_before_utc
    return cert.not_valid_before.replace(tzinfo=UTC)


def not_after(cert):
    if hasattr(cert, "not_valid_after_utc"):
        return cert.not_valid_after_utc
    return cert.not_valid_after.replace(tzinfo=UTC)


def iso(moment):
    """ISO 8601 UTC with a Z, second precision."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text):
    """An aware UTC datetime from ISO 8601 (``Z``, an offset, or naive meaning UTC) or a date."""
    value = text.strip()
    if value.endswith("Z") or value.endswith("z"):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise CertError("'%s' is not an ISO 8601 time; write it like 2027-01-31T00:00:00Z" % text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def validity(cert, now, warn_days):
    """``(days_left, state, message)`` of ``cert`` at ``now`` with a ``warn_days`` threshold."""
    start, end = not_before(cert), not_after(cert)
    days_left = round((end - now).total_seconds() / 86400.0, 2)
    if now < start:
        return days_left, "not_yet_valid", "not valid before %s (check the node clock)" % iso(start)
    if now > end:
        return days_left, "expired", "expired %s (%.1f days ago)" % (iso(end), -days_left)
    if days_left < warn_days:
        return days_left, "warning", "expires %s, in %.1f days (under warn_days=%s)" % (iso(end), days_left, warn_days)
    return days_left, "ok", None


def _name_values(name, oid):
    return [attr.value for attr in name.get_attributes_for_oid(oid)]


def _extension(cert, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None


_NIST_CURVES = {"secp256r1": "P256", "secp384r1": "P384", "secp521r1": "P521"}


def key_type(public_key):
    """kubeadm's names (``RSA-2048``, ``ECDSA-P256``) where they apply; other curves by name (``ECDSA-secp256k1``)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA-%d" % public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return "ECDSA-%s" % _NIST_CURVES.get(public_key.curve.name, public_key.curve.name)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(public_key, ed448.Ed448PublicKey):
        return "Ed448"
    # DSA by its class name (``_DSAPublicKey`` on older cryptography): importing cryptography's
    # deprecated dsa module would warn on every node
    name = type(public_key).__name__.lstrip("_").replace("PublicKey", "")
    return "%s-%d" % (name, public_key.key_size) if getattr(public_key, "key_size", None) else name


def _sans(cert):
    ext = _extension(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    if ext is None:
        return []
    sans = []
    for general_name in ext:
        if isinstance(general_name, x509.DNSName):
            sans.append("DNS:%s" % general_name.value)
        elif isinstance(general_name, x509.IPAddress):
            sans.append("IP:%s" % general_name.value)
        elif isinstance(general_name, x509.UniformResourceIdentifier):
            sans.append("URI:%s" % general_name.value)
        elif isinstance(general_name, x509.RFC822Name):
            sans.append("email:%s" % general_name.value)
        else:
            sans.append("other:%s" % general_name.value)
    return sans


def _key_usage(cert):
    ext = _extension(cert, ExtensionOID.KEY_USAGE)
    if ext is None:
        return []
    names = [label for attr, label in _KEY_USAGE_NAMES if getattr(ext, attr)]
    if ext.key_agreement:
        names += [label for attr, label in (("encipher_only", "Encipher Only"), ("decipher_only", "Decipher Only")) if getattr(ext, attr)]
    return names


def _extended_key_usage(cert):
    ext = _extension(cert, ExtensionOID.EXTENDED_KEY_USAGE)
    if ext is None:
        return []
    names = _eku_names()
    return [names.get(oid, oid.dotted_string) for oid in ext]


def serial_hex(cert):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*serial number.*")
        return "%X" % cert.serial_number


def fingerprint_sha256(cert):
    digest = cert.fingerprint(hashes.SHA256())
    return ":".join("%02X" % byte for byte in bytearray(digest))


def fingerprint_hex(cert, algorithm="sha1"):
    """Upper-case hex without colons, as dynamiclistener writes ``SHA1=...``."""
    algo = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()
    return binascii.hexlify(cert.fingerprint(algo)).decode("ascii").upper()


def is_ca(cert):
    ext = _extension(cert, ExtensionOID.BASIC_CONSTRAINTS)
    return bool(ext is not None and ext.ca)


def own_index(certs):
    """Index of the certificate a leaf's file holds for itself: the first, or, in a chain written the wrong way
    round (CA first), the first non-CA after it; None when it holds only CAs."""
    return next((index for index, cert in enumerate(certs) if not is_ca(cert)), None)


def ca_first(certs, what):
    """Why the file ``what`` of a leaf certificate is unusable when its chain ``certs`` starts with a CA, else None.

    Go's tls.X509KeyPair takes the first certificate as the leaf and checks the key against it (go
    src/crypto/tls/tls.go); kube-apiserver (k8s.io/apiserver dynamiccertificates dynamic_serving_content.go
    loadCertKeyPair) and client-go (transport/transport.go TLSConfigFor) load their pairs with it.
    """
    if not is_ca(certs[0]):
        return None
    ca, own = certs[0].subject.rfc4514_string(), own_index(certs)
    if own is None:
        return "%s starts with a CA certificate (%s) and holds no certificate of its own: restore it from a backup" % (what, ca)
    return ("%s starts with a CA certificate (%s) before its own (%s): Kubernetes components take a file's first "
            "certificate as theirs (Go tls.X509KeyPair) and do not load this one with the leaf's key. Put the leaf "
            "first, then its CA (or restore the file from a backup)" % (what, ca, certs[own].subject.rfc4514_string()))


def describe(cert):
    """The facts of one certificate that do not depend on time or on other certificates."""
    cns = _name_values(cert.subject, NameOID.COMMON_NAME)
    issuer_cns = _name_values(cert.issuer, NameOID.COMMON_NAME)
    return {
        "subject": cert.subject.rfc4514_string(),
        "subject_cn": cns[0] if cns else None,
        "subject_o": _name_values(cert.subject, NameOID.ORGANIZATION_NAME),
        "issuer": cert.issuer.rfc4514_string(),
        "issuer_cn": issuer_cns[0] if issuer_cns else None,
        "serial": serial_hex(cert),
        "fingerprint_sha256": fingerprint_sha256(cert),
        "not_before": iso(not_before(cert)),
        "not_after": iso(not_after(cert)),
        "is_ca": is_ca(cert),
        "self_signed": signed_by(cert, cert),
        "sans": _sans(cert),
        "key_type": key_type(cert.public_key()),
        "key_usage": _key_usage(cert),
        "extended_key_usage": _extended_key_usage(cert),
    }
