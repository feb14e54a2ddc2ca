"""Helpers for the basic/hmac/mtls auth plugins' tests: an in-memory credential store,
an RFC 9421 signer (the independent `http-message-signatures` client) and a CA that
issues client certificates (cryptography)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from portcullis.identity.consumers import ConsumerIndex
from portcullis.identity.credential_lookup import ConsumerCredentialCache
from portcullis.identity.credential_store import CredentialKind, CredentialRecord
from portcullis.identity.secrets import ServerSecret
from portcullis.model.config import Consumer, ConsumerStatus
from portcullis.plugins.base import AnyPlugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import build_plugin
from support.tls import common_name as name_of
from support.tls import leaf_certificate, new_key, pem_key, self_signed_ca


class MemoryCredentials:
    """A `CredentialFinder` over a dict; `fail` makes every lookup raise."""

    def __init__(self) -> None:
        self.records: dict[tuple[CredentialKind, str], list[CredentialRecord]] = {}
        self.fail = False
        self.finds = 0

    def add(self, record: CredentialRecord) -> CredentialRecord:
        """Store `record` (replacing one with its id)."""
        same = self.records.setdefault((record.kind, record.identifier), [])
        same[:] = [r for r in same if r.id != record.id] + [record]
        return record

    async def find(self, kind: CredentialKind, identifier: str) -> tuple[CredentialRecord, ...]:
        self.finds += 1
        if self.fail:
            raise ConnectionError("store down")
        return tuple(self.records.get((kind, identifier), ()))


@dataclass
class Message:
    """A request as the signer sees it (method, absolute URL, headers)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


def sign_request(
    method: str,
    url: str,
    key_id: str,
    secret: bytes,
    *,
    created: float,
    nonce: str | None = "n-1",
    body: bytes | None = None,
    components: Sequence[str] = ("@method", "@authority", "@path"),
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The headers (with Signature-Input and Signature) the client sends."""
    message = Message(method, url, dict(headers or {}))
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: secret}),
    )
    signer.sign(
        message,
        key_id=key_id,
        created=dt.datetime.fromtimestamp(created, dt.UTC),
        nonce=nonce,
        label="sig1",
        covered_component_ids=components,
        body=body,
    )
    return message.headers


class TestCA:
    """A CA (EC P-256) issuing client certificates, valid from 2026-01-01 (tests inject a
    clock in 2026)."""

    __test__ = False

    def __init__(self, name: str = "Portcullis Test CA") -> None:
        self.key = new_key()
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self.cert = self_signed_ca(self.key, name_of(name), now, now + dt.timedelta(days=3650))

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, **names: Any) -> str:
        """A client certificate (PEM) for `common_name` (see `issue_pair`)."""
        return self.issue_pair(common_name, **names)[0]

    def issue_pair(
        self,
        common_name: str,
        *,
        dns: Sequence[str] = (),
        uris: Sequence[str] = (),
        emails: Sequence[str] = (),
        ips: Sequence[str] = (),
        not_before: dt.datetime | None = None,
        days: int = 365,
        server: bool = False,
    ) -> tuple[str, str]:
        """A client certificate and its private key (PEM) for `common_name` with the SANs;
        with `server`, one a TLS listener can serve (serverAuth, e.g. dns=["localhost"],
        ips=["127.0.0.1"])."""
        key = new_key()
        start = not_before or dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.UniformResourceIdentifier(u) for u in uris]
        names += [x509.RFC822Name(e) for e in emails]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        subject = name_of(common_name, x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"))
        cert = leaf_certificate(
            self.cert,
            self.key,
            key,
            subject,
            names,
            start,
            start + dt.timedelta(days=days),
            client=not server,
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode(), pem_key(key)


def tls_scope(chain: Sequence[str] | None, **scope: Any) -> dict[str, Any]:
    """An ASGI scope carrying the TLS extension with `chain` (leaf first)."""
    out: dict[str, Any] = {"type": "http", "scheme": "https", "headers": [], **scope}
    if chain is not None:
        out["extensions"] = {"tls": {"client_cert_chain": list(chain), "tls_version": 0x0304}}
    return out


# -- plugin harness ---------------------------------------------------------------

SECRET = ServerSecret.from_secret(b"unit-test-secret-0123456789abcdef!")
NOW = 1_780_000_000.0  # 2026-05-28
# Cheap argon2 parameters for unit tests (the hash carries its parameters).
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def consumers() -> ConsumerIndex:
    return ConsumerIndex(
        [
            Consumer(username="alice", custom_id="c-1", groups=["staff"]),
            Consumer(username="bob", status=ConsumerStatus.suspended),
            Consumer(username="guest"),
            Consumer(username="mallory", organization="other"),
        ]
    )


def record(
    kind: CredentialKind, identifier: str, consumer: str, secret: bytes = b""
) -> CredentialRecord:
    return CredentialRecord(
        id=f"cc_{consumer}_{kind.value}",
        kind=kind,
        identifier=identifier,
        consumer=consumer,
        organization_id=None,
        secret=secret,
    )


def basic_record(username: str, password: str, consumer: str) -> CredentialRecord:
    return record(CredentialKind.BASIC, username, consumer, CHEAP.hash(password).encode())


class Harness:
    def __init__(
        self, plugin: str, config: dict[str, Any], *, clock: float = NOW, redis: Any = None
    ) -> None:
        self.store = MemoryCredentials()
        self.cache = ConsumerCredentialCache(self.store, SECRET)
        self.now = clock
        # The route's view: the instance's organization (None), like a compiled route.
        env = PluginEnv(
            consumers=consumers().view(None),
            consumer_credentials=self.cache,
            clock=lambda: self.now,
            instance=f"{plugin}@test-{id(self)}",
            redis=redis,
        )
        self.plugin: AnyPlugin = build_plugin(plugin, config, env)

    def context(
        self,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        method: str = "GET",
        path: str = "/orders",
        query: bytes = b"",
        content_length: int | None = None,
        scope: dict[str, Any] | None = None,
    ) -> RequestContext:
        received = [(b"host", b"api.test"), *headers]
        full = {
            "type": "http",
            "scheme": "http",
            "query_string": query,
            "raw_path": path.encode(),
            **(scope or {}),
        }
        full["headers"] = received
        return RequestContext(
            full, cast(Any, None), method, path, "192.0.2.10", "rid", content_length, list(received)
        )

    async def call(
        self, headers: Sequence[tuple[bytes, bytes]] = (), **kw: Any
    ) -> tuple[PluginResponse | None, RequestContext]:
        ctx = self.context(headers, **kw)
        return await self.plugin.access(ctx), ctx


def problem(reply: PluginResponse | None, status: int = 401) -> dict[str, Any]:
    assert reply is not None
    assert reply.status == status, reply.body
    assert (b"content-type", b"application/problem+json") in reply.headers
    body: dict[str, Any] = json.loads(reply.body)
    assert body["status"] == status
    return body


def header(reply: PluginResponse, name: bytes) -> list[str]:
    return [v.decode() for n, v in reply.headers if n == name]


def upstream(ctx: RequestContext) -> dict[bytes, bytes]:
    return dict(ctx.upstream_headers)
