"""renew_rke1.yml on a lab RKE1 cluster (charlie: control plane + worker, kubelet.crt expired 35
days ago, seed 000): --check changes no byte, the run makes both kubelets serve fresh self-signed
certificates, a second run changes nothing, and bad input - no kubelet container, a new
certificate that does not pass verification, a malformed cluster.yml - loses nothing.

Only charlie, on 127.0.4.31-32, so that it runs beside the default fleet (127.0.1.x) and other
labs. The tests run in file order on one fleet: each builds on the state the previous one left.
"""
import json
import os
import re
import signal
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from labutil import KilledRun, ansible, cn, days_left, default_cluster, labmod, listening, own_lab, served, tree_digest, wait_for

import nodes  # tests/lab is on sys.path through labutil  # pylint: disable=wrong-import-order

CHARLIE = {"charlie-cp1": "127.0.4.31", "charlie-w1": "127.0.4.32"}
# What the fix may touch on a node.
NODE_TREES = ("etc/kubernetes", "var/lib/kubelet", "var/lib/kubepki")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The default fleet's charlie cluster alone, with its hooks, at CHARLIE's addresses."""
    yield from own_lab(tmp_path_factory, [default_cluster("charlie", CHARLIE)], [(a, 22) for a in CHARLIE.values()])


def cluster_yml(lab):
    return lab.output / "rke" / "charlie" / "cluster.yml"


def digest(lab):
    """Content and mode of every file the fix may touch, on both nodes, and of the cluster's rke dir."""
    return tree_digest([lab.node_root(n) / tree for n in CHARLIE for tree in NODE_TREES] + [cluster_yml(lab).parent], lab.output)


def fingerprints():
    return {node: served(address, 10250).fingerprint(hashes.SHA256()) for node, address in CHARLIE.items()}


def renew(lab, *args):
    started = time.monotonic()
    result = ansible(["ansible-playbook", "playbooks/renew_rke1.yml", "-i", str(lab.output / "inventory.ini"), *args])
    print("renew_rke1.yml %s: %.1f s\n%s" % (" ".join(args), time.monotonic() - started, result.stdout[-3000:]))
    return result


def said(result):
    """The play's output with its line wrapping undone."""
    return " ".join(result.stdout.split())


