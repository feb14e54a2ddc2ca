"""The whole gateway config: export, import (apply), diff, version history and rollback.

The config spans every organization. Callers limited to one organization get an
export filtered to their organization's entities; import, diff, the version
history and rollback refuse them (403: they cover every organization). Imports and
rollbacks take an If-Match on the current config's ETag and record one audit event,
in the write's own transaction, only when a new version was stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from portcullis.model.config import GatewayConfig
from portcullis.model.diff import MISSING, ConfigDiff, diff_configs
from portcullis.model.loader import ConfigError
from portcullis.services.config_editor import ConfigEditor, ConfigState, Edit, validate_document
from portcullis.services.context import Operation
from portcullis.services.errors import invalid, not_found
from portcullis.services.pagination import parse_int_cursor
from portcullis.services.preconditions import check_if_match, etag_of
from portcullis.store.config_repository import ConfigVersion, ConfigVersionSummary, OnWrite
from portcullis.store.errors import NotFound
from portcullis.store.sealing import sealed_config

MAX_VERSION = 2**62
MAX_COMMENT = 1000  # characters of the comment stored with a version


class VersionInfo(BaseModel):
    """A stored config version (without its document)."""

    version: int
    created_at: datetime
    author: str | None
    comment: str | None
    checksum: str
    source_version: int | None = Field(
        None, description="For a rollback, the version whose config it restored"
    )


class ApplyResult(VersionInfo):
    created: bool = Field(description="False when the config was unchanged and nothing stored")


class VersionDetail(VersionInfo):
    config: dict[str, Any]


class VersionPage(BaseModel):
    items: list[VersionInfo]
    next: str | None


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(
        ge=1, le=MAX_VERSION, description="The version whose config becomes current again"
    )


class FieldChangeOut(BaseModel):
    path: str
    old: Any = Field(None, description="Absent when the value was added")
    new: Any = Field(None, description="Absent when the value was removed")


class EntityChangeOut(BaseModel):
    key: str
    fields: list[FieldChangeOut]


class KindDiffOut(BaseModel):
    kind: str
    added: list[str]
    removed: list[str]
    changed: list[EntityChangeOut]
    reordered: bool


class DiffOut(BaseModel):
    empty: bool
    summary: str
    kinds: list[KindDiffOut]


def version_info(v: ConfigVersion | ConfigVersionSummary) -> dict[str, Any]:
    """A stored version's metadata as JSON."""
    return VersionInfo(
        version=v.version,
        created_at=v.created_at,
        author=v.author,
        comment=v.comment,
        checksum=v.checksum,
        source_version=v.source_version,
    ).model_dump(mode="json")


def applied(stored: ConfigVersion) -> dict[str, Any]:
    """An apply or rollback result as JSON (`created`: a new version was stored)."""
    return {**version_info(stored), "created": stored.created}


def config_etag(state: ConfigState) -> str:
    return f'"{state.checksum}"' if state.checksum else etag_of(state.config.canonical())


def diff_json(diff: ConfigDiff) -> dict[str, Any]:
    """The diff as JSON; a side that is absent is left out of its field change."""

    def change(f: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"path": f.path}
        if f.old is not MISSING:
            out["old"] = f.old
        if f.new is not MISSING:
            out["new"] = f.new
        return out

    return {
        "empty": diff.is_empty,
        "summary": diff.summary(),
        "kinds": [
            {
                "kind": k.kind,
                "added": list(k.added),
                "removed": list(k.removed),
                "changed": [
                    {"key": c.key, "fields": [change(f) for f in c.fields]} for c in k.changed
                ],
                "reordered": k.reordered,
            }
            for k in diff.kinds
        ],
    }


@dataclass(frozen=True, slots=True)
class Export:
    """The config a caller may see, its ETag and the version it came from."""

    config: GatewayConfig
    etag: str
    version: int


def _version_id(stored: ConfigVersion) -> str:
    return str(stored.version)


class ConfigService:
    """Whole-config operations over the config editor."""

    def __init__(self, editor: ConfigEditor) -> None:
        self._editor = editor

    async def export(self, op: Operation) -> Export:
        """The current config, filtered to the caller's organization when limited (with
        the ETag of what they see)."""
        current = await self._editor.state()
        config = op.scope.filter_config(current.config)
        etag = etag_of(config.canonical()) if op.scope.limited else config_etag(current)
        return Export(config, etag, current.version)

    async def apply(
        self,
        op: Operation,
        document: Callable[[], Awaitable[Any]],
        *,
        comment: str | None,
        if_match: str | None,
    ) -> ConfigVersion:
        """Validate the document and store it as the new version (unchanged: nothing
        stored). `document` reads it, once the caller is known to be allowed to import."""
        op.scope.require_unlimited("importing a config")
        if comment is not None and len(comment) > MAX_COMMENT:
            raise invalid([("#/comment", f"at most {MAX_COMMENT} characters")])
        config = validate_document(await document())
        after = config.canonical()

        def plan(current: ConfigState) -> Edit[None]:
            check_if_match(if_match, config_etag(current))
            return Edit(
                after,
                None,
                comment=comment or "admin API: import",
                on_write=op.on_config_write(
                    "apply",
                    "config",
                    _version_id,
                    before=current.config.canonical(),
                    after=after,
                    only_if_created=True,
                    schema=GatewayConfig,
                ),
            )

        stored = (await self._editor.mutate(plan, author=op.actor)).stored
        assert stored is not None
        return stored

    async def diff(self, op: Operation, document: Callable[[], Awaitable[Any]]) -> ConfigDiff:
        """What applying the document `document` reads would change."""
        op.scope.require_unlimited("a whole-config diff")
        config = validate_document(await document())
        current = await self._editor.state()
        # Keys in clear compare with the stored (sealed) ones as the store would hold them.
        return diff_configs(current.config, sealed_config(config))

    async def versions(
        self, op: Operation, limit: int, cursor: str | None
    ) -> list[ConfigVersionSummary]:
        """Up to `limit` stored versions older than the `cursor` one, newest first."""
        op.scope.require_unlimited("the config version history")
        before = None if cursor is None else parse_int_cursor(cursor)
        return await self._editor.repository.list_versions(limit, before)

    async def version(self, op: Operation, version: int) -> ConfigVersion:
        """One stored version with its config."""
        op.scope.require_unlimited("a stored config version")
        try:
            return await self._editor.repository.get(version)
        except NotFound:
            raise not_found(f"config version {version} does not exist", target="version") from None

    async def rollback(self, op: Operation, version: int, *, if_match: str | None) -> ConfigVersion:
        """Make `version`'s config current again, as a new version."""
        op.scope.require_unlimited("a rollback")

        def audit(current: ConfigState) -> OnWrite:
            return op.on_config_write(
                "rollback",
                "config",
                _version_id,
                before=current.config.canonical(),
                after=lambda stored: stored.config.canonical(),
                only_if_created=True,
                schema=GatewayConfig,
            )

        try:
            return await self._editor.rollback(
                version,
                author=op.actor,
                precondition=lambda current: check_if_match(if_match, config_etag(current)),
                on_write=audit,
            )
        except NotFound:
            raise not_found(f"config version {version} does not exist", target="version") from None
        except ConfigError as exc:
            raise invalid(
                [
                    ("#/version", f"that version no longer validates: {issue}")
                    for issue in exc.errors
                ]
            ) from None
