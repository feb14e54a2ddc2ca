"""Consumer API keys: create, list, get, update, rotate, revoke, suspend, resume, import, export.

Keys live in the store, not in the declarative config; the consumer a key is
issued to must exist in the current config, found in the version the key is
stored against (`ConfigEditor.pinned`: a config change meanwhile re-runs the
lookup). The full key leaves this module in exactly two results, the `CreatedKey`
of a create and the `Rotation` of a rotate; everything recorded (audit) is
metadata only. Revocation is final; the record stays for the audit trail and so a
leaked key is recognised as revoked, not unknown.

Organization-limited callers see and manage only keys whose organization (the
consumer's, at creation, kept by id across renames) is theirs; anyone else's key
is "not found". Every change is audited as `api_key`; the store emits the
credential events (cache invalidation on every worker) in the write's own
transaction.

ETags cover the representation without `last_used_at` (traffic on a key must not
make an operator's If-Match fail) and without the one-time `key`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.key_admin import (
    DEFAULT_GRACE_SECONDS,
    MAX_GRACE_SECONDS,
    CreatedKey,
    ImportedKey,
    ImportRejected,
    ImportRow,
    KeyInfo,
    KeySettings,
    KeySpec,
    KeyState,
    Reason,
    Rotation,
    UnknownConsumer,
    check_import_consumers,
    export_csv,
    export_jsonl,
    parse_import_csv,
    resolve_consumer,
)
from portcullis.identity.key_repository import (
    InvalidCursor,
    KeyConflict,
    KeyFilter,
    KeyInvalid,
    KeyNotFound,
    KeyPage,
    KeyRepository,
)
from portcullis.identity.keys import Environment, FullKeyGiven, key_id_of
from portcullis.identity.secrets import ServerSecret
from portcullis.model.config import GatewayConfig
from portcullis.problems import BAD_REQUEST, ProblemKind
from portcullis.services.config_editor import ConfigEditor, ConfigState
from portcullis.services.context import Operation
from portcullis.services.errors import (
    INVALID_CURSOR,
    VALIDATION_FAILED,
    FieldError,
    ServiceError,
    invalid,
    not_found,
)
from portcullis.services.preconditions import Precondition, apply_merge_patch, etag_without

RESOURCE_TYPE = "api_key"
KEY_STATE_CONFLICT = ProblemKind(
    "key-state-conflict", "The key's current state does not allow this change", 409
)
# Members of a key's representation its ETag leaves out (see the module docstring).
VOLATILE = ("last_used_at", "key")
Transition = Literal["revoke", "suspend", "resume"]


def represent(info: KeyInfo, now: datetime) -> dict[str, Any]:
    """A key's metadata as JSON (never the key or its hash)."""
    return info.as_json(now)


def etag_of_key(representation: Mapping[str, Any]) -> str:
    """The ETag of a key's representation (`represent`)."""
    return etag_without(dict(representation), VOLATILE)


class KeyOut(BaseModel):
    """An API key's metadata (never the key or its hash)."""

    id: str = Field(examples=["4fJx0Qe8LmZp"])
    prefix: str | None = Field(
        description="The key's non-secret beginning (null for imported foreign-format keys)",
        examples=["pc_live_4fJx0Qe8LmZp"],
    )
    consumer: str
    organization: str | None = Field(description="The organization's current name")
    organization_id: str | None = Field(
        description="The organization the key belongs to (kept when it is renamed)"
    )
    environment: Environment
    name: str
    scopes: list[str]
    expires_at: datetime | None
    allowed_origins: list[str]
    ip_allowlist: list[str]
    plan: str | None
    metadata: dict[str, str | int | float | bool | None]
    status: Literal["active", "suspended", "revoked"]
    status_reason: str | None
    state: KeyState = Field(description="Whether the key works now, and if not, why")
    rotated_from: str | None
    replaced_by: str | None
    grace_until: datetime | None = Field(description="A rotated key works until then")
    created_by: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None = Field(description="Updated in batches, not per request")


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        DEFAULT_GRACE_SECONDS,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old key keeps working (0: it stops now)",
    )
    expires_at: AwareDatetime | None = Field(
        None, description="The new key's expiry (omitted: the old key's; null: never)"
    )


class ReasonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(examples=["leaked in a public repository"])


class KeyQuery(BaseModel):
    """Filters shared by the listing and the export."""

    model_config = ConfigDict(extra="forbid")

    consumer: str | None = Field(None, description="Only this consumer's keys")
    organization: str | None = Field(None, description="Only keys of this organization")
    environment: Environment | None = None
    status: KeyState | None = Field(None, description="The key's effective state")
    name: str | None = Field(None, description="Only keys with exactly this name")

    def as_filter(self) -> KeyFilter:
        return KeyFilter(
            consumer=self.consumer,
            organization=self.organization,
            environment=self.environment,
            state=self.status,
            name=self.name,
        )


class ImportRefused(ServiceError):
    """A CSV import refused as a whole; its field errors name every problem, by row."""


def refusal(exc: Exception) -> ServiceError:
    """The `ServiceError` for a refusal of the key store or the import parser."""
    if isinstance(exc, KeyNotFound):
        return not_found(str(exc), target="key_id")
    if isinstance(exc, KeyConflict):
        return ServiceError(KEY_STATE_CONFLICT, str(exc))
    if isinstance(exc, KeyInvalid):
        return invalid([(f"#/{exc.field}", exc.message)])
    if isinstance(exc, InvalidCursor):
        return ServiceError(INVALID_CURSOR, str(exc), target="cursor")
    if isinstance(exc, ImportRejected):
        return ImportRefused(
            VALIDATION_FAILED,
            f"nothing was imported: {len(exc.errors)} problem(s) in the CSV",
            errors=[FieldError(e.pointer, e.detail) for e in exc.errors],
        )
    raise exc


_REFUSALS = (KeyNotFound, KeyConflict, KeyInvalid, InvalidCursor, ImportRejected)


