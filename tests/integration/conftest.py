"""The lab fleet fixture shared by the integration tests."""
import os
import time

import pytest

from labutil import busy, lab_cli, labmod


@pytest.fixture(scope="session", autouse=True)
def no_demo_lab():
    """`make demo` leaves its lab up on the default fleet's addresses: bring it down so no lab test skips."""
    if labmod.DEFAULT_OUTPUT.exists():
        res = lab_cli("down")
        assert res.returncode == 0, f"could not bring the demo lab down: {res.stdout}{res.stderr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
    """A skipped lab test is not a pass: it fails, saying why it could not run (KUBEPKI_ALLOW_SKIP=1 to allow)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("KUBEPKI_ALLOW_SKIP") != "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"lab test could not run (a skip fails the suite): {reason}"


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
    print(f"default fleet up (services ready) in {lab.up_seconds:.1f} s")     # timed in tests/bench, not asserted here
    yield lab
    lab_cli("down", "--output", str(output))
