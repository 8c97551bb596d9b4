"""renew_k3s.yml on an HA k3s cluster: two servers (v1.33.6+k3s1) on one shared datastore, so one k3s-serving secret.

Each server has a network namespace of its own (lab.py), as each real server binds its apiserver to 127.0.0.1:6444.
A regeneration on the first server reaches the second through the secret (dynamiclistener's watch); the second is
then left alone, and every server must serve the cluster's new certificate, the one the secret holds and names in
its fingerprint annotation. Its own lab: india, and juliet, two RKE2 servers (v1.33.6+rke2r1), both in scenario
serving_165d (165 days left, outside the window); the tests run in file order on one lab.
"""
import base64
import json
import re
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from labutil import REPO, LockWatch, ansible, at_once, days_left, own_lab, served, ssh, tree_digest, wait_for

sys.path.insert(0, str(REPO / "tests" / "lab" / "tools"))
import k3s as k3s_tool  # noqa: E402  # tests/lab/tools/k3s.py  pylint: disable=wrong-import-position
import pki  # noqa: E402  # tests/lab is on sys.path through labutil  pylint: disable=wrong-import-position,wrong-import-order

SERVERS = {"india-1": "10.213.0.11", "india-2": "10.213.0.12"}
RKE2_SERVERS = {"juliet-1": "10.213.0.21", "juliet-2": "10.213.0.22"}
CHECK_SECONDS = "run/kubepki-lab/k3s-check-seconds"


@pytest.fixture(scope="module")
def india(tmp_path_factory):
    clusters = [{"name": name, "distribution": program, f"{program}_version": f"v1.33.6+{program}{suffix}",
                 "scenario": "serving_165d",
                 "nodes": [{"name": node, "role": "server", "address": address} for node, address in servers.items()]}
                for name, program, suffix, servers in (("india", "k3s", "1", SERVERS), ("juliet", "rke2", "r1", RKE2_SERVERS))]
    # no addresses to probe: this machine's default route answers any address off it; `up` checks the lab's /24 itself
    yield from own_lab(tmp_path_factory, clusters, [])


def renew_k3s(lab, *args, cluster="india"):
    result = ansible(["ansible-playbook", "playbooks/renew_k3s.yml", "-i", str(lab.output / "inventory.ini"), "-l", cluster,
                      *args])
    print(result.stdout[-6000:])
    return result


def digest(lab):
    trees = [lab.node_root(name) / tree for name in SERVERS for tree in ("var/lib/rancher", "etc/rancher")]
    return tree_digest(trees + [lab.output / "datastore"], lab.output)


def sha1(cert):
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def secret(lab, node):
    """The k3s-serving secret as a server's kubectl reads it: ``(uid, fingerprint annotation, leaf)``."""
    found = json.loads(ssh(lab, node, "kubectl -n kube-system get secret k3s-serving -o json").stdout)
    return (found["metadata"]["uid"], found["metadata"]["annotations"]["listener.cattle.io/fingerprint"],
            x509.load_pem_x509_certificate(base64.b64decode(found["data"]["tls.crt"])))


def store_secret(lab, stored):
    """``stored`` written to india's shared datastore as another server would."""
    db = k3s_tool.kine(lab.node_root("india-1"), lab.output / "datastore/india/state.db")
    try:
        k3s_tool.kine_put(db, k3s_tool.SECRET_KEY, k3s_tool.secret_to_kine(stored))
    finally:
        db.close()


def pids(lab):
    return {name: ssh(lab, name, "systemctl show -p MainPID k3s").stdout.strip() for name in SERVERS}


def served_all(servers=None, port=6443):
    """What each server's supervisor port serves; None while one does not listen (restarting)."""
    certs = {}
    for name, address in (servers or SERVERS).items():
        try:
            certs[name] = served(address, port)
        except OSError:
            return None
    return certs


def test_each_server_has_its_own_loopback_apiserver_and_all_serve_one_secret(india):
    for name in SERVERS:
        assert ssh(india, name, "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 6444)).close()'")
    certs = served_all()
    assert len({sha1(c) for c in certs.values()}) == 1 and 164 < days_left(certs["india-1"]) < 166
    # one datastore: each server's apiserver returns the same object, which names every server
    uid, annotation, leaf = secret(india, "india-1")
    assert secret(india, "india-2")[:2] == (uid, annotation) and annotation == "SHA1=" + sha1(certs["india-2"])
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"india-1", "india-2"} <= set(sans.get_values_for_type(x509.DNSName))


def test_check_plans_one_regeneration_and_changes_nothing(india):
    before = digest(india)
    result = renew_k3s(india, "--check", "-e", "kubepki_threshold_days=200")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(re.findall(r"\[regenerate: 16\d\.\d+ days left, under threshold_days=200", result.stdout)) == 2
    assert digest(india) == before


