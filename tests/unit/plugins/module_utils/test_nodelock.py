# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The node lock between processes, as two renewals on one node would take it."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import stat
import threading
import time

import pytest

from ansible_collections.kubepki.fleet.plugins.module_utils import _nodelock
from ansible_collections.kubepki.fleet.plugins.module_utils._layouts import NodeFS

LOCK = _nodelock.LOCK_PATH.lstrip("/")
# fork: the child holds the lock with the modules already imported, as a module process would
_FORK = multiprocessing.get_context("fork")


def _hold(rootfs, ready, release):
    with _nodelock.node_lock(NodeFS(rootfs), "kubeadm_renew"):
        ready.set()
        release.wait(60)


@contextlib.contextmanager
def held_by_another_process(rootfs):
    """A process holding the node lock of ``rootfs`` until the block ends; yields it (and its ``release`` event)."""
    ready, release = _FORK.Event(), _FORK.Event()
    holder = _FORK.Process(target=_hold, args=(str(rootfs), ready, release), daemon=True)
    holder.start()
    try:
        assert ready.wait(10), "the holder did not take the lock"
        holder.release = release
        yield holder
    finally:
        if holder.is_alive():  # set() waits for every waiter to wake: a killed one never does
            release.set()
        holder.join(10)
        if holder.is_alive():
            holder.kill()


def test_a_second_run_waits_then_fails_naming_the_holder(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        started = time.monotonic()
        with pytest.raises(_nodelock.LockBusy) as caught:
            with _nodelock.node_lock(NodeFS(str(tmp_path)), "rke_kubelet_fix", wait=1):
                pytest.fail("entered the lock another process holds")
        assert time.monotonic() - started >= 1
    message = str(caught.value)
    assert re.search(r"another kubepki renewal runs on this node \(pid %d since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, "
                     r"kubeadm_renew\)" % holder.pid, message), message
    assert "/var/lib/kubepki/module.lock" in message and "wait for it to finish and run again" in message


def test_a_second_run_gets_the_lock_when_the_first_ends_within_the_wait(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        threading.Timer(0.5, holder.release.set).start()
        started = time.monotonic()
        with _nodelock.node_lock(NodeFS(str(tmp_path)), "k3s_serving_reset", wait=10):
            assert time.monotonic() - started >= 0.4
            assert (tmp_path / LOCK).read_text().startswith("pid %d since " % os.getpid())


def test_the_lock_file_is_private_and_holds_no_secret(tmp_path):
    with held_by_another_process(tmp_path):
        lock = tmp_path / LOCK
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600 and stat.S_IMODE(lock.parent.stat().st_mode) == 0o700
        assert re.fullmatch(r"pid \d+ since \S+Z, kubeadm_renew\n", lock.read_text())
    assert lock.read_text() == ""  # released: no stale holder


def test_a_killed_holder_releases_the_lock(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        holder.kill()
        holder.join(10)
        started = time.monotonic()
        with _nodelock.node_lock(NodeFS(str(tmp_path)), "kubeadm_renew", wait=5):
            assert time.monotonic() - started < 1


def test_a_wider_mode_is_narrowed_and_a_symlink_is_refused(tmp_path):
    lock = tmp_path / LOCK
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    lock.chmod(0o666)
    with _nodelock.node_lock(NodeFS(str(tmp_path)), "kubeadm_renew", wait=0):
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    lock.unlink()
    target = tmp_path / "etc-shadow"
    target.write_text("root:x:\n")
    lock.symlink_to(target)
    with pytest.raises(OSError):
        with _nodelock.node_lock(NodeFS(str(tmp_path)), "kubeadm_renew", wait=0):
            pytest.fail("followed a symlink")
    assert target.read_text() == "root:x:\n"
