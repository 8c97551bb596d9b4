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
    type: path
    default: /
requirements:
  - cryptography >= 3.4 on the managed node
"""
