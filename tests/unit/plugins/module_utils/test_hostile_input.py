# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Hostile or broken node files: links out of rootfs, FIFOs and devices, huge files."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat

import pytest

from ansible_collections.kubepki.fleet.plugins.module_utils import _layouts, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_kubeconfig, read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError

SECRET = b"outside rootfs\n"


@contextlib.contextmanager
def no_hang(seconds=5):
    """Turn a read that blocks forever into a test failure."""
    def expire(_signum, _frame):
        raise AssertionError("blocked for %d s" % seconds)
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def tree(tmp_path):
    """``(rootfs, outside)``: an empty node tree and a directory beside it holding a file."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (outside / "pki").mkdir(parents=True)
    (outside / "pki/apiserver.crt").write_bytes(SECRET)
    return root, outside


@pytest.mark.parametrize("link, target", [
    ("etc/kubernetes/pki/apiserver.crt", "../../../../outside/pki/apiserver.crt"),  # relative, last component
    ("etc/kubernetes/pki", "../../../outside/pki"),  # relative directory link in the middle
    ("etc/kubernetes", "{outside}"),  # absolute directory link in the middle
])
def test_links_never_lead_out_of_rootfs(tree, link, target):
    root, outside = tree
    path = root / link
    if path.is_dir():
        shutil.rmtree(path)
    os.symlink(target.format(outside=outside), path)
    fs = NodeFS(str(root))
    real = fs.real("/etc/kubernetes/pki/apiserver.crt")
    assert os.path.commonpath([real, str(root)]) == str(root)
    with pytest.raises(CertError, match="/etc/kubernetes/pki/apiserver.crt"):
        read_node_file(fs, "/etc/kubernetes/pki/apiserver.crt")


def test_dotdot_stops_at_rootfs_like_a_chroot(tree):
    root, _outside = tree
    (root / "etc/kubernetes/pki/ca.crt").write_bytes(b"inside")
    os.symlink("../../../../../../../etc/kubernetes/pki/ca.crt", root / "etc/kubernetes/pki/link.crt")
    fs = NodeFS(str(root))
    assert read_node_file(fs, "/etc/kubernetes/pki/link.crt") == b"inside"
    assert read_node_file(fs, "/../../etc/kubernetes/../kubernetes/pki/ca.crt") == b"inside"


def test_symlink_loop_is_an_error_naming_the_file(tree):
    root, _outside = tree
    os.symlink("b", root / "etc/kubernetes/pki/a")
    os.symlink("a", root / "etc/kubernetes/pki/b")
    with pytest.raises(CertError, match="/etc/kubernetes/pki/a.*symlink"):
        read_node_file(NodeFS(str(root)), "/etc/kubernetes/pki/a")


def test_kubeconfig_file_references_stay_in_rootfs(tree, kubeadm_tree):
    root, outside = tree
    shutil.copy(kubeadm_tree / "cp1/etc/kubernetes/pki/apiserver-kubelet-client.crt", outside / "pki/admin.crt")
    conf = root / "etc/kubernetes/admin.conf"
    conf.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n"
                    "clusters:\n- name: k\n  cluster: {server: 'https://x:6443'}\nusers:\n- name: u\n  user:\n"
                    "    client-certificate: ../../../outside/pki/admin.crt\n    client-key: %s/pki/admin.key\n" % outside)
    entries = read_kubeconfig(NodeFS(str(root)), "kubeconfig/admin.conf", "admin.conf", "/etc/kubernetes/admin.conf",
                              "admin", "kubeadm", True)
    assert [e.entry["state"] for e in entries] == ["missing"]
    assert "/etc/kubernetes/admin.conf references" in entries[0].entry["message"]


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    # bound by its name from its own directory: a full tmp path can exceed AF_UNIX's 108 bytes
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(os.path.dirname(str(path)))
    try:
        sock.bind(os.path.basename(str(path)))
    finally:
        os.chdir(cwd)
    return sock


def _char_device(path):
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is


@pytest.mark.parametrize("make, kind", [(_fifo, "FIFO"), (_socket, "socket"), (_char_device, "character device")])
def test_non_regular_file_is_refused_without_blocking(tree, make, kind):
    root, _outside = tree
    path = root / "etc/kubernetes/pki/apiserver.crt"
    keep = make(path)
    try:
        with no_hang(), pytest.raises(CertError) as caught:
            read_node_file(NodeFS(str(root)), "/etc/kubernetes/pki/apiserver.crt")
    finally:
        if keep is not None:
            keep.close()
    assert str(caught.value).startswith("/etc/kubernetes/pki/apiserver.crt is a %s, not a regular file" % kind)


def test_huge_file_is_refused_with_its_size(tree):
    root, _outside = tree
    size = _layouts.MAX_FILE_BYTES + 1
    (root / "etc/kubernetes/pki/apiserver.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\n" + b"A" * (size - 28))
    with pytest.raises(CertError) as caught:
        read_node_file(NodeFS(str(root)), "/etc/kubernetes/pki/apiserver.crt")
    assert str(caught.value).startswith("/etc/kubernetes/pki/apiserver.crt is %d bytes, more than %d" % (size, size - 1))
    assert "not a certificate file" in str(caught.value)


BEGIN_LINES = b"-----BEGIN CERTIFICATE-----\n" * 10000  # 280 KB


def _pem(kubeadm_tree, name):
    return (kubeadm_tree / "cp1/etc/kubernetes/pki" / name).read_bytes()


def test_thousands_of_begin_lines_are_a_truncated_certificate():
    with pytest.raises(CertError, match="f.crt: PEM certificate is truncated"):
        _x509.load_certificates(BEGIN_LINES, "f.crt")


def test_begin_lines_without_end_are_skipped_as_go_does(kubeadm_tree):
    chain = _pem(kubeadm_tree, "apiserver.crt") + _pem(kubeadm_tree, "ca.crt")
    certs = _x509.load_certificates(BEGIN_LINES + chain + b"-----BEGIN CERTIFICATE-----\nMIIB\n", "f.crt")
    assert [c.subject.rfc4514_string() for c in certs] == ["CN=kube-apiserver", "CN=kubernetes"]
    key = _pem(kubeadm_tree, "apiserver.key")
    loaded = _x509.load_private_key(BEGIN_LINES.replace(b"CERTIFICATE", key.split(b"\n", 1)[0][11:-5]) + key, "f.key")
    assert _x509.key_matches(certs[0], loaded)


@pytest.mark.parametrize("value, message", [
    ("'LS0t$$$'", "/etc/kubernetes/admin.conf: client-certificate-data of user u is not valid base64"),
    ("[1, 2]", "/etc/kubernetes/admin.conf: client-certificate-data of user u is not valid base64"),
])
def test_bad_base64_in_a_kubeconfig_names_the_file_and_field(tree, value, message):
    root, _outside = tree
    (root / "etc/kubernetes/admin.conf").write_text("users:\n- name: u\n  user:\n    client-certificate-data: %s\n" % value)
    entries = read_kubeconfig(NodeFS(str(root)), "kubeconfig/admin.conf", "admin.conf", "/etc/kubernetes/admin.conf",
                              "admin", "kubeadm", True)
    assert [(e.entry["state"], e.entry["message"].split(" (")[0]) for e in entries] == [("invalid", message)]


@pytest.mark.parametrize("text, message", [
    ("users:\n- name: u\n  user: {client-key-data: c2VjcmV0\n", "line 4, column 1): fix it or restore it from a backup"),
    ("users:\n- name: [u]\n  user: {client-certificate: [a]}\ncurrent-context: [x]\n", "has no client certificate"),
    ("users:\n- name: u\n  user: {client-certificate: [a]}\n", "client-certificate of user u is not a file path"),
])
def test_malformed_kubeconfig_names_the_file_without_quoting_it(tree, text, message):
    root, _outside = tree
    (root / "etc/kubernetes/admin.conf").write_text(text)
    entries = read_kubeconfig(NodeFS(str(root)), "kubeconfig/admin.conf", "admin.conf", "/etc/kubernetes/admin.conf",
                              "admin", "kubeadm", True)
    assert len(entries) == 1 and entries[0].entry["message"].startswith("/etc/kubernetes/admin.conf")
    assert message in entries[0].entry["message"] and "c2VjcmV0" not in entries[0].entry["message"]