def restart_supervisor(lab, node, containers):
    """Restart the node's supervisor (its docker daemon) with these containers; returns those it had."""
    root = lab.node_root(node)
    config_path = root / "run/kubepki-lab/services.json"
    config = json.loads(config_path.read_text())
    pid = int((root / "run/kubepki-lab/supervisor.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not labmod._alive(pid), "the supervisor of %s to stop" % node)
    had, config["containers"] = config["containers"], containers
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    nodes.start(lab, lab.fleet().node(node))
    return had


def test_check_mode_shows_the_plan_and_changes_no_byte(fleet):
    before, before_served = digest(fleet), fingerprints()
    result = renew(fleet, "--check", "--diff")
    assert result.returncode == 0, result.stdout + result.stderr
    for node in CHARLIE:
        assert re.search(r"%s: kubelet.crt \(CN=%s@\d+\) expires \S+:\s+regenerate it, restart the kubelet \(docker\)" % (node, node),
                         result.stdout), result.stdout
    assert "+        not_after: (new at next kubelet start)" in result.stdout
    assert digest(fleet) == before and fingerprints() == before_served


def test_both_kubelets_serve_fresh_self_signed_certificates(fleet):
    old = fingerprints()
    for address in CHARLIE.values():
        assert days_left(served(address, 10250)) < 0
    result = renew(fleet)
    assert result.returncode == 0, result.stdout + result.stderr
    for node, address in CHARLIE.items():
        cert = served(address, 10250)
        # client-go's GenerateSelfSignedCertKey: leaf <host>@<unix> issued by <host>-ca@<unix>
        assert re.fullmatch(r"%s@\d+" % node, cn(cert)) and cert.issuer.rfc4514_string() == "CN=%s-ca@%s" % (node, cn(cert).split("@")[1])
        assert days_left(cert) > 360 and cert.fingerprint(hashes.SHA256()) != old[node]
        assert re.search(r"%s: %s:10250 serves CN=%s@\d+, ok, expires \S+ \(36\d\.\d+ days\), signed by CN=%s-ca@\d+; the kubelet.crt on "
                         r"disk \(was \S+\); the old pair is kept as /var/lib/kubelet/pki/kubelet.crt.kubepki-\d{8}T\d{6}Z and "
                         % (node, address, node, node), said(result))

        pki = fleet.node_root(node) / "var/lib/kubelet/pki"
        modes = {p.name.split(".kubepki-")[0] + (" (old)" if ".kubepki-" in p.name else ""): stat.S_IMODE(p.stat().st_mode)
                 for p in pki.iterdir()}
        assert modes == {"kubelet.crt": 0o644, "kubelet.key": 0o600, "kubelet.crt (old)": 0o644, "kubelet.key (old)": 0o600}
        backups = list((fleet.node_root(node) / "var/lib/kubepki/backups").iterdir())
        assert len(backups) == 1 and {p.name for p in backups[0].iterdir()} == {"files.tar.gz", "SHA256SUMS"}
        assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()


def test_second_run_changes_nothing(fleet):
    before, before_served = digest(fleet), fingerprints()
    result = renew(fleet)
    assert result.returncode == 0, result.stdout + result.stderr
    for node in CHARLIE:
        assert "%s: kubelet.crt left alone - 365.0 days left, not under threshold_days=30" % node in said(result)
    assert digest(fleet) == before and fingerprints() == before_served


def test_no_kubelet_container_fails_before_changing_anything(fleet):
    node = "charlie-cp1"
    before, before_served = digest(fleet), fingerprints()
    # As if docker had no container named kubelet: docker restart says "No such container".
    containers = json.loads((fleet.node_root(node) / "run/kubepki-lab/services.json").read_text())["containers"]
    restart_supervisor(fleet, node, [c for c in containers if c["name"] != "kubelet"])
    try:
        wait_for(lambda: not listening(CHARLIE[node], 10250), "the kubelet to be gone")
        result = renew(fleet, "-l", node, "-e", "kubepki_force=true")
        assert result.returncode != 0
        assert ("Cannot restart the kubelet of charlie-cp1 with docker (Error response from daemon: No such container: kubelet)"
                in said(result))
        assert "Nothing was changed." in said(result)
        assert digest(fleet) == before
    finally:
        restart_supervisor(fleet, node, containers)
        wait_for(lambda: listening(CHARLIE[node], 10250), "the kubelet to be back", timeout=30)
    assert fingerprints() == before_served


def test_a_new_certificate_that_fails_verification_is_rolled_back(fleet):
    node = "charlie-w1"
    pki = fleet.node_root(node) / "var/lib/kubelet/pki"
    before_pair = ((pki / "kubelet.crt").read_bytes(), (pki / "kubelet.key").read_bytes())
    before_served = fingerprints()[node]
    # A kubelet writes one-year certificates: a threshold of 400 days can never be met.
    result = renew(fleet, "-l", node, "-e", "kubepki_threshold_days=400", "-e", "fix_rke_kubelet_retries=3",
                   "-e", "fix_rke_kubelet_delay=1")
    assert result.returncode != 0
    assert "kubelet: wants the kubelet.crt it wrote, new and valid for more than 400 days; " in said(result)
    assert "The old kubelet.crt and kubelet.key were put back and are served again; the backup is /var/lib/kubepki/backups/" in said(result)
    assert fingerprints()[node] == before_served
    assert ((pki / "kubelet.crt").read_bytes(), (pki / "kubelet.key").read_bytes()) == before_pair
    assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()


def test_generate_serving_certificate_edits_cluster_yml_and_refuses_a_malformed_one(fleet):
    path = cluster_yml(fleet)
    original = path.read_text()
    nodes_before = {k: v for k, v in digest(fleet).items() if "/rke/" not in "/" + k}
    mode2 = ["-e", "kubepki_force=true", "-e", "kubepki_kubelet_fix_mode=generate_serving_certificate",
             "-e", "kubepki_rke_cluster_yml=%s" % path]
    try:
        result = renew(fleet, *mode2)
        assert result.returncode == 0, result.stdout + result.stderr
        assert path.read_text() == original.replace("    fail_swap_on: false\n",
                                                    "    fail_swap_on: false\n    generate_serving_certificate: true\n")
        copies = sorted(path.parent.glob("cluster.yml.kubepki-*"))
        assert len(copies) >= 1 and all(c.read_text() == original for c in copies)
        assert "rke up --config %s" % path in said(result)
        # rke up has not run: the nodes still serve what they served, and nothing changed on them.
        assert {k: v for k, v in digest(fleet).items() if "/rke/" not in "/" + k} == nodes_before

        path.write_text("nodes: [\nservices:\n")
        before = digest(fleet)
        result = renew(fleet, *mode2)
        assert result.returncode != 0
        assert "is not valid YAML, and rke up would reject it too: line 3, column 1" in said(result)
        assert digest(fleet) == before
    finally:
        path.write_text(original)
        for copy in path.parent.glob("cluster.yml.kubepki-*"):
            copy.unlink()


def test_no_secret_of_cluster_yml_reaches_the_output_even_at_vvv(fleet):
    """cluster.yml can hold an inline ssh_key and registry passwords: the diff shows only the key that changes, and no
    private key marker reaches the play's output at -vvv."""
    path = cluster_yml(fleet)
    original = path.read_text()
    password = "s3cret-registry-pw-%d" % os.getpid()
    planted_key = "-----BEGIN OPENSSH PRIVATE KEY-----\n  b3BlbnNzaC1rZXktdjEAAAAAplantedkey%d\n  -----END OPENSSH PRIVATE KEY-----" % os.getpid()
    path.write_text(original + "ssh_key: |-\n  %s\nprivate_registries:\n  - url: registry.example.com\n    user: ci\n"
                               "    password: %s\n" % (planted_key, password))
    try:
        result = renew(fleet, "-vvv", "--diff", "-e", "kubepki_force=true", "-e",
                       "kubepki_kubelet_fix_mode=generate_serving_certificate", "-e", "kubepki_rke_cluster_yml=%s" % path)
        assert result.returncode == 0, result.stdout + result.stderr
        output = result.stdout + result.stderr
        assert "generate_serving_certificate" in output and "plantedkey" not in output and password not in output
        assert "PRIVATE KEY" not in output
    finally:
        path.write_text(original)
        for copy in path.parent.glob("cluster.yml.kubepki-*"):
            copy.unlink()


def test_a_run_killed_after_the_move_before_the_kubelet_restart_converges_on_the_next_ordinary_run(fleet, tmp_path):
    """SIGKILL of ansible-playbook once charlie-w1's kubelet.crt and kubelet.key are moved aside, before the kubelet's
    restart: the kubelet serves the old pair from memory, and none is on disk. Before, every later run failed there
    with "kubelet.crt is absent: an earlier run moved it aside ... Restart the kubelet"; now the next ordinary run
    makes the restart it owes, and the kubelet serves the new pair it writes."""
    node = "charlie-w1"
    pki = fleet.node_root(node) / "var/lib/kubelet/pki"
    before = fingerprints()[node]
    with KilledRun(fleet, tmp_path, node, "-e", "kubepki_force=true", playbook="playbooks/renew_rke1.yml") as run:
        # killed on the node's state, not the restart's banner: a task already sent to the node runs on without its run
        run.until(lambda: not (pki / "kubelet.crt").exists() and not (pki / "kubelet.key").exists(), "moving the pair aside")
    assert not (pki / "kubelet.crt").exists() and not (pki / "kubelet.key").exists()
    assert fingerprints()[node] == before, "the kubelet restarted before the kill"

    result = renew(fleet, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"taking over /var/lib/kubepki/renew.lock from a run that is gone", said(result))
    assert re.search(r"charlie-w1: kubelet.crt \(CN=charlie-w1@\d+\) expires \S+: regenerate it, restart the kubelet \(docker\) "
                     r"\[moved aside to /var/lib/kubelet/pki/kubelet.crt.kubepki-\d{8}T\d{6}Z by an earlier run", said(result))
    new = served(CHARLIE[node], 10250)
    assert new.fingerprint(hashes.SHA256()) != before and days_left(new) > 360
    assert x509.load_pem_x509_certificate((pki / "kubelet.crt").read_bytes()) == new
    assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()


def test_a_fixing_module_killed_between_its_two_moves_is_finished_by_the_next_ordinary_run(fleet, tmp_path):
    """Only rke_kubelet_fix dies (as the OOM killer would) after it moved kubelet.crt aside, before kubelet.key; strace
    holds each rename on the node for 5 s. Its run cannot know what it moved and says so (before: "Nothing was moved").
    The next ordinary run moves the key aside too, restarts the kubelet and verifies the pair the kubelet writes."""
    node = "charlie-w1"
    pki = fleet.node_root(node) / "var/lib/kubelet/pki"
    before = fingerprints()[node]
    with KilledRun(fleet, tmp_path, node, "-e", "kubepki_force=true", playbook="playbooks/renew_rke1.yml") as run:
        output = run.module_killed(fleet, node, "Back up the kubelet's certificates", lambda: not (pki / "kubelet.crt").exists(),
                                   "moving kubelet.crt aside")
    assert run.process.returncode != 0
    assert ("Regenerating the kubelet serving certificate of charlie-w1 failed - Move kubelet.crt and kubelet.key aside: its process "
            "ended before it said what it wrote (exit status 137: Killed). kubelet.crt and kubelet.key may have been moved aside") in output
    assert (pki / "kubelet.key").exists() and fingerprints()[node] == before

    result = renew(fleet, "-l", node)
    assert result.returncode == 0, result.stdout + result.stderr
    new = served(CHARLIE[node], 10250)
    assert new.fingerprint(hashes.SHA256()) != before and days_left(new) > 360
    assert x509.load_pem_x509_certificate((pki / "kubelet.crt").read_bytes()) == new
    assert not (fleet.node_root(node) / "var/lib/kubepki/renew.lock").exists()
