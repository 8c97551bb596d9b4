"""renew.yml on the lab fleet: alpha (HA, kubeadm v1.31, expiring) renewed one control plane at a time under a
prober, bravo (kubeadm v1.28, expired, kubelet client cert too) recovered all at once, charlie's kubelets and
delta's k3s served cert renewed, --check and a second run change nothing, and an injected fault rolls a node
back to its old, valid certificates.

The tests run in file order on one fleet: each builds on the state the previous one left.
"""
import base64
import contextlib
import datetime
import json
import os
import re
import socket
import subprocess
import time

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from labutil import (KilledRun, LockWatch, ansible, at_once, cn, days_left, drop_connections, kill_traced, listening, read_if_present,
                     regular_files, renames_held, scheduler_that_never_comes_back, served, ssh, tree_digest, wait_for)

import prober  # tests/lab is on sys.path through labutil  # pylint: disable=wrong-import-order

ALPHA = {"alpha-cp1": "127.0.1.11", "alpha-cp2": "127.0.1.12", "alpha-cp3": "127.0.1.13"}
BRAVO = {"bravo-cp1": "127.0.1.21"}
CHARLIE = {"charlie-cp1": "127.0.1.31", "charlie-w1": "127.0.1.32"}
DELTA = "127.0.1.41"
# What renewal may touch on a node; --check and a second run must leave every byte of it alone.
NODE_TREES = ("etc/kubernetes", "var/lib/kubelet/pki", "var/lib/kubepki")


def digest(lab, nodes):
    return tree_digest([lab.node_root(node) / tree for node in nodes for tree in NODE_TREES], lab.output)


def renew(lab, tmp_path, *args):
    result = ansible(["ansible-playbook", "playbooks/renew.yml", "-i", str(lab.output / "inventory.ini"),
                      "-e", "report_dir=%s" % (tmp_path / "report"), *args])
    print(result.stdout[-3000:])
    return result


def fingerprints(addresses, ports=(6443, 2379, 2380)):
    return {(a, p): served(a, p).fingerprint(hashes.SHA256()) for a in addresses for p in ports}


def pki_digest(lab, node):
    """The node's certificates, keys and kubeconfigs."""
    return tree_digest([lab.node_root(node) / "etc/kubernetes", lab.node_root(node) / "var/lib/kubelet/pki"], lab.output)


def key_matches(key, crt):
    public = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    return public == x509.load_pem_x509_certificate(crt.read_bytes()).public_key()


def presented(root, component):
    """The client certificate a lab component runs with (its status file)."""
    return json.loads((root / "run/kubepki-lab" / ("%s.status" % component)).read_text())["client_cert"]["sha256"]


