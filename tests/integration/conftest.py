"""The lab fleet fixture shared by the integration tests."""
import os
import time

import pytest

from labutil import busy, lab_cli, labmod


@pytest.fixture(scope="module")
def lab_fleet(tmp_path_factory):
    """The default fleet (tests/lab/fleet.yml, services running) in a tmp dir, torn down after the module."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    spec = labmod.load_fleet(labmod.DEFAULT_FLEET)
    taken = busy([(n.address, 22) for n in spec.nodes] + [("127.0.0.1", 6444)])
    if taken:
        pytest.skip(f"default fleet addresses busy ({', '.join(taken)}): run `lab.py down` first")
    output = tmp_path_factory.mktemp("fleet") / "lab"
    started = time.monotonic()
    res = lab_cli("up", "--output", str(output))
    if res.returncode:
        lab_cli("down", "--output", str(output))
        pytest.fail(f"lab.py up failed:\n{res.stdout}{res.stderr}")
    lab = labmod.Lab(output)
    lab.up_seconds = time.monotonic() - started
    yield lab
    lab_cli("down", "--output", str(output))
