# -*- coding: utf-8 -*-
# Copyright: kubepki.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE to the collection kubepki.fleet. Do not use this from other collections or roles.

"""What a live endpoint actually serves: the only proof that a renewed cert is in use."""

from __future__ import annotations

import errno
import socket
import ssl


class ProbeError(Exception):
    """The endpoint gave no certificate. ``state`` is ``missing`` (nobody listens) or ``invalid``."""

    def __init__(self, state, message):
        super(ProbeError, self).__init__(message)
        self.state = state


def served_certificate(host, port, timeout=3.0, server_name=None):
    """DER bytes of the leaf certificate served on ``host:port``.

    Verification is off on purpose: we want to see expired and self-signed certs, not
    reject them. TLS 1.3 lets us read the cert of servers that demand a client cert
    (etcd) before they abort the handshake.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    where = "%s:%s" % (host, port)
    try:
        raw = socket.create_connection((host, int(port)), timeout=timeout)
    except socket.timeout:
        raise ProbeError("invalid", "%s: connection timed out after %ss (firewall, or the host is down)" % (where, timeout))
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            raise ProbeError("missing", "%s: connection refused, nothing listens there (is the component running?)" % where)
        raise ProbeError("invalid", "%s: cannot connect (%s)" % (where, exc.strerror or exc))
    try:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    except socket.timeout:
        raise ProbeError("invalid", "%s: no TLS handshake within %ss (does it speak TLS?)" % (where, timeout))
    except ssl.SSLError as exc:
        raise ProbeError("invalid", "%s: TLS handshake failed (%s); it may not speak TLS" % (where, exc.reason or exc))
    except OSError as exc:
        raise ProbeError("invalid", "%s: connection dropped during the TLS handshake (%s)" % (where, exc.strerror or exc))
    finally:
        raw.close()
    if not der:
        raise ProbeError("invalid", "%s: TLS handshake completed but no certificate was served" % where)
    return der
