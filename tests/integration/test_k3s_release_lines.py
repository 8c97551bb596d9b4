"""renew_k3s.yml on a current k3s release line (v1.33.6+k3s1, dynamiclistener v0.7.1: renews its supervisor cert by
itself inside its 120-day window, creates a deleted secret again): nothing is planned or restarted while k3s keeps
the cert valid; asked for more than k3s's window it regenerates through the trigger file read at start and never
deletes the secret; a threshold beyond the cert's lifetime is refused; a user-provided (static) cert is left alone.

Its own lab (golf: one k3s server on 127.0.5.61, scenario serving_165d: the served cert has 165 days left, outside
k3s's window). The tests run in file order on one lab.
"""
import base64
import json
import re
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from labutil import REPO, ansible, days_left, k3s_server_that_fails_to_start_if, listening, own_lab, served, ssh, tree_digest, wait_for

sys.path.insert(0, str(REPO / "tests" / "lab" / "tools"))
import k3s as k3s_tool  # noqa: E402  # tests/lab/tools/k3s.py  pylint: disable=wrong-import-position
import pki  # noqa: E402  # tests/lab is on sys.path through labutil  pylint: disable=wrong-import-position,wrong-import-order

SERVER, ADDRESS = "golf-server", "127.0.5.61"
DATA = "var/lib/rancher/k3s"


@pytest.fixture(scope="module")
def golf(tmp_path_factory):
    cluster = {"name": "golf", "distribution": "k3s", "k3s_version": "v1.33.6+k3s1", "scenario": "serving_165d",
               "nodes": [{"name": SERVER, "role": "server", "address": ADDRESS}]}
    yield from own_lab(tmp_path_factory, [cluster], [(ADDRESS, 22), ("127.0.0.1", 6444)])


def renew_k3s(lab, *args):
    result = ansible(["ansible-playbook", "playbooks/renew_k3s.yml", "-i", str(lab.output / "inventory.ini"), *args])
    print(result.stdout[-4000:])
    return result


def digest(lab):
    return tree_digest([lab.node_root(SERVER) / tree for tree in ("var/lib/rancher", "etc/rancher")], lab.output)


def sha1(cert):
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def secret(lab):
    """The k3s-serving secret as the node's kubectl reads it: ``(uid, annotations, leaf)``."""
    found = json.loads(ssh(lab, SERVER, "kubectl -n kube-system get secret k3s-serving -o json").stdout)
    return (found["metadata"]["uid"], found["metadata"]["annotations"],
            x509.load_pem_x509_certificate(base64.b64decode(found["data"]["tls.crt"])))


def k3s_pid(lab):
    return ssh(lab, SERVER, "systemctl show -p MainPID k3s").stdout.strip()


def restart_on_a_secret_with_100_days(lab):
    """Stop k3s, store a k3s-serving secret with 100 days left, start k3s: ``(that secret, what k3s then serves)``."""
    ssh(lab, SERVER, "systemctl stop k3s")
    root = lab.node_root(SERVER)
    cluster = k3s_tool.load_cluster(pki, root / DATA / "server/tls")
    stored = pki.serving_secret(cluster, SERVER, ADDRESS, issued_at=pki.utc() - 265 * pki.DAY)
    db = k3s_tool.kine(root / DATA)
    try:
        k3s_tool.kine_put(db, k3s_tool.SECRET_KEY, k3s_tool.secret_to_kine(stored))
    finally:
        db.close()
    ssh(lab, SERVER, "systemctl start k3s")
    return stored, wait_for(lambda: listening(ADDRESS, 6443) and served(ADDRESS, 6443), "k3s to serve again")


