"""Webhook endpoints: create, list, get, update, delete, enable/disable, rotate the
signing secret; their deliveries and attempts (list, export); replay one delivery or
every dead letter of a time range; send a test event.

An endpoint belongs to at most one organization. Organization-limited callers see and
change only their organization's endpoints (anyone else's is "not found") and create
into theirs; unlimited callers see every one. The signing secret (`whsec_…`, or for
`signature: "v1a"` the ed25519 `whsk_…` key) leaves this module only in the result of a
create or a rotation, and a `v1a` endpoint shows its `whpk_` public key, never the
signing key. Custom headers are sealed at rest and shown by name only. Every change is
audited as `webhook_endpoint`, without secrets or header values.

Writes are compare-and-set on the endpoint's `version` column: the change is computed
(and the destination checked, which may resolve DNS) outside the write transaction,
then stored only if the version is still the one read; a concurrent change makes the
operation read again (and `If-Match`, when given, is compared on that fresh read).
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Select, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.events.catalogue import event_pattern
from portcullis.identity.secrets import ServerSecret
from portcullis.problems import ProblemKind
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.errors import (
    FORBIDDEN,
    INVALID_CURSOR,
    PRECONDITION_FAILED,
    ServiceError,
    invalid,
    not_found,
)
from portcullis.services.pagination import Page, paginate, parse_sort
from portcullis.services.preconditions import apply_merge_patch, check_if_match, etag_without
from portcullis.services.query import Rfc3339
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.engine import write_transaction
from portcullis.store.webhook_tables import (
    WebhookAttemptRow,
    WebhookEndpointRow,
    WebhookMessageRow,
)
from portcullis.webhooks import queue
from portcullis.webhooks.destinations import (
    ALLOWED_NETWORKS_VARIABLE,
    DestinationPolicy,
    DestinationRefused,
)
from portcullis.webhooks.endpoints import (
    NewEndpoint,
    create_endpoint,
    live_secrets,
    public_key_of,
    rotate_secret,
    scheme_of,
    seal_headers,
    unseal_headers,
)

RESOURCE_TYPE = "webhook_endpoint"
ENDPOINT_SORT = ("created_at", "url", "updated_at")
DEFAULT_GRACE = timedelta(hours=24)
MAX_GRACE = timedelta(days=30)
MAX_HEADERS = 20
FILTER_KEYS = ("route", "service", "consumer")
MESSAGE_STATUSES = ("pending", "delivered", "failed")
RESOLVE_TIMEOUT = 2.0
WEBHOOK_STATE_CONFLICT = ProblemKind(
    "webhook-state-conflict", "The webhook endpoint's current state does not allow this", 409
)
# Members of an endpoint's representation its ETag leaves out: the run of failures
# moves with deliveries, not with anyone's edit.
VOLATILE = ("failing_since",)
# Hop-by-hop and framing headers (RFC 9110 §7.6.1), and headers the sender sets itself.
_RESERVED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "content-encoding",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_MESSAGE_ID = re.compile(r"^msg_[0-9a-z]{26}$")
_CURSOR_WRITE_ATTEMPTS = 5

E = WebhookEndpointRow
M = WebhookMessageRow
A = WebhookAttemptRow


# ---------------------------------------------------------------------------- input


def _url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("the scheme must be http or https")
    if not parts.hostname:
        raise ValueError("the URL needs a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no credentials in the URL: send them as a custom header")
    return value


def _header_name(name: str) -> str:
    if not _TOKEN.match(name) or len(name) > 64:
        raise ValueError(f"{name!r} is not a header name")
    lower = name.lower()
    if lower in _RESERVED_HEADERS or lower.startswith("webhook-"):
        raise ValueError(f"{name!r} is set by the sender (hop-by-hop, framing or webhook-*)")
    return name


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n\0") or len(value) > 4096:
        raise ValueError("a header value holds no line breaks or NUL and at most 4096 characters")
    return value


def _filter_key(key: str) -> str:
    if key not in FILTER_KEYS:
        raise ValueError(f"{key!r} is not a payload filter (one of {', '.join(FILTER_KEYS)})")
    return key


EventPattern = Annotated[
    str,
    Field(max_length=128, pattern=r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*)?)$"),
    AfterValidator(event_pattern),
]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
FilterKey = Annotated[str, AfterValidator(_filter_key)]


class WebhookSettings(BaseModel):
    """What an endpoint's owner chooses, and what a merge patch may change."""

    model_config = ConfigDict(extra="forbid")

    url: Annotated[str, Field(max_length=2048), AfterValidator(_url)] = Field(
        description="Where deliveries are POSTed (http or https)",
        examples=["https://hooks.example.com/portcullis"],
    )
    event_types: list[EventPattern] = Field(
        min_length=1,
        max_length=64,
        description="Event kinds to receive: a kind (`key.revoked`), an area (`key.*`) or `*`",
        examples=[["key.*", "alert.firing"]],
    )
    description: str = Field("", max_length=500)
    filters: dict[FilterKey, Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=dict,
        description="Only events whose data has these values (route, service, consumer)",
    )
    consumer: str | None = Field(
        None, max_length=256, description="Only this consumer's events (a consumer's own hook)"
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description="Sent with every delivery; sealed at rest, never shown again (names only)",
    )
    enabled: bool = True
    rate_limit: int | None = Field(
        None, ge=1, le=10_000, description="At most this many deliveries per second (none: no cap)"
    )
    max_concurrency: int = Field(4, ge=1, le=64, description="Attempts in flight at once")
    ordered: bool = Field(False, description="One delivery at a time, oldest event first")


