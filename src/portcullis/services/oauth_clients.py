"""OAuth clients of consumers, and the OAuth server's token-signing keys.

A client secret leaves this module only in the result of a create or a secret
rotation; the audit log records the client without it. Organization-limited
callers see and manage only the clients of their organization's consumers (a
client of an earlier consumer of the same name in another organization stays
hidden), and can't rotate the deployment-wide signing key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from portcullis.identity.oauth_clients import (
    MAX_TOKEN_TTL,
    SCOPE_PATTERN,
    ClientStatus,
    OAuthClient,
)
from portcullis.identity.oauth_server import OAuthServer
from portcullis.identity.signing import KeyStatus, SigningKeyInfo
from portcullis.model.config import Consumer, GatewayConfig
from portcullis.services.config_editor import ConfigEditor, ConfigState
from portcullis.services.context import Operation
from portcullis.services.errors import invalid, not_found
from portcullis.services.pagination import Page, paginate, parse_sort
from portcullis.services.preconditions import Precondition, etag_of
from portcullis.services.scoping import OrgScope

RESOURCE_TYPE = "oauth_client"
CLIENT_SORT = ("name", "created_at")
KEY_SORT = ("created_at",)


ClientName = Annotated[str, Field(min_length=1, max_length=128)]
Scope = Annotated[str, Field(pattern=SCOPE_PATTERN, description="An RFC 6749 scope token")]
Scopes = Annotated[list[Scope], Field(max_length=100)]
TokenTtl = Annotated[
    StrictInt,
    Field(ge=60, le=MAX_TOKEN_TTL, description="Lifetime of the client's access tokens, seconds"),
]


class OAuthClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ClientName
    allowed_scopes: Scopes = Field(default_factory=list)
    token_ttl: TokenTtl = 3600


class OAuthClientPatch(BaseModel):
    """JSON Merge Patch of a client; `null` is not a valid value for any field."""

    model_config = ConfigDict(extra="forbid")

    name: ClientName | None = None
    allowed_scopes: Scopes | None = None
    token_ttl: TokenTtl | None = None
    status: ClientStatus | None = None


class OAuthClientOut(BaseModel):
    client_id: str
    consumer: str
    organization: str | None = Field(description="The organization's current name")
    organization_id: str | None = Field(
        description="The organization the client belongs to (kept when it is renamed)"
    )
    name: str
    allowed_scopes: list[str]
    token_ttl: int
    status: ClientStatus
    created_by: str
    created_at: datetime
    updated_at: datetime


class SigningKeyOut(BaseModel):
    kid: str
    alg: str
    status: KeyStatus
    created_at: datetime
    retired_at: datetime | None
    remove_after: datetime | None = Field(description="When a retired key leaves the JWKS")
    public_jwk: dict[str, Any] = Field(description="The public key (RFC 7517)")


@dataclass(frozen=True, slots=True)
class ClientChanges:
    """What an update changes (None: leave as is)."""

    name: str | None = None
    allowed_scopes: Sequence[str] | None = None
    token_ttl: int | None = None
    status: ClientStatus | None = None

    @classmethod
    def of(cls, patch: OAuthClientPatch) -> ClientChanges:
        """The changes of a JSON Merge Patch of a client; `null` is valid for no field."""
        nulls = [f for f in patch.model_fields_set if getattr(patch, f) is None]
        if nulls:
            raise invalid([(f"#/{f}", "must not be null") for f in sorted(nulls)])
        return cls(patch.name, patch.allowed_scopes, patch.token_ttl, patch.status)


def etag_of_client(client: OAuthClient) -> str:
    return etag_of(client.as_json())


def _consumer_in(config: GatewayConfig, username: str, scope: OrgScope) -> Consumer:
    for consumer in config.consumers:
        if consumer.username == username and scope.sees_named(consumer.organization):
            return consumer
    raise not_found(f"consumer {username!r} does not exist", target="consumer")


def _unique(scopes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(scopes))


class OAuthClientService:
    """OAuth client and signing key operations of one OAuth server (`server`), whose
    consumers are those of the config behind `editor`."""

    def __init__(self, server: OAuthServer, editor: ConfigEditor) -> None:
        self._server = server
        self._editor = editor

    async def _consumer(self, op: Operation, username: str) -> Consumer:
        return _consumer_in((await self._editor.state()).config, username, op.scope)

    def _check_ttl(self, ttl: int | None) -> None:
        limit = self._server.settings.max_token_ttl
        if ttl is not None and ttl > limit:
            raise invalid(
                [("#/token_ttl", f"at most {limit} seconds (PORTCULLIS_OAUTH_MAX_TOKEN_TTL)")]
            )

    async def create(
        self,
        op: Operation,
        username: str,
        *,
        name: str,
        allowed_scopes: Sequence[str],
        token_ttl: int,
    ) -> tuple[OAuthClient, str]:
        """Register consumer `username` as a client; the secret is in the result only."""
        await self._consumer(op, username)  # not found before any complaint about the input
        self._check_ttl(token_ttl)

        async def create(state: ConfigState) -> tuple[OAuthClient, str]:
            # Pinned to the config the consumer was found in (services/config_editor.py).
            consumer = _consumer_in(state.config, username, op.scope)
            return await self._server.clients.create(
                consumer=consumer.username,
                organization=consumer.organization,
                name=name,
                allowed_scopes=_unique(allowed_scopes),
                token_ttl=token_ttl,
                created_by=op.actor,
                config_version=state.version,
            )

        client, secret = await self._editor.pinned(create)
        await op.record(
            "create", RESOURCE_TYPE, client.client_id, after=client.as_json(), status=201
        )
        return client, secret

    async def list_for_consumer(
        self, op: Operation, username: str, *, limit: int, cursor: str | None, sort: str | None
    ) -> Page:
        """One page of consumer `username`'s clients (as JSON), sorted by `sort`."""
        keys = parse_sort(sort, CLIENT_SORT, "created_at")
        consumer = await self._consumer(op, username)
        clients = await self._server.clients.list_for(consumer.username)
        items = [c.as_json() for c in clients if op.scope.owns(c.organization_id)]
        return paginate(items, lambda c: str(c["client_id"]), keys, limit=limit, cursor=cursor)

    async def get(self, op: Operation, client_id: str) -> OAuthClient:
        """One client; not found also for a client outside the caller's organization."""
        client = await self._server.clients.get(client_id)
        if client is None or not op.scope.owns(client.organization_id):
            raise self._missing(client_id)
        return client

    async def update(
        self,
        op: Operation,
        client_id: str,
        changes: ClientChanges,
        *,
        if_match: str | None = None,
    ) -> OAuthClient:
        """Change a client's name, scopes, token lifetime or status."""
        await self.get(op, client_id)
        self._check_ttl(changes.token_ttl)
        precondition = self._precondition(if_match)
        after = await self._server.clients.update(
            client_id,
            name=changes.name,
            allowed_scopes=None
            if changes.allowed_scopes is None
            else _unique(changes.allowed_scopes),
            token_ttl=changes.token_ttl,
            status=changes.status,
            check=precondition,
        )
        if after is None or precondition.seen is None:
            raise self._missing(client_id)
        await op.record(
            "update",
            RESOURCE_TYPE,
            client_id,
            before=precondition.seen.as_json(),
            after=after.as_json(),
        )
        return after

    async def delete(self, op: Operation, client_id: str, *, if_match: str | None = None) -> None:
        """Delete a client (its tokens stop introspecting as active)."""
        await self.get(op, client_id)
        precondition = self._precondition(if_match)
        deleted = await self._server.clients.delete(client_id, check=precondition)
        if not deleted or precondition.seen is None:
            raise self._missing(client_id)
        await op.record(
            "delete", RESOURCE_TYPE, client_id, before=precondition.seen.as_json(), status=204
        )

    async def rotate_secret(
        self, op: Operation, client_id: str, *, if_match: str | None = None
    ) -> tuple[OAuthClient, str]:
        """Replace a client's secret; the new one is in the result only."""
        await self.get(op, client_id)
        precondition = self._precondition(if_match)
        rotated = await self._server.clients.rotate_secret(client_id, check=precondition)
        if rotated is None or precondition.seen is None:
            raise self._missing(client_id)
        client, secret = rotated
        await op.record(
            "rotate-secret",
            RESOURCE_TYPE,
            client_id,
            before=precondition.seen.as_json(),
            after=client.as_json(),
        )
        return client, secret

    # ------------------------------------------------------------------ signing keys

    async def list_signing_keys(
        self, op: Operation, *, limit: int, cursor: str | None, sort: str | None
    ) -> Page:
        """One page of the signing keys' public parts (as JSON)."""
        keys = parse_sort(sort, KEY_SORT, "-created_at")
        items = [k.as_json() for k in await self._server.keys.keys()]
        return paginate(items, lambda k: str(k["kid"]), keys, limit=limit, cursor=cursor)

    async def rotate_signing_key(self, op: Operation) -> SigningKeyInfo:
        """Sign with a new key from now on (deployment-wide: unlimited callers only)."""
        op.scope.require_unlimited("the token-signing key")
        key = await self._server.keys.rotate()
        out = key.as_json()
        await op.record(
            "rotate",
            "signing_key",
            key.kid,
            after={k: v for k, v in out.items() if k != "public_jwk"},
        )
        return key

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _precondition(if_match: str | None) -> Precondition[OAuthClient]:
        """If-Match on a client, checked by the repository on the client it locked."""
        return Precondition(if_match, etag_of_client)

    @staticmethod
    def _missing(client_id: str) -> Exception:
        return not_found(f"OAuth client {client_id!r} does not exist", target="client_id")


class ConsumerDirectory:
    """Consumers of the current config by username, rebuilt when the version changes."""

    def __init__(self, editor: ConfigEditor) -> None:
        self._editor = editor
        self._version = -1
        self._by_name: dict[str, Consumer] = {}

    async def get(self, username: str) -> Consumer | None:
        state = await self._editor.state()
        if state.version != self._version:
            self._by_name = {c.username: c for c in state.config.consumers}
            self._version = state.version
        return self._by_name.get(username)
