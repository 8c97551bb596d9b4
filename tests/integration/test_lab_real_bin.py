"""`lab.py up --real-bin DIR`: a binary in DIR replaces the stand-in of the same name, with no other change."""
import os

import pytest
import yaml

from labutil import REPO, busy, lab_cli, listening, wait_for

ADDRESS = "127.0.6.21"   # a one-node kubeadm cluster of its own, beside any other lab


def test_real_binary_replaces_the_stand_in(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if busy([(ADDRESS, 22)]):
        pytest.skip(f"{ADDRESS} is taken by another lab")
    spec = yaml.safe_load((REPO / "tests/lab/fleet.yml").read_text())
    bravo = next(c for c in spec["clusters"] if c["name"] == "bravo")
    bravo.update(scenario="fresh", nodes=[dict(bravo["nodes"][0], address=ADDRESS)])
    spec["clusters"] = [bravo]
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump(spec))
    # A "real" kube-scheduler: it leaves a mark, then runs what a real binary would be here.
    real = tmp_path / "real-bin"
    real.mkdir()
    mark = tmp_path / "ran-real-scheduler"
    (real / "kube-scheduler").write_text("#!/bin/sh\ntouch %s\nexec %s %s \"$@\"\n"
                                         % (mark, "/usr/bin/python3", REPO / "tests/lab/standins/kube_scheduler.py"))
    (real / "kube-scheduler").chmod(0o755)
    output = tmp_path / "lab"
    try:
        res = lab_cli("up", "--fleet", str(tmp_path / "fleet.yml"), "--output", str(output), "--real-bin", str(real))
        assert res.returncode == 0, res.stdout + res.stderr
        wait_for(lambda: listening(ADDRESS, 10259), "the scheduler to listen")
        assert mark.exists()
        manifest = (output / "nodes/bravo-cp1/root/etc/kubernetes/manifests/kube-scheduler.yaml").read_text()
        assert "- kube-scheduler" in manifest      # the manifest names the binary, not the stand-in
    finally:
        lab_cli("down", "--output", str(output))
