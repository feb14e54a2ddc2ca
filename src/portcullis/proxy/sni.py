"""The proxy's TLS contexts: one per certificate, chosen by the client's server name (SNI).

Built once per set of certificates (a new config snapshot with other certificates
builds a new table; connections opened after the swap get the new one), never per
connection. Every context has the same policy, because OpenSSL keeps the listener's
protocol versions, ALPN and verification settings when the SNI callback switches a
handshake to another context:

- TLS 1.2 and 1.3 only; TLS 1.2 suites are ECDHE with AES-GCM or ChaCha20-Poly1305
  (forward secrecy, AEAD); no compression, no renegotiation;
- ALPN offers `h2` then `http/1.1`;
- with a client CA bundle (`proxy_tls_client_ca_file`) a client certificate is
  requested but optional (`CERT_OPTIONAL`): one that is presented must chain to the
  bundle; the `mtls-auth` plugin decides per route. Without a bundle none is requested.

Selection (`SniTable.select`): an exact server name beats a wildcard (`*.example.com`
covers `api.example.com`, one label); no match, or no SNI at all, gets the default
certificate: the first certificate of the config that has server names.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from portcullis.key_files import key_file
from portcullis.model.certificates import Certificate

ALPN = ["h2", "http/1.1"]
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!SHA256:!SHA384"
_OPTIONS = ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
# IANA numbers of the suites the contexts allow (the ASGI TLS extension's `cipher_suite`).
CIPHER_SUITES = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-RSA-AES128-GCM-SHA256": 0xC02F,
    "ECDHE-RSA-AES256-GCM-SHA384": 0xC030,
    "ECDHE-RSA-CHACHA20-POLY1305": 0xCCA8,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
}
Material = tuple[tuple[str, str, str, tuple[str, ...]], ...]
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_context(client_ca: str | None = None) -> ssl.SSLContext:
    """A context with the gateway's TLS policy and no certificate yet."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= _OPTIONS
    ctx.set_alpn_protocols(ALPN)
    if client_ca:
        ctx.load_verify_locations(cadata=client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def certificate_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """`server_context` serving `cert` (chain, leaf first) with `key`.

    Python's `ssl` loads keys only from files: see key_files.py.
    """
    ctx = server_context(client_ca)
    material = (key if key.endswith("\n") else key + "\n") + cert
    with key_file(material.encode()) as path:
        ctx.load_cert_chain(path)
    return ctx


def material_of(certificates: Sequence[Certificate]) -> Material:
    """What a table is built from: equal material, equal table (no rebuild)."""
    return tuple((c.name, c.cert, c.key, tuple(c.snis)) for c in certificates if c.snis)


@dataclass
class SniTable:
    """Server name -> context; `names[context id]` says which certificate it serves."""

    exact: dict[str, ssl.SSLContext] = field(default_factory=dict)
    wildcard: dict[str, ssl.SSLContext] = field(default_factory=dict)  # "example.com" -> ctx
    default: ssl.SSLContext | None = None
    names: dict[int, str] = field(default_factory=dict)

    # Certificates that could not be loaded: name -> why (the others are served).
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        certificates: Sequence[Certificate],
        client_ca: str | None = None,
        unseal: Callable[[str], str] = lambda key: key,
    ) -> SniTable:
        table = cls()
        for cert in certificates:
            if not cert.snis:
                continue  # presented to origins only
            try:
                ctx = certificate_context(cert.cert, unseal(cert.key), client_ca)
            except (ssl.SSLError, OSError, ValueError) as exc:
                table.errors[cert.name] = str(exc)
                continue
            table.names[id(ctx)] = cert.name
            if table.default is None:
                table.default = ctx
            for name in cert.snis:
                if name.startswith("*."):
                    table.wildcard[name[2:]] = ctx
                else:
                    table.exact[name] = ctx
        return table

    def select(self, server_name: str | None) -> ssl.SSLContext | None:
        if server_name:
            name = server_name.lower().rstrip(".")
            ctx = self.exact.get(name)
            if ctx is not None:
                return ctx
            _, dot, parent = name.partition(".")
            if dot:
                ctx = self.wildcard.get(parent)
                if ctx is not None:
                    return ctx
        return self.default

    def certificate_name(self, ctx: ssl.SSLContext | None) -> str | None:
        return None if ctx is None else self.names.get(id(ctx))


def tls_extension(ssl_object: Any, server_name: str | None) -> dict[str, Any]:
    """The ASGI TLS extension (`scope["extensions"]["tls"]`) of an established connection.

    `client_cert_chain` holds PEM strings, leaf first: the whole chain the client sent
    where Python offers it (3.13+), else the leaf only.
    """
    chain: list[str] = []
    get_chain = getattr(ssl_object, "get_unverified_chain", None)
    if get_chain is not None:
        chain = [
            c if isinstance(c, str) else ssl.DER_cert_to_PEM_cert(c) for c in get_chain() or ()
        ]
    else:
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            chain = [ssl.DER_cert_to_PEM_cert(der)]
    cipher = ssl_object.cipher()
    name = cipher[0] if cipher else None
    return {
        "server_name": server_name,
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": CIPHER_SUITES.get(name or ""),
        "cipher_name": name,
        "alpn_protocol": ssl_object.selected_alpn_protocol(),
    }
