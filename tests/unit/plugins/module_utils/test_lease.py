# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import datetime
import json
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ansible_collections.kubepki.fleet.plugins.module_utils import _apiclient, _lease

NOW = datetime.datetime(2026, 12, 6, 18, 0, 0, tzinfo=datetime.timezone.utc)
ME, OTHER = "alpha-cp2 from awx-2 (ansible-playbook pid 22)", "alpha-cp1 from awx-1 (ansible-playbook pid 11)"


class Store:
    """Leases as the apiserver keeps them: a write with a stale resourceVersion, or a second create, is a conflict."""

    def __init__(self, lease=None):
        self.lease, self.version, self.url = lease, 1, "https://api:6443"
        self.meddle = None   # another run's write, between our read and our write

    def get(self):
        if self.lease is None:
            return None
        return dict(json.loads(json.dumps(self.lease)), metadata={"name": "kubepki-renewal", "resourceVersion": str(self.version)})

    def write(self, read, obj):
        if self.meddle:
            self.meddle, meddle = None, self.meddle
            meddle(self)
        if (read is None) != (self.lease is None) or (read and read["metadata"]["resourceVersion"] != str(self.version)):
            return False
        self.lease, self.version = obj, self.version + 1
        return True


def held_by(holder, renewed_ago=10, seconds=1800):
    return {"spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                     "renewTime": _lease.format_time(NOW - datetime.timedelta(seconds=renewed_ago))}}


def test_an_absent_lease_is_created_and_then_held():
    store = Store()
    result = _lease.acquire(store, ME, 1800, NOW)
    assert result["acquired"] and result["changed"] and result["holder"] == ME and result["previous_holder"] is None
    assert result["expires"] == "2026-12-06T18:30:00.000000Z"
    assert store.lease["spec"]["acquireTime"] == store.lease["spec"]["renewTime"] == "2026-12-06T18:00:00.000000Z"
    assert store.lease["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "kubepki.fleet"}
    again = _lease.acquire(store, ME, 1800, NOW + datetime.timedelta(seconds=60))
    assert again["acquired"] and again["expires"] == "2026-12-06T18:31:00.000000Z"
    assert store.lease["spec"]["acquireTime"] == "2026-12-06T18:00:00.000000Z", "renewing is not a new acquisition"


def test_another_runs_claim_is_waited_for_and_left_alone():
    store = Store(held_by(OTHER))
    before = json.dumps(store.lease)
    result = _lease.acquire(store, ME, 1800, NOW)
    assert not result["acquired"] and not result["changed"] and result["holder"] == OTHER
    assert result["expires"] == "2026-12-06T18:29:50.000000Z"
    assert not _lease.release(store, ME)["released"]
    assert json.dumps(store.lease) == before


def test_an_expired_claim_a_released_lease_and_a_gone_run_are_taken():
    expired = Store(held_by(OTHER, renewed_ago=1801))
    taken = _lease.acquire(expired, ME, 1800, NOW)
    assert taken["acquired"] and taken["previous_holder"] == OTHER
    assert expired.lease["spec"]["leaseTransitions"] == 1 and expired.lease["spec"]["holderIdentity"] == ME

    released = Store(held_by(""))
    assert _lease.acquire(released, ME, 1800, NOW)["previous_holder"] is None

    gone = Store(held_by(OTHER))
    assert not _lease.acquire(gone, ME, 1800, NOW, take_over="alpha-cp3 from awx-1 (ansible-playbook pid 33)")["acquired"]
    assert _lease.acquire(gone, ME, 1800, NOW, take_over=OTHER)["previous_holder"] == OTHER


def test_a_claim_without_a_readable_time_counts_as_expired():
    store = Store({"spec": {"holderIdentity": OTHER, "leaseDurationSeconds": 1800, "renewTime": "yesterday"}})
    assert _lease.acquire(store, ME, 1800, NOW)["acquired"]


def test_of_two_runs_only_the_first_writer_wins():
    store = Store(held_by(""))
    store.meddle = lambda s: s.write(s.get(), _lease.claimed(s.get(), OTHER, 1800, NOW, True))
    result = _lease.acquire(store, ME, 1800, NOW)
    assert not result["acquired"] and result["holder"] == OTHER
    assert store.lease["spec"]["holderIdentity"] == OTHER

    fresh = Store()
    fresh.meddle = lambda s: s.write(None, _lease.claimed(None, OTHER, 1800, NOW, True))
    assert not _lease.acquire(fresh, ME, 1800, NOW)["acquired"]


def test_release_empties_the_holder_and_check_mode_writes_nothing():
    store = Store()
    assert not _lease.acquire(store, ME, 1800, NOW, check_mode=True)["changed"] and store.lease is None
    _lease.acquire(store, ME, 1800, NOW)
    assert _lease.release(store, ME, check_mode=True)["released"] and store.lease["spec"]["holderIdentity"] == ME
    result = _lease.release(store, ME)
    assert result["released"] and result["changed"] and result["holder"] is None
    assert store.lease["spec"]["holderIdentity"] == ""
    assert _lease.acquire(store, OTHER, 1800, NOW)["acquired"]


def test_times_read_as_the_apiserver_writes_them():
    assert _lease.parse_time("2026-12-06T18:00:00.123456Z") == NOW.replace(microsecond=123456)
    assert _lease.parse_time("2026-12-06T18:00:00Z") == NOW
    assert _lease.parse_time("2026-12-06T19:00:00+01:00") == NOW
    assert _lease.parse_time(None) is None and _lease.parse_time("soon") is None
    assert _lease.expires({"renewTime": "2026-12-06T18:00:00Z", "leaseDurationSeconds": True}) is None


def test_an_embedded_client_key_is_loaded_without_touching_the_disk(tmp_path, monkeypatch):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-admin")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    monkeypatch.chdir(tmp_path)
    context = _apiclient.memory_context(cert.public_bytes(serialization.Encoding.PEM), key_pem)
    assert isinstance(context, ssl.SSLContext)
    assert os.listdir(tmp_path) == []
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                  serialization.NoEncryption())
    try:
        _apiclient.memory_context(cert.public_bytes(serialization.Encoding.PEM), other)
    except ssl.SSLError:
        pass
    else:
        raise AssertionError("a key that does not fit its certificate was accepted")
