# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet.

from __future__ import annotations


class ModuleDocFragment:
    # The node lock of the modules that renew (plugins/module_utils/_nodelock.py).
    DOCUMENTATION = r"""
options: {}
notes:
  - A real run holds an exclusive lock (C(flock)) on C(/var/lib/kubepki/module.lock) under O(rootfs) while it plans
    and writes, so two runs on one node never interleave their key and certificate renames. The file (mode 0600, its
    directory created 0700) records the holder's pid and start time, nothing else. A run that finds it held waits up
    to 60 seconds, then fails naming the holder and changing nothing. The kernel drops the lock when its holder
    dies. Check mode takes no lock. This is a separate layer from the role C(kubepki.fleet.lock), whose
    C(/var/lib/kubepki/renew.lock) spans a whole play.
"""
