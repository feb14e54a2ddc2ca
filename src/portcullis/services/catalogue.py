"""The API catalogue's operations: import a version's OpenAPI description, read it and
its refresh state, publish it as clients see it through the gateway, list the
catalogue, and compare two versions (docs/api-products.md, "Catalogue").

An import is an edit of the `apis` entity (the description lives in the config, so the
data plane compiles from its snapshot alone): it goes through `EntityService.patch`
with If-Match on what was read, so it is validated, scoped to the caller's
organization, audited and announced like any other edit, and a repeated import of the
same document changes nothing (no new config version, no audit record).

Who may read a published description: anyone when the API is `public`; otherwise an
admin credential with `config:read` that sees the API (its organization's, or the whole
deployment), or a working API key of a consumer of the API's organization. Anyone else
gets 401 (no working credential) or 404 (one that may not see it: the API's existence
is not disclosed).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.catalogue.diff import Change, breaking_changes
from portcullis.catalogue.fetch import DescriptionFetcher, bundle_remote, import_url
from portcullis.catalogue.publish import Gateway, publish
from portcullis.model.apis import Api, ApiVersion, OpenApiSource
from portcullis.model.config import GatewayConfig
from portcullis.model.openapi import (
    INLINE_BASE,
    DescriptionError,
    description_errors,
    digest,
    pointer,
)
from portcullis.problems import UNAUTHORIZED
from portcullis.services.analytics import AnalyticsService
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.entities import EntityService
from portcullis.services.entity_kinds import APIS
from portcullis.services.errors import (
    NOT_FOUND,
    PRECONDITION_FAILED,
    ServiceError,
    invalid,
)
from portcullis.services.preconditions import etag_of
from portcullis.services.scoping import OrgScope
from portcullis.services.state import AdminState
from portcullis.settings import Settings
from portcullis.store.catalogue_tables import OpenApiSourceRow
from portcullis.store.engine import write_transaction

# Who the audit log names for a description the refresh job applied.
REFRESH_ACTOR = "system:openapi-refresh"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who reads the catalogue: an admin's organization scope (None: not an admin), the
    organization of the consumer whose API key was presented (`keyed`: one was)."""

    admin: OrgScope | None = None
    keyed: bool = False
    key_organization: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.admin is None and not self.keyed

    def sees(self, api: Api) -> bool:
        if api.public:
            return True
        if self.admin is not None:
            return self.admin.sees({"organization": api.organization})
        return self.keyed and self.key_organization == api.organization


def gateway_of(settings: Settings) -> Gateway:
    """Where clients reach the gateway (`public_proxy_url`, else the proxy's own URL)."""
    return Gateway(settings.public_proxy_url or settings.proxy_url, settings.issuer)


def publisher(state: AdminState) -> Callable[[Api, ApiVersion], Awaitable[dict[str, Any] | None]]:
    """The published document of an API version as the SDK generator takes it
    (services/sdks.py `PublishedDocument`): what clients see through the gateway."""

    async def published(api: Api, version: ApiVersion) -> dict[str, Any] | None:
        if version.openapi is None:
            return None
        config = (await state.editor.state()).config
        return publish(config, api, version, gateway_of(state.settings))

    return published


def published_path(api: str, version: str, extension: str = "json") -> str:
    return f"/apis/{quote(api, safe='')}/{quote(version, safe='')}/openapi.{extension}"


def _source_json(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "url": row.url,
        "checked_at": _iso(row.checked_at),
        "fetched_at": _iso(row.fetched_at),
        "next_check_at": _iso(row.next_check_at),
        "digest": row.digest,
        "error": row.error,
        "failures": row.failures,
    }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


