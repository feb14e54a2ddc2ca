"""The whole gateway config in the graph: export (a JSON document field), apply, diff,
the version history and rollback, on `services.config.ConfigService` as REST's
`/admin/v1/config` (organization-limited admins get a filtered export; apply, diff,
versions and rollback refuse them, as REST does).

The document is the `JSON` scalar in the format of `config export`; REST's YAML form
is a transport choice GraphQL does not need.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from portcullis.graph.connections import Connection, connection, page_size
from portcullis.graph.context import context_of
from portcullis.graph.models import output_type
from portcullis.graph.problems import result_union
from portcullis.graph.support import Area, as_data, returning, typed, validated
from portcullis.model.loader import config_document
from portcullis.services.config import (
    ApplyResult,
    ConfigService,
    DiffOut,
    RollbackRequest,
    VersionInfo,
    applied,
    diff_json,
    version_info,
)
from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.services.rbac import Permission

ConfigVersionNode = output_type(VersionInfo, "ConfigVersion")
ConfigApplied = output_type(ApplyResult, "ConfigApplied")
ConfigDiffType = output_type(DiffOut, "ConfigDiff")


@strawberry.type(description="The current config as the caller may see it.")
class ConfigExport:
    version: int = strawberry.field(description="The config version it came from")
    etag: str = strawberry.field(description="ETag of what the caller sees (ifMatch)")
    document: JSON = strawberry.field(description="The config document (`config export`)")


@strawberry.type(description="A stored config version with its document.")
class ConfigVersionDetail:
    info: ConfigVersionNode  # type: ignore[valid-type]
    etag: str
    document: JSON


@strawberry.type(description="What an apply or rollback stored.")
class ConfigAppliedPayload:
    result: ConfigApplied  # type: ignore[valid-type]


@strawberry.type(description="What applying the document would change.")
class ConfigDiffPayload:
    diff: ConfigDiffType  # type: ignore[valid-type]


ApplyConfigResult = result_union("ApplyConfigResult", ConfigAppliedPayload)
RollbackConfigResult = result_union("RollbackConfigResult", ConfigAppliedPayload)
DiffConfigResult = result_union("DiffConfigResult", ConfigDiffPayload)


def _service(info: Info[Any, Any]) -> ConfigService:
    return ConfigService(context_of(info).editor)


def _applied(stored: Any) -> ConfigAppliedPayload:
    return ConfigAppliedPayload(result=typed(ApplyResult, applied(stored)))


async def config(info: Info[Any, Any], include_defaults: bool = False) -> ConfigExport:
    op = await context_of(info).operation(Permission.CONFIG_READ)
    export = await _service(info).export(op)
    document = config_document(export.config, include_defaults=include_defaults)
    return ConfigExport(version=export.version, etag=export.etag, document=cast(JSON, document))


async def config_versions(
    info: Info[Any, Any], first: int | None = None, after: str | None = None
) -> Connection[ConfigVersionNode]:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.CONFIG_READ)
    limit = page_size(first)
    rows = await _service(info).versions(op, limit + 1, after)
    following = str(rows[limit - 1].version) if len(rows) > limit else None
    return connection(
        rows[:limit],
        following,
        lambda v: str(v.version),
        lambda v: typed(VersionInfo, version_info(v)),
    )


async def config_version(info: Info[Any, Any], version: int) -> ConfigVersionDetail | None:
    op = await context_of(info).operation(Permission.CONFIG_READ)
    try:
        stored = await _service(info).version(op, version)
    except ServiceError as exc:
        if exc.kind is NOT_FOUND:
            return None
        raise
    return ConfigVersionDetail(
        info=typed(VersionInfo, version_info(stored)),
        etag=f'"{stored.checksum}"',
        document=cast(JSON, config_document(stored.config)),
    )


@returning(DiffConfigResult)
async def config_diff(info: Info[Any, Any], document: JSON) -> Any:
    async def run() -> ConfigDiffPayload:
        op = await context_of(info).operation(Permission.CONFIG_READ)
        diff = await _service(info).diff(op, lambda: _given(document))
        return ConfigDiffPayload(diff=diff_json(diff))

    return await as_data(run)


async def _given(document: Any) -> Any:
    return document


@returning(ApplyConfigResult)
async def apply_config(
    info: Info[Any, Any],
    document: JSON,
    comment: Annotated[
        str | None, strawberry.argument(description="Stored with the version")
    ] = None,
    if_match: str | None = None,
) -> Any:
    async def run() -> ConfigAppliedPayload:
        op = await context_of(info).operation(Permission.CONFIG_WRITE)
        stored = await _service(info).apply(
            op, lambda: _given(document), comment=comment, if_match=if_match
        )
        return _applied(stored)

    return await as_data(run)


@returning(RollbackConfigResult)
async def rollback_config(info: Info[Any, Any], version: int, if_match: str | None = None) -> Any:
    async def run() -> ConfigAppliedPayload:
        op = await context_of(info).operation(Permission.CONFIG_WRITE)
        request = validated(RollbackRequest, None, version=version)
        stored = await _service(info).rollback(op, request.version, if_match=if_match)
        return _applied(stored)

    return await as_data(run)


def build() -> Area:
    return Area(
        queries={
            "config": strawberry.field(
                resolver=config,
                description="Export the current config (filtered to the caller's organization)",
            ),
            "configVersions": strawberry.field(
                resolver=config_versions, description="Stored config versions, newest first"
            ),
            "configVersion": strawberry.field(
                resolver=config_version,
                description="One stored config version with its document; null when absent",
            ),
            "configDiff": strawberry.field(
                resolver=config_diff,
                description="Compare a config document with the current config",
            ),
        },
        mutations={
            "applyConfig": strawberry.mutation(
                resolver=apply_config,
                description="Import a config document and apply it as the new version",
            ),
            "rollbackConfig": strawberry.mutation(
                resolver=rollback_config,
                description="Make an earlier version's config current again (as a new version)",
            ),
        },
    )
