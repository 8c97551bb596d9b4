# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""One HTTPS request to a kube-apiserver with a client certificate given as files.

The key never leaves its file. The served certificate is checked against the cluster CA by
signature only: an expired apiserver certificate must not stop a repair or a verification.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from urllib.parse import urlsplit

from ansible_collections.kubepki.fleet.plugins.module_utils import _kubeconfig, _x509
from ansible_collections.kubepki.fleet.plugins.module_utils._discovery import read_node_file
from ansible_collections.kubepki.fleet.plugins.module_utils._x509 import CertError


class Unreachable(Exception):
    """No answer from the apiserver; the message is the reason."""


class NotOurServer(Exception):
    """The endpoint serves a certificate the cluster CA did not sign; the message is its subject."""


def client_context(cert_path, key_path):
    """An SSL context presenting ``cert_path``/``key_path``; raises ssl.SSLError or OSError when unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # checked by signature in request()
    context.load_cert_chain(cert_path, key_path)
    return context


def memory_context(cert_pem, key_pem):
    """Like client_context for PEM bytes (a kubeconfig's ``*-data``): loaded through memfds, so the key is never
    written to a file."""
    fds = []
    try:
        for data in (cert_pem, key_pem):
            fds.append(os.memfd_create("kubepki-client", os.MFD_CLOEXEC))
            os.write(fds[-1], data)
        return client_context(*("/proc/self/fd/%d" % fd for fd in fds))
    finally:
        for fd in fds:
            os.close(fd)


def request(url, path, context, ca, method="GET", timeout=10.0, body=None):
    """``(status, body)`` of ``method path`` at ``url``; ``body``, when given, is sent as JSON."""
    parts = urlsplit(url)
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=context, timeout=timeout)
    try:
        try:
            conn.connect()
            peer = _x509.load_certificates(conn.sock.getpeercert(binary_form=True), url)[0]
        except (OSError, ssl.SSLError, socket.timeout, CertError) as exc:
            raise Unreachable(getattr(exc, "strerror", None) or exc)
        if not _x509.signed_by(peer, ca):
            raise NotOurServer(peer.subject.rfc4514_string())
        try:
            headers = {"Accept": "application/json"}
            if body is not None:
                body = json.dumps(body).encode("utf-8")
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            raise Unreachable(getattr(exc, "strerror", None) or exc)
    finally:
        conn.close()


class CredentialsError(CertError):
    """kubelet.conf cannot be used to reach the API; the message says why."""


class KubeletCredentials:
    """The API as the kubelet reaches it: kubelet.conf's server, CA and client certificate file."""

    PATH = "/etc/kubernetes/kubelet.conf"

    def __init__(self, fs):
        try:
            user = _kubeconfig.parse(read_node_file(fs, self.PATH), self.PATH)[0]
            if not user.cert_path or not user.key_path:
                raise CredentialsError("%s does not reference its client certificate as a file" % self.PATH)
            self.cert = _x509.load_certificates(read_node_file(fs, user.cert_path), user.cert_path)[0]
            ca_pem = user.ca_pem(self.PATH)
            if not ca_pem or not user.server:
                raise CredentialsError("%s names no server or certificate-authority-data" % self.PATH)
            self.ca = _x509.load_certificates(ca_pem, self.PATH)[0]
            self.context = client_context(fs.real(user.cert_path), fs.real(user.key_path))
        except (CertError, IndexError, OSError, ssl.SSLError) as exc:
            raise CredentialsError(str(exc))
        self.server = user.server
        self.node = self.cert.subject.rfc4514_string().split("CN=system:node:", 1)[-1].split(",", 1)[0]

    def get(self, path, timeout):
        return request(self.server, path, self.context, self.ca, timeout=timeout)
