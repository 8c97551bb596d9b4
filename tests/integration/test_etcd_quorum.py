"""renew.yml on an HA kubeadm cluster (stacked etcd, three members) with etcd members down.

Restarting etcd on one member of a three-member cluster while another member is down leaves one of three: below
quorum (2), so the whole cluster's API stops until the restarted member is back. So, before any change on a node
whose renewal restarts etcd, the cluster must keep quorum without that member; a member lost during the node's
transaction (after that check) fails the verification, which says etcd lost quorum and which members are down, and
the node is rolled back.

Its own lab (kilo: three control planes, leaves expiring in 17-19 days) on 127.0.12.11-13, beside the default
fleet. etcd restarts only with kubepki_restart_policy=always (etcd reloads its certificates by itself). The tests run
in file order on one lab.
"""
import http.client
import json
import re
import ssl
import threading
import time

import pytest

from labutil import Watch, ansible, listening, own_lab, tree_digest, wait_for

NODES = {"kilo-cp1": "127.0.12.11", "kilo-cp2": "127.0.12.12", "kilo-cp3": "127.0.12.13"}
NODE_TREES = ("etc/kubernetes", "var/lib/kubelet/pki", "var/lib/kubepki")
PARKED = "root/etcd.yaml.kept-down"    # where a test keeps a member's manifest while that member must stay down


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    kilo = {"name": "kilo", "distribution": "kubeadm", "scenario": "expiring_20d",
            "nodes": [{"name": n, "role": "control-plane", "address": a} for n, a in NODES.items()]}
    yield from own_lab(tmp_path_factory, [kilo], [(a, p) for a in NODES.values() for p in (22, 2379, 2380, 6443)])


def renew(lab, tmp_path, *args):
    result = ansible(["ansible-playbook", "playbooks/renew.yml", "-i", str(lab.output / "inventory.ini"),
                      "-e", "report_dir=%s" % (tmp_path / "report"), "-e", "kubepki_restart_policy=always", *args])
    (tmp_path / "renew.log").write_text(result.stdout + result.stderr)
    print("renew.yml output: %s" % (tmp_path / "renew.log"))
    print("\n".join(re.findall(r"^fatal: .*?(?=^\S|\Z)", result.stdout, re.M | re.S)))   # each failure with its message
    print(result.stdout[-1500:])
    return result


def digest(lab, nodes):
    lock = "var/lib/kubepki/module.lock"     # the modules' empty flock file, left by any run
    return {k: v for k, v in tree_digest([lab.node_root(n) / t for n in nodes for t in NODE_TREES], lab.output).items()
            if not k.endswith(lock)}


def etcd_health(lab, node):
    """What ``node``'s etcd answers on /health, asked with its healthcheck-client cert; None when it does not answer."""
    pki = lab.node_root(node) / "etc/kubernetes/pki/etcd"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.load_cert_chain(str(pki / "healthcheck-client.crt"), str(pki / "healthcheck-client.key"))
    conn = http.client.HTTPSConnection(NODES[node], 2379, context=context, timeout=2)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def healthy(lab, node):
    answer = etcd_health(lab, node)
    return bool(answer) and answer.get("health") == "true"


def keep_down(lab, node):
    """Stop ``node``'s etcd and keep it down: its manifest leaves the kubelet's directory (not for kubepki-parked,
    which the next run's recover.yml would put back)."""
    lab.run_in_node(node, ["mv", "/etc/kubernetes/manifests/etcd.yaml", "/" + PARKED])
    wait_for(lambda: not listening(NODES[node], 2379) and not listening(NODES[node], 2380), "%s's etcd to stop" % node, 30)
    # a leader that stops leaves the others without one for an election: wait for it to end
    wait_for(lambda: all(healthy(lab, other) for other in NODES if other != node), "the other members to elect a leader", 30)


def bring_back(lab, node):
    if (lab.node_root(node) / PARKED).exists():
        lab.run_in_node(node, ["mv", "/" + PARKED, "/etc/kubernetes/manifests/etcd.yaml"])


class HealthWatch(Watch):
    """Asks the members' /health every 0.2 s while a run goes on; ``lost`` holds the answers that were not healthy."""

    def __init__(self, lab, nodes):
        super().__init__()
        self.lab, self.nodes, self.lost = lab, nodes, []

    def look(self):
        for node in self.nodes:
            answer = etcd_health(self.lab, node)
            if not answer or answer.get("health") != "true":
                self.lost.append((round(time.monotonic(), 1), node, answer))