class WebhookCreate(WebhookSettings):
    organization: str | None = Field(
        None, description="The organization (name) it belongs to; limited admins: their own"
    )
    signature: Literal["v1", "v1a"] = Field(
        "v1",
        description="`v1`: HMAC-SHA256 with a `whsec_` secret (shown once); `v1a`: ed25519,"
        " receivers verify with the `whpk_` public key",
    )


# ---------------------------------------------------------------------------- output


class WebhookOut(BaseModel):
    """A webhook endpoint (never its secret or its header values)."""

    id: str = Field(examples=["ep_01hq3v8r1k9x6m2n4p7s5t0w3y"])
    url: str
    description: str
    event_types: list[str]
    filters: dict[str, str]
    consumer: str | None
    organization: str | None = Field(description="The organization's current name")
    organization_id: str | None
    header_names: list[str] = Field(description="Custom headers sent (values are never shown)")
    enabled: bool
    disabled_reason: str | None = Field(description="manual, gone (410) or failing")
    failing_since: str | None = Field(description="Start of the current run of failures")
    rate_limit: int | None
    max_concurrency: int
    ordered: bool
    signature: Literal["v1", "v1a"]
    public_key: str | None = Field(description="`whpk_…` of a v1a endpoint (null for v1)")
    signing_secrets: int = Field(description="Secrets signing now (2 during a rotation's grace)")
    version: int
    created_at: str
    updated_at: str