class KeyService:
    """The API key operations over one store (`engine`), its credential pepper (`secret`)
    and the config editor that tells which consumers exist."""

    def __init__(self, engine: AsyncEngine, secret: ServerSecret, editor: ConfigEditor) -> None:
        self._engine = engine
        self._secret = secret
        self._editor = editor

    def _keys(self, op: Operation) -> KeyRepository:
        return KeyRepository(self._engine, self._secret, clock=op.clock)

    # ------------------------------------------------------------------ reads

    @staticmethod
    def key_id(reference: str) -> str:
        """The key id in what a caller names a key by: its id or the display prefix
        `pc_<env>_<id>` that lists show. A whole secret key is refused with a 400 that
        names the id and never echoes the key."""
        try:
            return key_id_of(reference)
        except FullKeyGiven as exc:
            raise ServiceError(BAD_REQUEST, str(exc), target="key_id") from None

    async def get(self, op: Operation, key_id: str) -> KeyInfo:
        """One key; not found also for a key outside the caller's organization."""
        key_id = self.key_id(key_id)
        try:
            info = await self._keys(op).get(key_id)
        except KeyNotFound as exc:
            raise refusal(exc) from None
        if not op.scope.owns(info.organization_id):
            raise not_found(f"API key {key_id!r} does not exist", target="key_id")
        return info

    async def list_keys(
        self,
        op: Operation,
        where: KeyFilter = KeyFilter(),
        *,
        limit: int = 50,
        cursor: str | None = None,
        sort: str | None = None,
    ) -> KeyPage:
        """One page of the keys matching `where` that the caller may see."""
        try:
            return await self._keys(op).list_keys(
                self._scoped(op, where), limit=limit, cursor=cursor, sort=sort
            )
        except (KeyInvalid, InvalidCursor) as exc:
            raise refusal(exc) from None

    async def list_consumer_keys(
        self,
        op: Operation,
        username: str,
        where: KeyFilter = KeyFilter(),
        *,
        limit: int = 50,
        cursor: str | None = None,
        sort: str | None = None,
    ) -> KeyPage:
        """One page of consumer `username`'s keys; not found (rather than empty) when the
        consumer is not in the current config or not visible to the caller."""
        await self.consumer_organization(op, username)
        return await self.list_keys(
            op, dataclasses.replace(where, consumer=username), limit=limit, cursor=cursor, sort=sort
        )

    async def keys_of_consumers(
        self, op: Operation, usernames: Sequence[str], *, per_consumer: int
    ) -> dict[str, KeyPage]:
        """The first page of each consumer's keys that the caller may see, in one store
        read (the consumers come from a list the caller was already allowed to see)."""
        return await self._keys(op).keys_of_consumers(
            usernames, self._scoped(op, KeyFilter()), per_consumer=per_consumer
        )

    def export(
        self, op: Operation, where: KeyFilter, fmt: Literal["csv", "jsonl"]
    ) -> AsyncIterator[str]:
        """The metadata of every matching key the caller may see, as CSV or JSON lines
        (chunks of text, streamed from the store in batches)."""
        keys = self._keys(op).stream_keys(self._scoped(op, where))
        render = export_csv if fmt == "csv" else export_jsonl
        return render(keys, op.now())

    @staticmethod
    def _scoped(op: Operation, where: KeyFilter) -> KeyFilter:
        # Both apply: an organization-limited admin filtering on another
        # organization sees nothing.
        return dataclasses.replace(where, organization_id=op.scope.organization_id)

    async def consumer_organization(self, op: Operation, username: str) -> str | None:
        """The organization of consumer `username`; not found when it is unknown to (or
        not visible in) the current config."""
        return self._consumer_organization(op, (await self._editor.state()).config, username)

    @staticmethod
    def _consumer_organization(op: Operation, config: GatewayConfig, username: str) -> str | None:
        try:
            consumer = resolve_consumer(config, username, organization=op.scope.organization)
        except UnknownConsumer:
            raise not_found(f"consumer {username!r} does not exist", target="consumer") from None
        return consumer.organization

    # ------------------------------------------------------------------ writes

    async def create(self, op: Operation, consumer: str, spec: KeySpec) -> CreatedKey:
        """Generate and store a key for `consumer` (the full key is in the result only)."""

        async def create(state: ConfigState) -> CreatedKey:
            # Pinned to the config the consumer was found in (services/config_editor.py).
            return await self._keys(op).create(
                consumer,
                spec,
                created_by=op.actor,
                organization=self._consumer_organization(op, state.config, consumer),
                config_version=state.version,
            )

        try:
            created = await self._editor.pinned(create)
        except KeyInvalid as exc:
            raise refusal(exc) from None
        await self._record(op, "create", created.info.id, after=created.info, status=201)
        return created

    async def update(
        self, op: Operation, key_id: str, patch: Mapping[str, Any], *, if_match: str | None = None
    ) -> KeyInfo:
        """Apply a JSON Merge Patch of the key's settings (name, scopes, expiry, origins,
        IP allowlist, plan, metadata) to the key as stored when it is written."""
        key_id = self.key_id(key_id)
        await self.get(op, key_id)
        precondition = self._precondition(op, if_match)

        def patched(current: KeyInfo) -> KeySettings:
            return apply_merge_patch(KeySettings, current.settings(), patch)

        try:
            info = await self._keys(op).update(key_id, patched, check=precondition)
        except (KeyNotFound, KeyConflict, KeyInvalid) as exc:
            raise refusal(exc) from None
        await self._record(op, "update", key_id, before=precondition.seen, after=info)
        return info

    async def rotate(
        self,
        op: Operation,
        key_id: str,
        *,
        grace_seconds: int,
        expires_at: datetime | Literal["keep"] | None = "keep",
        if_match: str | None = None,
    ) -> Rotation:
        """Issue a successor key (the full key is in the result only); the old one works
        for `grace_seconds` more. `expires_at`: the new key's expiry ("keep": the old's)."""
        key_id = self.key_id(key_id)
        await self.get(op, key_id)
        precondition = self._precondition(op, if_match)
        try:
            rotation = await self._keys(op).rotate(
                key_id,
                grace_seconds=grace_seconds,
                created_by=op.actor,
                expires_at=expires_at,
                check=precondition,
            )
        except (KeyNotFound, KeyConflict, KeyInvalid) as exc:
            raise refusal(exc) from None
        await self._record(op, "rotate", key_id, before=precondition.seen, after=rotation.old)
        await self._record(op, "create", rotation.new.id, after=rotation.new, status=201)
        return rotation

    async def transition(
        self,
        op: Operation,
        key_id: str,
        action: Transition,
        *,
        reason: str | None = None,
        if_match: str | None = None,
        status: int = 200,
    ) -> KeyInfo:
        """Revoke (final), suspend or resume a key. `status` is what the audit event
        records as the outcome (the REST `DELETE` answers 204)."""
        key_id = self.key_id(key_id)
        await self.get(op, key_id)
        precondition = self._precondition(op, if_match)
        keys = self._keys(op)
        try:
            if action == "revoke":
                info = await keys.revoke(key_id, reason or "revoked", check=precondition)
            elif action == "suspend":
                info = await keys.suspend(key_id, reason or "suspended", check=precondition)
            else:
                info = await keys.resume(key_id, check=precondition)
        except (KeyNotFound, KeyConflict) as exc:
            raise refusal(exc) from None
        await self._record(op, action, key_id, before=precondition.seen, after=info, status=status)
        return info

    async def import_csv(
        self,
        op: Operation,
        text: str,
        *,
        dry_run: bool = False,
        max_rows: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[ImportedKey]:
        """Import keys from CSV (see `identity.key_admin.parse_import_csv`), all or nothing:
        any problem refuses the whole file with one field error per problem
        (`#/rows/<n>/<column>`). Generated keys are in the result only.
        `on_progress(stored, total)` follows the rows as they are stored."""
        try:
            rows = (
                parse_import_csv(text)
                if max_rows is None
                else parse_import_csv(text, max_rows=max_rows)
            )
        except ImportRejected as exc:
            raise refusal(exc) from None

        async def store(state: ConfigState) -> list[ImportedKey]:
            return await self._store_rows(op, rows, state, dry_run, on_progress)

        try:
            imported = await self._editor.pinned(store)
        except _REFUSALS as exc:
            raise refusal(exc) from None
        if not dry_run:
            ids = [i.info.id for i in imported]
            await op.record(
                "import", RESOURCE_TYPE, None, after={"count": len(ids), "ids": ids}, status=201
            )
        return imported

    async def _store_rows(
        self,
        op: Operation,
        rows: list[ImportRow],
        state: ConfigState,
        dry_run: bool,
        on_progress: Callable[[int, int], None] | None,
    ) -> list[ImportedKey]:
        progress = None
        if on_progress is not None:
            report, total = on_progress, len(rows)

            def progress(stored: int) -> None:
                report(stored, total)

        organizations = check_import_consumers(
            rows, state.config, organization=op.scope.organization
        )
        return await self._keys(op).import_keys(
            rows,
            organizations,
            created_by=op.actor,
            dry_run=dry_run,
            on_progress=progress,
            config_version=state.version,
        )

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _precondition(op: Operation, if_match: str | None) -> Precondition[KeyInfo]:
        """If-Match on a key, checked by the repository on the key it locked for the write."""
        return Precondition(if_match, lambda info: etag_of_key(represent(info, op.now())))

    @staticmethod
    async def _record(
        op: Operation,
        action: str,
        key_id: str,
        *,
        before: KeyInfo | None = None,
        after: KeyInfo,
        status: int = 200,
    ) -> None:
        now = op.now()
        await op.record(
            action,
            RESOURCE_TYPE,
            key_id,
            before=None if before is None else represent(before, now),
            after=represent(after, now),
            status=status,
        )
