"""basic-auth, hmac-auth and mtls-auth credentials of consumers (identity/credential_store.py).

One service for the three kinds, the same rules as API keys and OAuth clients:

- a credential is created for a consumer of the current config, pinned to the
  config version it was found in (a consumer deleted meanwhile gets none);
- organization-limited callers see and manage only credentials of their
  organization's consumers (a credential of an earlier consumer of the same name in
  another organization stays hidden: not found);
- secrets leave only in the result of a create or rotation (an hmac secret, or a
  basic-auth password the gateway generated); the audit log records the credential
  without them (`ConsumerCredential.as_json` has none);
- every change appends the CREDENTIAL event the data plane's caches follow.

What a create takes, per kind:
- basic: `username` (default: the consumer's username) and `password` (default: a
  generated one, returned once); at least 8 characters;
- hmac: nothing: the key id and the secret are generated;
- mtls: `match`: `subject:<RFC 4514 DN>` or a SAN (`dns:`, `uri:`, `email:`, `ip:`).
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.credential_store import (
    MTLS_MATCH_PREFIXES,
    ConsumerCredential,
    CredentialKind,
    CredentialRepository,
    DuplicateCredential,
    generate_hmac_key_id,
    generate_secret,
)
from portcullis.identity.secrets import ServerSecret
from portcullis.model.config import Consumer, GatewayConfig
from portcullis.services.config_editor import ConfigEditor, ConfigState
from portcullis.services.context import Operation
from portcullis.services.errors import ALREADY_EXISTS, ServiceError, invalid, not_found
from portcullis.services.pagination import Page, paginate, parse_sort
from portcullis.services.preconditions import Precondition, etag_of

RESOURCE_TYPE = "consumer_credential"
CREDENTIAL_SORT = ("created_at",)
# The URL segment of each kind (`/consumers/{username}/basic-auth`), its plugin's name.
PATHS = {
    CredentialKind.BASIC: "basic-auth",
    CredentialKind.HMAC: "hmac-auth",
    CredentialKind.MTLS: "mtls-auth",
}
MIN_PASSWORD = 8

Password = Annotated[str, Field(min_length=MIN_PASSWORD, max_length=1024)]


class CredentialCreate(BaseModel):
    """What creates a credential; which members apply depends on the kind."""

    model_config = ConfigDict(extra="forbid")

    username: (
        Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^:\x00-\x1f]+$")] | None
    ) = Field(default=None, description="basic-auth: the username (default: the consumer's)")
    password: Password | None = Field(
        default=None,
        description="basic-auth: the password (default: generated and returned once)",
        json_schema_extra={"writeOnly": True},
    )
    match: Annotated[str, Field(min_length=3, max_length=500)] | None = Field(
        default=None,
        description="mtls-auth: the certificate name to match, `subject:<RFC 4514 DN>` or "
        "`dns:`, `uri:`, `email:`, `ip:` followed by a SAN",
    )


class CredentialRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: Password | None = Field(
        default=None,
        description="basic-auth: the new password (default: generated and returned once)",
        json_schema_extra={"writeOnly": True},
    )


class CredentialOut(BaseModel):
    id: str
    kind: CredentialKind
    consumer: str
    organization: str | None = Field(description="The organization's current name")
    organization_id: str | None
    username: str | None = Field(default=None, description="basic-auth: the username")
    key_id: str | None = Field(default=None, description="hmac-auth: the RFC 9421 keyid")
    match: str | None = Field(default=None, description="mtls-auth: the certificate name")
    created_by: str
    created_at: datetime
    updated_at: datetime


def etag_of_credential(credential: ConsumerCredential) -> str:
    return etag_of(credential.as_json())


def normalize_match(match: str) -> str:
    """An mtls credential's match in the form the plugin computes for certificates."""
    prefix = next((p for p in MTLS_MATCH_PREFIXES if match.startswith(p)), None)
    if prefix is None:
        raise invalid([("#/match", f"must start with one of {', '.join(MTLS_MATCH_PREFIXES)}")])
    value = match[len(prefix) :].strip()
    if not value:
        raise invalid([("#/match", "names nothing after its prefix")])
    if prefix in ("dns:", "email:"):
        value = value.lower()
    elif prefix == "ip:":
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            raise invalid([("#/match", "is not an IP address")]) from None
    return prefix + value


def _consumer_in(config: GatewayConfig, username: str, op: Operation) -> Consumer:
    for consumer in config.consumers:
        if consumer.username == username and op.scope.sees_named(consumer.organization):
            return consumer
    raise not_found(f"consumer {username!r} does not exist", target="consumer")