class AttemptOut(BaseModel):
    message_id: str
    attempt: int
    trigger: str = Field(description="scheduled, replay or test")
    attempted_at: str
    status_code: int | None
    error: str | None = Field(description="Why no 2xx came back (timeout, connect, status, …)")
    latency_ms: float
    response_excerpt: str = Field(description="The first 4 KiB of the answer")
    response_excerpt_encoding: Literal["text", "base64"] = Field(
        description="`text` when the excerpt is UTF-8, else `base64` of its bytes"
    )
    detail: str


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` every attempt sends")
    endpoint_id: str
    event_id: int
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts_made: int
    next_attempt_at: str | None
    last_status: int | None
    last_error: str | None
    created_at: str
    finished_at: str | None


class DeliveryWithAttempts(DeliveryOut):
    attempts: list[AttemptOut]


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def excerpt_json(raw: bytes | None) -> tuple[str, Literal["text", "base64"]]:
    """A response excerpt as text when it is UTF-8 (an excerpt cut inside a character at
    the 4 KiB cap still is), else base64; with which one it is."""
    data = raw or b""
    try:
        return data.decode("utf-8"), "text"
    except UnicodeDecodeError as exc:
        # Only a character cut short at the very end is forgiven (the excerpt's cap).
        if exc.reason == "unexpected end of data" and exc.end == len(data):
            return data[: exc.start].decode("utf-8"), "text"
    return base64.b64encode(data).decode("ascii"), "base64"


def etag_of_endpoint(representation: Mapping[str, Any]) -> str:
    return etag_without(dict(representation), VOLATILE)


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries to list; None means any."""

    endpoint_id: str | None = None
    event_id: int | None = None
    status: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class DeliveryConditions(BaseModel):
    """Conditions on listed deliveries, as every face reads them."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pending", "delivered", "failed"] | None = None
    event_type: str | None = Field(None, max_length=128)
    since: Rfc3339 | None = Field(None, description="Events queued at or after (RFC 3339)")
    until: Rfc3339 | None = Field(None, description="Events queued before (RFC 3339)")

    def where(self, endpoint_id: str | None = None, event_id: int | None = None) -> DeliveryFilter:
        return DeliveryFilter(
            endpoint_id=endpoint_id,
            event_id=event_id,
            status=self.status,
            event_type=self.event_type,
            since=self.since,
            until=self.until,
        )


class ReplayFailedIn(BaseModel):
    """The window of a replay of dead-lettered deliveries."""

    model_config = ConfigDict(extra="forbid")

    # A body is validated as strict JSON (admin/strict_json.py): a number is no time there.
    since: AwareDatetime | None = Field(None, description="Events queued at or after")
    until: AwareDatetime | None = Field(None, description="Events queued before")


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class WebhookService:
    """The webhook operations on one store (`engine`), sealing with `secret`; consumers
    are those of the config behind `editor`; destinations are checked by `policy`."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: ServerSecret,
        editor: ConfigEditor,
        policy: DestinationPolicy,
        *,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._engine = engine
        self._secret = secret
        self._editor = editor
        self._policy = policy
        self._resolve = resolver

    # ------------------------------------------------------------------ reads

    async def get(self, op: Operation, endpoint_id: str) -> dict[str, Any]:
        """One endpoint; not found also for one outside the caller's organization."""
        row = await self._row(op, endpoint_id)
        return self._represent(row, await self._org_names(), op.now())

    async def list_endpoints(
        self,
        op: Operation,
        *,
        enabled: bool | None = None,
        event_type: str | None = None,
        organization: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        sort: str | None = None,
    ) -> Page:
        """One page of the endpoints the caller sees; `event_type`: those that would
        receive an event of that kind; `organization`: of that organization (name)."""
        keys = parse_sort(sort, ENDPOINT_SORT, "-created_at")
        statement = select(E)
        if op.scope.limited:
            statement = statement.where(E.organization_id == op.scope.organization_id)
        if enabled is not None:
            statement = statement.where(E.enabled.is_(enabled))
        names = await self._org_names()
        if organization is not None:
            ids = [i for i, n in names.items() if n == organization]
            statement = statement.where(E.organization_id.in_(ids))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        now = op.now()
        items = [
            self._represent(r, names, now)
            for r in rows
            if event_type is None
            or any(fnmatchcase(event_type, p) for p in json.loads(r.event_types))
        ]
        return paginate(items, lambda i: str(i["id"]), keys, limit=limit, cursor=cursor)

    async def deliveries(
        self, op: Operation, where: DeliveryFilter, *, limit: int = 50, cursor: str | None = None
    ) -> DeliveryPage:
        """Deliveries (one per event and endpoint), newest first, each with its attempts."""
        if where.endpoint_id is not None:
            await self._row(op, where.endpoint_id)
        statement = self._delivery_query(op, where).order_by(M.id.desc()).limit(limit + 1)
        if cursor is not None:
            if not _MESSAGE_ID.match(cursor):
                raise ServiceError(INVALID_CURSOR, "not a cursor of this listing", target="cursor")
            statement = statement.where(M.id < cursor)
        async with self._engine.connect() as conn:
            messages = (await conn.execute(statement)).all()[: limit + 1]
            shown = messages[:limit]
            attempts = await self._attempts(conn, [m.id for m in shown])
        items = [
            {
                **self._message_json(m),
                "attempts": [_attempt_json(a) for a in attempts.get(m.id, ())],
            }
            for m in shown
        ]
        return DeliveryPage(items, shown[-1].id if len(messages) > limit else None)

    async def export_attempts(
        self, op: Operation, where: DeliveryFilter
    ) -> AsyncIterator[dict[str, Any]]:
        """Every attempt of the matching deliveries, oldest first, as flat records (for CSV
        or JSON lines); never a secret or a header value."""
        if where.endpoint_id is not None:
            await self._row(op, where.endpoint_id)
        messages = self._delivery_query(op, where).subquery()
        statement = (
            select(
                A,
                messages.c.event_id,
                messages.c.event_type,
                messages.c.status.label("delivery_status"),
            )
            .join(messages, messages.c.id == A.message_id)
            .order_by(A.attempted_at, A.id)
        )
        return self._stream_attempts(statement)

    async def _stream_attempts(self, statement: Select[Any]) -> AsyncIterator[dict[str, Any]]:
        async with self._engine.connect() as conn:
            result = await conn.stream(statement)
            async for row in result:
                yield {
                    "message_id": row.message_id,
                    "endpoint_id": row.endpoint_id,
                    "event_id": row.event_id,
                    "event_type": row.event_type,
                    "delivery_status": row.delivery_status,
                    **{k: v for k, v in _attempt_json(row).items() if k != "message_id"},
                }

    # ------------------------------------------------------------------ writes

    async def create(
        self, op: Operation, spec: WebhookCreate, *, portal_team: str | None = None
    ) -> tuple[dict[str, Any], str]:
        """Store a new endpoint; (its representation, its secret: `whsec_…`, or for `v1a`
        the `whpk_` public key, which the representation also carries). `portal_team`:
        the developer-portal team that owns it (services/portal_webhooks.py)."""
        org_id, org_name = await self._organization(op, spec.organization)
        await self._check(op, spec, org_name)
        now = op.now()
        new = NewEndpoint(
            url=spec.url,
            event_types=spec.event_types,
            organization_id=org_id,
            description=spec.description,
            filters=spec.filters,
            consumer=spec.consumer,
            headers=spec.headers,
            enabled=spec.enabled,
            rate_limit=spec.rate_limit,
            max_concurrency=spec.max_concurrency,
            ordered=spec.ordered,
            signature=spec.signature,
            portal_team_id=portal_team,
        )
        async with write_transaction(self._engine) as conn:
            ident, secret = await create_endpoint(conn, self._secret, new, now)
            row = (await conn.execute(select(E).where(E.id == ident))).one()
            after = self._represent(row, {org_id: org_name} if org_id and org_name else {}, now)
            await op.record("create", RESOURCE_TYPE, ident, after=after, status=201, conn=conn)
        shown = public_key_of(secret) or secret
        return after, shown

    async def update(
        self,
        op: Operation,
        endpoint_id: str,
        patch: Mapping[str, Any],
        *,
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Apply a JSON Merge Patch of the endpoint's settings (headers merge into the
        stored ones: `{"headers": {"X-Old": null}}` removes one)."""

        async def change(row: Any, before: dict[str, Any]) -> dict[str, Any]:
            current = self._settings_document(row)
            settings = apply_merge_patch(WebhookSettings, current, patch)
            await self._check(op, settings, before["organization"], current)
            values: dict[str, Any] = {
                "url": settings.url,
                "event_types": json.dumps(settings.event_types),
                "description": settings.description,
                "filters": json.dumps(settings.filters),
                "consumer": settings.consumer,
                "headers_sealed": seal_headers(self._secret, row.id, settings.headers),
                "rate_limit": settings.rate_limit,
                "max_concurrency": settings.max_concurrency,
                "ordered": settings.ordered,
            }
            values.update(_enabled_values(row, settings.enabled))
            return values

        return await self._write(op, endpoint_id, if_match, "update", change)

    async def set_enabled(
        self, op: Operation, endpoint_id: str, enabled: bool, *, if_match: str | None = None
    ) -> dict[str, Any]:
        """Enable (the failure run and disable reason are cleared) or disable an endpoint;
        a disabled endpoint's deliveries wait, nothing new is queued for it."""

        async def change(row: Any, before: dict[str, Any]) -> dict[str, Any]:
            return _enabled_values(row, enabled)

        return await self._write(
            op, endpoint_id, if_match, "enable" if enabled else "disable", change
        )

    async def rotate(
        self,
        op: Operation,
        endpoint_id: str,
        *,
        grace: timedelta = DEFAULT_GRACE,
        if_match: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A new signing secret (in the result only; the `whpk_` public key for `v1a`); the
        previous one keeps signing for `grace`, so receivers can switch without a gap."""
        if not timedelta(0) <= grace <= MAX_GRACE:
            raise invalid([("#/grace_seconds", f"between 0 and {int(MAX_GRACE.total_seconds())}")])
        rotated: list[str] = []

        async def store(conn: AsyncConnection, row: Any, now: datetime) -> None:
            rotated.append(await rotate_secret(conn, self._secret, row.id, now, grace))

        after = await self._write(op, endpoint_id, if_match, "rotate-secret", None, store)
        return after, public_key_of(rotated[-1]) or rotated[-1]

    async def delete(self, op: Operation, endpoint_id: str, *, if_match: str | None = None) -> None:
        """Delete an endpoint with its queued deliveries and their history."""
        for _ in range(_CURSOR_WRITE_ATTEMPTS):
            row = await self._row(op, endpoint_id)
            before = self._represent(row, await self._org_names(), op.now())
            check_if_match(if_match, etag_of_endpoint(before))
            async with write_transaction(self._engine) as conn:
                gone = await conn.execute(
                    delete(E).where(E.id == endpoint_id, E.version == row.version)
                )
                if gone.rowcount == 1:
                    await op.record(
                        "delete", RESOURCE_TYPE, endpoint_id, before=before, status=204, conn=conn
                    )
                    return
        raise _busy(endpoint_id)

    async def replay(self, op: Operation, endpoint_id: str, message_id: str) -> dict[str, Any]:
        """Queue one finished delivery (delivered or dead-lettered) again, with the same
        `webhook-id`; a fresh run of attempts starts now."""
        row = await self._row(op, endpoint_id)
        async with write_transaction(self._engine) as conn:
            message = (
                await conn.execute(
                    select(M).where(M.id == message_id, M.endpoint_id == endpoint_id)
                )
            ).first()
            if message is None:
                raise not_found(
                    f"delivery {message_id!r} of endpoint {endpoint_id!r} does not exist",
                    target="message_id",
                )
            if not await queue.replay(conn, message_id, op.now()):
                raise ServiceError(
                    WEBHOOK_STATE_CONFLICT, f"delivery {message_id!r} is still pending"
                )
            await self._record_action(op, conn, row, "replay", {"message_id": message_id})
            replayed = (await conn.execute(select(M).where(M.id == message_id))).one()
        return self._message_json(replayed)

    async def replay_failed(
        self,
        op: Operation,
        endpoint_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Queue again every dead-lettered delivery of the endpoint whose event was queued
        in [since, until); how many."""
        if since is not None and until is not None and since >= until:
            raise invalid([("#/until", "must be after since")])
        row = await self._row(op, endpoint_id)
        async with write_transaction(self._engine) as conn:
            count = await queue.replay_failed(conn, endpoint_id, op.now(), since=since, until=until)
            await self._record_action(
                op,
                conn,
                row,
                "replay-failed",
                {"since": _time(since), "until": _time(until), "replayed": count},
            )
        return count

    async def send_test(self, op: Operation, endpoint_id: str) -> str:
        """Queue a `webhook.test` event for this endpoint alone; its delivery's id."""
        row = await self._row(op, endpoint_id)
        if not row.enabled:
            raise ServiceError(
                WEBHOOK_STATE_CONFLICT, f"endpoint {endpoint_id!r} is disabled: enable it first"
            )
        async with write_transaction(self._engine) as conn:
            ident = await queue.enqueue_test(
                conn, endpoint_id, op.now(), organization_id=row.organization_id
            )
            await self._record_action(op, conn, row, "test", {"message_id": ident})
        return ident

    async def team_endpoints(self, team: str) -> list[str]:
        """The ids of the endpoints developer-portal team `team` owns, newest first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(E.id).where(E.portal_team_id == team).order_by(E.created_at.desc(), E.id)
            )
            return [str(r) for r in rows.scalars()]

    async def team_of(self, endpoint_id: str) -> str | None:
        """The developer-portal team that owns an endpoint (None: none, or no endpoint)."""
        async with self._engine.connect() as conn:
            found = await conn.scalar(select(E.portal_team_id).where(E.id == endpoint_id))
        return None if found is None else str(found)

    # ------------------------------------------------------------------ helpers

    async def _row(self, op: Operation, endpoint_id: str) -> Any:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(E).where(E.id == endpoint_id))).first()
        if row is None or not op.scope.owns(row.organization_id):
            raise not_found(
                f"webhook endpoint {endpoint_id!r} does not exist", target="endpoint_id"
            )
        return row

    async def _org_names(self) -> dict[str, str]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(OrganizationRow.id, OrganizationRow.name))).all()
        return {str(r.id): str(r.name) for r in rows}

    async def _organization(self, op: Operation, name: str | None) -> tuple[str | None, str | None]:
        """The (id, name) of the organization a new endpoint belongs to."""
        if op.scope.limited:
            if name is not None and name != op.scope.organization:
                raise ServiceError(
                    FORBIDDEN,
                    f"you are limited to organization {op.scope.organization!r}; "
                    f"you can't create endpoints of {name!r}",
                )
            return op.scope.organization_id, op.scope.organization
        if name is None:
            return None, None
        for ident, known in (await self._org_names()).items():
            if known == name:
                return ident, name
        raise invalid([("#/organization", f"unknown organization {name!r}")])

    async def _check(
        self,
        op: Operation,
        settings: WebhookSettings,
        org_name: str | None,
        current: Mapping[str, Any] | None = None,
    ) -> None:
        """What the model can't check alone: the consumer exists in the endpoint's
        organization, and the destination is one deliveries may reach. On an update
        (`current`: the stored settings) only what changes is checked, so a host that
        resolves elsewhere by now does not block editing the description."""
        current = current or {}
        if settings.consumer is not None and settings.consumer != current.get("consumer"):
            config = (await self._editor.state()).config
            if not any(
                c.username == settings.consumer
                and (org_name is None or c.organization == org_name)
                and op.scope.sees_named(c.organization)
                for c in config.consumers
            ):
                where = f" in organization {org_name!r}" if org_name else ""
                raise invalid([("#/consumer", f"unknown consumer {settings.consumer!r}{where}")])
        if settings.url == current.get("url"):
            return
        reason = await self._refusal(settings.url)
        if reason is not None:
            raise invalid([("#/url", reason)])

    async def _refusal(self, url: str) -> str | None:
        """Why deliveries to `url` would be refused (an address outside the allowlist), or
        None. A host that does not resolve now is accepted: deliveries check every
        address they connect to anyway."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        literal = self._policy.literal(host)
        if literal is not None:
            reason = self._policy.refusal(literal)
            if reason is None:
                return None
            allow = f"allow it with {ALLOWED_NETWORKS_VARIABLE}"
            return f"{reason}: deliveries to it are refused ({allow})"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), RESOLVE_TIMEOUT)
        except (OSError, TimeoutError, UnicodeError):
            return None
        try:
            self._policy.check(host, [a for a in addresses if _is_address(a)])
        except DestinationRefused as exc:
            return str(exc)
        return None

    def _settings_document(self, row: Any) -> dict[str, Any]:
        return {
            "url": row.url,
            "event_types": json.loads(row.event_types),
            "description": row.description,
            "filters": json.loads(row.filters),
            "consumer": row.consumer,
            "headers": unseal_headers(self._secret, row.id, row.headers_sealed),
            "enabled": row.enabled,
            "rate_limit": row.rate_limit,
            "max_concurrency": row.max_concurrency,
            "ordered": row.ordered,
        }

    def _represent(self, row: Any, names: Mapping[str, str], now: datetime) -> dict[str, Any]:
        """An endpoint as JSON: header names, never their values or any secret."""
        live = live_secrets(self._secret, row.id, row.secrets_sealed, now)
        current = live[0] if live else ""
        return {
            "id": row.id,
            "url": row.url,
            "description": row.description,
            "event_types": json.loads(row.event_types),
            "filters": json.loads(row.filters),
            "consumer": row.consumer,
            "organization": names.get(row.organization_id) if row.organization_id else None,
            "organization_id": row.organization_id,
            "header_names": sorted(unseal_headers(self._secret, row.id, row.headers_sealed)),
            "enabled": row.enabled,
            "disabled_reason": row.disabled_reason,
            "failing_since": _time(row.failing_since),
            "rate_limit": row.rate_limit,
            "max_concurrency": row.max_concurrency,
            "ordered": row.ordered,
            "signature": scheme_of(current),
            "public_key": public_key_of(current) if current else None,
            "signing_secrets": len(live),
            "version": row.version,
            "created_at": _time(row.created_at),
            "updated_at": _time(row.updated_at),
        }

    async def _write(
        self,
        op: Operation,
        endpoint_id: str,
        if_match: str | None,
        action: str,
        change: Callable[[Any, dict[str, Any]], Awaitable[dict[str, Any]]] | None,
        store: Callable[[AsyncConnection, Any, datetime], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Compare-and-set on `version`: read, check If-Match, compute `change` (new column
        values) outside the transaction, store only if the version did not move."""
        for _ in range(_CURSOR_WRITE_ATTEMPTS):
            row = await self._row(op, endpoint_id)
            names = await self._org_names()
            now = op.now()
            before = self._represent(row, names, now)
            check_if_match(if_match, etag_of_endpoint(before))
            values = await change(row, before) if change is not None else {}
            async with write_transaction(self._engine) as conn:
                moved = await conn.execute(
                    update(E)
                    .where(E.id == endpoint_id, E.version == row.version)
                    .values(**values, version=E.version + 1, updated_at=now)
                )
                if moved.rowcount != 1:
                    continue
                if store is not None:
                    await store(conn, row, now)
                stored = (await conn.execute(select(E).where(E.id == endpoint_id))).one()
                after = self._represent(stored, names, now)
                await op.record(
                    action, RESOURCE_TYPE, endpoint_id, before=before, after=after, conn=conn
                )
                return after
        raise _busy(endpoint_id)

    async def _record_action(
        self, op: Operation, conn: AsyncConnection, row: Any, action: str, what: dict[str, Any]
    ) -> None:
        await op.record(
            action,
            RESOURCE_TYPE,
            row.id,
            after={"organization_id": row.organization_id, **what},
            status=202,
            conn=conn,
        )

    def _delivery_query(self, op: Operation, where: DeliveryFilter) -> Select[Any]:
        statement = cast("Select[Any]", select(M, E.organization_id)).join(E, E.id == M.endpoint_id)
        if op.scope.limited:
            statement = statement.where(E.organization_id == op.scope.organization_id)
        if where.endpoint_id is not None:
            statement = statement.where(M.endpoint_id == where.endpoint_id)
        if where.event_id is not None:
            statement = statement.where(M.event_id == where.event_id)
        if where.status is not None:
            statement = statement.where(M.status == where.status)
        if where.event_type is not None:
            statement = statement.where(M.event_type == where.event_type)
        if where.since is not None:
            statement = statement.where(M.created_at >= where.since)
        if where.until is not None:
            statement = statement.where(M.created_at < where.until)
        return statement

    @staticmethod
    async def _attempts(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, list[Any]]:
        if not ids:
            return {}
        rows = (
            await conn.execute(
                select(A).where(A.message_id.in_(list(ids))).order_by(A.attempted_at, A.id)
            )
        ).all()
        out: dict[str, list[Any]] = {}
        for r in rows:
            out.setdefault(r.message_id, []).append(r)
        return out

    @staticmethod
    def _message_json(m: Any) -> dict[str, Any]:
        return {
            "id": m.id,
            "endpoint_id": m.endpoint_id,
            "event_id": m.event_id,
            "event_type": m.event_type,
            "status": m.status,
            "attempts_made": m.attempts,
            "next_attempt_at": _time(m.next_attempt_at),
            "last_status": m.last_status,
            "last_error": m.last_error,
            "created_at": _time(m.created_at),
            "finished_at": _time(m.finished_at),
        }


def _attempt_json(a: Any) -> dict[str, Any]:
    text, encoding = excerpt_json(a.response_excerpt)
    return {
        "message_id": a.message_id,
        "attempt": a.attempt,
        "trigger": a.trigger,
        "attempted_at": _time(a.attempted_at),
        "status_code": a.status_code,
        "error": a.error,
        "latency_ms": round(float(a.latency_ms), 3),
        "response_excerpt": text,
        "response_excerpt_encoding": encoding,
        "detail": a.detail,
    }


def _enabled_values(row: Any, enabled: bool) -> dict[str, Any]:
    if enabled == row.enabled:
        return {}
    if enabled:
        # A fresh start: the failure run that may have disabled it is forgotten.
        return {"enabled": True, "disabled_reason": None, "failing_since": None}
    return {"enabled": False, "disabled_reason": "manual"}


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _busy(endpoint_id: str) -> ServiceError:
    return ServiceError(
        PRECONDITION_FAILED, f"webhook endpoint {endpoint_id!r} kept changing; try again"
    )
