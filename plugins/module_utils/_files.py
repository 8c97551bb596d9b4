# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""The collection's one writer of files: atomic, durable, and keeping modes and owners."""

from __future__ import annotations

import os
import stat
import tempfile


def fsync_dir(directory):
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage(path, data, default_mode):
    """Write ``data`` to a temp file beside ``path`` with the mode and owner ``path`` has now."""
    directory = os.path.dirname(path) or "."
    try:
        current = os.stat(path)
        mode, uid, gid = stat.S_IMODE(current.st_mode), current.st_uid, current.st_gid
    except FileNotFoundError:
        mode, uid, gid = default_mode, None, None
    fd, temp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".kubepki-tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        if uid is not None and (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as handle:
            fd = None
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        if fd is not None:
            os.close(fd)
        os.unlink(temp)
        raise
    return temp


def write_files(items):
    """Replace several files as one step: ``items`` is a list of ``(path, bytes, default_mode)``.

    Everything is staged and fsynced first, then renamed in the given order, so the window in
    which a reader sees a mix of old and new is as short as two renames. Callers put the key
    before its certificate: kube-apiserver then never loads a cert whose key is still the old
    one. If a rename fails, the files already renamed are put back.
    """
    staged = []
    try:
        for path, data, default_mode in items:
            staged.append((path, _stage(path, data, default_mode)))
    except BaseException:
        for _path, temp in staged:
            os.unlink(temp)
        raise
    originals = []
    try:
        for path, temp in staged:
            backup = None
            if os.path.exists(path):
                with open(path, "rb") as handle:
                    backup = handle.read()
            os.rename(temp, path)
            originals.append((path, backup))
    except BaseException:
        for path, temp in staged[len(originals):]:
            if os.path.exists(temp):
                os.unlink(temp)
        for path, backup in reversed(originals):
            if backup is None:
                os.unlink(path)
            else:
                write_files([(path, backup, 0o600)])
        raise
    for directory in sorted({os.path.dirname(path) or "." for path, _temp in staged}):
        fsync_dir(directory)


def write_file(path, data, default_mode=0o600):
    write_files([(path, data, default_mode)])
