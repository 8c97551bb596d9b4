# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The built collection ships nothing of a user's, even built from a used checkout. No lab, no root."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "lab"))
import pki  # noqa: E402  pylint: disable=wrong-import-position
# A PEM private key block with key material; the parser's labels in the source are not one.
PEM_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=:,\- \r\n]+-----END [A-Z0-9 ]*PRIVATE KEY-----")
FAKE_KEY = (b"-----BEGIN EC PRIVATE KEY-----\n"
            b"MHcCAQEEIPlantedPlantedPlantedPlantedPlantedPlantedPlaoAoGCCqGSM49\n"
            b"-----END EC PRIVATE KEY-----\n")
# What a checkout holds once the lab ran, reports were written and tests ran.
PLANTED = {
    "tests/lab/output/nodes/x/root/etc/kubernetes/pki/ca.key": FAKE_KEY,
    "tests/lab/output/inventory.ini": b"cp1 ansible_host=10.0.0.11\n",
    "tests/output/junit/result.xml": b"<testsuite/>\n",
    "report/fleet.json": b'{"hosts": ["prod-cp1"]}\n',
    "report/kubepki-report.json": b'{"hosts": ["prod-cp1"]}\n',
    "playbooks/report/kubepki-report.md": b"# prod-cp1\n",
    ".venv/pyvenv.cfg": b"home = /usr/bin\n",
    ".venv/lib/python3.11/site-packages/secret.py": b"TOKEN = 'x'\n",
    ".hypothesis/examples/0/1": b"\x00",
    ".pytest_cache/v/cache/lastfailed": b"{}\n",
    "build/lib/leftover.py": b"\n",
    "plugins/module_utils/__pycache__/_x509.cpython-311.pyc": b"\x00",
    "id_ed25519.key": FAKE_KEY,
    "roles/backup/files/node.pem": FAKE_KEY,
    "kubepki-fleet-0.0.1.tar.gz": b"\x00",
}


def galaxy():
    """The ansible-galaxy of the Python running the tests (the project's .venv), else the one on PATH."""
    beside = Path(sys.executable).with_name("ansible-galaxy")
    found = str(beside) if beside.exists() else shutil.which("ansible-galaxy")
    if not found:
        pytest.fail("ansible-galaxy not found beside %s or on PATH: run make deps, or put ansible-core on PATH" % sys.executable)
    return found


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """The collection built from a copy of this checkout with user files planted."""
    checkout = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source, target = REPO / rel, checkout / rel
        if not os.path.lexists(source):
            continue  # deleted in the work tree, not yet in git
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    for rel, data in PLANTED.items():
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_bytes(data)
    out = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, ANSIBLE_CONFIG=str(checkout / "ansible.cfg"))
    result = subprocess.run([galaxy(), "collection", "build", "--output-path", str(out), str(checkout)],
                            cwd=checkout, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (built_artifact,) = out.glob("kubepki-fleet-*.tar.gz")
    return built_artifact


@pytest.fixture(scope="module")
def built(artifact):
    """Members of the built collection and their contents."""
    with tarfile.open(artifact) as tar:
        return {member.name: (tar.extractfile(member).read() if member.isfile() else b"") for member in tar.getmembers()}


def test_planted_user_files_are_not_shipped(built):
    assert "plugins/modules/kubeadm_renew.py" in built  # the build is the collection
    shipped = [rel for rel in PLANTED if rel in built]
    assert shipped == []
    junk = [name for name in built
            if re.search(r"(^|/)(\.[^/]+|__pycache__)(/|$)", name) or name.split("/")[0] in ("build", "report")
            or name.startswith(("tests/output", "tests/lab/output", "playbooks/report"))]
    assert junk == []


def test_no_private_key_in_any_member(built):
    assert [name for name, data in built.items() if PEM_KEY.search(data)] == []


def test_licence_text_ships(built):
    assert "COPYING" in built
    text = built["COPYING"].decode("utf-8")
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert "TERMS AND CONDITIONS" in text and "END OF TERMS AND CONDITIONS" in text


def test_check_playbook_writes_the_report_where_it_runs(artifact, tmp_path):
    """The installed collection's check playbook writes report/ in the working directory, nothing in the collection."""
    collections = tmp_path / "collections"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_NOCOLOR="1")
    result = subprocess.run([galaxy(), "collection", "install", "-p", str(collections), str(artifact)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    installed = collections / "ansible_collections" / "kubepki" / "fleet"
    before = sorted(p for p in installed.rglob("*") if "__pycache__" not in p.parts)

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    cluster = pki.kubeadm_cluster(now, ca_issued_at=now - datetime.timedelta(days=400))
    pki.build_kubeadm_control_plane(tmp_path / "cp1", cluster, "cp1", "10.0.0.11", now=now, init_node=True)
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "inventory.ini").write_text(
        "cp1 kubepki_rootfs=%s ansible_connection=local ansible_python_interpreter=%s\n" % (tmp_path / "cp1", sys.executable))
    playbook = Path(galaxy()).with_name("ansible-playbook")
    result = subprocess.run([str(playbook), "kubepki.fleet.check", "-i", "inventory.ini", "-e", "kubepki_probe=false",
                             "-e", "kubepki_become=false"], cwd=workdir, env=dict(env, PWD=str(workdir)),
                            capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in (workdir / "report").iterdir()) == ["kubepki-report.json", "kubepki-report.md", "kubepki.prom"]
    assert sorted(p for p in installed.rglob("*") if "__pycache__" not in p.parts) == before
