"""API key metadata as the control plane handles it: validation, CSV import, export.

One set of rules serves the admin API, the CLI and bulk imports, so a key that
one of them accepts the others accept too:

- `KeySettings` / `KeySpec` validate what an operator may set on a key (scopes as
  RFC 6749 scope tokens, browser origins, CIDR networks for v4 and v6);
- `parse_import_csv` turns a CSV document into validated rows, or rejects the
  whole document with every problem named by row and column;
- `KeyInfo` is a key without its secret or hash, and `export_csv` / `export_jsonl`
  render it. Nothing in this module ever sees a key hash; a full key appears only
  in `CreatedKey.key` / `ImportedKey.key`, which are left out of `repr`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from portcullis.identity.key_records import KeyStatus
from portcullis.identity.keys import Environment, display_prefix, parse_key
from portcullis.model.config import Consumer, GatewayConfig
from portcullis.model.types import MetadataValue, Name

MAX_SCOPES = 64
MAX_ORIGINS = 32
MAX_NETWORKS = 64
MAX_METADATA_ENTRIES = 64
MAX_REASON_LENGTH = 500
# Rotation grace: long enough to roll a key out across a fleet, short enough to matter.
DEFAULT_GRACE_SECONDS = 24 * 3600
MAX_GRACE_SECONDS = 30 * 24 * 3600
# Keys imported from another system: high-entropy tokens of sane length.
MIN_IMPORTED_KEY_LENGTH = 32
MAX_IMPORTED_KEY_LENGTH = 512
# Imported keys that are not in Portcullis format get ids with this prefix, so their
# listing never pretends they start with `pc_…`.
IMPORTED_ID_PREFIX = "imp_"

_SCOPE = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,128}$")  # RFC 6749 §3.3 scope-token
_ORIGIN = re.compile(
    r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*)(?::(\d{1,5}))?$",
    re.IGNORECASE,
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PRINTABLE_TOKEN = re.compile(r"^[\x21-\x7E]+$")


def normalize_scope(text: str) -> str:
    if not _SCOPE.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a scope: 1-128 printable characters, no spaces, quotes or backslashes"
        )
    return text


def normalize_origin(text: str) -> str:
    """A browser origin in the form browsers send it: lower case, no default port, no path.

    Raises `ValueError` for anything else (paths, wildcards, other schemes).
    """
    m = _ORIGIN.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"{text!r} is not an origin: expected scheme://host[:port] "
            "(http or https, no path), e.g. https://app.example.com"
        )
    scheme, host, port = m.group(1).lower(), m.group(2).lower(), m.group(3)
    if port is not None:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(f"{text!r}: port {number} is out of range")
        if number != _DEFAULT_PORTS[scheme]:
            return f"{scheme}://{host}:{number}"
    return f"{scheme}://{host}"


def normalize_network(text: str) -> str:
    """A CIDR network (IPv4 or IPv6) in canonical form; a bare address is a /32 or /128.

    Host bits must be zero (`10.0.0.1/8` is rejected, with the network it probably
    meant), so a typo can't silently widen or narrow the allowlist.
    """
    value = text.strip()
    with contextlib.suppress(ValueError):
        return str(ip_network(value, strict=True))
    try:
        loose = ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP network: expected CIDR like 203.0.113.0/24 or 2001:db8::/32"
        ) from None
    raise ValueError(f"{text!r} has host bits set; did you mean {loose}?")


def parse_networks(texts: Sequence[str]) -> tuple[IPv4Network | IPv6Network, ...]:
    """Networks of an already normalised allowlist (as stored)."""
    return tuple(ip_network(t) for t in texts)


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _scopes(values: list[str]) -> list[str]:
    return _unique([normalize_scope(v) for v in values])


def _origins(values: list[str]) -> list[str]:
    return _unique([normalize_origin(v) for v in values])


def _networks(values: list[str]) -> list[str]:
    return _unique([normalize_network(v) for v in values])


def _metadata(value: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
    if len(json.dumps(value, separators=(",", ":"))) > 8192:
        raise ValueError("metadata is larger than 8 KiB")
    return value


KeyName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_REASON_LENGTH)
]


class KeySettings(BaseModel):
    """What an operator may set on an existing key (the consumer and environment are fixed)."""

    model_config = ConfigDict(extra="forbid")

    name: KeyName = Field(examples=["checkout-service"])
    scopes: Annotated[list[str], Field(max_length=MAX_SCOPES), AfterValidator(_scopes)] = Field(
        default_factory=list, examples=[["orders:read", "orders:write"]]
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="RFC 3339 with a time zone; null: never"
    )
    allowed_origins: Annotated[
        list[str], Field(max_length=MAX_ORIGINS), AfterValidator(_origins)
    ] = Field(
        default_factory=list,
        description="Browser origins allowed to use the key (empty: any)",
        examples=[["https://app.example.com"]],
    )
    ip_allowlist: Annotated[
        list[str], Field(max_length=MAX_NETWORKS), AfterValidator(_networks)
    ] = Field(
        default_factory=list,
        description="Client networks (CIDR, IPv4 or IPv6) allowed to use the key (empty: any)",
        examples=[["203.0.113.0/24", "2001:db8::/32"]],
    )
    plan: Name | None = Field(default=None, description="Traffic plan for this key's requests")
    metadata: Annotated[
        dict[MetadataKey, MetadataValue],
        Field(max_length=MAX_METADATA_ENTRIES),
        AfterValidator(_metadata),
    ] = Field(default_factory=dict, examples=[{"team": "payments"}])


class KeySpec(KeySettings):
    """Everything about a new key except its consumer."""

    environment: Environment = Environment.production


class KeyState(StrEnum):
    """Whether a key works right now, and if not, why (derived from status and times)."""

    active = "active"
    grace = "grace"  # rotated; works until grace_until
    replaced = "replaced"  # rotated; the grace period is over
    expired = "expired"
    suspended = "suspended"
    revoked = "revoked"


def state_of(
    status: KeyStatus,
    expires_at: datetime | None,
    grace_until: datetime | None,
    now: datetime,
) -> KeyState:
    if status is KeyStatus.revoked:
        return KeyState.revoked
    if status is KeyStatus.suspended:
        return KeyState.suspended
    if expires_at is not None and expires_at <= now:
        return KeyState.expired
    if grace_until is not None:
        return KeyState.replaced if grace_until <= now else KeyState.grace
    return KeyState.active


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A stored key's metadata: everything but the secret and its hash."""

    id: str
    consumer: str
    # The organization's current name (a label) and its id (what scopes the key).
    organization: str | None
    organization_id: str | None
    name: str
    environment: Environment
    scopes: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    ip_allowlist: tuple[str, ...]
    plan: str | None
    metadata: dict[str, MetadataValue]
    status: KeyStatus
    status_reason: str | None
    expires_at: datetime | None
    rotated_from: str | None
    replaced_by: str | None
    grace_until: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None

    @property
    def prefix(self) -> str | None:
        """The key's non-secret beginning (None for keys imported in a foreign format)."""
        if self.id.startswith(IMPORTED_ID_PREFIX):
            return None
        return display_prefix(self.environment, self.id)

    def state(self, now: datetime) -> KeyState:
        return state_of(self.status, self.expires_at, self.grace_until, now)

    def settings(self) -> dict[str, Any]:
        """The editable fields as JSON (the target of a merge patch)."""
        return {
            "name": self.name,
            "scopes": list(self.scopes),
            "expires_at": _time(self.expires_at),
            "allowed_origins": list(self.allowed_origins),
            "ip_allowlist": list(self.ip_allowlist),
            "plan": self.plan,
            "metadata": dict(self.metadata),
        }

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "prefix": self.prefix,
            "consumer": self.consumer,
            "organization": self.organization,
            "organization_id": self.organization_id,
            "environment": str(self.environment),
            **self.settings(),
            "status": str(self.status),
            "status_reason": self.status_reason,
            "state": str(self.state(now)),
            "rotated_from": self.rotated_from,
            "replaced_by": self.replaced_by,
            "grace_until": _time(self.grace_until),
            "created_by": self.created_by,
            "created_at": _time(self.created_at),
            "updated_at": _time(self.updated_at),
            "last_used_at": _time(self.last_used_at),
        }


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: its metadata and the full key, which is shown this once."""

    info: KeyInfo
    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Rotation:
    """The outcome of a rotation: the old key (now in its grace period) and the new one."""

    old: KeyInfo
    new: KeyInfo
    key: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class ImportedKey:
    """One imported row; `key` is set only when the key was generated (not supplied)."""

    row: int
    info: KeyInfo
    key: str | None = field(default=None, repr=False)


# ---------------------------------------------------------------------------- consumers


class UnknownConsumer(LookupError):
    """The consumer named for a key is not in the current config (or not visible)."""

    def __init__(self, username: str) -> None:
        super().__init__(f"unknown consumer {username!r}")
        self.username = username


def resolve_consumer(
    config: GatewayConfig, username: str, *, organization: str | None = None
) -> Consumer:
    """The consumer a key is issued to, from the current config.

    With `organization` (an organization-limited admin), a consumer of another
    organization is reported as unknown, so its existence does not leak.
    """
    for consumer in config.consumers:
        if consumer.username == username:
            if organization is not None and consumer.organization != organization:
                break
            return consumer
    raise UnknownConsumer(username)


# ---------------------------------------------------------------------------- CSV import

IMPORT_COLUMNS = (
    "consumer",
    "name",
    "environment",
    "scopes",
    "expires_at",
    "allowed_origins",
    "ip_allowlist",
    "plan",
    "metadata",
    "key",
)
REQUIRED_IMPORT_COLUMNS = ("consumer", "name")
_LIST_COLUMNS = ("scopes", "allowed_origins", "ip_allowlist")
DEFAULT_MAX_IMPORT_ROWS = 10_000


@dataclass(frozen=True, slots=True)
class RowError:
    """A problem in an import: `row` counts data rows from 1 (0 is the header)."""

    row: int
    column: str | None
    message: str

    @property
    def pointer(self) -> str:
        base = f"#/rows/{self.row}"
        return f"{base}/{self.column}" if self.column else base

    @property
    def detail(self) -> str:
        where = "header" if self.row == 0 else f"row {self.row}"
        return (
            f"{where}: {self.column}: {self.message}" if self.column else f"{where}: {self.message}"
        )


class ImportRejected(ValueError):
    """The import was refused as a whole; `errors` names every problem found."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        n = len(errors)
        super().__init__(f"import rejected: {n} error{'s' if n != 1 else ''}")
        self.errors = list(errors)


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One validated row. `key` is a supplied key to import (hashed, never stored)."""

    row: int
    consumer: str
    spec: KeySpec
    key: str | None = field(default=None, repr=False)
    key_id: str | None = None


def _pydantic_errors(row: int, exc: ValidationError) -> list[RowError]:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        column = loc[0] if loc else None
        message = str(err.get("msg", "invalid"))
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if len(loc) > 1:
            message = f"item {'/'.join(loc[1:])}: {message}"
        out.append(RowError(row, column, message))
    return out


def _supplied_key(row: int, text: str, environment: str) -> tuple[str | None, list[RowError]]:
    """The id for a supplied key; never puts the key itself into an error message."""
    parsed = parse_key(text)
    if parsed is not None:
        if environment and environment != parsed.environment:
            return None, [
                RowError(
                    row,
                    "environment",
                    f"does not match the key's own environment ({parsed.environment})",
                )
            ]
        return parsed.id, []
    if text.startswith("pc_"):
        return None, [
            RowError(row, "key", "looks like a Portcullis key but its format or checksum is wrong")
        ]
    if not MIN_IMPORTED_KEY_LENGTH <= len(text) <= MAX_IMPORTED_KEY_LENGTH:
        return None, [
            RowError(
                row,
                "key",
                f"must have {MIN_IMPORTED_KEY_LENGTH} to {MAX_IMPORTED_KEY_LENGTH} characters"
                f" (has {len(text)})",
            )
        ]
    if not _PRINTABLE_TOKEN.fullmatch(text):
        return None, [RowError(row, "key", "must be printable ASCII without spaces")]
    return None, []


def _row_document(cells: dict[str, str], row: int) -> tuple[dict[str, Any], list[RowError]]:
    doc: dict[str, Any] = {}
    errors: list[RowError] = []
    for column in ("name", "environment", "expires_at", "plan"):
        value = cells.get(column, "").strip()
        if value:
            doc[column] = value
    for column in _LIST_COLUMNS:
        doc[column] = cells.get(column, "").split()
    raw_metadata = cells.get("metadata", "").strip()
    if raw_metadata:
        try:
            doc["metadata"] = json.loads(raw_metadata)
        except (ValueError, RecursionError):
            errors.append(RowError(row, "metadata", "is not valid JSON"))
    if "name" not in doc:
        errors.append(RowError(row, "name", "is required"))
    return doc, errors


def parse_import_csv(text: str, *, max_rows: int = DEFAULT_MAX_IMPORT_ROWS) -> list[ImportRow]:
    """Validated rows of a key import; raises `ImportRejected` listing every problem.

    The header names the columns (any order; `IMPORT_COLUMNS`, `consumer` and `name`
    required). List cells (`scopes`, `allowed_origins`, `ip_allowlist`) are separated
    by whitespace; `metadata` is a JSON object; `expires_at` is RFC 3339 with a time
    zone; empty cells take the default. The optional `key` column imports an existing
    key (a Portcullis key, or any token of 32+ printable characters) instead of
    generating one. A key that appears twice is an error.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRejected([RowError(0, None, "the document is empty")]) from None
    except csv.Error as exc:
        raise ImportRejected([RowError(0, None, f"invalid CSV: {exc}")]) from None
    columns = [c.strip().lower() for c in header]
    errors: list[RowError] = []
    unknown = [c for c in columns if c not in IMPORT_COLUMNS]
    for c in unknown:
        errors.append(
            RowError(0, c or "(empty)", f"unknown column (known: {', '.join(IMPORT_COLUMNS)})")
        )
    for c in sorted({c for c in columns if columns.count(c) > 1}):
        errors.append(RowError(0, c, "appears more than once"))
    for c in REQUIRED_IMPORT_COLUMNS:
        if c not in columns:
            errors.append(RowError(0, c, "required column is missing"))
    if errors:
        raise ImportRejected(errors)

    rows: list[ImportRow] = []
    seen_keys: dict[str, int] = {}
    number = 0
    try:
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue  # blank line
            number += 1
            if number > max_rows:
                errors.append(RowError(number, None, f"too many rows (at most {max_rows})"))
                break
            if len(record) != len(columns):
                errors.append(
                    RowError(number, None, f"has {len(record)} cells, the header {len(columns)}")
                )
                continue
            cells = dict(zip(columns, record, strict=True))
            row_errors: list[RowError] = []
            consumer = cells["consumer"].strip()
            if not consumer:
                row_errors.append(RowError(number, "consumer", "is required"))
            doc, doc_errors = _row_document(cells, number)
            row_errors += doc_errors
            spec: KeySpec | None = None
            try:
                spec = KeySpec.model_validate(doc)
            except ValidationError as exc:
                row_errors += [
                    e
                    for e in _pydantic_errors(number, exc)
                    if not (e.column == "name" and "name" not in doc)
                ]
            key = cells.get("key", "").strip() or None
            key_id = None
            if key is not None:
                key_id, key_errors = _supplied_key(number, key, doc.get("environment", ""))
                row_errors += key_errors
                if key in seen_keys:
                    row_errors.append(
                        RowError(number, "key", f"the same key is already in row {seen_keys[key]}")
                    )
                seen_keys.setdefault(key, number)
            if row_errors or spec is None:
                errors += row_errors
                continue
            if key_id is not None and "environment" not in doc:
                parsed = parse_key(key or "")
                if parsed is not None:
                    spec = spec.model_copy(update={"environment": parsed.environment})
            rows.append(ImportRow(number, consumer, spec, key, key_id))
    except csv.Error as exc:
        errors.append(RowError(number + 1, None, f"invalid CSV: {exc}"))
    if errors:
        raise ImportRejected(errors)
    if not rows:
        raise ImportRejected([RowError(0, None, "the document has no data rows")])
    return rows


