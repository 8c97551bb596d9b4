"""Keeps asking a cluster's apiservers /readyz with a client cert while a renewal runs.

Reports failed requests per apiserver and the moments when no apiserver of the cluster answered
(API unavailability as a client behind a load balancer would see it).
"""
from __future__ import annotations

import base64
import os
import ssl
import tempfile
import threading
import time
import http.client

import yaml


class ApiProber:
    """``with ApiProber(addresses, kubeconfig) as prober: ...`` then ``prober.report()``."""

    def __init__(self, addresses, kubeconfig, port=6443, interval=0.1, timeout=1.0, verify=False):
        self.addresses = list(addresses)
        self.port, self.interval, self.timeout = port, interval, timeout
        self.samples = []          # (monotonic time, address, ok, detail)
        self._stop = threading.Event()
        self._threads = []
        self._tmp = tempfile.TemporaryDirectory()
        self.kubeconfig, self.verify = kubeconfig, verify
        self._loaded_mtime = None
        self.context = None
        self._load()

    def _load(self):
        """(Re)build the TLS context from the kubeconfig; a renewed admin.conf is picked up, as a user would."""
        mtime = os.stat(self.kubeconfig).st_mtime_ns
        if mtime == self._loaded_mtime:
            return
        with open(self.kubeconfig, encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        user, cluster = config["users"][0]["user"], config["clusters"][0]["cluster"]
        cert, key = os.path.join(self._tmp.name, "client.crt"), os.path.join(self._tmp.name, "client.key")
        for path, field in ((cert, "client-certificate-data"), (key, "client-key-data")):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                handle.write(base64.b64decode(user[field]))
        # verify=False asks only whether the API answers; verify=True also whether clients trust it
        # (an expired serving cert then counts as down, as kubectl sees it).
        context = ssl.create_default_context()
        context.check_hostname = False
        if self.verify:
            ca = os.path.join(self._tmp.name, "ca.crt")
            with open(ca, "wb") as handle:
                handle.write(base64.b64decode(cluster["certificate-authority-data"]))
            context.load_verify_locations(ca)
        else:
            context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(cert, key)
        self.context, self._loaded_mtime = context, mtime

    def _probe(self, address):
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._load()
                conn = http.client.HTTPSConnection(address, self.port, timeout=self.timeout, context=self.context)
                conn.request("GET", "/readyz")
                status = conn.getresponse().status
                conn.close()
                self.samples.append((started, address, status == 200, "HTTP %d" % status))
            except (OSError, ValueError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
                self.samples.append((started, address, False, type(exc).__name__))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self):
        for address in self.addresses:
            thread = threading.Thread(target=self._probe, args=(address,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._tmp.cleanup()

    def unavailable_seconds(self, bucket=0.5):
        """Seconds in which no apiserver answered (in ``bucket``-second slots that had probes)."""
        slots = {}
        for started, _address, ok, _detail in self.samples:
            slot = int(started / bucket)
            slots[slot] = slots.get(slot, False) or ok
        return sum(bucket for ok in slots.values() if not ok)

    def report(self):
        lines = []
        for address in self.addresses:
            mine = [s for s in self.samples if s[1] == address]
            failed = [s for s in mine if not s[2]]
            kinds = sorted({s[3] for s in failed})
            lines.append("  %s: %d requests, %d failed%s" % (address, len(mine), len(failed), " (%s)" % ", ".join(kinds) if kinds else ""))
        lines.append("  cluster: %.1f s with no apiserver answering" % self.unavailable_seconds())
        return "\n".join(lines)
