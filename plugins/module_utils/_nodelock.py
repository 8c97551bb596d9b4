# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""The node-local lock that a renewing module holds while it writes, so two runs never interleave renames.

A separate layer under the roles' lock (roles/lock, a directory at /var/lib/kubepki/renew.lock): that one
spans a whole play and is left behind by a killed run; this one is an flock, which the kernel drops when
its holder dies, and it also covers modules run ad hoc or from other playbooks.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import stat
import time

LOCK_PATH = "/var/lib/kubepki/module.lock"
# Long enough for a renewal under way to finish, short enough not to hang a play.
WAIT_SECONDS = 60
_POLL_SECONDS = 0.2


class LockBusy(Exception):
    """Another process held the lock for the whole wait."""


def _holder(fd):
    """What the holder recorded (pid, start time, module), read from the open lock file."""
    text = os.pread(fd, 200, 0).decode("ascii", "replace").strip()
    return text or "holder not recorded yet"


@contextlib.contextmanager
def node_lock(fs, owner, wait=None):
    """Hold an exclusive flock on LOCK_PATH under ``fs.rootfs`` for the ``with`` block.

    Waits up to ``wait`` seconds (WAIT_SECONDS) for another holder, then raises LockBusy. The file
    (0600, in a 0700 directory) holds the holder's pid, start time and ``owner``, nothing else.
    OSError when it cannot be created; a symlink in its place is refused, never followed.
    """
    wait = WAIT_SECONDS if wait is None else wait
    path = fs.real(LOCK_PATH, follow=False)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # O_NONBLOCK: a FIFO or device put in its place must not hang the open
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.fchmod(fd, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockBusy("another kubepki renewal runs on this node (%s) and held %s for %g s: wait for it "
                                   "to finish and run again; nothing was changed"
                                   % (_holder(fd), LOCK_PATH, wait))
                time.sleep(_POLL_SECONDS)
        started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("pid %d since %s, %s\n" % (os.getpid(), started, owner)).encode("ascii"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # no stale holder once released
    finally:
        os.close(fd)  # drops the flock


@contextlib.contextmanager
def renewal_lock(module, fs, owner):
    """node_lock for a real run of an AnsibleModule, failing it with what to do; nothing in check mode."""
    with contextlib.ExitStack() as stack:
        if not module.check_mode:
            try:
                stack.enter_context(node_lock(fs, owner))
            except LockBusy as exc:
                module.fail_json(msg=str(exc))
            except OSError as exc:
                module.fail_json(msg="cannot take the node lock %s: %s. Run the module as root (become: true) or "
                                     "remove what is in its place; nothing was changed" % (LOCK_PATH, exc))
        yield
