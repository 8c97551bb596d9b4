# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A real TLS listener for unit tests: serves one cert/key pair (swappable, as a restart would), or
without a pair answers plain bytes (an endpoint that speaks no TLS)."""

from __future__ import annotations

import socket
import ssl
import threading


class TLSServer:
    def __init__(self, cert_file=None, key_file=None, host="127.0.0.1", port=0):
        self.context = None
        if cert_file:
            self.load(cert_file, key_file)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def load(self, cert_file, key_file):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert_file), str(key_file))
        self.context = context

    def _serve(self):
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            try:
                if self.context:
                    with self.context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)
                else:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" * 64)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self):
        if self.sock.fileno() != -1:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)   # wakes the accept() of the serving thread
            except OSError:
                pass
            self.sock.close()