class CatalogueService:
    """The catalogue's operations on one store (`fetcher` reaches description URLs)."""

    def __init__(self, state: AdminState, fetcher: DescriptionFetcher) -> None:
        self._state = state
        self._engine: AsyncEngine = state.engine
        self._fetcher = fetcher

    def _entities(self) -> EntityService:
        s = self._state
        return EntityService(s.collection(APIS), s.editor, s.engine, s.secret)

    async def _config(self) -> GatewayConfig:
        return (await self._state.editor.state()).config

    # ------------------------------------------------------------------------ import

    async def import_description(
        self, op: Operation, api: str, version: str, body: Any, *, now: datetime | None = None
    ) -> dict[str, Any]:
        """Set `api` `version`'s description from `body`: the document itself, or
        `{"url": ..., "refresh_seconds": ...}` to fetch it (and keep it fresh)."""
        entity = await self._entities().get(op, api)
        if not isinstance(body, dict):
            raise invalid([("#", 'send the OpenAPI document, or {"url": ...}')])
        source: OpenApiSource | None = None
        if "openapi" not in body and "url" in body:
            try:
                source = OpenApiSource.model_validate(body)
            except ValidationError as exc:
                raise invalid([(pointer(e["loc"]), e["msg"]) for e in exc.errors()]) from None
            url = str(source.url)
            try:
                document = await import_url(url, self._fetcher)
            except DescriptionError as exc:
                raise invalid([("#/url", _located(exc, url))]) from None
        else:
            try:
                document = await bundle_remote(body, INLINE_BASE, self._fetcher)
            except DescriptionError as exc:
                raise invalid([(pointer(exc.path), exc.message)]) from None
        errors = description_errors(document)
        if errors:
            where = "" if source is None else f" (the document at {source.url})"
            raise invalid(
                [(pointer(p), m) for p, m in errors],
                detail=f"not a valid OpenAPI 3.0/3.1 description{where}",
            )
        changed = await self._set(op, api, version, entity.representation, document, source)
        if source is not None:
            await self._track(api, version, source, digest(document), now or datetime.now(UTC))
        else:
            await self._untrack(api, version)
        return {
            "api": api,
            "version": version,
            "digest": digest(document),
            "openapi_source": None if source is None else source.model_dump(mode="json"),
            "changed": changed,
            "published": published_path(api, version),
        }

    async def _set(
        self,
        op: Operation,
        api: str,
        version: str,
        representation: dict[str, Any],
        document: Any,
        source: OpenApiSource | None,
    ) -> bool:
        entities = self._entities()
        for attempt in range(3):
            if attempt:
                representation = (await entities.get(op, api)).representation
            versions = [dict(v) for v in representation.get("versions", [])]
            index = next((i for i, v in enumerate(versions) if v.get("name") == version), None)
            if index is None:
                raise ServiceError(NOT_FOUND, f"api {api!r} has no version {version!r}")
            versions[index]["openapi"] = document
            versions[index]["openapi_source"] = (
                None if source is None else source.model_dump(mode="json")
            )
            if versions == representation.get("versions"):
                return False
            try:
                await entities.patch(
                    op, api, {"versions": versions}, if_match=etag_of(representation)
                )
            except ServiceError as exc:
                if exc.kind is PRECONDITION_FAILED and attempt < 2:
                    continue  # another writer changed the API in between: read again
                raise
            return True
        return True  # pragma: no cover (the loop returns or raises)

    async def _track(
        self, api: str, version: str, source: OpenApiSource, last: str, now: datetime
    ) -> None:
        """Record a URL import: due again after `refresh_seconds`, its digest known."""
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                delete(OpenApiSourceRow).where(
                    OpenApiSourceRow.api == api, OpenApiSourceRow.version == version
                )
            )
            await conn.execute(
                insert(OpenApiSourceRow).values(
                    api=api,
                    version=version,
                    url=str(source.url),
                    next_check_at=now + timedelta(seconds=source.refresh_seconds),
                    checked_at=now,
                    fetched_at=now,
                    digest=last,
                    error=None,
                    failures=0,
                )
            )

    async def _untrack(self, api: str, version: str) -> None:
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                delete(OpenApiSourceRow).where(
                    OpenApiSourceRow.api == api, OpenApiSourceRow.version == version
                )
            )

    async def source_state(self, api: str, version: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(OpenApiSourceRow.__table__).where(
                        OpenApiSourceRow.api == api, OpenApiSourceRow.version == version
                    )
                )
            ).first()
        return _source_json(row)

    async def api(self, op: Operation, api: str) -> dict[str, Any]:
        """The API entity as the admin API shows it."""
        return (await self._entities().get(op, api)).representation

    async def description(self, op: Operation, api: str, version: str) -> dict[str, Any]:
        """The imported description of `api` `version` and the state of its URL source."""
        entity = await self._entities().get(op, api)
        found = Api.model_validate(entity.representation).version(version)
        if found is None:
            raise ServiceError(NOT_FOUND, f"api {api!r} has no version {version!r}")
        return {
            "api": api,
            "version": version,
            "openapi": found.openapi,
            "openapi_source": None
            if found.openapi_source is None
            else found.openapi_source.model_dump(mode="json"),
            "source_state": await self.source_state(api, version)
            if found.openapi_source is not None
            else None,
            "digest": None if found.openapi is None else digest(found.openapi),
        }

    # ------------------------------------------------------------------------ refresh

    async def refresh_due(self, now: datetime) -> int:
        """One round of the refresh job: bring the sources table in line with the config
        (a source set by `config apply` or entity CRUD is due at once), then fetch each
        due source this node claims. A changed, valid description is applied as a config
        edit by `system:openapi-refresh`; an unchanged one only stamps the check; a
        failure (fetch, bundle, validation) is recorded on the source and leaves the
        config (the last good description) alone. Returns the number of edits."""
        config = await self._config()
        wanted = {
            (a.name, v.name): (v.openapi_source, v.openapi)
            for a in config.apis
            for v in a.versions
            if v.openapi_source is not None
        }
        async with self._engine.connect() as conn:
            rows = {
                (r.api, r.version): r
                for r in (await conn.execute(select(OpenApiSourceRow.__table__))).all()
            }
        stale = [
            key
            for key, row in rows.items()
            if key not in wanted or str(wanted[key][0].url) != row.url
        ]
        new = [
            key
            for key, (source, _) in wanted.items()
            if key not in rows or str(source.url) != rows[key].url
        ]
        if stale or new:
            async with write_transaction(self._engine) as conn:
                for api, version in stale:
                    await conn.execute(
                        delete(OpenApiSourceRow).where(
                            OpenApiSourceRow.api == api, OpenApiSourceRow.version == version
                        )
                    )
                for api, version in new:
                    source, document = wanted[(api, version)]
                    await conn.execute(
                        insert(OpenApiSourceRow).values(
                            api=api,
                            version=version,
                            url=str(source.url),
                            next_check_at=now,
                            digest=None if document is None else digest(document),
                            failures=0,
                        )
                    )
        due = [k for k in wanted if k in new or rows[k].next_check_at <= now]
        edits = 0
        for api, version in due:
            source = wanted[(api, version)][0]
            if await self._claim(api, version, now, source.refresh_seconds):
                edits += await self._refresh_one(api, version, source, now)
        return edits

    async def _claim(self, api: str, version: str, now: datetime, every: int) -> bool:
        """Take a due source for this round (moving it `every` seconds on): of several
        control planes, the one whose update matches fetches it."""
        row = OpenApiSourceRow
        async with write_transaction(self._engine) as conn:
            done = await conn.execute(
                update(row)
                .where(row.api == api, row.version == version, row.next_check_at <= now)
                .values(next_check_at=now + timedelta(seconds=every), checked_at=now)
            )
        return bool(done.rowcount)

    async def _refresh_one(
        self, api: str, version: str, source: OpenApiSource, now: datetime
    ) -> int:
        url = str(source.url)
        error: str | None = None
        new_digest: str | None = None
        changed = False
        try:
            document = await import_url(url, self._fetcher)
            problems = description_errors(document)
            if problems:
                error = "invalid description: " + "; ".join(
                    f"{pointer(p)}: {m}" for p, m in problems[:5]
                )
            else:
                new_digest = digest(document)
                op = Operation(
                    None,
                    REFRESH_ACTOR,
                    RequestFacts(f"job-{secrets.token_hex(8)}", None),
                    self._state.audit,
                )
                entity = await self._entities().get(op, api)
                changed = await self._set(op, api, version, entity.representation, document, source)
        except DescriptionError as exc:
            error = _located(exc, url)
        except ServiceError as exc:  # the config refused it (the API changed meanwhile)
            error = f"not applied: {exc.detail}"
        row = OpenApiSourceRow
        values: dict[str, Any] = (
            {"error": error, "failures": row.failures + 1}
            if error is not None
            else {"error": None, "failures": 0, "fetched_at": now, "digest": new_digest}
        )
        async with write_transaction(self._engine) as conn:
            await conn.execute(
                update(row).where(row.api == api, row.version == version).values(**values)
            )
        return int(changed)

    # ------------------------------------------------------------------------ publication

    async def _visible(self, viewer: Viewer, api: str) -> tuple[GatewayConfig, Api]:
        config = await self._config()
        found = next((a for a in config.apis if a.name == api), None)
        if found is not None and viewer.sees(found):
            return config, found
        if viewer.anonymous:
            raise ServiceError(
                UNAUTHORIZED,
                "this API's descriptions need a credential: an API key of its organization "
                "or an admin token",
            )
        raise ServiceError(NOT_FOUND, f"api {api!r} does not exist")

    async def key_viewer(self, presented: str) -> Viewer | None:
        """The viewer an API key makes (its consumer's organization); None when the key
        does not work (unknown, revoked, expired, its consumer suspended or gone)."""
        s = self._state
        analytics = AnalyticsService(s.engine, s.editor, s.secret, s.settings)
        username = await analytics.key_consumer(presented, datetime.now(UTC))
        if username is None:
            return None
        config = await self._config()
        consumer = next((c for c in config.consumers if c.username == username), None)
        if consumer is None:
            return None
        return Viewer(keyed=True, key_organization=consumer.organization)

    async def published(
        self, viewer: Viewer, api: str, version: str
    ) -> tuple[dict[str, Any], bool]:
        """`api` `version`'s description as a client sees it through the gateway, and
        whether the API is public (the answer may be cached by shared caches)."""
        config, found = await self._visible(viewer, api)
        v = found.version(version)
        if v is None or v.openapi is None:
            raise ServiceError(
                NOT_FOUND,
                f"api {api!r} has no version {version!r}"
                if v is None
                else f"api {api!r} version {version!r} has no OpenAPI description",
            )
        return publish(config, found, v, gateway_of(self._state.settings)), found.public

    async def listing(self, viewer: Viewer) -> dict[str, Any]:
        """The APIs `viewer` may see, with their versions, status and links."""
        config = await self._config()
        return {
            "apis": [
                _listed(a) for a in sorted(config.apis, key=lambda a: a.name) if viewer.sees(a)
            ]
        }

    async def diff(self, op: Operation, api: str, base: str, head: str) -> dict[str, Any]:
        """The changes from version `base` to version `head` of `api` (breaking first)."""
        entity = await self._entities().get(op, api)
        model = Api.model_validate(entity.representation)
        documents = []
        for name in (base, head):
            v = model.version(name)
            if v is None or v.openapi is None:
                raise ServiceError(
                    NOT_FOUND, f"api {api!r} has no version {name!r} with an OpenAPI description"
                )
            documents.append(v.openapi)
        changes = breaking_changes(documents[0], documents[1])
        return report(api, base, head, changes)