def check_import_consumers(
    rows: Sequence[ImportRow], config: GatewayConfig, *, organization: str | None = None
) -> dict[str, str | None]:
    """The organization of every row's consumer; `ImportRejected` naming rows with unknown ones."""
    organizations: dict[str, str | None] = {}
    errors = []
    for row in rows:
        if row.consumer in organizations:
            continue
        try:
            consumer = resolve_consumer(config, row.consumer, organization=organization)
        except UnknownConsumer as exc:
            errors.append(RowError(row.row, "consumer", str(exc)))
            continue
        organizations[row.consumer] = consumer.organization
    if errors:
        raise ImportRejected(errors)
    return organizations


# ---------------------------------------------------------------------------- export

EXPORT_COLUMNS = (
    "id",
    "prefix",
    "consumer",
    "organization",
    "name",
    "environment",
    "scopes",
    "expires_at",
    "allowed_origins",
    "ip_allowlist",
    "plan",
    "metadata",
    "status",
    "status_reason",
    "state",
    "rotated_from",
    "replaced_by",
    "grace_until",
    "created_by",
    "created_at",
    "updated_at",
    "last_used_at",
)


def csv_cell(value: Any) -> str:
    """A cell that spreadsheets won't evaluate as a formula (CSV injection)."""
    if isinstance(value, list):
        text = " ".join(str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":")) if value else ""
    else:
        text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def export_csv(keys: AsyncIterable[KeyInfo], now: datetime) -> AsyncIterator[str]:
    """Key metadata as CSV (header first); list cells space-separated like the import."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue()
    async for info in keys:
        buffer.seek(0)
        buffer.truncate()
        data = info.as_json(now)
        writer.writerow([csv_cell(data[c]) for c in EXPORT_COLUMNS])
        yield buffer.getvalue()


async def export_jsonl(keys: AsyncIterable[KeyInfo], now: datetime) -> AsyncIterator[str]:
    """Key metadata as JSON lines, one key per line."""
    async for info in keys:
        yield json.dumps(info.as_json(now), ensure_ascii=False, separators=(",", ":")) + "\n"
