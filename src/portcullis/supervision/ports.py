"""Refuse to start on a port that something already listens on.

granian binds with SO_REUSEPORT, so a second `portcullis serve` on the same port would
bind too and the kernel would split connections between the two instances (and their
stores). A probe bind *without* SO_REUSEPORT fails with EADDRINUSE whenever anything
listens on the address, whatever options that listener set; SO_REUSEADDR keeps
connections in TIME_WAIT from a previous run from counting as a listener.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterable

from portcullis.errors import UserError
from portcullis.supervision.planes import Plane


def port_in_use(host: str, port: int) -> bool:
    """True if a socket listens on `host:port` (or on a wildcard address covering it)."""
    for family, kind, proto, _, address in socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
                raise
    return False


def refuse_held_ports(planes: Iterable[Plane]) -> None:
    """Raise `UserError` naming the first plane whose address is already in use."""
    seen: dict[tuple[str, int], str] = {}
    for name, host, port in ((p.name, p.host, p.port) for p in planes):
        if (host, port) in seen:
            raise UserError(f"the {seen[host, port]} and the {name} are both set to {host}:{port}")
        seen[host, port] = name
        try:
            held = port_in_use(host, port)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} for the {name}: {exc}") from None
        if held:
            raise UserError(
                f"{host}:{port} (the {name}) is already in use by another process "
                "(another `portcullis serve`?). Stop it or choose another port; to replace "
                'a running gateway without downtime see README, "Processes, restarts and '
                'upgrades".'
            )