def in_kubeconfig(conf):
    user = yaml.safe_load(conf.read_text())["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    return ":".join("%02X" % b for b in cert.fingerprint(hashes.SHA256()))


@pytest.fixture(scope="module")
def fleet(lab_fleet):
    return lab_fleet


def test_check_mode_shows_the_plan_and_changes_no_byte(fleet, tmp_path):
    before = digest(fleet, list(ALPHA) + list(BRAVO))
    result = renew(fleet, tmp_path, "--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    # method auto takes the node's kubeadm, as on a real control plane: alpha stands for v1.31, bravo for v1.28
    for node in ALPHA:
        assert "Planned on %s (kubeadm method, kubeadm v1.31.4)" % node in result.stdout
    assert "Planned on bravo-cp1 (kubeadm method, kubeadm v1.28.15)" in result.stdout
    # kubeadm renews bravo's leaves; the kubelet's client cert is not kubeadm's
    assert re.search(r"\n +apiserver: expires .* by kubeadm\n", result.stdout)
    assert re.search(r"\n +kubelet.conf: expires .* natively: the kubelet's client certificate is not kubeadm's", result.stdout)
    # kube-apiserver reloads its certs by itself; bravo's kubelet needs a restart for its repaired kubelet.conf
    assert result.stdout.count("restart, in order: kube-controller-manager, kube-scheduler\n") == 3
    assert "restart, in order: kube-controller-manager, kube-scheduler, kubelet\n" in result.stdout
    assert "no restart for apiserver-kubelet-client: kube-apiserver v1.31 reads a client certificate" in result.stdout
    assert "no restart for apiserver-kubelet-client: kube-apiserver v1.28" in result.stdout
    assert "kubelet for kubelet.conf: it loads its client certificate" in result.stdout
    assert "bravo-cp1 all at once" in result.stdout and "one control plane at a time" in result.stdout
    assert digest(fleet, list(ALPHA) + list(BRAVO)) == before


def test_renewal_keeps_the_api_up_and_recovers_the_expired_cluster(fleet, tmp_path):
    old = fingerprints(list(ALPHA.values()) + list(BRAVO.values()))
    kubeconfig = fleet.node_root("alpha-cp1") / "etc/kubernetes/admin.conf"
    started = time.monotonic()
    with prober.ApiProber(ALPHA.values(), kubeconfig) as probe:
        result = renew(fleet, tmp_path)
    print("renew.yml: %.0f s; alpha apiservers during the run:\n%s" % (time.monotonic() - started, probe.report()))
    assert result.returncode == 0, result.stdout + result.stderr
    assert probe.unavailable_seconds() == 0, probe.report()

    # One control plane at a time: their new certs were issued at different moments, in turn order.
    issued = [served(a, 6443).not_valid_before_utc for a in ALPHA.values()]
    assert issued == sorted(issued) and len(set(issued)) == 3
    new = fingerprints(list(ALPHA.values()) + list(BRAVO.values()))
    for endpoint, fingerprint in new.items():
        assert fingerprint != old[endpoint], endpoint
        assert days_left(served(*endpoint)) > 360, endpoint

    # Controller-manager and scheduler were restarted and present the renewed client certs.
    nodes = list(ALPHA) + list(BRAVO)
    facts = ansible(["ansible", ",".join(nodes), "-i", str(fleet.output / "inventory.ini"), "-m", "kubepki.fleet.cert_facts",
                     "-a", "probe=false", "--tree", str(tmp_path / "facts")])
    assert facts.returncode == 0, facts.stdout
    for node in nodes:
        certs = json.loads((tmp_path / "facts" / node).read_text())["ansible_facts"]["kubepki"]["certs"]
        for component, conf in (("kube-controller-manager", "controller-manager.conf"), ("kube-scheduler", "scheduler.conf")):
            status = json.loads((fleet.node_root(node) / "run/kubepki-lab" / ("%s.status" % component)).read_text())
            conf_entry = next(c for c in certs if c["id"] == "kubeconfig/" + conf)
            assert status["client_cert"]["sha256"] == conf_entry["fingerprint_sha256"], (node, component)

    # bravo's kubelet.conf was repaired (its client cert expired with the cluster) and kept: the restarted kubelet
    # renews its node Lease with the new client cert, as the verification showed.
    assert re.search(r"kubelet: kubelet \(PID \d+, started \S+\) renewed node Lease bravo-cp1", result.stdout), result.stdout
    link = fleet.node_root("bravo-cp1") / "var/lib/kubelet/pki/kubelet-client-current.pem"   # absolute, as the kubelet's
    client = x509.load_pem_x509_certificate((fleet.node_root("bravo-cp1") / os.readlink(link).lstrip("/")).read_bytes())
    assert days_left(client) > 360 and cn(client) == "system:node:bravo-cp1"
    lease = subprocess.run(["kubectl", "--kubeconfig", str(fleet.node_root("bravo-cp1") / "etc/kubernetes/admin.conf"), "get", "lease",
                            "-n", "kube-node-lease", "bravo-cp1", "-o", "jsonpath={.spec.renewTime}"],
                           capture_output=True, text=True, timeout=60, check=False)
    renewed = datetime.datetime.fromisoformat(lease.stdout.replace("Z", "+00:00"))
    assert (datetime.datetime.now(datetime.timezone.utc) - renewed).total_seconds() < 30, lease

    # Real kubectl with the renewed admin.conf of the recovered cluster.
    kubectl = subprocess.run(["kubectl", "--kubeconfig", str(fleet.node_root("bravo-cp1") / "etc/kubernetes/admin.conf"),
                              "get", "namespaces"], capture_output=True, text=True, timeout=60, check=False)
    assert kubectl.returncode == 0 and "kube-system" in kubectl.stdout, kubectl.stderr

    # etcd: three healthy members on their new peer and server certs.
    etcd_pki = "/etc/kubernetes/pki/etcd"
    etcdctl = ("etcdctl --endpoints=%s --cacert=%s/ca.crt --cert=%s/healthcheck-client.crt --key=%s/healthcheck-client.key"
               % (",".join("https://%s:2379" % a for a in ALPHA.values()), etcd_pki, etcd_pki, etcd_pki))
    health = ssh(fleet, "alpha-cp1", etcdctl + " endpoint health")
    assert (health.stdout + health.stderr).count("is healthy") == 3, health.stdout + health.stderr
    assert len(ssh(fleet, "alpha-cp1", etcdctl + " member list").stdout.splitlines()) == 3

    # Every node holds root-only backups with their checksums: the control plane's, with an etcd
    # snapshot where etcd answered (not on expired bravo), then the kubelet serving cert's.
    for node in list(ALPHA) + list(BRAVO):
        backups = sorted((fleet.node_root(node) / "var/lib/kubepki/backups").iterdir())
        assert len(backups) == 2, backups
        for backup in backups:
            assert oct(backup.stat().st_mode & 0o777) == "0o700"
            assert {p.name for p in backup.iterdir()} >= {"files.tar.gz", "SHA256SUMS"}
            assert oct((backup / "files.tar.gz").stat().st_mode & 0o777) == "0o600"
        assert (backups[0] / "etcd-snapshot.db").exists() == (node in ALPHA)
    # The kubelets' self-signed serving certs were regenerated too, on kubeadm and RKE1 nodes alike,
    # and delta's k3s serves a fresh supervisor cert: renew.yml covered every cluster of the fleet.
    for address in list(ALPHA.values()) + list(BRAVO.values()) + list(CHARLIE.values()):
        assert days_left(served(address, 10250)) > 360, address
    delta = served(DELTA, 6443)
    assert delta.subject.rfc4514_string() == "CN=k3s,O=k3s" and days_left(delta) > 360


def test_second_run_changes_nothing(fleet, tmp_path):
    before = digest(fleet, list(ALPHA) + list(BRAVO))
    result = renew(fleet, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing under 30 days" in result.stdout
    assert digest(fleet, list(ALPHA) + list(BRAVO)) == before


def test_apiserver_restarted_only_for_its_client_certs_is_kept(fleet, tmp_path):
    """restart_policy=always restarts kube-apiserver for client certs; its serving cert is unchanged, so the
    proof is a new container, not a new fingerprint (which the old verification demanded, rolling it back)."""
    node, address = "alpha-cp2", ALPHA["alpha-cp2"]
    client_certs = ("apiserver-kubelet-client", "apiserver-etcd-client")
    pki_dir = fleet.node_root(node) / "etc/kubernetes/pki"

    def serials():
        return {name: x509.load_pem_x509_certificate((pki_dir / (name + ".crt")).read_bytes()).serial_number for name in client_certs}

    def container():
        return ssh(fleet, node, "crictl ps --name kube-apiserver -q").stdout.strip()

    before, container_before, served_before = serials(), container(), fingerprints([address], (6443,))
    result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true", "-e", "kubepki_restart_policy=always",
                   "-e", json.dumps({"kubepki_certs": list(client_certs)}))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restart, in order: kube-apiserver\n" in result.stdout and "restart_policy=always" in result.stdout
    assert "kube-apiserver: runs in a new container" in result.stdout
    assert container() not in ("", container_before)
    assert fingerprints([address], (6443,)) == served_before
    after = serials()
    assert all(after[name] != before[name] for name in client_certs), "rolled back"


def test_a_node_cluster_api_owns_is_left_alone(fleet, tmp_path):
    """Cluster API's machine controller annotates the Node it owns; renewing underneath it would fight it."""
    node = "alpha-cp3"
    kubectl = ["kubectl", "--kubeconfig", str(fleet.node_root("alpha-cp1") / "etc/kubernetes/admin.conf")]
    annotate = subprocess.run(kubectl + ["annotate", "node", node, "cluster.x-k8s.io/owner-kind=KubeadmControlPlane",
                                         "cluster.x-k8s.io/owner-name=alpha-cp"], capture_output=True, text=True, timeout=60, check=False)
    assert annotate.returncode == 0, annotate.stderr
    before = tree_digest([fleet.node_root(node) / "etc/kubernetes"], fleet.output)
    try:
        result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true")
    finally:
        subprocess.run(kubectl + ["annotate", "node", node, "cluster.x-k8s.io/owner-kind-", "cluster.x-k8s.io/owner-name-"],
                       capture_output=True, text=True, timeout=60, check=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left alone: Cluster API (the node belongs to KubeadmControlPlane alpha-cp" in result.stdout
    assert "nothing renewed" in result.stdout
    assert tree_digest([fleet.node_root(node) / "etc/kubernetes"], fleet.output) == before


def test_component_that_never_comes_back_is_rolled_back(fleet, tmp_path):
    node, address = "alpha-cp1", ALPHA["alpha-cp1"]
    before_files = digest(fleet, [node])
    before_served = fingerprints([address])
    backups_before = len(list((fleet.node_root(node) / "var/lib/kubepki/backups").iterdir()))
    with scheduler_that_never_comes_back(fleet.node_root(node)):
        result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true",
                       "-e", "restart_control_plane_timeout=20", "-e", "verify_control_plane_retries=10")
    assert result.returncode != 0
    assert "It was rolled back" in result.stdout and "healthy on its previous certificates" in result.stdout
    wait_for(lambda: listening(address, 10259), "the scheduler to listen again")
    assert fingerprints([address]) == before_served
    after_files = {k: v for k, v in digest(fleet, [node]).items() if "var/lib/kubepki" not in k}
    assert after_files == {k: v for k, v in before_files.items() if "var/lib/kubepki" not in k}
    assert len(list((fleet.node_root(node) / "var/lib/kubepki/backups").iterdir())) == backups_before + 1
    assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()


def test_kubeadm_failing_half_way_is_reported_and_rolled_back(fleet, tmp_path):
    """kubeadm writes key, then cert, in place: a failure between them (a full disk) leaves a pair that does not
    match. What it wrote is reported as changed, and the node is rolled back to its backup."""
    node = "alpha-cp2"
    fault = fleet.node_root(node) / "run/kubepki-lab/kubeadm-fault"
    fault.write_text("apiserver-kubelet-client\n")
    before = {k: v for k, v in digest(fleet, [node]).items() if "var/lib/kubepki" not in k}
    try:
        result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true")
    finally:
        fault.unlink(missing_ok=True)
    assert result.returncode != 0
    assert "kubeadm certs renew apiserver-kubelet-client --cert-dir /etc/kubernetes/pki` failed (rc 1)" in result.stdout
    assert "no space left on device" in result.stdout
    assert ("apiserver-kubelet-client (kubeadm failed after writing /etc/kubernetes/pki/apiserver-kubelet-client.key)"
            in result.stdout)
    assert "It was rolled back" in result.stdout and "healthy on its previous certificates" in result.stdout
    after = {k: v for k, v in digest(fleet, [node]).items() if "var/lib/kubepki" not in k}
    assert after == before
    assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()


def test_rollback_playbook_restores_a_chosen_backup(fleet, tmp_path):
    node, address = "alpha-cp1", ALPHA["alpha-cp1"]
    first = sorted((fleet.node_root(node) / "var/lib/kubepki/backups").iterdir())[0]
    result = ansible(["ansible-playbook", "playbooks/rollback.yml", "-i", str(fleet.output / "inventory.ini"), "-l", node,
                      "-e", "kubepki_backup=/var/lib/kubepki/backups/%s" % first.name])
    assert result.returncode == 0, result.stdout + result.stderr
    # The first backup predates the renewal: the node serves its old certificates, 17 days left.
    wait_for(lambda: 16 < days_left(served(address, 6443)) < 18, "the apiserver to serve the restored certificate")
    assert 16 < days_left(served(address, 2379)) < 18
    assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()


def test_a_held_lock_stops_a_second_run_until_its_claim_ends(fleet, tmp_path):
    """Another controller's lock: refused, changing nothing, while it is younger than lock_node_lease_seconds."""
    node = "alpha-cp2"
    lock = fleet.node_root(node) / "var/lib/kubepki/renew.lock"
    lock.mkdir(mode=0o700)
    (lock / "owner").write_text("renewal started 2026-11-23T03:00:00Z from awx-job-42\n")
    before = digest(fleet, [node])
    try:
        result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true")
        assert result.returncode != 0
        assert "Another certificate renewal holds /var/lib/kubepki/renew.lock" in result.stdout
        assert "awx-job-42" in result.stdout
        assert lock.exists(), "the other run's lock was released"
        assert digest(fleet, [node]) == before
    except BaseException:
        (lock / "owner").unlink()
        lock.rmdir()
        raise

    # An hour later, by the node's clock, the claim has ended: the next ordinary run takes the lock over.
    an_hour_ago = time.time() - 3660
    os.utime(lock / "owner", (an_hour_ago, an_hour_ago))
    os.utime(lock, (an_hour_ago, an_hour_ago))
    result = renew(fleet, tmp_path, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert ("alpha-cp2: taking over /var/lib/kubepki/renew.lock from a run whose claim has ended (renewal started 2026-11-23T03:00:00Z"
            " from awx-job-42, held longer than 3600 s)") in said
    assert not lock.exists()


def lease_holder(lab):
    """Who holds alpha's renewal Lease, read with real kubectl."""
    got = subprocess.run(["kubectl", "--kubeconfig", str(lab.node_root("alpha-cp1") / "etc/kubernetes/admin.conf"), "-n", "kube-system",
                          "get", "lease", "kubepki-renewal", "-o", "jsonpath={.spec.holderIdentity}"],
                         capture_output=True, text=True, timeout=60, check=True)
    return got.stdout


def hold_lease(lab, holder):
    """alpha's renewal Lease as another run left it: claimed now, for 30 minutes."""
    kubectl = ["kubectl", "--kubeconfig", str(lab.node_root("alpha-cp1") / "etc/kubernetes/admin.conf"), "-n", "kube-system"]
    subprocess.run(kubectl + ["delete", "lease", "kubepki-renewal", "--ignore-not-found"], capture_output=True, timeout=60, check=True)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "kubepki-renewal"},
             "spec": {"holderIdentity": holder, "leaseDurationSeconds": 1800, "acquireTime": now, "renewTime": now}}
    created = subprocess.run(kubectl + ["create", "--validate=false", "-f", "-"], input=json.dumps(lease), capture_output=True, text=True, timeout=60,
                             check=False)
    assert created.returncode == 0, created.stderr


def test_concurrent_slices_renew_one_control_plane_of_a_cluster_at_a_time(fleet, tmp_path):
    """AWX job slicing puts alpha-cp1 and alpha-cp2 in two jobs that run at once. Each job sees one control plane of
    alpha, so on its own it would renew it at once; the Lease kube-system/kubepki-renewal in alpha's API keeps the two
    control-plane transactions apart. A transaction is the spell of the node's lock directory in which the backup
    with the etcd snapshot appears (the node lock is also held, briefly, by recover and the kubelet's own renewal,
    which are node-local)."""
    nodes = ("alpha-cp1", "alpha-cp2")
    before = {node: served(ALPHA[node], 6443).fingerprint(hashes.SHA256()) for node in nodes}
    with LockWatch(fleet, nodes) as watch:
        done = at_once({node: ["ansible-playbook", "playbooks/renew.yml", "-i", str(fleet.output / "inventory.ini"), "-l", node,
                               "-e", "kubepki_force=true", "-e", json.dumps({"kubepki_certs": ["apiserver"]}),
                               "-e", "report_dir=%s" % (tmp_path / node)] for node in nodes})
    for node, (returncode, output) in done.items():
        assert returncode == 0, output[-4000:]
    watch.assert_one_at_a_time(nodes, holding="etcd-snapshot.db")
    said = " ".join(" ".join(output for _rc, output in done.values()).split())
    assert re.search(r"alpha-cp\d: waiting \(at most 3600 s\) for lease kube-system/kubepki-renewal, held by alpha-cp\d from ", said)
    for node in nodes:
        assert served(ALPHA[node], 6443).fingerprint(hashes.SHA256()) != before[node], node
    assert lease_holder(fleet) == ""


def test_a_lease_of_a_gone_run_is_taken_over_and_a_live_one_waited_for(fleet, tmp_path):
    node = "alpha-cp3"
    ended = subprocess.Popen(["true"])
    ended.wait()
    gone = "alpha-cp1 from %s (ansible-playbook pid %d)" % (socket.gethostname(), ended.pid)
    hold_lease(fleet, gone)
    result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true", "-e", json.dumps({"kubepki_certs": ["apiserver"]}))
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "alpha-cp3: taking over lease kube-system/kubepki-renewal, held by %s until " % gone in said
    assert "alpha-cp3: took lease kube-system/kubepki-renewal over from %s" % gone in said
    assert lease_holder(fleet) == ""

    live = "alpha-cp1 from awx-7 (ansible-playbook pid 4711)"    # another controller's run, whose claim runs
    hold_lease(fleet, live)
    before = digest(fleet, [node])
    try:
        result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true", "-e", "lock_cluster_wait_seconds=10")
        assert result.returncode != 0
        said = " ".join(result.stdout.split())
        assert "alpha-cp3: lease kube-system/kubepki-renewal is still held by %s after 10 s" % live in said
        assert "kubectl -n kube-system delete lease kubepki-renewal" in said
        assert digest(fleet, [node]) == before
        assert lease_holder(fleet) == live
    finally:
        hold_lease(fleet, "")


def test_a_run_killed_with_the_apiserver_parked_converges_on_the_next_ordinary_run(fleet, tmp_path):
    """SIGKILL of ansible-playbook while kube-apiserver's manifest is parked on single-control-plane bravo: the API is
    down and the lock stays. The next run, with no force and no manual step, takes the lock over (its run is gone),
    puts the manifest back and ends with every control-plane component serving."""
    node, address = "bravo-cp1", BRAVO["bravo-cp1"]
    parked = fleet.node_root(node) / "etc/kubernetes/kubepki-parked/kube-apiserver.yaml"
    with KilledRun(fleet, tmp_path, node, "-e", "kubepki_force=true", "-e", "kubepki_restart_policy=always") as run:
        run.until(parked.exists, "parking kube-apiserver's manifest")
    wait_for(lambda: not listening(address, 6443), "the kubelet to stop kube-apiserver")
    assert (fleet.node_root(node) / "var/lib/kubepki/renew.lock/owner").exists()

    result = renew(fleet, tmp_path, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())      # the callback folds long messages
    assert "bravo-cp1: taking over /var/lib/kubepki/renew.lock from a run that is gone (renewal started " in said
    assert "put back /etc/kubernetes/manifests/kube-apiserver.yaml (parked by the restart of its component)" in said
    assert days_left(served(address, 6443)) > 300 and not parked.exists()
    assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()
    assert not list((fleet.node_root(node) / "etc/kubernetes").rglob("*.kubepki-tmp"))


def test_a_run_killed_after_renewal_before_its_restarts_converges_on_the_next_ordinary_run(fleet, tmp_path):
    """SIGKILL of ansible-playbook once bravo's controller-manager.conf and scheduler.conf are renewed, before either
    component is restarted. Both read their client certificates only at start, so they keep presenting the old ones,
    and the files are fresh, so the next run has nothing to renew. It must still make the restarts the renewal
    recorded before its first write, and verify them."""
    node = "bravo-cp1"
    root = fleet.node_root(node)
    confs = {"kube-controller-manager": root / "etc/kubernetes/controller-manager.conf",
             "kube-scheduler": root / "etc/kubernetes/scheduler.conf"}
    old = {component: conf.read_bytes() for component, conf in confs.items()}

    with KilledRun(fleet, tmp_path, node, "-e", "kubepki_force=true",
                   "-e", json.dumps({"kubepki_certs": ["controller-manager.conf", "scheduler.conf"]})) as run:
        run.until(lambda: all(conf.read_bytes() != old[c] for c, conf in confs.items()), "renewing both kubeconfigs")
    assert not list((root / "etc/kubernetes/kubepki-parked").glob("*.yaml")), "killed after a restart had begun"
    assert all(presented(root, c) != in_kubeconfig(confs[c]) for c in confs), "restarted before the kill"

    result = renew(fleet, tmp_path, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "nothing under 30 days" in said
    assert "kube-controller-manager: owed by a run that renewed controller-manager.conf at " in said
    assert "kube-scheduler: owed by a run that renewed scheduler.conf at " in said
    for component in confs:
        assert presented(root, component) == in_kubeconfig(confs[component]), component
    assert not (root / "var/lib/kubepki/restart-owed.json").exists()
    assert not (root / "var/lib/kubepki/renew.lock").exists()


def test_a_run_killed_after_its_backup_converges_on_the_next_ordinary_run(fleet, tmp_path):
    """SIGKILL of ansible-playbook once bravo's backup is taken, before a byte is written: a complete backup and the
    lock stay. The next ordinary run takes the lock over, has nothing due, and leaves every file as it was."""
    node = "bravo-cp1"
    root = fleet.node_root(node)
    backups = root / "var/lib/kubepki/backups"
    earlier = set(backups.iterdir())
    before = pki_digest(fleet, node)
    with KilledRun(fleet, tmp_path, node, "-e", "kubepki_force=true") as run:
        run.until(lambda: run.announced("Note what the node shows before the restarts"), "backing the node up")
    taken = [p for p in backups.iterdir() if p not in earlier]
    assert len(taken) == 1, taken
    assert subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=str(taken[0]), check=False).returncode == 0
    assert (root / "var/lib/kubepki/renew.lock/owner").exists() and pki_digest(fleet, node) == before

    result = renew(fleet, tmp_path, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "bravo-cp1: taking over /var/lib/kubepki/renew.lock from a run that is gone (renewal started " in said
    assert "nothing under 30 days" in said
    assert pki_digest(fleet, node) == before
    assert not (root / "var/lib/kubepki/renew.lock").exists()


@contextlib.contextmanager
def between_apiserver_key_and_cert(fleet, tmp_path):
    """bravo's forced native renewal of its apiserver pair, held once apiserver.key is renamed into place and before
    apiserver.crt is: strace delays each rename on the node by 5 s. Yields the run and the tracer; leaving kills the
    run if it still lives."""
    key = fleet.node_root("bravo-cp1") / "etc/kubernetes/pki/apiserver.key"
    old_key = key.stat().st_ino
    with KilledRun(fleet, tmp_path, "bravo-cp1", "-e", "kubepki_force=true", "-e", "kubepki_method=native",
                   "-e", json.dumps({"kubepki_certs": ["apiserver"]})) as run:
        run.until(lambda: run.announced("Note what the node shows before the restarts"), "backing the node up")
        with renames_held(fleet, "bravo-cp1") as tracer:
            run.until(lambda: key.stat().st_ino != old_key, "renaming apiserver.key into place")
            yield run, tracer


def test_a_run_killed_between_a_key_and_its_cert_converges_on_the_next_ordinary_run(fleet, tmp_path):
    """The renewing module and ansible-playbook SIGKILLed after apiserver.key is renamed into place and before
    apiserver.crt is: a new key beside the old cert, which kube-apiserver refuses at its next start, and the cert's
    staged file. strace holds every rename on the node for 5 s, so the kill lands between the two. The next ordinary
    run renews the pair though the cert has a year left, removes the staged file and restarts kube-apiserver."""
    node, address = "bravo-cp1", BRAVO["bravo-cp1"]
    root = fleet.node_root(node)
    key, crt = root / "etc/kubernetes/pki/apiserver.key", root / "etc/kubernetes/pki/apiserver.crt"
    with between_apiserver_key_and_cert(fleet, tmp_path) as (run, tracer):
        run.kill()
        kill_traced(tracer)      # its shell and SSH session die with the controller's end
    assert not key_matches(key, crt), "killed after the cert's rename"
    assert list(crt.parent.glob(".apiserver.crt.*.kubepki-tmp"))
    assert days_left(x509.load_pem_x509_certificate(crt.read_bytes())) > 300

    result = renew(fleet, tmp_path, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "/etc/kubernetes/pki/apiserver.key does not match its certificate (a renewal interrupted between key and certificate)" in said
    assert key_matches(key, crt)
    assert served(address, 6443).public_key() == x509.load_pem_x509_certificate(crt.read_bytes()).public_key()
    assert not list(crt.parent.glob("*.kubepki-tmp"))
    assert not (root / "var/lib/kubepki/renew.lock").exists()
    assert not (root / "var/lib/kubepki/restart-owed.json").exists()


def test_a_connection_dropped_between_a_key_and_its_cert_converges_on_the_next_ordinary_run(fleet, tmp_path):
    """bravo's SSH connections drop after apiserver.key is renamed into place and before apiserver.crt is. The module
    lives on unseen and finishes; the run marks bravo unreachable and skips its rescue and its lock's release, as it
    must for a host it cannot reach. The next ordinary run takes the node's lock over (its run is gone), has nothing
    due, and checks that kube-apiserver serves the new pair. (The cluster's lease the dead run held is taken over by
    the next renewal, as test_a_lease_of_a_gone_run_is_taken_over_and_a_live_one_waited_for shows.)"""
    node, address = "bravo-cp1", BRAVO["bravo-cp1"]
    root = fleet.node_root(node)
    key, crt = root / "etc/kubernetes/pki/apiserver.key", root / "etc/kubernetes/pki/apiserver.crt"
    with between_apiserver_key_and_cert(fleet, tmp_path) as (run, _tracer):
        drop_connections(fleet, node)
        run.until(lambda: run.process.poll() is not None, "ending", timeout=300)
    print("".join(run.lines))
    said = " ".join("".join(run.lines).split())
    assert run.process.returncode == 4, said[-3000:]        # ansible-playbook's exit status for an unreachable host
    assert "fatal: [bravo-cp1]: UNREACHABLE!" in said
    assert "Release the node's renewal lock" not in said.split("UNREACHABLE!")[1]
    wait_for(lambda: key_matches(key, crt), "the unseen module to rename apiserver.crt into place")
    assert (root / "var/lib/kubepki/renew.lock/owner").exists()

    result = renew(fleet, tmp_path, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "bravo-cp1: taking over /var/lib/kubepki/renew.lock from a run that is gone (renewal started " in said
    assert "nothing under 30 days" in said
    assert served(address, 6443).public_key() == x509.load_pem_x509_certificate(crt.read_bytes()).public_key()
    assert not list(crt.parent.glob("*.kubepki-tmp"))
    assert not (root / "var/lib/kubepki/renew.lock").exists()
    assert not (root / "var/lib/kubepki/restart-owed.json").exists()


def test_a_renewing_module_killed_between_a_key_and_its_cert_is_rolled_back_by_its_run(fleet, tmp_path):
    """Only the module dies (the OOM killer, a node-side kill) after apiserver.key is renamed into place and before
    apiserver.crt is, while the play lives on. Its result says nothing of what it wrote, so the run restores the
    backup, removes the staged cert and says so; before, it said "Nothing was renewed on it" and left the new key
    beside the old cert."""
    node, address = "bravo-cp1", BRAVO["bravo-cp1"]
    root = fleet.node_root(node)
    key, crt = root / "etc/kubernetes/pki/apiserver.key", root / "etc/kubernetes/pki/apiserver.crt"
    old_key, old_crt = key.read_bytes(), crt.read_bytes()
    with KilledRun(fleet, tmp_path, node, "-e", "kubepki_force=true", "-e", "kubepki_method=native",
                   "-e", json.dumps({"kubepki_certs": ["apiserver"]})) as run:
        said = run.module_killed(fleet, node, "Note what the node shows before the restarts", lambda: key.read_bytes() != old_key,
                                 "renaming apiserver.key into place")
    assert run.process.returncode != 0
    assert ("Renewal of bravo-cp1 failed - Renew kubeadm certificates under the threshold: its process ended before it said"
            " what it wrote (exit status 137: Killed). It was rolled back: the backup /var/lib/kubepki/backups/") in said
    assert key.read_bytes() == old_key and crt.read_bytes() == old_crt
    assert served(address, 6443).public_key() == x509.load_pem_x509_certificate(old_crt).public_key()
    assert not list(crt.parent.glob("*.kubepki-tmp"))
    assert not (root / "var/lib/kubepki/renew.lock").exists()
    assert not (root / "var/lib/kubepki/restart-owed.json").exists()


def test_a_run_killed_during_verification_converges_on_the_next_ordinary_run(fleet, tmp_path):
    """SIGKILL of ansible-playbook once bravo's controller-manager.conf is renewed and kube-controller-manager
    restarted, as the verification begins. The next ordinary run has nothing due but owes that restart, still
    unverified: it restarts kube-controller-manager again, verifies it and clears the record."""
    node = "bravo-cp1"
    root = fleet.node_root(node)
    conf = root / "etc/kubernetes/controller-manager.conf"
    with KilledRun(fleet, tmp_path, node, "-e", "kubepki_force=true", "-e", json.dumps({"kubepki_certs": ["controller-manager.conf"]})) as run:
        run.until(lambda: run.announced("verify_control_plane : Wait until the renewed certificates are in use"), "verifying")
    assert (root / "var/lib/kubepki/restart-owed.json").exists()
    restarted = json.loads((root / "run/kubepki-lab/kube-controller-manager.status").read_text())["pid"]

    result = renew(fleet, tmp_path, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    said = " ".join(result.stdout.split())
    assert "nothing under 30 days" in said
    assert "kube-controller-manager: owed by a run that renewed controller-manager.conf at " in said
    assert json.loads((root / "run/kubepki-lab/kube-controller-manager.status").read_text())["pid"] != restarted
    assert presented(root, "kube-controller-manager") == in_kubeconfig(conf)
    assert not (root / "var/lib/kubepki/restart-owed.json").exists()
    assert not (root / "var/lib/kubepki/renew.lock").exists()


def test_a_full_disk_at_backup_stops_the_node_before_any_change(fleet, tmp_path):
    """A 1 MiB filesystem where the backups go: the node's transaction stops at the backup, says what to do, and
    renews, restarts and leaves nothing - no lock, no half backup, no owed restart."""
    node = "bravo-cp1"
    root = fleet.node_root(node)
    (root / "var/lib/kubepki/backups").mkdir(parents=True, exist_ok=True)
    fleet.run_in_node(node, ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", "/var/lib/kubepki/backups"])
    before = digest(fleet, [node])
    try:
        result = renew(fleet, tmp_path, "-l", node, "-e", "kubepki_force=true")
        in_backups = fleet.run_in_node(node, ["ls", "-A", "/var/lib/kubepki/backups"]).stdout
    finally:
        fleet.run_in_node(node, ["umount", "/var/lib/kubepki/backups"])
    assert result.returncode != 0
    said = " ".join(result.stdout.split())
    assert "Not enough space for a backup in /var/lib/kubepki/backups on bravo-cp1: " in said
    assert "Free space, lower backup_keep, or set backup_dir to a larger filesystem." in said
    assert "to a larger filesystem. Nothing was changed. Nothing was renewed on it." in said
    assert "rolled back" not in said and "half renewed" not in said
    assert in_backups == ""
    lock = "nodes/%s/root/var/lib/kubepki/module.lock" % node    # the modules' empty flock file, left by any run
    assert {k: v for k, v in digest(fleet, [node]).items() if k != lock} == {k: v for k, v in before.items() if k != lock}


def test_a_controller_clock_minutes_behind_keeps_the_backup_it_takes(fleet, tmp_path):
    """Backups are pruned by name, which is a time. Named by a controller 30 minutes behind the node (libfaketime on
    ansible-playbook), the new backup sorted before the one a run took a minute earlier and, with
    kubepki_backup_keep=1, was pruned at once: the node was renewed with no backup. The node's clock names it now."""
    node = "bravo-cp1"
    backups = fleet.node_root(node) / "var/lib/kubepki/backups"
    earlier = backups / (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=1)).strftime("%Y%m%dT%H%M%SZ")
    earlier.mkdir(parents=True, mode=0o700)
    (earlier / "SHA256SUMS").write_text("")
    result = ansible(["faketime", "-f", "-30m", "ansible-playbook", "playbooks/renew.yml", "-i", str(fleet.output / "inventory.ini"),
                      "-l", node, "-e", "kubepki_force=true", "-e", json.dumps({"kubepki_certs": ["apiserver"]}),
                      "-e", "kubepki_backup_keep=1", "-e", "report_dir=%s" % (tmp_path / "report")])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    kept = [p for p in backups.iterdir() if p.is_dir()]
    assert len(kept) == 1 and kept[0] != earlier, kept
    assert {p.name for p in kept[0].iterdir()} >= {"files.tar.gz", "SHA256SUMS"}
    taken = datetime.datetime.strptime(kept[0].name, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - taken).total_seconds()) < 600, kept[0].name


# Where a node keeps private keys by design: its PKI, kubeconfigs, k3s's own files, etcd, our backups, and the lab
# components' state (what a real one holds in memory).
KEY_STORES = ("etc/kubernetes/pki/", "etc/kubernetes/admin.conf", "etc/kubernetes/super-admin.conf",
              "etc/kubernetes/controller-manager.conf", "etc/kubernetes/scheduler.conf", "etc/kubernetes/kubelet.conf",
              "var/lib/kubelet/pki/", "var/lib/rancher/k3s/server/tls/", "var/lib/rancher/k3s/server/db/",
              "var/lib/rancher/k3s/server/cred/", "var/lib/rancher/k3s/server/token", "var/lib/rancher/k3s/agent/",
              "etc/rancher/k3s/k3s.yaml", "var/lib/etcd/", "var/lib/kubepki/backups/", "run/kubepki-lab/")


def key_fragments(roots):
    """A base64 line from the inside of every private key under roots, PEM or in a kubeconfig's client-key-data."""
    fragments = set()
    for root in roots:
        for path, status in regular_files(root):
            data = read_if_present(path) if status.st_size < 1 << 20 else None
            if data is None:
                continue
            text = data.decode("utf-8", "replace")
            fragments.update(m.group(1) for m in re.finditer(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+\S+\s+(\S{40,})", text))
            for data in re.findall(r"client-key-data: (\S+)", text):
                fragments.update(base64.b64decode(data).decode().splitlines()[2:3])
                fragments.add(data[80:140])
    return fragments


def leaks(text, secrets):
    return sorted({s[:12] + "..." for s in secrets if s in text} | ({"PRIVATE KEY"} if "PRIVATE KEY" in text else set()))


def test_no_key_or_credential_reaches_the_output_or_a_file_written_outside_the_key_stores(fleet, tmp_path):
    """A forced renewal of bravo (kubeadm) and delta (k3s) at -vvv --diff, with credentials where operators keep
    them: one planted in kube-apiserver's manifest (an env var), k3s's server token (a file and its command lines).
    Neither a private key (its marker or a
    line of it), nor a planted credential, appears in the run's output, in any file it wrote on this controller, or
    in any file written on the nodes outside the places that hold keys by design; backups are root's alone."""
    bravo, delta = fleet.node_root("bravo-cp1"), fleet.node_root("delta-server")
    token = (delta / "var/lib/rancher/k3s/server/token").read_text().strip()    # also in k3s's command lines
    planted = {"kubepki-planted-credential-%d" % os.getpid(), token, token.rsplit(":", 1)[1]}
    manifest = bravo / "etc/kubernetes/manifests/kube-apiserver.yaml"
    status = bravo / "run/kubepki-lab/kube-apiserver.status"
    running = json.loads(status.read_text())["pid"]
    pod = yaml.safe_load(manifest.read_text())
    pod["spec"]["containers"][0].setdefault("env", []).append({"name": "CLOUD_SECRET", "value": "kubepki-planted-credential-%d" % os.getpid()})
    manifest.write_text(yaml.safe_dump(pod))
    wait_for(lambda: json.loads(status.read_text())["pid"] != running and listening(BRAVO["bravo-cp1"], 6443),
             "the kubelet to restart kube-apiserver with its new manifest", 60)
    # its leaders may have lost their lease meanwhile, and restart
    wait_for(lambda: listening(BRAVO["bravo-cp1"], 10257) and listening(BRAVO["bravo-cp1"], 10259), "controller-manager and scheduler", 60)
    nodes = [fleet.node_root(n) for n in ("bravo-cp1", "delta-server", "delta-agent")]
    marker = tmp_path / "marker"
    marker.write_text("")
    time.sleep(1)

    result = renew(fleet, tmp_path, "-l", "bravo-cp1,delta-server,delta-agent", "-vvv", "--diff", "-e", "kubepki_force=true")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr
    secrets = planted | key_fragments(nodes)
    assert len(secrets) > 20 and "Renew the certificates" in result.stdout
    assert leaks(result.stdout + result.stderr, secrets) == []

    # On this controller, skipping pytest's other temp dirs (the labs' nodes live there) but not the report.
    found = subprocess.run(["find", "/", "-xdev", "(", "-path", "/proc", "-o", "-path", "/usr", "-o", "-path", "/work/.library",
                            "-o", "-path", "/work/.mirror", "-o", "-path", str(tmp_path.parents[1]), ")", "-prune", "-o",
                            "-type", "f", "-newer", str(marker), "-print"], capture_output=True, text=True, check=False).stdout.split("\n")
    written = [p for p in found if p] + [str(p) for p in (tmp_path / "report").rglob("*") if p.is_file()]
    assert any(p.endswith("kubepki-report.json") for p in written), written
    for path in written:
        try:
            text = open(path, "rb").read(1 << 24).decode("utf-8", "replace")
        except OSError:        # gone since (a temp file of another process)
            continue
        assert leaks(text, secrets) == [], path

    for root in nodes:
        for path, status in regular_files(root):
            if status.st_mtime <= marker.stat().st_mtime:
                continue
            relative = path.relative_to(root).as_posix()
            if relative.startswith("var/lib/kubepki/backups/"):
                assert status.st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0, relative
            data = read_if_present(path)
            if data is not None and not relative.startswith(KEY_STORES):
                assert leaks(data.decode("utf-8", "replace"), secrets) == [], relative