def test_the_line_keeps_a_cert_outside_its_window_and_nothing_is_planned(golf):
    assert ssh(golf, SERVER, "k3s --version").stdout.startswith("k3s version v1.33.6+k3s1 (")
    assert 164 < days_left(served(ADDRESS, 6443)) < 166
    before, pid = digest(golf), k3s_pid(golf)
    result = renew_k3s(golf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("on golf-server (k3s v1.33.6 renews its supervisor certificate while running and creates a deleted "
            "secret again)") in result.stdout
    assert re.search(r"nothing to do: served for 16\d\.\d+ more days, the same certificate", result.stdout)
    assert "restart: nothing" in result.stdout
    assert digest(golf) == before and k3s_pid(golf) == pid


def test_more_than_the_window_is_planned_as_a_regeneration_and_check_changes_nothing(golf):
    before = digest(golf)
    result = renew_k3s(golf, "--check", "-e", "kubepki_threshold_days=200")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\[regenerate: 16\d\.\d+ days left, under threshold_days=200; k3s v1.33.6 keeps it until 120 days "
                     r"before it expires\]", result.stdout)
    assert digest(golf) == before


def test_regeneration_serves_a_new_cert_and_keeps_the_secret(golf):
    uid_before, _annotations, _leaf = secret(golf)
    old = served(ADDRESS, 6443)
    result = renew_k3s(golf, "-e", "kubepki_threshold_days=200")
    assert result.returncode == 0, result.stdout + result.stderr
    new = served(ADDRESS, 6443)
    assert sha1(new) != sha1(old) and days_left(new) > 360
    # RegenerateCerts: a new key too, and the same secret object updated, never deleted
    assert new.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
        old.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    uid, annotations, leaf = secret(golf)
    assert uid == uid_before and sha1(leaf) == sha1(new) and annotations["listener.cattle.io/fingerprint"] == "SHA1=" + sha1(new)
    tls = golf.node_root(SERVER) / DATA / "server/tls"
    assert not (tls / "dynamic-cert-regenerate").exists() and not list(tls.glob("dynamic-cert.json.kubepki-*"))

    before = digest(golf)
    again = renew_k3s(golf, "-e", "kubepki_threshold_days=200")
    assert again.returncode == 0 and "restart: nothing" in again.stdout
    assert digest(golf) == before


def test_a_deleted_secret_comes_back_with_the_same_cert(golf):
    """Why the secret is never deleted on this line: dynamiclistener creates it again from memory."""
    _uid, _annotations, before = secret(golf)
    ssh(golf, SERVER, "kubectl -n kube-system delete secret k3s-serving")
    back = wait_for(lambda: ssh(golf, SERVER, "kubectl -n kube-system get secret k3s-serving", check=False).returncode == 0,
                    "the secret to come back", timeout=10)
    assert back and sha1(secret(golf)[2]) == sha1(before) == sha1(served(ADDRESS, 6443))


def test_an_empty_cache_that_breaks_every_handshake_is_moved_aside(golf):
    """dynamiclistener before v0.9.1 fails storage.Get on an empty dynamic-cert.json, and with it every handshake."""
    uid, _annotations, before = secret(golf)
    cache = golf.node_root(SERVER) / DATA / "server/tls/dynamic-cert.json"
    cache.write_bytes(b"")
    with pytest.raises(OSError):
        served(ADDRESS, 6443)
    result = renew_k3s(golf)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[cache: " in result.stdout and "moved aside, k3s loads the secret from its datastore at start]" in result.stdout
    assert sha1(served(ADDRESS, 6443)) == sha1(before) and secret(golf)[0] == uid
    assert [p.read_bytes() for p in cache.parent.glob("dynamic-cert.json.kubepki-*")] == [b""]
    assert json.loads(cache.read_text())["metadata"]["name"] == "k3s-serving"


def test_a_threshold_beyond_the_lifetime_is_refused(golf):
    before = digest(golf)
    result = renew_k3s(golf, "-e", "kubepki_threshold_days=400")
    assert result.returncode != 0
    assert "threshold_days=400 is not below the 365-day lifetime of the supervisor certificate k3s issues" in result.stdout
    assert digest(golf) == before


def test_a_server_that_does_not_come_back_from_a_regeneration_is_rolled_back(golf):
    """Injected fault: this k3s cannot start while the trigger is there. The rollback restores the backup, removes the
    trigger this run wrote (the backup does not hold it) and k3s serves its previous certificate again."""
    trigger = "/%s/server/tls/dynamic-cert-regenerate" % DATA
    before = served(ADDRESS, 6443)
    with k3s_server_that_fails_to_start_if(golf.node_root(SERVER), "[ -e %s ]" % trigger):
        result = renew_k3s(golf, "-e", "kubepki_force=true", "-e", "reset_k3s_serving_retries=5")
    assert result.returncode != 0
    assert "It was rolled back: the backup /var/lib/kubepki/backups/" in result.stdout
    wait_for(lambda: listening(ADDRESS, 6443), "k3s to serve again")
    assert sha1(served(ADDRESS, 6443)) == sha1(before)
    assert not (golf.node_root(SERVER) / trigger.lstrip("/")).exists()
    assert not (golf.node_root(SERVER) / "var/lib/kubepki/renew.lock").exists()


def test_a_user_provided_cert_is_left_alone_even_with_force(golf):
    db = k3s_tool.kine(golf.node_root(SERVER) / DATA)
    try:
        stored = k3s_tool.kine_to_secret(k3s_tool.kine_get(db, k3s_tool.SECRET_KEY))
        stored["metadata"]["annotations"]["listener.cattle.io/static"] = "true"
        k3s_tool.kine_put(db, k3s_tool.SECRET_KEY, k3s_tool.secret_to_kine(stored))
    finally:
        db.close()
    before, old = digest(golf), served(ADDRESS, 6443)
    result = renew_k3s(golf, "-e", "kubepki_force=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to do: a user-provided certificate (listener.cattle.io/static=true)" in result.stdout
    assert digest(golf) == before and sha1(served(ADDRESS, 6443)) == sha1(old)


def test_a_restart_renews_a_secret_inside_the_window_on_its_key(golf):
    """Merge refuses a cert within ExpirationDaysCheck days (dynamiclistener v0.3.4): at start it is renewed on the
    stored key. (The secret loses its static mark here: a user-provided cert is never renewed.)"""
    inside, cert = restart_on_a_secret_with_100_days(golf)
    assert days_left(cert) > 360
    stored = x509.load_pem_x509_certificate(base64.b64decode(inside["data"]["tls.crt"]))
    assert cert.public_key().public_numbers() == stored.public_key().public_numbers()


def test_a_release_before_the_120_day_window_keeps_a_cert_with_100_days_and_is_regenerated_past_it(golf):
    """k3s v1.29.15: dynamiclistener renews by itself (after the July 2022 fix) but within 90 days, not 120 (k3s#12232),
    and it does not create a deleted secret again (before dynamiclistener#202)."""
    (golf.node_root(SERVER) / "run/kubepki-lab/k3s-version").write_text("v1.29.15+k3s1\n")
    _outside, kept = restart_on_a_secret_with_100_days(golf)
    assert 99 < days_left(kept) < 101
    uid = secret(golf)[0]
    result = renew_k3s(golf, "-e", "kubepki_threshold_days=110")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(k3s v1.29.15 renews its supervisor certificate while running and at start)" in result.stdout
    assert re.search(r"\[regenerate: 100\.\d+ days left, under threshold_days=110; k3s v1.29.15 keeps it until 90 days "
                     r"before it expires\]", result.stdout)
    new = served(ADDRESS, 6443)
    assert days_left(new) > 360 and secret(golf)[0] == uid and sha1(secret(golf)[2]) == sha1(new)