def test_a_member_down_stops_the_renewal_before_any_change(lab, tmp_path):
    """kilo-cp3's etcd is down: restarting etcd on kilo-cp1 would leave 1 of 3 members. The run stops kilo-cp1 before
    its backup, names the member that is down, and changes nothing on any node; the cluster never loses quorum."""
    for node in NODES:
        wait_for(lambda node=node: healthy(lab, node), "%s's etcd to be healthy" % node, 60)
    keep_down(lab, "kilo-cp3")
    try:
        before = digest(lab, NODES)
        started = time.monotonic()
        with HealthWatch(lab, ["kilo-cp2"]) as watch:
            result = renew(lab, tmp_path, "-e", "verify_control_plane_retries=10", "-e", "restart_control_plane_timeout=30")
        print("renew.yml took %.0f s; kilo-cp2's etcd without quorum: %s" % (time.monotonic() - started, watch.lost[:5]))
        assert result.returncode != 0
        said = " ".join(result.stdout.split())
        assert ("etcd member kilo-cp3 (https://127.0.12.13:2379) does not answer: restarting etcd on kilo-cp1 would leave "
                "1 of 3 members, below quorum (2). Bring it back, then run renew.yml again." in said), said[-3000:]
        assert "Not renewing kilo-cp2: kilo-cp1 of cluster kilo failed first" in said
        assert not watch.lost, "the cluster lost quorum: %s" % watch.lost[:5]
        assert digest(lab, NODES) == before
    finally:
        bring_back(lab, "kilo-cp3")
    wait_for(lambda: healthy(lab, "kilo-cp3"), "kilo-cp3's etcd to be healthy again", 60)


def test_members_lost_during_the_transaction_fail_the_verification_and_roll_back(lab, tmp_path):
    """All three members answer when kilo-cp1's renewal starts; once its backup is being taken, kilo-cp2 and kilo-cp3
    go down. kilo-cp1's etcd restarts into a cluster without quorum: the wait after its restart says so and names the
    members that are down, and the node is restored from its backup (whose etcd, meeting the same cluster, fails the
    same way: the message says the files are back). Before, both ended on "Timeout when waiting for <node>:6443" of the
    apiserver restarted next, and the rollback's failure said "The node may be half renewed"."""
    node = "kilo-cp1"
    for member in NODES:
        wait_for(lambda member=member: healthy(lab, member), "%s's etcd to be healthy" % member, 60)
    before = digest(lab, [node])
    backups = lab.node_root(node) / "var/lib/kubepki/backups"
    taken = set(backups.iterdir()) if backups.exists() else set()
    stopped = threading.Event()

    def stop_peers_once_backing_up():
        while not stopped.is_set():
            if backups.exists() and set(backups.iterdir()) - taken:
                for peer in ("kilo-cp2", "kilo-cp3"):
                    lab.run_in_node(peer, ["mv", "/etc/kubernetes/manifests/etcd.yaml", "/" + PARKED])
                stopped.set()
            time.sleep(0.05)

    saboteur = threading.Thread(target=stop_peers_once_backing_up, daemon=True)
    saboteur.start()
    try:
        result = renew(lab, tmp_path, "-l", node, "-e", "verify_control_plane_retries=6",
                       "-e", "restart_control_plane_timeout=20")
    finally:
        stopped.set()
        saboteur.join()
        for peer in ("kilo-cp2", "kilo-cp3"):
            bring_back(lab, peer)
    assert result.returncode != 0
    said = " ".join(result.stdout.split())
    assert "etcd lost quorum" in said, said[-3000:]
    assert "kilo-cp2 (https://127.0.12.12:2379)" in said and "kilo-cp3 (https://127.0.12.13:2379)" in said
    # the rollback restores the files, then meets the same etcd: it says the node holds its previous certificates
    assert "and so did the rollback - Wait until etcd has quorum again: etcd lost quorum" in said
    assert "was restored (its previous certificates, kubeconfigs and manifests)" in said and "half renewed" not in said
    for member in NODES:
        wait_for(lambda member=member: healthy(lab, member), "%s's etcd to be healthy again" % member, 90)
    after = {k: v for k, v in digest(lab, [node]).items() if "var/lib/kubepki" not in k}
    assert after == {k: v for k, v in before.items() if "var/lib/kubepki" not in k}
