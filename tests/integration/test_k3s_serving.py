"""renew_k3s.yml on a lab with only the k3s cluster delta (k3s v1.23.9, before dynamiclistener's July 2022 fix;
seed 003: server/tls renewed, the served k3s-serving certificate expired 35 days ago): --check changes no byte, a stopped k3s gives a clear
message and loses nothing, the reset makes :6443 serve a new CN=k3s certificate that the secret
matches without touching the clock, a second run changes nothing, leaves beyond k3s's window are
rotated and a due agent restarted, a secret already gone is fine, and a k3s that does not come back,
or a reset module killed half-way, is rolled back.

The tests run in file order on one lab: each builds on the state the previous one left.
"""
import base64
import json
import re
import socket
import subprocess
import sys
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from labutil import (REPO, KilledRun, ansible, at_once, cn, days_left, default_cluster, k3s_server_that_fails_to_start_if, listening,
                     own_lab, renames_held, served, ssh, tree_digest, wait_for)

sys.path.insert(0, str(REPO / "tests" / "lab" / "tools"))
import k3s as k3s_tool  # noqa: E402  # tests/lab/tools/k3s.py  pylint: disable=wrong-import-position
import pki  # noqa: E402  # tests/lab is on sys.path through labutil  pylint: disable=wrong-import-position,wrong-import-order

SERVER, AGENT = "delta-server", "delta-agent"
ADDRESSES = {SERVER: "127.0.5.41", AGENT: "127.0.5.42"}
# What the reset may touch on a node; --check and a second run must leave every byte of it alone.
NODE_TREES = ("var/lib/rancher", "etc/rancher")
TLS = "var/lib/rancher/k3s/server/tls"


@pytest.fixture(scope="module")
def delta(tmp_path_factory):
    """A lab with only the delta cluster of tests/lab/fleet.yml, moved to 127.0.5.41/.42."""
    for lab in own_lab(tmp_path_factory, [default_cluster("delta", ADDRESSES)],
                       [(a, 22) for a in ADDRESSES.values()] + [("127.0.0.1", 6444)]):
        lab.clock_offset = time.time() - time.monotonic()
        yield lab


def digest(lab):
    return tree_digest([lab.node_root(node) / tree for node in ADDRESSES for tree in NODE_TREES], lab.output)


def renew_k3s(lab, *args):
    started = time.monotonic()
    result = ansible(["ansible-playbook", "playbooks/renew_k3s.yml", "-i", str(lab.output / "inventory.ini"), *args])
    print("renew_k3s.yml %s: %.1f s\n%s" % (" ".join(args), time.monotonic() - started, result.stdout[-4000:]))
    return result


def sha1(cert):
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def secret_annotation(lab):
    """The secret's fingerprint annotation, read with the node's own kubectl (k3s.yaml, TLS verified)."""
    res = ssh(lab, SERVER, "kubectl -n kube-system get secret k3s-serving -o json")
    secret = json.loads(res.stdout)
    leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    return secret["metadata"]["annotations"]["listener.cattle.io/fingerprint"], sha1(leaf)


def assert_clock_untouched(lab):
    """Nobody stepped the clock (seed 003's author had to): realtime - monotonic is what it was at up."""
    assert abs((time.time() - time.monotonic()) - lab.clock_offset) < 1.0
    node_now = int(ssh(lab, SERVER, "date +%s").stdout)
    assert abs(node_now - time.time()) < 5


