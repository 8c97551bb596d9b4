# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Real ansible and ansible-playbook runs of cert_facts and check.yml over generated node trees."""

from __future__ import annotations

import datetime
import json
import os
import sys

import pytest
from cryptography import x509

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
import pki  # noqa: E402  pylint: disable=wrong-import-position
from labutil import ansible  # noqa: E402  pylint: disable=wrong-import-position

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
DAY = datetime.timedelta(days=1)
CHECK_EXPIRATION = {
    "admin.conf": "ca", "apiserver": "ca", "apiserver-etcd-client": "etcd-ca", "apiserver-kubelet-client": "ca",
    "controller-manager.conf": "ca", "etcd-healthcheck-client": "etcd-ca", "etcd-peer": "etcd-ca",
    "etcd-server": "etcd-ca", "front-proxy-client": "front-proxy-ca", "scheduler.conf": "ca", "super-admin.conf": "ca",
    "ca": "ca", "etcd-ca": "etcd-ca", "front-proxy-ca": "front-proxy-ca",
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three sample nodes: kubeadm expiring in 20 days, kubeadm expired a week ago, k3s with a stale served cert."""
    root = tmp_path_factory.mktemp("fleet")
    alpha = pki.kubeadm_cluster(NOW, ca_issued_at=NOW - 400 * DAY)
    pki.build_kubeadm_control_plane(root / "alpha-cp1", alpha, "alpha-cp1", "10.0.0.11", now=NOW, init_node=True,
                                    leaf_issued_at=NOW - 345 * DAY)
    bravo = pki.kubeadm_cluster(NOW, ca_issued_at=NOW - 800 * DAY, style="v1.28")
    pki.build_kubeadm_control_plane(root / "bravo-cp1", bravo, "bravo-cp1", "10.0.1.11", now=NOW, init_node=True,
                                    leaf_issued_at=NOW - 372 * DAY)
    delta = pki.k3s_cluster("k3s", NOW, ca_issued_at=NOW - 500 * DAY)
    pki.build_k3s_server(root / "delta-server", delta, "delta-server", "10.0.3.11", now=NOW,
                         serving_issued_at=NOW - 400 * DAY)
    inventory = root / "inventory.ini"
    inventory.write_text("\n".join(
        ["[demo]"]
        + ["%s kubepki_cluster=%s kubepki_rootfs=%s" % (n, n.split("-", maxsplit=1)[0], root / n) for n in ("alpha-cp1", "bravo-cp1", "delta-server")]
        + ["[demo:vars]", "ansible_connection=local", "ansible_python_interpreter=%s" % sys.executable,
           "kubepki_probe=false", "kubepki_become=false", ""]))
    return root


def test_ad_hoc_cert_facts_matches_kubeadm_check_expiration(fleet):
    """The acceptance check: every check-expiration row, same expiry and CA, plus what kubeadm omits."""
    tree = fleet / "alpha-cp1"
    out = fleet / "adhoc"
    result = ansible(["ansible", "localhost", "-m", "kubepki.fleet.cert_facts", "-a", "rootfs=%s probe=false" % tree,
                      "-e", "ansible_python_interpreter=%s" % sys.executable, "--tree", str(out)])
    assert result.returncode == 0, result.stdout + result.stderr
    facts = json.loads((out / "localhost").read_text())["ansible_facts"]["kubepki"]
    rows = {e["name"]: e for e in facts["certs"] if e["distribution"] == "kubeadm"}
    for name, ca in CHECK_EXPIRATION.items():
        if name.endswith(".conf"):
            continue
        base = name.replace("etcd-", "etcd/", 1) if name.startswith("etcd-") else name
        path = tree / ("etc/kubernetes/pki/%s.crt" % base)
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        assert rows[name]["not_after"] == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"), name
    assert {name: rows[name]["ca"] for name in CHECK_EXPIRATION} == CHECK_EXPIRATION
    ids = {e["id"] for e in facts["certs"]}
    assert {"kubeconfig/kubelet.conf", "kubelet/kubelet-client-current.pem", "kubelet/kubelet.crt"} <= ids


def test_check_playbook_writes_the_four_outputs(fleet):
    report = fleet / "report"
    result = ansible(["ansible-playbook", "playbooks/check.yml", "-i", str(fleet / "inventory.ini"), "-e", "report_dir=%s" % report])
    assert result.returncode == 0, result.stdout + result.stderr
    # The table, soonest first: bravo's expired leaves come before alpha's expiring ones.
    table = [line for line in result.stdout.splitlines() if "kubeadm/apiserver " in line]
    assert [line.split()[1] for line in table] == ["bravo-cp1", "alpha-cp1"]
    assert "expired" in table[0] and "warning" in table[1]

    document = json.loads((report / "kubepki-report.json").read_text())
    states = {(c["host"], c["id"]): c["state"] for c in document["certs"]}
    assert states[("delta-server", "k3s/server/dynamic-cert.json")] == "expired"
    assert states[("delta-server", "k3s/server/serving-kube-apiserver")] == "ok"
    assert states[("bravo-cp1", "kubeconfig/admin.conf")] == "expired"
    assert "PRIVATE KEY" not in (report / "kubepki-report.json").read_text()

    markdown = (report / "kubepki-report.md").read_text()
    assert "| bravo-cp1 |" in markdown.replace("  ", " ")

    metrics = (report / "kubepki.prom").read_text().splitlines()
    expired = [m for m in metrics if m.startswith("x509_cert_expired{") and 'cert_id="kubeadm/apiserver"' in m]
    assert sorted(m.rsplit(" ", 1)[1] for m in expired) == ["0", "1"]
    assert any(m.startswith("# TYPE x509_cert_not_after gauge") for m in metrics)


def test_fail_under_days_and_query(fleet):
    report = fleet / "report-query"
    result = ansible(["ansible-playbook", "playbooks/check.yml", "-i", str(fleet / "inventory.ini"), "-e", "report_dir=%s" % report,
                      "-e", json.dumps({"report_fail_under_days": 30, "report_query": "[?cluster=='alpha' && state!='ok']"})])
    assert result.returncode != 0
    assert "renew" in result.stdout
    document = json.loads((report / "kubepki-report.json").read_text())
    assert document["certs"] and {c["cluster"] for c in document["certs"]} == {"alpha"}
    assert all(c["state"] != "ok" for c in document["certs"])


def test_check_mode_run_changes_no_node(fleet):
    before = {p: p.stat().st_mtime_ns for p in (fleet / "alpha-cp1").rglob("*") if p.is_file()}
    result = ansible(["ansible-playbook", "playbooks/check.yml", "--check", "-i", str(fleet / "inventory.ini"),
                      "-e", "report_dir=%s" % (fleet / "report-check")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert before == {p: p.stat().st_mtime_ns for p in (fleet / "alpha-cp1").rglob("*") if p.is_file()}
