"""Helpers of the integration tests: the lab CLI, SSH into its nodes, TLS probes, Ansible runs."""
import contextlib
import datetime
import hashlib
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
LAB_PY = REPO / "tests" / "lab" / "lab.py"
sys.path.insert(0, str(LAB_PY.parent))
import lab as labmod  # noqa: E402,F401  pylint: disable=wrong-import-position,unused-import  # re-exported


def lab_cli(*args, timeout=180):
    return subprocess.run([sys.executable, str(LAB_PY), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO), check=False)


def own_lab(tmp_path_factory, clusters, addresses):
    """Generator for a module fixture: a lab of its own with ``clusters`` (as in fleet.yml, with the default fleet's
    packages and hooks), up while the module runs; it fails, never skips, when ``addresses`` are taken."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    taken = busy(addresses)
    if taken:
        pytest.skip(f"addresses busy ({', '.join(taken)}): another lab runs there (a k3s one binds 127.0.0.1:6444)")
    default = yaml.safe_load(labmod.DEFAULT_FLEET.read_text())
    base = tmp_path_factory.mktemp(clusters[0]["name"])
    spec = base / "fleet.yml"
    spec.write_text(yaml.safe_dump({"packages": default.get("packages", []), "hooks": default["hooks"], "clusters": clusters}))
    output = base / "lab"
    started = time.monotonic()
    res = lab_cli("up", "--fleet", str(spec), "--output", str(output))
    if res.returncode:
        lab_cli("down", "--output", str(output))
        pytest.fail(f"lab.py up failed:\n{res.stdout}{res.stderr}")
    lab = labmod.Lab(output)
    lab.up_seconds = time.monotonic() - started
    print("%s up in %.1f s" % (", ".join(c["name"] for c in clusters), lab.up_seconds))
    yield lab
    lab_cli("down", "--output", str(output))


def default_cluster(name, addresses):
    """A cluster of tests/lab/fleet.yml with its nodes moved to ``addresses`` (node name -> address)."""
    cluster = next(c for c in yaml.safe_load(labmod.DEFAULT_FLEET.read_text())["clusters"] if c["name"] == name)
    cluster["nodes"] = [dict(n, address=addresses[n["name"]]) for n in cluster["nodes"]]
    return cluster


def busy(addresses):
    """The host:port pairs among ``addresses`` something listens on."""
    taken = []
    for host, port in addresses:
        with socket.socket() as sock:
            sock.settimeout(0.3)
            if sock.connect_ex((host, port)) == 0:
                taken.append(f"{host}:{port}")
    return taken


def listening(host, port):
    return bool(busy([(host, port)]))


def ssh(lab, node, command, check=True):
    """Run a shell command on a node over the lab's real SSH, as Ansible would reach it."""
    address = lab.state()["nodes"][node]["address"]
    res = subprocess.run(["ssh", "-i", str(lab.ssh_key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
                          "-o", "StrictHostKeyChecking=accept-new", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                          f"root@{address}", command], capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert res.returncode == 0, f"{node}: {command}: {res.stdout}{res.stderr}"
    return res


def served(host, port):
    """The leaf certificate a TLS endpoint presents (not verified)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as sock, ctx.wrap_socket(sock) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def days_left(cert):
    return (cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)).total_seconds() / 86400


def cn(cert):
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.25)


def ansible_env():
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def ansible(argv, timeout=1800):
    """Run ansible or ansible-playbook from the repository root, as a user would."""
    return subprocess.run(argv, cwd=str(REPO), env=ansible_env(), capture_output=True, text=True, check=False, timeout=timeout)


def regular_files(root):
    """``(path, lstat)`` of each regular file under root, symlinks and files gone during the walk left out: another
    process's temp files, and SQLite's -wal and -shm, which each connection to a k3s datastore may create and delete."""
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            try:
                status = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(status.st_mode):
                yield path, status


def read_if_present(path):
    """The file's bytes, or None once it is gone (see regular_files)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


def tree_digest(directories, relative_to):
    """``{path: (sha256, mode)}`` of every regular file under ``directories``: what --check must not change. SQLite's
    -wal and -shm hold nothing a run may change that the database file does not: they come and go with connections."""
    result = {}
    for directory in directories:
        for path, status in regular_files(directory):
            content = None if path.name.endswith(("-shm", "-wal")) else read_if_present(path)
            if content is not None:
                result[os.path.relpath(path, relative_to)] = (hashlib.sha256(content).hexdigest(), status.st_mode & 0o7777)
    return result


def at_once(commands, timeout=900):
    """Run the commands (argv lists, as ansible() would) at once, as the slices of an AWX sliced job:
    ``{key: (returncode, output)}``."""
    runs = {key: subprocess.Popen(argv, cwd=str(REPO), env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for key, argv in commands.items()}
    outputs = {key: run.communicate(timeout=timeout)[0] for key, run in runs.items()}
    return {key: (runs[key].returncode, output) for key, output in outputs.items()}


class Watch:
    """Calls ``look()`` every ``interval`` seconds in a thread while the with block runs."""

    interval = 0.2

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.look()
            self._stop.wait(self.interval)

    def look(self):
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class LockWatch(Watch):
    """Each node's renewal lock directory and backups, looked at every 20 ms while the with block runs: the spells the
    lock was held (``[start, end]``, monotonic seconds) and when each new backup appeared. A renewal transaction is the
    spell in which its backup appears (recover and other node-local steps hold the lock briefly too)."""

    interval = 0.02

    def __init__(self, lab, nodes):
        super().__init__()
        self.roots = {node: lab.node_root(node) / "var/lib/kubepki" for node in nodes}
        self.spells = {node: [] for node in nodes}
        self.born = {node: {} for node in nodes}
        self.old = {node: self._backups(node) for node in nodes}

    def _backups(self, node):
        directory = self.roots[node] / "backups"
        return set(os.listdir(directory)) if directory.exists() else set()

    def look(self):
        moment = time.monotonic()
        for node, spells in self.spells.items():
            held = (self.roots[node] / "renew.lock").exists()
            if held and (not spells or spells[-1][1] is not None):
                spells.append([moment, None])
            elif not held and spells and spells[-1][1] is None:
                spells[-1][1] = moment
            for name in self._backups(node) - self.old[node] - set(self.born[node]):
                self.born[node][name] = moment

    def transaction(self, node, holding=None):
        """The spell of the node's one new backup (the one holding the file ``holding``, when given)."""
        directory = self.roots[node] / "backups"
        births = [moment for name, moment in self.born[node].items() if holding is None or (directory / name / holding).exists()]
        assert len(births) == 1, (node, self.born[node])
        return next(s for s in self.spells[node] if s[0] <= births[0] and (s[1] or 1e12) >= births[0])

    def assert_one_at_a_time(self, nodes, holding=None):
        """The transactions of ``nodes`` did not overlap; they are printed in seconds after the first began."""
        transactions = {node: self.transaction(node, holding) for node in nodes}
        start = min(spell[0] for spell in transactions.values())
        print("transactions (s after the first): %s" % {
            node: ["%.1f" % (t - start) for t in spell if t is not None] for node, spell in transactions.items()})
        first, second = sorted(transactions.values())
        assert first[1] is not None and first[1] <= second[0], "transactions overlapped: %s" % ", ".join(nodes)


@contextlib.contextmanager
def k3s_server_that_fails_to_start_if(node_root, shell_test):
    """Injected fault: the node's `k3s server` exits 1 at start while ``shell_test`` holds; the wrapper is put back on
    exit."""
    wrapper = Path(node_root) / "opt/kubepki-lab/bin/k3s"
    original = wrapper.read_text()
    wrapper.write_text("#!/bin/sh\nif [ \"$1\" = server ] && %s; then echo 'injected fault' >&2; exit 1; fi\n%s"
                       % (shell_test, original.split("\n", 1)[1]))
    try:
        yield
    finally:
        wrapper.write_text(original)


@contextlib.contextmanager
def scheduler_that_never_comes_back(node_root):
    """Injected fault: the node's kube-scheduler starts only with the scheduler.conf it has now, so a renewal of it
    never verifies; the wrapper is put back on exit."""
    wrapper = Path(node_root) / "opt/kubepki-lab/bin/kube-scheduler"
    original = wrapper.read_text()
    conf = (Path(node_root) / "etc/kubernetes/scheduler.conf").read_text()
    user_cert = re.search(r"client-certificate-data: (\S+)", conf).group(1)
    wrapper.write_text("#!/bin/sh\ngrep -q '%s' /etc/kubernetes/scheduler.conf || { echo 'injected fault' >&2; exit 1; }\n%s"
                       % (user_cert[120:184], original.split("\n", 1)[1]))
    try:
        yield
    finally:
        wrapper.write_text(original)


@contextlib.contextmanager
def renames_held(lab, node, seconds=5, at="exit"):
    """strace on the node's sshd processes and all they start from now on: each rename returns `seconds` after it is
    done (at="enter": is done `seconds` after it is called), so a test can kill the process between two renames, or
    another process can act before it. Yields the tracer."""
    namespace = _namespace(lab.node_pid(node))
    sshds = [pid for pid in _pids() if _comm(pid) == "sshd" and _namespace(pid) == namespace]
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
                               "-e", "inject=rename,renameat,renameat2:delay_%s=%d" % (at, seconds * 1000000),
                               *[arg for pid in sshds for arg in ("-p", str(pid))]])
    try:
        wait_for(lambda: all(_tracer(pid) == tracer.pid or not labmod._alive(pid) for pid in sshds), "strace to attach to %s's sshd" % node)
        yield tracer
    finally:
        tracer.terminate()
        tracer.wait()


def kill_traced(tracer):
    """SIGKILL the Python processes the node's sshd started under `tracer`: a module, as the OOM killer would. Its shell
    and SSH session live on to report the death (killing those too is a dropped connection: the host unreachable)."""
    for pid in _pids():
        if _tracer(pid) == tracer.pid and _comm(pid).startswith("python"):
            with contextlib.suppress(ProcessLookupError):      # ended meanwhile
                os.kill(pid, signal.SIGKILL)


def drop_connections(lab, node):
    """SIGKILL every sshd session on the node, leaving its listener: each SSH connection to it drops at once, as a
    network cut or a reboot of a bastion would. What the sessions started lives on, as it does on a real node."""
    namespace = _namespace(lab.node_pid(node))
    sshds = {pid for pid in _pids() if _comm(pid) == "sshd" and _namespace(pid) == namespace}
    sessions = [pid for pid in sshds if _parent(pid) in sshds]
    assert sessions, "no SSH session to %s to drop" % node
    for pid in sessions:
        with contextlib.suppress(ProcessLookupError):          # ended with its monitor
            os.kill(pid, signal.SIGKILL)


def _parent(pid):
    return _status(pid, "PPid")


def _pids():
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _proc_text(pid, name):
    try:
        with open("/proc/%d/%s" % (pid, name), encoding="utf-8") as handle:
            return handle.read()
    except OSError:      # the process is gone
        return ""


def _comm(pid):
    return _proc_text(pid, "comm").strip()


def _tracer(pid):
    return _status(pid, "TracerPid")


def _status(pid, field):
    """A number of /proc/PID/status; 0 when the process is gone."""
    return next((int(line.split()[1]) for line in _proc_text(pid, "status").splitlines() if line.startswith(field + ":")), 0)


def _namespace(pid):
    try:
        return os.readlink("/proc/%d/ns/mnt" % pid)
    except OSError:
        return None


class KilledRun:
    """A playbook run with -l node in a session of its own, its output read as it comes, and SIGKILLed with its whole
    process group (the forks and their SSH clients) on leaving the with block, as a cancelled job or a dead controller."""

    def __init__(self, lab, tmp_path, node, *args, playbook="playbooks/renew.yml"):
        self.process = subprocess.Popen(
            ["ansible-playbook", playbook, "-i", str(lab.output / "inventory.ini"), "-l", node,
             "-e", "report_dir=%s" % tmp_path, *args], cwd=str(REPO), env=dict(ansible_env(), PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def announced(self, task):
        """Whether the run has started a task whose banner holds `task` (the tasks before it are done)."""
        return any(line.startswith("TASK [") and task in line for line in list(self.lines))

    def until(self, predicate, what, timeout=600):
        deadline = time.monotonic() + timeout
        while not predicate() and self.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert predicate(), "the run ended before %s:\n%s" % (what, "".join(self.lines[-40:]))

    def module_killed(self, lab, node, after_task, written, what):
        """From the start of `after_task` on, hold the node's renames; once `written()` holds, SIGKILL the module alone
        (as the OOM killer would) and let the play go on to its end. Returns the run's output, lines folded."""
        self.until(lambda: self.announced(after_task), "task %r" % after_task)
        with renames_held(lab, node) as tracer:
            self.until(written, what)
            kill_traced(tracer)
        self.until(lambda: self.process.poll() is not None, "ending", timeout=900)
        print("".join(self.lines))
        return " ".join("".join(self.lines).split())

    def __enter__(self):
        return self

    def kill(self):
        if self.process.returncode is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __exit__(self, *exc):
        self.kill()
