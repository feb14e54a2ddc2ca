"""A private certificate authority for tests, made with `cryptography`: CA, server and
client certificates as PEM text, and server contexts that record what clients sent."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from support.tls import (
    common_name,
    leaf_certificate,
    new_key,
    pem_key,
    self_signed_ca,
    subject_alt_name,
)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, PEM."""

    cert: str
    key: str


class TestCA:
    """A self-signed CA that issues server certificates (for names and IPs) and client ones."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "Portcullis Test CA") -> None:
        self._key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        self._cert = self_signed_ca(
            self._key,
            common_name(name),
            now - datetime.timedelta(hours=1),
            now + datetime.timedelta(days=2),
        )
        self.cert_pem = self._cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, *names: str, client: bool = False) -> Issued:
        """A leaf for `names` (DNS names or IP addresses); a client certificate if `client`."""
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        cert = leaf_certificate(
            self._cert,
            self._key,
            key,
            common_name(names[0]),
            [subject_alt_name(n) for n in names],
            now - datetime.timedelta(hours=1),
            now + datetime.timedelta(days=1),
            client=client,
        )
        return Issued(cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key(key))


@dataclass
class ServerTls:
    """A server-side context for `leaf`; `server_names` records each handshake's SNI
    (None when the client sent none), `require_client_from` a CA clients must chain to."""

    leaf: Issued
    require_client_from: TestCA | None = None
    server_names: list[str | None] = field(default_factory=list)
    # SNI by connection (id of its SSLObject), for handlers: `sni_of`.
    _by_connection: dict[int, str | None] = field(default_factory=dict)

    def sni_of(self, ssl_object: object) -> str | None:
        return self._by_connection.get(id(ssl_object))

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "leaf.pem"
            path.write_text(self.leaf.cert + self.leaf.key)
            ctx.load_cert_chain(path)
        if self.require_client_from is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=self.require_client_from.cert_pem)

        def record(sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.server_names.append(name)
            self._by_connection[id(sock)] = name

        ctx.sni_callback = record  # type: ignore[assignment]
        return ctx