def test_one_regeneration_reaches_every_server_and_the_second_is_left_alone(india):
    uid, _annotation, _leaf = secret(india, "india-1")
    old, pid_before = served_all()["india-1"], pids(india)
    result = renew_k3s(india, "-e", "kubepki_threshold_days=200")
    assert result.returncode == 0, result.stdout + result.stderr
    # india-2's turn comes after india-1's: by then it serves the regenerated cert from the shared secret
    assert re.search(r"To do on india-2 .*\n.*\n.*\n\s+nothing to do: served for 36\d\.\d+ more days, the same certificate",
                     result.stdout)
    verified = result.stdout.split("Wait until this server serves its cluster's new supervisor certificate")[1]
    assert "ok: [india-1]" in verified and "ok: [india-2]" in verified
    certs = served_all()
    new = certs["india-1"]
    assert sha1(new) != sha1(old) and days_left(new) > 360 and sha1(certs["india-2"]) == sha1(new)
    for name in SERVERS:
        assert secret(india, name) == (uid, "SHA1=" + sha1(new), secret(india, name)[2])
        assert sha1(secret(india, name)[2]) == sha1(new)
    after = pids(india)
    assert after["india-1"] != pid_before["india-1"] and after["india-2"] == pid_before["india-2"]

    before = digest(india)
    again = renew_k3s(india, "-e", "kubepki_threshold_days=200")
    assert again.returncode == 0 and again.stdout.count("restart: nothing") == 2
    assert digest(india) == before and pids(india) == after


def test_a_server_that_misses_the_cluster_s_new_cert_fails_the_run(india):
    """Injected fault: india-1's watch of the secret is stuck. With force, india-1 and then india-2 regenerate; india-1
    never gets india-2's certificate, and the check of the cluster says so, with what to do."""
    fault = india.node_root("india-1") / "run/kubepki-lab/k3s-watch-fault"
    fault.write_text("")
    try:
        result = renew_k3s(india, "-e", "kubepki_force=true", "-e", "reset_k3s_serving_retries=5")
    finally:
        fault.unlink()
    assert result.returncode != 0
    assert re.search(r"india-1 does not serve the supervisor certificate of its cluster after 10 s - .*the secret holds "
                     r"another certificate.*Restart it \('systemctl restart k3s'\) so that it loads the secret", result.stdout,
                     re.S)
    assert "fatal: [india-2]" not in result.stdout
    ssh(india, "india-1", "systemctl restart k3s")
    certs = wait_for(lambda: (now := served_all()) and len({sha1(c) for c in now.values()}) == 1 and now,
                     "india-1 to load the secret")
    assert secret(india, "india-1")[1] == "SHA1=" + sha1(certs["india-1"])


def test_running_servers_renew_a_secret_inside_their_window_without_a_restart(india):
    """dynamiclistener's 6-hourly check (here every second) renews a cert inside k3s's 120-day window on its key while
    k3s runs; the servers share the result, and renew_k3s.yml restarts nothing."""
    for name in SERVERS:
        (india.node_root(name) / CHECK_SECONDS).write_text("1")
        ssh(india, name, "systemctl restart k3s")
    old = {sha1(c) for c in wait_for(served_all, "both servers to serve again").values()}
    pid_before = pids(india)
    # a secret with 100 days left, written to the shared datastore as another server would
    root = india.node_root("india-1")
    cluster = k3s_tool.load_cluster(pki, root / "var/lib/rancher/k3s/server/tls")
    inside = pki.serving_secret(cluster, "india-1", SERVERS["india-1"], issued_at=pki.utc() - 265 * pki.DAY,
                                tls_sans=["india-2", SERVERS["india-2"]])
    store_secret(india, inside)
    renewed = wait_for(lambda: (now := served_all()) and all(days_left(c) > 360 and sha1(c) not in old for c in now.values())
                       and now, "the running servers to renew the cert inside their window")
    stored = x509.load_pem_x509_certificate(base64.b64decode(inside["data"]["tls.crt"]))
    assert renewed["india-1"].public_key().public_numbers() == stored.public_key().public_numbers()
    assert pids(india) == pid_before
    result = renew_k3s(india)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("restart: nothing") == 2 and pids(india) == pid_before


