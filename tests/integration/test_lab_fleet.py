"""The default lab fleet with its services (tests/lab/nodes.py, supervisor.py, tools/): each scenario
serves what it should, the service tools act on the running components, and `down` leaves nothing.

Brings up tests/lab/fleet.yml (hooks included) with `lab.py up` into a tmp dir, checks served
certificates over TLS, runs the node tools over real SSH, then tears down. Needs root and the
default fleet's addresses (127.0.1.11-42) plus 127.0.0.1:6444 free: bring a default lab down first.
"""
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from labutil import ansible, cn, days_left, lab_cli, labmod, listening, served, ssh, wait_for

import pki  # tests/lab is on sys.path through labutil  # pylint: disable=wrong-import-order

ALPHA_CPS = {"alpha-cp1": "127.0.1.11", "alpha-cp2": "127.0.1.12", "alpha-cp3": "127.0.1.13"}
BRAVO, CHARLIE, DELTA = "127.0.1.21", {"charlie-cp1": "127.0.1.31", "charlie-w1": "127.0.1.32"}, "127.0.1.41"


@pytest.fixture(scope="module")
def fleet(lab_fleet):
    return lab_fleet


def test_check_playbook_over_ssh_reports_every_scenario(fleet, tmp_path):
    result = ansible(["ansible-playbook", "playbooks/check.yml", "-i", str(fleet.output / "inventory.ini"),
                      "-e", "report_dir=%s" % tmp_path])
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {(r["host"], r["id"]): r for r in json.loads((tmp_path / "kubepki-report.json").read_text())["certs"]}
    for node, address in ALPHA_CPS.items():
        assert rows[(node, "endpoint/%s:6443" % address)]["state"] == "warning"
        assert rows[(node, "kubeadm/apiserver")]["in_use"] is True
    assert rows[("bravo-cp1", "endpoint/%s:6443" % BRAVO)]["state"] == "expired"
    assert rows[("bravo-cp1", "kubeconfig/admin.conf")]["state"] == "expired"
    for node, address in CHARLIE.items():
        assert rows[(node, "endpoint/%s:10250" % address)]["state"] == "expired"
        assert (rows[(node, "kubelet/kubelet.crt")]["state"], rows[(node, "kubelet/kubelet.crt")]["in_use"]) == ("expired", True)
        assert rows[(node, "rke1/kube-node")]["state"] == "ok"
    assert rows[("delta-server", "endpoint/%s:6443" % DELTA)]["state"] == "expired"
    assert rows[("delta-server", "endpoint/%s:6443" % DELTA)]["subject"] == "CN=k3s,O=k3s"
    assert rows[("delta-server", "k3s/server/serving-kube-apiserver")]["state"] == "ok"
    assert rows[("delta-server", "k3s/server/client-admin")]["state"] == "ok"


def test_alpha_apiservers_serve_certs_expiring_within_20_days(fleet):
    for address in ALPHA_CPS.values():
        cert = served(address, 6443)
        assert cn(cert) == "kube-apiserver"
        assert 0 < days_left(cert) < 20, (address, cert.not_valid_after_utc)


def test_bravo_serves_expired_leaves_with_a_valid_ca(fleet):
    for port in (6443, 10250):
        assert days_left(served(BRAVO, port)) < -6
    ca = x509.load_pem_x509_certificate((fleet.node_root("bravo-cp1") / "etc/kubernetes/pki/ca.crt").read_bytes())
    assert days_left(ca) > 3000