class CredentialService:
    """Credential operations on the store behind `engine` (secrets under `secret`), for
    the consumers of the config behind `editor`."""

    def __init__(self, engine: AsyncEngine, secret: ServerSecret, editor: ConfigEditor) -> None:
        self._repository = CredentialRepository(engine, secret)
        self._editor = editor

    async def create(
        self, op: Operation, username: str, kind: CredentialKind, body: CredentialCreate
    ) -> tuple[ConsumerCredential, str | None]:
        """A new credential of consumer `username`; the secret when one was generated."""
        consumer = _consumer_in((await self._editor.state()).config, username, op)
        identifier, secret, shown = self._material(kind, body, consumer)

        async def create(state: ConfigState) -> ConsumerCredential:
            found = _consumer_in(state.config, username, op)
            return await self._repository.create(
                kind=kind,
                identifier=identifier,
                secret=secret,
                consumer=found.username,
                organization=found.organization,
                created_by=op.actor,
                config_version=state.version,
            )

        try:
            credential = await self._editor.pinned(create)
        except DuplicateCredential:
            field = {"basic": "username", "hmac": "key_id", "mtls": "match"}[kind.value]
            raise ServiceError(
                ALREADY_EXISTS,
                f"a {PATHS[kind]} credential with this {field} already exists",
                errors=[{"pointer": f"#/{field}", "detail": "already exists"}],
            ) from None
        await op.record(
            "create", RESOURCE_TYPE, credential.id, after=credential.as_json(), status=201
        )
        return credential, shown

    @staticmethod
    def _material(
        kind: CredentialKind, body: CredentialCreate, consumer: Consumer
    ) -> tuple[str, str | None, str | None]:
        """(identifier, secret to store, secret to show once) of a new credential."""
        given = body.model_fields_set
        allowed = {
            CredentialKind.BASIC: {"username", "password"},
            CredentialKind.HMAC: set(),
            CredentialKind.MTLS: {"match"},
        }[kind]
        stray = sorted(given - allowed)
        if stray:
            raise invalid(
                [(f"#/{f}", f"not a member of a {PATHS[kind]} credential") for f in stray]
            )
        if kind is CredentialKind.BASIC:
            username = body.username or consumer.username
            if body.password is not None:
                return username, body.password, None
            password = generate_secret()
            return username, password, password
        if kind is CredentialKind.HMAC:
            secret = generate_secret()
            return generate_hmac_key_id(), secret, secret
        if body.match is None:
            raise invalid([("#/match", "required")])
        return normalize_match(body.match), None, None

    async def list_for_consumer(
        self,
        op: Operation,
        username: str,
        kind: CredentialKind,
        *,
        limit: int,
        cursor: str | None,
        sort: str | None,
    ) -> Page:
        keys = parse_sort(sort, CREDENTIAL_SORT, "created_at")
        consumer = _consumer_in((await self._editor.state()).config, username, op)
        found = await self._repository.list_for(consumer.username, kind)
        items = [c.as_json() for c in found if op.scope.owns(c.organization_id)]
        return paginate(items, lambda c: str(c["id"]), keys, limit=limit, cursor=cursor)

    async def get(
        self, op: Operation, username: str, kind: CredentialKind, credential_id: str
    ) -> ConsumerCredential:
        found = await self._repository.get(credential_id)
        if (
            found is None
            or found.kind is not kind
            or found.consumer != username
            or not op.scope.owns(found.organization_id)
        ):
            raise not_found(
                f"{PATHS[kind]} credential {credential_id!r} of consumer {username!r} does not "
                "exist",
                target="credential_id",
            )
        return found

    async def rotate(
        self,
        op: Operation,
        username: str,
        kind: CredentialKind,
        credential_id: str,
        body: CredentialRotate,
        *,
        if_match: str | None = None,
    ) -> tuple[ConsumerCredential, str | None]:
        """Replace the secret (hmac: a new one; basic: the given or a generated password)."""
        await self.get(op, username, kind, credential_id)
        if kind is CredentialKind.MTLS:
            raise invalid([("", "an mtls-auth credential has no secret: delete and create it")])
        if kind is CredentialKind.HMAC and body.password is not None:
            raise invalid([("#/password", "not a member of a hmac-auth rotation")])
        shown = None
        secret = body.password
        if secret is None:
            secret = shown = generate_secret()
        precondition: Precondition[ConsumerCredential] = Precondition(if_match, etag_of_credential)
        after = await self._repository.rotate(credential_id, secret, check=precondition)
        if after is None or precondition.seen is None:
            raise not_found(f"credential {credential_id!r} does not exist", target="credential_id")
        await op.record(
            "rotate",
            RESOURCE_TYPE,
            credential_id,
            before=precondition.seen.as_json(),
            after=after.as_json(),
        )
        return after, shown

    async def delete(
        self,
        op: Operation,
        username: str,
        kind: CredentialKind,
        credential_id: str,
        *,
        if_match: str | None = None,
    ) -> None:
        await self.get(op, username, kind, credential_id)
        precondition: Precondition[ConsumerCredential] = Precondition(if_match, etag_of_credential)
        if not await self._repository.delete(credential_id, check=precondition):
            raise not_found(f"credential {credential_id!r} does not exist", target="credential_id")
        await op.record(
            "delete",
            RESOURCE_TYPE,
            credential_id,
            before=None if precondition.seen is None else precondition.seen.as_json(),
            status=204,
        )
