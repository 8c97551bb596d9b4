# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The kubeadm method against the lab's kubeadm (tests/lab/tools/kubeadm.py, modelled per release line on
cmd/kubeadm's certs.go and renewal manager), run on generated trees through its --rootfs."""

from __future__ import annotations

import base64
import datetime
import os
import shutil
import stat
import subprocess
import sys

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from ansible_collections.kubepki.fleet.plugins.module_utils import _kubeadm, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError
from ansible_collections.kubepki.fleet.tests.lab import pki
from ansible_collections.kubepki.fleet.tests.unit import keytypes

STAND_IN = os.path.join(os.path.dirname(pki.__file__), "tools", "kubeadm.py")
STYLES = {"v1.28.15": "v1.28", "v1.31.4": "current"}
DAY = datetime.timedelta(days=1)


def runner(root):
    """``module.run_command`` for the lab kubeadm chrooted (--rootfs) into ``root``."""
    def run(argv):
        assert argv[0] == "kubeadm"
        res = subprocess.run([sys.executable, STAND_IN] + argv[1:] + ["--rootfs", str(root)], capture_output=True,
                             text=True, timeout=120, check=False)
        return res.returncode, res.stdout, res.stderr
    return run


def tree(tmp_path, kubeadm_version, style=None, super_admin=False, validity_hours=None, name="cp1"):
    """A kubeadm init node expiring in 10 days, with the given kubeadm on it; the cluster's certs
    ``validity_hours`` long when set (v1beta4 certificateValidityPeriod)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    profile = pki.KUBEADM_STYLES[style or STYLES[kubeadm_version]]
    if validity_hours:
        profile = pki.dataclasses.replace(profile, leaf_lifetime=validity_hours * pki.HOUR)
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - 400 * DAY, style=style or STYLES[kubeadm_version])
    cluster.profile = profile
    root = tmp_path / name
    pki.build_kubeadm_control_plane(root, cluster, name, "10.0.0.11", now=now, init_node=True,
                                    leaf_issued_at=profile.issued_for(now, expires_in_days=10))
    if super_admin and not (root / "etc/kubernetes/super-admin.conf").exists():
        shutil.copy2(root / "etc/kubernetes/admin.conf", root / "etc/kubernetes/super-admin.conf")
    (root / "run/kubepki-lab").mkdir(parents=True)
    (root / "run/kubepki-lab/kubeadm-version").write_text(kubeadm_version + "\n")
    return root, now


def renew(root, now, names=None, configured=None, config=None, config_path=None):
    fs = NodeFS(str(root))
    cli = _kubeadm.KubeadmCli(runner(root))
    due, _skipped = _kubeadm.plan(fs, now, 30, names=names, configured_validity=configured)
    cli.route(due, configured, config or {}, config_path)
    renewed = []
    try:
        _kubeadm.apply(fs, due, now, renewed, cli)
    except CertError as exc:
        return due, renewed, exc
    return due, renewed, None


def test_version_and_handles_come_from_the_node_kubeadm(tmp_path):
    old, _now = tree(tmp_path, "v1.28.15", name="old")
    new, _now = tree(tmp_path, "v1.31.4", name="new")
    v128, v131 = _kubeadm.KubeadmCli(runner(old)), _kubeadm.KubeadmCli(runner(new))
    assert (v128.version, v131.version) == ((1, 28), (1, 31))
    assert "super-admin.conf" not in v128.handles and "super-admin.conf" in v131.handles
    assert {"apiserver", "admin.conf", "etcd-peer"} <= v128.handles and "all" not in v128.handles


def test_v128_kubeadm_is_never_asked_for_super_admin_conf(tmp_path):
    """Before: `kubeadm certs renew super-admin.conf --cert-dir ...` on v1.28 failed with "unknown flag" after the
    certs before it were renewed."""
    root, now = tree(tmp_path, "v1.28.15", style="current", super_admin=True)
    due, renewed, error = renew(root, now)
    assert error is None, error
    methods = {r["name"]: (r["method"], r["method_reason"]) for r in renewed}
    assert methods["super-admin.conf"] == ("native", "kubeadm v1.28.15 has no `certs renew super-admin.conf`")
    assert {n for n, (m, _r) in methods.items() if m == "kubeadm"} == set(_kubeadm.RENEWABLE) - {"super-admin.conf"}
    for item in due:
        assert _x509.not_after(item.new_cert) > now + 300 * DAY, item.name


def test_half_written_pair_is_reported_as_written(tmp_path):
    root, now = tree(tmp_path, "v1.31.4")
    (root / "run/kubepki-lab/kubeadm-fault").write_text("apiserver-kubelet-client\n")
    key_before = (root / "etc/kubernetes/pki/apiserver-kubelet-client.key").read_bytes()
    _due, renewed, error = renew(root, now)
    assert error is not None and "no space left on device" in str(error)
    assert "kubeadm certs renew apiserver-kubelet-client" in str(error)
    names = [r["name"] for r in renewed]
    # sorted renewal order: admin.conf, apiserver, apiserver-etcd-client, then the failure
    assert names[:2] == ["admin.conf", "apiserver"] and names[-1] == "apiserver-kubelet-client"
    partial = renewed[-1]
    assert partial["partial"] == "kubeadm failed after writing /etc/kubernetes/pki/apiserver-kubelet-client.key"
    assert partial["new_serial"] is None
    assert (root / "etc/kubernetes/pki/apiserver-kubelet-client.key").read_bytes() != key_before


def test_kubeadm_that_renews_nothing_is_a_failure(tmp_path):
    root, now = tree(tmp_path, "v1.31.4")
    os.remove(root / "etc/kubernetes/pki/front-proxy-ca.key")
    fs = NodeFS(str(root))
    item = next(i for i in _kubeadm.inventory(fs)[0] if i.name == "front-proxy-client")
    with pytest.raises(CertError) as caught:
        _kubeadm.KubeadmCli(runner(root)).renew(fs, item)
    assert "renewed nothing" in str(caught.value) and "Detected external front-proxy-ca" in str(caught.value)
    assert caught.value.written == []


def test_three_year_cluster_keeps_three_years(tmp_path):
    """kubeadm issues one year unless it is given the cluster's certificateValidityPeriod: without the config the
    certs go native (keeping their lifetime), with it kubeadm v1.31 issues three years itself."""
    root, now = tree(tmp_path, "v1.31.4", validity_hours=26280)
    config = {"kind": "ClusterConfiguration", "certificateValidityPeriod": "26280h0m0s"}
    config_file = root / "etc/kubernetes/kubeadm-config.yaml"
    config_file.write_text(yaml.safe_dump(dict(config, apiVersion="kubeadm.k8s.io/v1beta4")))

    without = tmp_path / "without"
    shutil.copytree(root, without, symlinks=True)
    _due, renewed, error = renew(without, now, names=["apiserver"])
    assert error is None and renewed[0]["method"] == "native"
    assert "would issue 365 days, not the 1095 planned" in renewed[0]["method_reason"]
    assert round(renewed[0]["new_lifetime_days"]) == 1095

    configured = _kubeadm.certificate_validity_period(config, str(config_file))
    _due, renewed, error = renew(root, now, names=["apiserver"], configured=configured, config=config,
                                 config_path="/etc/kubernetes/kubeadm-config.yaml")
    assert error is None and renewed[0]["method"] == "kubeadm"
    assert round(renewed[0]["new_lifetime_days"]) == 1095


def _described(root, item):
    if item.kind == "file":
        cert = x509.load_pem_x509_certificate((root / item.path.lstrip("/")).read_bytes())
        modes = tuple(stat.S_IMODE(os.stat(root / p.lstrip("/")).st_mode) for p in (item.path, item.key_path))
    else:
        conf = yaml.safe_load((root / item.path.lstrip("/")).read_text())
        user = next(u["user"] for u in conf["users"] if u["name"] == conf["contexts"][0]["context"]["user"])
        cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
        modes = (stat.S_IMODE(os.stat(root / item.path.lstrip("/")).st_mode),)

    def ext(oid):
        try:
            return cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            return None
    return {"subject": cert.subject, "issuer": cert.issuer, "sans": ext(ExtensionOID.SUBJECT_ALTERNATIVE_NAME),
            "key_usage": ext(ExtensionOID.KEY_USAGE), "eku": ext(ExtensionOID.EXTENDED_KEY_USAGE),
            "basic_constraints": ext(ExtensionOID.BASIC_CONSTRAINTS),
            "key": _x509.key_type(cert.public_key()), "modes": modes}, _x509.not_after(cert)


@pytest.mark.parametrize("version", ["v1.28.15", "v1.31.4"])
def test_kubeadm_and_native_issue_equivalent_certs(tmp_path, version):
    """Same tree, both methods: same subject, SANs, usages, issuer, key type and file modes, and NotAfter within
    the minutes between the runs. (NotBefore differs by design before v1.31: kubeadm pins it to the CA's, which
    inflates the lifetime; native backdates five minutes, as kubeadm v1.31+ does.)"""
    root, now = tree(tmp_path, version, name="kubeadm")
    native = tmp_path / "native"
    shutil.copytree(root, native, symlinks=True)
    by_kubeadm, renewed, error = renew(root, now)
    assert error is None and {r["method"] for r in renewed if r["name"] != "kubelet.conf"} == {"kubeadm"}
    fs = NodeFS(str(native))
    by_native, _skipped = _kubeadm.plan(fs, now, 30)
    _kubeadm.apply(fs, by_native, now)
    for k_item, n_item in zip(by_kubeadm, by_native):
        assert k_item.name == n_item.name
        if k_item.kind == "kubelet-conf":
            continue
        k_desc, k_after = _described(root, k_item)
        n_desc, n_after = _described(native, n_item)
        assert k_desc == n_desc, k_item.name
        assert abs(k_after - n_after) < datetime.timedelta(minutes=10), k_item.name


def test_a_v1beta4_config_is_not_given_to_a_kubeadm_that_cannot_read_it(tmp_path):
    root, _now = tree(tmp_path, "v1.28.15")
    config = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration"}
    cli = _kubeadm.KubeadmCli(runner(root))
    cli.route([], None, config, "/etc/kubernetes/kubeadm-config.yaml")
    assert cli.config_path is None
    cli.route([], None, dict(config, apiVersion="kubeadm.k8s.io/v1beta3"), "/etc/kubernetes/kubeadm-config.yaml")
    assert cli.config_path == "/etc/kubernetes/kubeadm-config.yaml"


PLANNED_KEYS = ("name", "method", "method_reason", "key_type", "new_key_type")


@pytest.mark.parametrize("kind", sorted(keytypes.RENEWED))
def test_the_kubeadm_method_plans_what_it_does_with_a_key_type_kubeadm_never_issues(tmp_path, kind):
    """kubeadm would give such a cert its own key type, so it goes native, keeping its type, in the plan as in the run
    (the types no component can use are refused by the plan both methods share: modules/test_kubeadm_renew.py)."""
    root, now = tree(tmp_path, "v1.31.4")
    keytypes.give_key(root, "apiserver", kind)
    fs = NodeFS(str(root))
    cli = _kubeadm.KubeadmCli(runner(root))
    due, _skipped = _kubeadm.plan(fs, now, 30, names=["apiserver", "admin.conf"])
    cli.route(due, None, {})
    plan = [{k: r[k] for k in PLANNED_KEYS} for r in _kubeadm.planned(due, now)]
    renewed = [{k: r[k] for k in PLANNED_KEYS} for r in _kubeadm.apply(fs, due, now, kubeadm=cli)]
    assert plan == renewed
    assert renewed[1] == {"name": "apiserver", "method": "native", "key_type": kind, "new_key_type": kind,
                          "method_reason": "kubeadm v1.31.4 would make a RSA-2048 key; the certificate has %s" % kind}
    assert renewed[0]["method"] == "kubeadm" and renewed[0]["new_key_type"] == "RSA-2048"


@pytest.mark.parametrize("version, algorithm", [((1, 31), "ECDSA-P521"), ((1, 31), "Ed25519"), ((1, 31), "RSA-8192"),
                                                ((1, 31), "ECDSA-P384"), ((1, 34), "RSA-1024")])
def test_a_configured_key_type_kubeadm_does_not_issue_is_refused_before_anything_is_routed(tmp_path, version, algorithm):
    """kubeadm refuses such a configuration, whatever the cert. Before, a cert of that very type was routed to
    `kubeadm certs renew --config`, which the plan promised and the run failed."""
    root, now = tree(tmp_path, "v%d.%d.4" % version, style="current")
    config = {"apiVersion": "kubeadm.k8s.io/v1beta4", "kind": "ClusterConfiguration", "encryptionAlgorithm": algorithm}
    due, _skipped = _kubeadm.plan(NodeFS(str(root)), now, 30, names=["apiserver"])
    cli = _kubeadm.KubeadmCli(runner(root))
    with pytest.raises(CertError) as caught:
        cli.route(due, None, config, "/etc/kubernetes/kubeadm-config.yaml")
    assert str(caught.value).startswith("encryptionAlgorithm %r is not one kubeadm v%d.%d issues (RSA-2048, ECDSA-P256, "
                                        "RSA-3072, RSA-4096" % ((algorithm,) + version))
    assert due[0].method == "native" and due[0].method_reason is None  # not routed


def test_ecdsa_p384_is_kubeadms_from_v1_34():
    config = {"encryptionAlgorithm": "ECDSA-P384"}
    assert _kubeadm.configured_key_type(config, (1, 34)) == "ECDSA-P384"
    with pytest.raises(CertError, match="not one kubeadm v1.33 issues"):
        _kubeadm.configured_key_type(config, (1, 33))


def test_a_ca_key_kubeadm_cannot_load_sends_its_certs_native(tmp_path):
    """kubeadm loads only RSA and ECDSA CA keys (pkiutil TryLoadKeyFromDisk): with an Ed25519 front-proxy-ca, `kubeadm
    certs renew front-proxy-client` fails; before, the plan routed it there all the same."""
    root, now = tree(tmp_path, "v1.31.4")
    keytypes.give_key(root, "front-proxy-ca", "Ed25519", signer="front-proxy-ca")
    keytypes.give_key(root, "front-proxy-client", signer="front-proxy-ca")
    due, renewed, error = renew(root, now, names=["front-proxy-client", "apiserver"])
    assert error is None
    assert [(r["name"], r["method"], r["method_reason"]) for r in renewed] == [
        ("apiserver", "kubeadm", "kubeadm v1.31.4 certs renew apiserver"),
        ("front-proxy-client", "native", "kubeadm loads only RSA and ECDSA CA keys (pkiutil TryLoadKeyFromDisk); "
                                         "CA front-proxy-ca has Ed25519")]
    assert _x509.signed_by(due[1].new_cert, x509.load_pem_x509_certificate((root / "etc/kubernetes/pki/front-proxy-ca.crt").read_bytes()))
