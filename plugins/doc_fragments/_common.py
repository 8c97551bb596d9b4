# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet.

from __future__ import annotations


class ModuleDocFragment:
    # Options every module of the collection shares.
    DOCUMENTATION = r"""
options:
  rootfs:
    description:
      - Prefix for every well-known path, like kubeadm's C(--rootfs).
      - Point it at a copied tree to analyse a node offline.
      - Paths are resolved as inside a chroot at O(rootfs) - an absolute symlink starts again at O(rootfs) and
        C(..) never climbs above it - so nothing outside it is read or written. A O(rootfs) that does not exist
        fails the module.
    type: path
    default: /
requirements:
  - cryptography >= 3.4 on the managed node
"""