def test_check_mode_shows_the_plan_and_changes_no_byte(delta):
    print("lab up: %.1f s" % delta.up_seconds)
    assert days_left(served(ADDRESSES[SERVER], 6443)) < 0
    before = digest(delta)
    result = renew_k3s(delta, "--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Planned on delta-server (k3s v1.23.9 may serve an expired secret again after a restart (seed 003))" in result.stdout
    assert "k3s-serving: expires" in result.stdout and "[reset: the served certificate expired on" in result.stdout
    assert "+        not_after: (new at next start)" in result.stdout
    assert "Planned on delta-agent: nothing under 30 days" in result.stdout
    assert digest(delta) == before


def test_a_stopped_k3s_gives_a_clear_message_and_loses_nothing(delta):
    ssh(delta, SERVER, "systemctl stop k3s")
    try:
        before = digest(delta)
        result = renew_k3s(delta)
        assert result.returncode != 0
        assert "Is k3s running? Check 'systemctl status k3s'" in result.stdout and "Nothing was changed." in result.stdout
        assert digest(delta) == before
        assert not (delta.node_root(SERVER) / "var/lib/kubepki/renew.lock").exists()
    finally:
        ssh(delta, SERVER, "systemctl start k3s")
    wait_for(lambda: listening(ADDRESSES[SERVER], 6443), "k3s to serve again")


def test_reset_serves_a_new_certificate_the_secret_matches(delta):
    tls = delta.node_root(SERVER) / TLS
    old_cache = (tls / "dynamic-cert.json").read_bytes()
    old = served(ADDRESSES[SERVER], 6443)
    # kubectl cannot reach the API while the served certificate is expired: the trap of seed 003.
    assert "certificate has expired" in ssh(delta, SERVER, "kubectl get --raw /version", check=False).stderr
    result = renew_k3s(delta)
    assert result.returncode == 0, result.stdout + result.stderr
    new = served(ADDRESSES[SERVER], 6443)
    assert cn(new) == "k3s" and days_left(new) > 360 and sha1(new) != sha1(old)
    assert secret_annotation(delta) == ("SHA1=" + sha1(new), sha1(new))
    assert_clock_untouched(delta)
    # Nothing lost: the old cache is kept beside the new one, and a root-only backup was taken.
    kept = list(tls.glob("dynamic-cert.json.kubepki-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == old_cache
    backups = list((delta.node_root(SERVER) / "var/lib/kubepki/backups").iterdir())
    assert len(backups) == 1 and {p.name for p in backups[0].iterdir()} == {"files.tar.gz", "SHA256SUMS"}
    assert oct(backups[0].stat().st_mode & 0o777) == "0o700"
    assert not (delta.node_root(SERVER) / "var/lib/kubepki/renew.lock").exists()


def test_second_run_changes_nothing(delta):
    before = digest(delta)
    result = renew_k3s(delta)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"nothing to do: served for 36\d\.\d+ more days, the same certificate as dynamic-cert.json and the secret",
                     result.stdout)
    assert digest(delta) == before


def age_agent_certs(lab, days_ago):
    """The agent's files as a long-running agent has them; the running kubelet keeps serving what it loaded."""
    root = lab.node_root(AGENT)
    cluster = k3s_tool.load_cluster(pki, root / "run/kubepki-lab/k3s-ca")
    pki.build_k3s_agent(root, cluster, AGENT, ADDRESSES[AGENT], agent_issued_at=pki.utc() - days_ago * pki.DAY)


def test_leaves_beyond_the_window_are_rotated_and_a_due_agent_restarted(delta):
    age_agent_certs(delta, 340)         # 25 days left
    kubelet_before = served(ADDRESSES[AGENT], 10250)
    served_before = served(ADDRESSES[SERVER], 6443)
    result = renew_k3s(delta, "-e", "kubepki_threshold_days=340")
    assert result.returncode == 0, result.stdout + result.stderr
    # server/tls leaves had 335 days: beyond k3s's 90-day window (k3s --version says v1.23.9), so rotated.
    assert "leaves beyond the 90-day window of k3s (v1.23.9): rotate" in result.stdout
    server_root = delta.node_root(SERVER)
    assert list((server_root / "var/lib/rancher/k3s/server").glob("tls-[0-9]*"))     # rotate's own backup
    for name in ("client-admin.crt", "serving-kube-apiserver.crt", "etcd/server-client.crt"):
        leaf = x509.load_pem_x509_certificate((server_root / TLS / name).read_bytes())
        assert days_left(leaf) > 360, name
    assert days_left(served("127.0.0.1", 6444)) > 360
    assert sha1(served(ADDRESSES[SERVER], 6443)) == sha1(served_before)     # fresh already: not reset
    assert "restart k3s-agent, which re-issues k3s/agent/" in result.stdout
    kubelet = served(ADDRESSES[AGENT], 10250)
    assert sha1(kubelet) != sha1(kubelet_before) and days_left(kubelet) > 360
    assert_clock_untouched(delta)


def test_a_secret_already_gone_is_fine(delta):
    ssh(delta, SERVER, "kubectl -n kube-system delete secret k3s-serving")
    before = served(ADDRESSES[SERVER], 6443)
    result = renew_k3s(delta, "-e", "kubepki_force=true")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "secret absent, dynamic-cert.json ok" in result.stdout and "[reset: force=true]" in result.stdout
    new = served(ADDRESSES[SERVER], 6443)
    assert sha1(new) != sha1(before) and days_left(new) > 360
    assert secret_annotation(delta) == ("SHA1=" + sha1(new), sha1(new))


def test_a_k3s_that_does_not_come_back_is_rolled_back(delta):
    tls = delta.node_root(SERVER) / TLS
    cache = (tls / "dynamic-cert.json").read_bytes()
    before = served(ADDRESSES[SERVER], 6443)
    # Injected fault: this k3s server only starts with the cache it has now.
    with k3s_server_that_fails_to_start_if(delta.node_root(SERVER), "[ ! -e /%s/dynamic-cert.json ]" % TLS):
        result = renew_k3s(delta, "-e", "kubepki_force=true", "-e", "reset_k3s_serving_retries=5")
    assert result.returncode != 0
    assert "It was rolled back: the backup /var/lib/kubepki/backups/" in result.stdout
    wait_for(lambda: listening(ADDRESSES[SERVER], 6443), "k3s to serve again")
    assert sha1(served(ADDRESSES[SERVER], 6443)) == sha1(before)
    assert (tls / "dynamic-cert.json").read_bytes() == cache
    # k3s recreates the secret it was made to lose from the restored cache.
    assert secret_annotation(delta) == ("SHA1=" + sha1(before), sha1(before))
    assert not (delta.node_root(SERVER) / "var/lib/kubepki/renew.lock").exists()


def test_a_reset_module_killed_half_way_is_rolled_back_by_its_run(delta, tmp_path):
    """Only k3s_serving_reset dies (as the OOM killer would) once it has deleted the secret and moved dynamic-cert.json
    aside, before it reports; strace holds each rename on the node for 5 s. The run cannot know what the module did, so
    it restores the backup and restarts k3s, which recreates the secret from the restored cache. Before, it said
    "Nothing was changed on it" and left the secret deleted and the cache moved aside."""
    tls = delta.node_root(SERVER) / TLS
    cache = (tls / "dynamic-cert.json").read_bytes()
    before = served(ADDRESSES[SERVER], 6443)
    with KilledRun(delta, tmp_path, SERVER, "-e", "kubepki_force=true", playbook="playbooks/renew_k3s.yml") as run:
        said = run.module_killed(delta, SERVER, "Back up the server's certificates and kubeconfig",
                                 lambda: not (tls / "dynamic-cert.json").exists(), "moving dynamic-cert.json aside")
    assert run.process.returncode != 0
    assert ("Reset of delta-server failed - Delete the secret, move dynamic-cert.json aside, force the leaves k3s would keep: "
            "its process ended before it said what it wrote (exit status 137: Killed). It was rolled back: the backup ") in said
    wait_for(lambda: listening(ADDRESSES[SERVER], 6443), "k3s to serve again")
    assert sha1(served(ADDRESSES[SERVER], 6443)) == sha1(before)
    assert (tls / "dynamic-cert.json").read_bytes() == cache
    assert secret_annotation(delta) == ("SHA1=" + sha1(before), sha1(before))
    assert not (delta.node_root(SERVER) / "var/lib/kubepki/renew.lock").exists()


def test_a_run_killed_after_the_reset_before_the_restart_converges_on_the_next_ordinary_run(delta, tmp_path):
    """SIGKILL of ansible-playbook once k3s_serving_reset has deleted the secret and moved dynamic-cert.json aside,
    before k3s restarts: k3s serves the old certificate from memory, and nothing on the node says it is due. The next
    ordinary run makes the restart the killed run owed: k3s serves a new certificate and the secret it writes holds
    it. Before, it said "nothing to do" and left the secret deleted until k3s restarted for another reason."""
    tls = delta.node_root(SERVER) / TLS
    before = served(ADDRESSES[SERVER], 6443)
    # killed on the node's state, not the restart's banner: a task already sent to the node runs on without its run
    with KilledRun(delta, tmp_path, SERVER, "-e", "kubepki_force=true", playbook="playbooks/renew_k3s.yml") as run:
        run.until(lambda: not (tls / "dynamic-cert.json").exists(), "moving dynamic-cert.json aside")
    time.sleep(3)       # what the node was running when its run died ends
    assert sha1(served(ADDRESSES[SERVER], 6443)) == sha1(before), "k3s restarted before the kill"

    result = renew_k3s(delta, "-l", SERVER)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "delta-server: taking over /var/lib/kubepki/renew.lock from a run that is gone" in said
    new = served(ADDRESSES[SERVER], 6443)
    assert sha1(new) != sha1(before) and days_left(new) > 360
    assert secret_annotation(delta) == ("SHA1=" + sha1(new), sha1(new))
    assert not (delta.node_root(SERVER) / "var/lib/kubepki/renew.lock").exists()
    assert not (delta.node_root(SERVER) / "var/lib/kubepki/restart-owed.json").exists()


def test_a_run_killed_at_a_due_agent_converges_on_the_next_ordinary_run(delta, tmp_path):
    """SIGKILL of ansible-playbook once the agent's lock is taken, whether or not its restart was already sent: the
    next ordinary run takes the lock over and ends with the kubelet serving a new certificate, the agent's files fresh."""
    age_agent_certs(delta, 340)         # 25 days left
    kubelet_before = served(ADDRESSES[AGENT], 10250)
    lock = delta.node_root(AGENT) / "var/lib/kubepki/renew.lock"
    with KilledRun(delta, tmp_path, AGENT, "-e", "kubepki_threshold_days=340", playbook="playbooks/renew_k3s.yml") as run:
        run.until(lock.exists, "taking the agent's lock")
    assert lock.exists()

    result = renew_k3s(delta, "-l", AGENT, "-e", "kubepki_threshold_days=340")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "delta-agent: taking over /var/lib/kubepki/renew.lock from a run that is gone" in " ".join(result.stdout.split())
    kubelet = served(ADDRESSES[AGENT], 10250)
    assert sha1(kubelet) != sha1(kubelet_before) and days_left(kubelet) > 360
    leaves = [crt for crt in (delta.node_root(AGENT) / "var/lib/rancher/k3s/agent").glob("*.crt") if not crt.name.endswith("-ca.crt")]
    assert leaves and all(days_left(x509.load_pem_x509_certificate(crt.read_bytes())) > 360 for crt in leaves), leaves
    assert not lock.exists()


def test_two_runs_that_find_a_dead_runs_lock_take_it_over_once(delta):
    """Two ordinary runs at once find the lock of a run of this controller that is gone, each renaming held 5 s before
    it happens on the node. Each may judge it gone, but only one takes it over; the other stops, or takes the lock
    afresh once released. Before, both wrote their owner into it and went on as its holder."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    lock = delta.node_root(AGENT) / "var/lib/kubepki/renew.lock"
    lock.mkdir(mode=0o700, parents=True)
    (lock / "owner").write_text("renewal started 2026-12-07T00:00:00Z from %s (ansible-playbook pid %d)\n" % (socket.gethostname(), ended.pid))
    argv = ["ansible-playbook", "playbooks/renew_k3s.yml", "-i", str(delta.output / "inventory.ini"), "-l", AGENT]
    with renames_held(delta, AGENT, at="enter"):
        runs = at_once({"first": argv, "second": argv})
    for key, (code, output) in runs.items():
        print("%s: exit %d\n%s" % (key, code, output[-3000:]))
    said = {key: " ".join(output.split()) for key, (_code, output) in runs.items()}
    took_over = [key for key, (code, _output) in runs.items() if code == 0 and "taking over /var/lib/kubepki/renew.lock" in said[key]]
    assert len(took_over) == 1, took_over
    other = next(key for key in runs if key not in took_over)
    afresh = runs[other][0] == 0 and "taking over" not in said[other]       # once the first had released it
    stopped = runs[other][0] != 0 and ("took /var/lib/kubepki/renew.lock on delta-agent over first" in said[other]
                                       or "Another certificate renewal holds /var/lib/kubepki/renew.lock" in said[other])
    assert afresh or stopped, said[other][-2000:]
    assert not lock.exists()
