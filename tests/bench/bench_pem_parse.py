# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The PEM parser on hostile input: 280 KB of BEGIN lines against a normal two-certificate chain.

A lazy regex per BEGIN line took ~30 s on the hostile file; a linear parser takes milliseconds.
Prints the times and the ratio; it asserts nothing about speed.
    .venv/bin/python tests/bench/bench_pem_parse.py [--rounds N] [--kib K]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
sys.path.insert(0, os.path.join(REPO, ".collections"))
import pki  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.kubepki.fleet.plugins.module_utils import _x509  # noqa: E402  pylint: disable=wrong-import-position

BEGIN_LINE = b"-----BEGIN CERTIFICATE-----\n"


def timed(data, rounds):
    """Median seconds of one parse of ``data`` (a refusal counts as a parse)."""
    times = []
    for _round in range(rounds):
        start = time.perf_counter()
        try:
            _x509.load_certificates(data, "bench")
        except _x509.CertError:
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kib", type=int, default=280, help="size of the hostile file")
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc)
    cluster = pki.kubeadm_cluster(now)
    chain = pki.cert_pem(cluster.ca.cert) * 2
    hostile = BEGIN_LINE * (args.kib * 1024 // len(BEGIN_LINE))
    normal_s, hostile_s = timed(chain, args.rounds), timed(hostile, args.rounds)
    print("normal chain   %7d bytes  %9.3f ms" % (len(chain), normal_s * 1000))
    print("BEGIN lines    %7d bytes  %9.3f ms" % (len(hostile), hostile_s * 1000))
    print("ratio          %9.1fx (bytes %.0fx)" % (hostile_s / normal_s, len(hostile) / float(len(chain))))


if __name__ == "__main__":
    main()