def report(api: str, base: str, head: str, changes: list[Change]) -> dict[str, Any]:
    """A diff as JSON (the admin API's and the CLI's)."""
    return {
        "api": api,
        "base": base,
        "head": head,
        "breaking": sum(1 for c in changes if c.breaking),
        "changes": [c.as_json() for c in changes],
    }


def _listed(api: Api) -> dict[str, Any]:
    return {
        "name": api.name,
        "title": api.title,
        "description": api.description,
        "owners": api.owners,
        "tags": api.tags,
        "organization": api.organization,
        "public": api.public,
        "default_version": api.default_version,
        "versions": [_listed_version(api, v) for v in api.versions],
    }


def _listed_version(api: Api, v: ApiVersion) -> dict[str, Any]:
    links = (
        {
            "openapi_json": published_path(api.name, v.name),
            "openapi_yaml": published_path(api.name, v.name, "yaml"),
        }
        if v.openapi is not None
        else {}
    )
    return {
        "name": v.name,
        "status": v.status.value,
        "description": v.description,
        "deprecated_at": _iso(v.deprecated_at),
        "sunset_at": _iso(v.sunset_at),
        "successor": v.successor,
        "links": links,
    }


def _located(exc: DescriptionError, url: str) -> str:
    return f"{url}{pointer(exc.path)}: {exc.message}" if exc.path else exc.message
