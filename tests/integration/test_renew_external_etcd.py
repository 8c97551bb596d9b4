"""renew.yml on a kubeadm control plane whose etcd is external (kubeadm's etcd.external: an etcd with its own CA,
whose ca.crt and an apiserver-etcd-client pair the user copied into /etc/kubernetes/pki): kubeadm's own certs are
renewed and in use, the etcd client material is left to its owner, and a failed renewal rolls back cleanly.

Its own lab (echo, kubeadm v1.31 with a three-year certificateValidityPeriod, leaves expiring in 17 days) on
127.0.5.11, beside the default fleet. The tests run in file order on one lab.
"""
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes

from labutil import ansible, days_left, listening, own_lab, scheduler_that_never_comes_back, served, tree_digest, wait_for

NODE, ADDRESS = "echo-cp1", "127.0.5.11"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    echo = {"name": "echo", "distribution": "kubeadm", "scenario": "expiring_20d", "etcd": "external",
            "certificate_validity_hours": 26280,
            "nodes": [{"name": NODE, "role": "control-plane", "address": ADDRESS}]}
    yield from own_lab(tmp_path_factory, [echo], [(ADDRESS, 22)])


def renew(lab, tmp_path, *args):
    result = ansible(["ansible-playbook", "playbooks/renew.yml", "-i", str(lab.output / "inventory.ini"),
                      "-e", "report_dir=%s" % (tmp_path / "report"), *args])
    print(result.stdout[-3000:])
    return result


def etcd_client(lab):
    return (lab.node_root(NODE) / "etc/kubernetes/pki/apiserver-etcd-client.crt").read_bytes()


def kubectl_works(lab):
    res = subprocess.run(["kubectl", "--kubeconfig", str(lab.node_root(NODE) / "etc/kubernetes/admin.conf"), "get", "ns"],
                         capture_output=True, text=True, timeout=60, check=False)
    return res.returncode == 0 and "kube-system" in res.stdout


def test_kubeadm_certs_renewed_and_the_external_etcd_client_left_to_its_owner(lab, tmp_path):
    assert wait_for(lambda: kubectl_works(lab), "the apiserver to answer through the external etcd", 60)
    client_before = etcd_client(lab)
    old = served(ADDRESS, 6443).fingerprint(hashes.SHA256())
    result = renew(lab, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # A three-year cluster gets three-year certs back: kubeadm, told nothing, would issue one year, so they go native.
    assert "apiserver: expires" in result.stdout and "(lifetime 1095 -> 1095 days) natively: kubeadm v1.31.4 would issue 365 days" in result.stdout
    assert served(ADDRESS, 6443).fingerprint(hashes.SHA256()) != old and days_left(served(ADDRESS, 6443)) > 1090
    assert etcd_client(lab) == client_before
    assert kubectl_works(lab)
    report = (tmp_path / "report" / "kubepki-report.json").read_text()
    assert '"kubeadm/apiserver-etcd-client"' in report


def test_failed_renewal_rolls_back_without_touching_etcd(lab, tmp_path):
    """A scheduler that never comes back on the new kubeconfig: the node is restored; the rollback restarts
    what the renewal restarted, and there is no etcd static pod to restart (it used to fail: 'No first item')."""
    before = tree_digest([lab.node_root(NODE) / "etc/kubernetes"], lab.output)
    with scheduler_that_never_comes_back(lab.node_root(NODE)):
        result = renew(lab, tmp_path, "-e", "kubepki_force=true", "-e", "restart_control_plane_timeout=20",
                       "-e", "verify_control_plane_retries=10")
    assert result.returncode != 0
    assert "It was rolled back" in result.stdout and "No first item" not in result.stdout
    wait_for(lambda: listening(ADDRESS, 10259), "the scheduler to listen again")
    assert tree_digest([lab.node_root(NODE) / "etc/kubernetes"], lab.output) == before
    wait_for(lambda: kubectl_works(lab), "the apiserver to answer again", 60)
