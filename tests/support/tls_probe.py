"""What a TLS port serves: the leaf certificate a handshake gets for a server name."""

from __future__ import annotations

import socket
import ssl

END = "-----END CERTIFICATE-----\n"


def served_der(port: int, server_name: str | None, ca_pem: str) -> bytes | None:
    """The DER of the leaf served on 127.0.0.1:`port` for `server_name` (SNI; None:
    none), verified against `ca_pem` but not against the name."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as conn,
    ):
        return conn.getpeercert(binary_form=True)


def leaf_der(chain: str) -> bytes:
    """The DER of the first certificate of a PEM chain."""
    return ssl.PEM_cert_to_DER_cert(chain.split(END)[0] + END)