def test_an_rke2_regeneration_on_one_server_reaches_the_other(india):
    """The same on RKE2 (v1.33.6+rke2r1): supervisor on :9345, the rke2-serving secret, unit rke2-server."""
    old = served_all(RKE2_SERVERS, 9345)
    assert len({sha1(c) for c in old.values()}) == 1
    result = renew_k3s(india, "-e", "kubepki_threshold_days=200", cluster="juliet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[regenerate: " in result.stdout and "To do on juliet-2" in result.stdout
    new = served_all(RKE2_SERVERS, 9345)
    assert len({sha1(c) for c in new.values()}) == 1 and sha1(new["juliet-1"]) != sha1(old["juliet-1"])
    assert days_left(new["juliet-2"]) > 360
    found = json.loads(ssh(india, "juliet-2", "kubectl -n kube-system get secret rke2-serving -o json").stdout)
    assert found["metadata"]["annotations"]["listener.cattle.io/fingerprint"] == "SHA1=" + sha1(new["juliet-2"])


def lease(lab):
    """india's renewal Lease, read with real kubectl on a server (k3s.yaml)."""
    return json.loads(ssh(lab, "india-1", "kubectl -n kube-system get lease kubepki-renewal -o json").stdout)


def slices(lab, *args):
    """renew_k3s.yml as two AWX slices that run at once, one per server of india, their locks and backups watched.
    Returns the watch and both outputs, whitespace folded."""
    with LockWatch(lab, SERVERS) as watch:
        done = at_once({node: ["ansible-playbook", "playbooks/renew_k3s.yml", "-i", str(lab.output / "inventory.ini"), "-l", node,
                               *args] for node in SERVERS})
    for node, (returncode, output) in done.items():
        print(output[-6000:])
        assert returncode == 0, "%s: %s" % (node, output[-4000:])
    return watch, " ".join(" ".join(output for _rc, output in done.values()).split())


def test_concurrent_slices_reset_one_server_of_a_cluster_at_a_time(india):
    """AWX job slicing puts india-1 and india-2 in two jobs that run at once, each of which would reset its server at
    once. The Lease kube-system/kubepki-renewal in india's API (kine, the datastore both servers share) keeps the two
    transactions apart: with force, the second regenerates after the first, and both end serving its certificate."""
    old = {sha1(c) for c in served_all().values()}
    watch, said = slices(india, "-e", "kubepki_force=true")
    watch.assert_one_at_a_time(SERVERS)
    assert re.search(r"india-\d: waiting \(at most 3600 s\) for lease kube-system/kubepki-renewal, held by india-\d from ", said)
    certs = wait_for(lambda: (now := served_all()) and len({sha1(c) for c in now.values()}) == 1 and now,
                     "both servers to serve one certificate")
    assert sha1(certs["india-1"]) not in old and days_left(certs["india-1"]) > 360
    for name in SERVERS:
        assert secret(india, name)[1] == "SHA1=" + sha1(certs[name])
    assert lease(india)["spec"]["holderIdentity"] == ""


def test_a_slice_that_waited_plans_again_and_leaves_the_cluster_s_new_cert_alone(india):
    """Both slices plan a regeneration (165 days left, under threshold_days=200) before either holds the Lease. The one
    that waited plans again under it, finds its server serving the certificate the other regenerated (their shared
    secret), and leaves it alone: one regeneration, one restart, as in one run
    (test_one_regeneration_reaches_every_server_and_the_second_is_left_alone)."""
    cluster = k3s_tool.load_cluster(pki, india.node_root("india-1") / "var/lib/rancher/k3s/server/tls")
    store_secret(india, pki.serving_secret(cluster, "india-1", SERVERS["india-1"], issued_at=pki.utc() - 200 * pki.DAY,
                                           tls_sans=["india-2", SERVERS["india-2"]]))
    wait_for(lambda: (now := served_all()) and all(164 < days_left(c) < 166 for c in now.values()),
             "both servers to serve the secret with 165 days left")
    pid_before = pids(india)
    watch, said = slices(india, "-e", "kubepki_threshold_days=200")
    # both planned it first; the one that took the Lease first planned it again
    assert len(re.findall(r"\[regenerate: 16\d\.\d+ days left, under threshold_days=200", said)) == 3
    assert sum(len(born) for born in watch.born.values()) == 1, "regenerated twice: %s" % watch.born
    after = pids(india)
    assert sorted(after[name] != pid_before[name] for name in SERVERS) == [False, True]
    assert re.search(r"india-\d: waiting \(at most 3600 s\) for lease kube-system/kubepki-renewal, held by india-\d from ", said)
    assert re.search(r"To do on india-\d, planned again under the cluster's lock \(.*?\): .*? nothing to do: served for 36\d\.\d+ "
                     r"more days, the same certificate", said)
    certs = served_all()
    assert len({sha1(c) for c in certs.values()}) == 1 and days_left(certs["india-1"]) > 360
    assert lease(india)["spec"]["holderIdentity"] == ""
