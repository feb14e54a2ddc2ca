"""Purge the response cache: everything, one route, or one path (exact or by prefix)
(`CacheService.purge`, behind `DELETE /admin/v1/cache`).

`DELETE /admin/v1/cache` with optional query parameters:

- none: every entry;
- `route=<name>`: every entry stored by that route's response-cache;
- `path=/a/b`: entries for exactly that request path (any method, query, consumer
  or variant), in every route or, with `route`, in that route only;
- `path_prefix=/a/`: entries for every path starting with it (same rules).

Paths are request paths as clients send them (before `strip_path`); entries of a
route whose cache key leaves `path` out are reached by route only.

With the Redis backend (`PORTCULLIS_CACHE_BACKEND=redis`) the control plane
deletes the shared entries itself before answering (SCAN + UNLINK; 503 when Redis
can't be reached). Memory caches live in the data-plane workers: the purge is
recorded as a `cache-purge` event in the store, in the same transaction as its
audit entry, and every worker applies it on its next event poll (0.25 s by
default), so it is 202 Accepted. Admins limited to an organization may purge only
routes of their organization (`route` required).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.cache.backend import CacheUnavailable
from portcullis.cache.purge import PurgeScope
from portcullis.problems import ProblemKind
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError, invalid, not_found
from portcullis.settings import Settings
from portcullis.store.engine import write_transaction
from portcullis.store.invalidations import InvalidationKind, append_invalidations

CACHE_UNAVAILABLE = ProblemKind(
    "cache-unavailable", "The shared response cache is unavailable", 503
)


_NAME = r"^[A-Za-z0-9][A-Za-z0-9._~-]*$"


class PurgeRequest(BaseModel):
    """What a purge names (every face reads its inputs with this model)."""

    route: str | None = Field(
        None, min_length=1, max_length=128, pattern=_NAME, description="A route name"
    )
    path: str | None = Field(
        None, min_length=1, max_length=2048, pattern="^/", description="An exact request path"
    )
    path_prefix: str | None = Field(
        None, min_length=1, max_length=2048, pattern="^/", description="A request path prefix"
    )


class CachePurgeOut(BaseModel):
    """What was purged."""

    route: str | None = Field(description="Only this route's entries (null: every route)")
    path: str | None = Field(description="Only entries for exactly this path")
    path_prefix: str | None = Field(description="Only entries for paths starting with this")
    backend: Literal["memory", "redis"]
    deleted: int | None = Field(
        description="Shared entries deleted from Redis; null with the memory backend, whose "
        "workers each purge their own entries within about a second"
    )


class CacheService:
    """Response-cache purges: Redis entries directly, memory caches through the store's
    invalidation feed (every worker applies the purge on its next poll)."""

    def __init__(self, engine: AsyncEngine, editor: ConfigEditor, settings: Settings) -> None:
        self._engine = engine
        self._editor = editor
        self._settings = settings

    async def purge(
        self,
        op: Operation,
        *,
        route: str | None = None,
        path: str | None = None,
        path_prefix: str | None = None,
    ) -> CachePurgeOut:
        """Purge the entries in scope; an organization-limited caller must name a route of
        its organization. Recorded as a `cache-purge` invalidation and an audit event in
        one transaction."""
        if path is not None and path_prefix is not None:
            raise invalid(
                [("#/path_prefix", "give path or path_prefix, not both")],
                "give path or path_prefix, not both",
            )
        org = op.scope
        if org.limited:
            if route is None:
                org.require_unlimited("Purging the cache beyond one route")
            config = (await self._editor.state()).config
            if not any(
                r.name == route and r.organization == org.organization for r in config.routes
            ):
                raise not_found(f"no route named {route!r}", target="route")
        scope = PurgeScope.of(route, path, path_prefix)
        backend: Literal["memory", "redis"] = (
            "redis" if self._settings.cache_backend == "redis" else "memory"
        )
        deleted: int | None = None
        if backend == "redis":
            deleted = await self._purge_redis(scope)
        out = CachePurgeOut(
            route=route, path=path, path_prefix=path_prefix, backend=backend, deleted=deleted
        )
        async with write_transaction(self._engine) as conn:
            await append_invalidations(conn, [(InvalidationKind.CACHE_PURGE, scope.subject())])
            await op.record("purge", "cache", route, after=out.model_dump(), status=202, conn=conn)
        return out

    async def _purge_redis(self, scope: PurgeScope) -> int:
        """Delete the shared entries in scope (a client per purge: purges are rare)."""
        from portcullis.cache.factory import create_cache_backend

        try:
            cache = create_cache_backend(self._settings)
        except ValueError as exc:
            raise ServiceError(CACHE_UNAVAILABLE, str(exc)) from None
        try:
            return await cache.purge(scope)
        except CacheUnavailable as exc:
            raise ServiceError(CACHE_UNAVAILABLE, f"Redis could not be purged: {exc}") from None
        finally:
            await cache.aclose()
