"""renew_k3s.yml on RKE2 (hotel: one server on 127.0.5.71; supervisor on :9345, apiserver on :6443, data in
/var/lib/rancher/rke2, secret rke2-serving, unit rke2-server). RKE2 pinned dynamiclistener v0.3.3 in its go.mod until
its June 2023 releases (rancher/rke2#4324), so v1.27.2+rke2r1 serves an expired secret again after a restart (seed 003)
although k3s v1.27 had the fix: it is reset. The same node upgraded to v1.33.6+rke2r1 gets the trigger file and keeps
its secret. The tests run in file order on one lab.
"""
import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from labutil import ansible, cn, days_left, listening, own_lab, served, ssh, wait_for

SERVER, ADDRESS = "hotel-server", "127.0.5.71"


@pytest.fixture(scope="module")
def hotel(tmp_path_factory):
    cluster = {"name": "hotel", "distribution": "rke2", "rke2_version": "v1.27.2+rke2r1", "scenario": "serving_expired",
               "nodes": [{"name": SERVER, "role": "server", "address": ADDRESS}]}
    yield from own_lab(tmp_path_factory, [cluster], [(ADDRESS, 22), ("127.0.0.1", 6443)])


def renew(lab, *args):
    result = ansible(["ansible-playbook", "playbooks/renew_k3s.yml", "-i", str(lab.output / "inventory.ini"), *args])
    print(result.stdout[-4000:])
    return result


def sha1(cert):
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def secret(lab):
    """``(uid, fingerprint annotation, leaf)`` of rke2-serving, read with the node's kubectl (rke2.yaml -> :6443)."""
    found = json.loads(ssh(lab, SERVER, "kubectl -n kube-system get secret rke2-serving -o json").stdout)
    leaf = x509.load_pem_x509_certificate(base64.b64decode(found["data"]["tls.crt"]))
    return found["metadata"]["uid"], found["metadata"]["annotations"]["listener.cattle.io/fingerprint"], leaf


def test_rke2_before_june_2023_is_reset_as_in_seed_003(hotel):
    assert ssh(hotel, SERVER, "rke2 --version").stdout.startswith("rke2 version v1.27.2+rke2r1 (")
    old = served(ADDRESS, 9345)
    assert cn(old) == "rke2" and days_left(old) < 0
    result = renew(hotel)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on hotel-server (rke2 v1.27.2 may serve an expired secret again after a restart (seed 003))" in result.stdout
    assert "[reset: the served certificate expired on" in result.stdout
    new = served(ADDRESS, 9345)
    assert cn(new) == "rke2" and days_left(new) > 360 and sha1(new) != sha1(old)
    _uid, annotation, leaf = secret(hotel)
    assert annotation == "SHA1=" + sha1(new) and sha1(leaf) == sha1(new)


def test_a_current_rke2_gets_the_trigger_file_and_keeps_its_secret(hotel):
    (hotel.node_root(SERVER) / "run/kubepki-lab/rke2-version").write_text("v1.33.6+rke2r1\n")
    ssh(hotel, SERVER, "systemctl restart rke2-server")
    wait_for(lambda: listening(ADDRESS, 9345) and listening("127.0.0.1", 6443), "rke2 to serve again")
    uid, _annotation, _leaf = secret(hotel)
    old = served(ADDRESS, 9345)
    result = renew(hotel, "-e", "kubepki_force=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[regenerate: force=true]" in result.stdout
    new = served(ADDRESS, 9345)
    assert sha1(new) != sha1(old) and days_left(new) > 360
    uid_after, annotation, leaf = secret(hotel)
    assert uid_after == uid and annotation == "SHA1=" + sha1(new) and sha1(leaf) == sha1(new)
    assert not (hotel.node_root(SERVER) / "var/lib/rancher/rke2/server/tls/dynamic-cert-regenerate").exists()