def test_charlie_kubelet_serves_expired_self_signed_cert(fleet):
    for node, address in CHARLIE.items():
        cert = served(address, 10250)
        assert re.fullmatch(rf"{node}@\d{{10}}", cn(cert)), cn(cert)
        assert re.fullmatch(rf"{node}-ca@\d{{10}}", cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        assert days_left(cert) < 0
    assert days_left(served(CHARLIE["charlie-cp1"], 6443)) > 3000     # RKE's 10-year leaves


def test_delta_serves_expired_k3s_cert_while_its_files_are_fresh(fleet):
    cert = served(DELTA, 6443)
    assert cn(cert) == "k3s" and days_left(cert) < 0
    tls = fleet.node_root("delta-server") / "var/lib/rancher/k3s/server/tls"
    for name in ("client-admin.crt", "serving-kube-apiserver.crt", "client-supervisor.crt"):
        assert days_left(x509.load_pem_x509_certificate((tls / name).read_bytes())) > 120, name
    assert days_left(served("127.0.0.1", 6444)) > 120
    assert days_left(served("127.0.1.42", 10250)) > 300        # the agent re-issued its certs at start
    res = ssh(fleet, "delta-server", "kubectl -n kube-system get secret k3s-serving", check=False)
    assert res.returncode != 0 and "x509: certificate has expired" in res.stderr, res.stderr


def test_alpha_etcd_members_are_healthy(fleet):
    pki_dir = "/etc/kubernetes/pki/etcd"
    etcdctl = (f"etcdctl --endpoints={','.join(f'https://{a}:2379' for a in ALPHA_CPS.values())} "
               f"--cacert={pki_dir}/ca.crt --cert={pki_dir}/healthcheck-client.crt --key={pki_dir}/healthcheck-client.key")
    health = ssh(fleet, "alpha-cp1", etcdctl + " endpoint health")
    assert (health.stdout + health.stderr).count("is healthy") == 3, health.stdout + health.stderr  # etcdctl prints to stderr
    members = ssh(fleet, "alpha-cp1", etcdctl + " member list").stdout.splitlines()
    assert sorted(line.split(", ")[2] for line in members) == sorted(ALPHA_CPS)
    assert all(", started, " in line for line in members)


def test_kubectl_with_admin_conf(fleet):
    ok = subprocess.run(["kubectl", "--kubeconfig", str(fleet.node_root("alpha-cp1") / "etc/kubernetes/admin.conf"),
                         "get", "namespaces"], capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "kube-system" in ok.stdout, ok.stderr
    expired = subprocess.run(["kubectl", "--kubeconfig", str(fleet.node_root("bravo-cp1") / "etc/kubernetes/admin.conf"),
                              "get", "namespaces"], capture_output=True, text=True, timeout=60, check=False)
    assert expired.returncode != 0 and "x509: certificate has expired" in expired.stderr, expired.stderr


def test_kubeadm_clusters_hold_what_kubeadm_of_their_line_made(fleet):
    """alpha stands for v1.31: its kubeadm, super-admin.conf, the kubeadm:cluster-admins binding and a v1beta4
    kubeadm-config; bravo for v1.28: its kubeadm has no super-admin.conf subcommand and fails it as v1.28 does."""
    kubectl = ["kubectl", "--kubeconfig", str(fleet.node_root("alpha-cp1") / "etc/kubernetes/admin.conf")]
    binding = subprocess.run(kubectl + ["get", "clusterrolebinding", "kubeadm:cluster-admins", "-o", "json"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert binding.returncode == 0, binding.stderr
    assert json.loads(binding.stdout)["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                                      "name": "kubeadm:cluster-admins"}]
    config = subprocess.run(kubectl + ["-n", "kube-system", "get", "cm", "kubeadm-config", "-o", "jsonpath={.data.ClusterConfiguration}"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert "apiVersion: kubeadm.k8s.io/v1beta4" in config.stdout and "certificateValidityPeriod: 8760h0m0s" in config.stdout
    assert (fleet.node_root("alpha-cp1") / "etc/kubernetes/super-admin.conf").exists()
    assert not (fleet.node_root("bravo-cp1") / "etc/kubernetes/super-admin.conf").exists()

    assert ssh(fleet, "alpha-cp1", "kubeadm version -o short").stdout == "v1.31.4\n"
    assert ssh(fleet, "bravo-cp1", "kubeadm version -o short").stdout == "v1.28.15\n"
    assert "super-admin.conf" in ssh(fleet, "alpha-cp1", "kubeadm certs renew --help").stdout
    assert "super-admin.conf" not in ssh(fleet, "bravo-cp1", "kubeadm certs renew --help").stdout
    old = ssh(fleet, "bravo-cp1", "kubeadm certs renew super-admin.conf --cert-dir /etc/kubernetes/pki", check=False)
    assert old.returncode == 1 and old.stderr.startswith("unknown flag: --cert-dir\n"), old


def scheduler_pid(lab):
    res = ssh(lab, "alpha-cp2", "id=$(crictl ps --name kube-scheduler -q); [ -z \"$id\" ] || crictl inspect $id", check=False)
    if res.returncode and "code = NotFound" in res.stderr:
        return 0        # removed between `ps` and `inspect`: it has stopped
    assert res.returncode == 0, f"alpha-cp2: crictl: {res.stdout}{res.stderr}"
    found = re.search(r'"pid": (\d+)', res.stdout)
    return int(found.group(1)) if found else 0


def test_moving_a_manifest_out_stops_the_static_pod_and_back_starts_it(fleet):
    before = scheduler_pid(fleet)
    assert before and listening("127.0.1.12", 10259)
    ssh(fleet, "alpha-cp2", "mv /etc/kubernetes/manifests/kube-scheduler.yaml /etc/kubernetes/")
    wait_for(lambda: not scheduler_pid(fleet) and not listening("127.0.1.12", 10259), "kube-scheduler to stop")
    assert not os.path.exists(f"/proc/{before}/cmdline") or "kube-scheduler" not in Path(f"/proc/{before}/cmdline").read_text()
    ssh(fleet, "alpha-cp2", "mv /etc/kubernetes/kube-scheduler.yaml /etc/kubernetes/manifests/")
    after = wait_for(lambda: listening("127.0.1.12", 10259) and scheduler_pid(fleet), "kube-scheduler to start")
    assert after != before


def test_systemctl_restart_k3s_keeps_serving_the_stored_secret(fleet):
    def main_pid():
        return int(ssh(fleet, "delta-server", "systemctl show k3s -p MainPID").stdout.strip().split("=")[1])
    before, served_before = main_pid(), served(DELTA, 6443).serial_number
    ssh(fleet, "delta-server", "systemctl restart k3s")
    assert ssh(fleet, "delta-server", "systemctl is-active k3s").stdout.strip() == "active"
    assert main_pid() not in (0, before)
    wait_for(lambda: listening(DELTA, 6443), "k3s to listen again")
    assert served(DELTA, 6443).serial_number == served_before    # the seed-003 bug: restart renews only files


def test_docker_restart_kubelet(fleet):
    def pid():
        return int(ssh(fleet, "charlie-cp1", "docker inspect --format '{{.State.Pid}}' kubelet").stdout)
    before = pid()
    assert ssh(fleet, "charlie-cp1", "docker restart kubelet").stdout.strip() == "kubelet"
    assert pid() not in (0, before)
    assert "kubelet" in ssh(fleet, "charlie-cp1", "docker ps --format '{{.Names}}'").stdout.split()
    wait_for(lambda: listening(CHARLIE["charlie-cp1"], 10250), "the kubelet to listen again")
    assert days_left(served(CHARLIE["charlie-cp1"], 10250)) < 0       # same self-signed cert until it is deleted


def replace_kubelet_crt(fleet, node):
    """A new self-signed kubelet.crt/.key put in place as an operator would (key first, atomic renames)."""
    leaf, ca = pki.self_signed_serving(node, pki.utc())
    pki_dir = fleet.node_root(node) / "var/lib/kubelet/pki"
    for name, data, mode in (("kubelet.key", pki.key_pem(leaf.key), 0o600), ("kubelet.crt", pki.cert_pem(leaf.cert, ca.cert), 0o644)):
        temp = pki_dir / (name + ".new")
        temp.write_bytes(data)
        temp.chmod(mode)
        os.replace(temp, pki_dir / name)
    return leaf.cert.fingerprint(hashes.SHA256())


def test_kubelet_v131_reloads_its_serving_file_and_v128_reads_it_once(fleet):
    """corrections.md §2: ReloadKubeletServerCertificateFile (v1.31+) against the read-once v1.28 kubelet."""
    v131, v128 = ("alpha-w1", "127.0.1.14"), ("bravo-cp1", BRAVO)
    assert ssh(fleet, v131[0], "kubelet --version").stdout.strip() == "Kubernetes v1.31.4"
    assert ssh(fleet, v128[0], "kubelet --version").stdout.strip() == "Kubernetes v1.28.15"
    new = {node: replace_kubelet_crt(fleet, node) for node, _address in (v131, v128)}
    wait_for(lambda: served(v131[1], 10250).fingerprint(hashes.SHA256()) == new[v131[0]], "the v1.31 kubelet to reload", 15)
    time.sleep(3)
    assert served(v128[1], 10250).fingerprint(hashes.SHA256()) != new[v128[0]]
    ssh(fleet, v128[0], "systemctl restart kubelet")
    wait_for(lambda: listening(v128[1], 10250) and served(v128[1], 10250).fingerprint(hashes.SHA256()) == new[v128[0]],
             "the restarted v1.28 kubelet to serve the new file")


def test_kubelet_serves_a_leftover_server_current_pem_only_with_server_tls_bootstrap(fleet):
    """corrections.md §2: without serverTLSBootstrap, kubelet-server-current.pem is not what :10250 serves."""
    node, address = "alpha-w1", "127.0.1.14"
    pki_dir = fleet.node_root(node) / "var/lib/kubelet/pki"
    leaf, ca = pki.self_signed_serving(node, pki.utc())
    (pki_dir / "kubelet-server-current.pem").write_bytes(pki.cert_pem(leaf.cert, ca.cert) + pki.key_pem(leaf.key))
    leftover = leaf.cert.fingerprint(hashes.SHA256())
    config = fleet.node_root(node) / "var/lib/kubelet/config.yaml"
    original = config.read_text()
    try:
        ssh(fleet, node, "systemctl restart kubelet")
        wait_for(lambda: listening(address, 10250), "the kubelet to listen again")
        assert served(address, 10250).fingerprint(hashes.SHA256()) != leftover
        config.write_text(original + "serverTLSBootstrap: true\n")
        ssh(fleet, node, "systemctl restart kubelet")
        wait_for(lambda: listening(address, 10250) and served(address, 10250).fingerprint(hashes.SHA256()) == leftover,
                 "the kubelet to serve kubelet-server-current.pem")
    finally:
        config.write_text(original)
        (pki_dir / "kubelet-server-current.pem").unlink()
        ssh(fleet, node, "systemctl restart kubelet")


def test_kubelets_renew_their_node_lease_with_their_client_cert(fleet):
    """The lab kubelet renews kube-node-lease/<node> as the real one does; bravo's expired client cert cannot."""
    admin = str(fleet.node_root("alpha-cp1") / "etc/kubernetes/admin.conf")
    leases = subprocess.run(["kubectl", "--kubeconfig", admin, "get", "leases", "-n", "kube-node-lease", "-o", "json"],
                            capture_output=True, text=True, timeout=60, check=True)
    holders = {item["metadata"]["name"]: item["spec"]["holderIdentity"] for item in json.loads(leases.stdout)["items"]}
    assert holders == {n: n for n in ("alpha-cp1", "alpha-cp2", "alpha-cp3", "alpha-w1")}
    log = (fleet.node_root("bravo-cp1") / "var/log/kubepki-lab/kubelet.log").read_text()
    assert "Failed to update lease" in log and "certificate has expired" in log


def test_k3s_serves_a_fresh_cert_once_secret_and_cache_are_gone(fleet):
    ssh(fleet, "delta-server", "sqlite3 /var/lib/rancher/k3s/server/db/state.db "
                               "\"DELETE FROM kine WHERE name = '/registry/secrets/kube-system/k3s-serving'\" && "
                               "rm /var/lib/rancher/k3s/server/tls/dynamic-cert.json && systemctl restart k3s")
    cert = wait_for(lambda: listening(DELTA, 6443) and served(DELTA, 6443), "k3s to listen again")
    assert cn(cert) == "k3s" and days_left(cert) > 360
    fingerprint = ssh(fleet, "delta-server", "kubectl -n kube-system get secret k3s-serving "
                                             "-o jsonpath='{.metadata.annotations.listener\\.cattle\\.io/fingerprint}'").stdout
    assert fingerprint == "SHA1=" + cert.fingerprint(hashes.SHA1()).hex().upper()


def test_down_leaves_nothing(fleet):
    started = time.monotonic()
    res = lab_cli("down", "--output", str(fleet.output))
    print(f"lab down: {time.monotonic() - started:.1f}s")
    assert res.returncode == 0, res.stderr
    assert labmod.find_node_namespaces(fleet.output) == {}
    ss = subprocess.run(["ss", "-Htln"], capture_output=True, text=True, check=True).stdout
    left = [line for line in ss.splitlines() if re.search(r"127\.0\.1\.\d+:|127\.0\.0\.1:6444\b", line)]
    assert not left, left
