"""Cache purge operations without HTTP: the organization rule, the input rule, and the
invalidation and audit event written together."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.cache import CacheService
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.errors import FORBIDDEN, NOT_FOUND, VALIDATION_FAILED, ServiceError
from portcullis.settings import Settings
from portcullis.store.invalidations import InvalidationFeed, InvalidationKind
from support.services import apply_config, audit_events, operation

CONFIG = {
    "services": [
        {"name": "a", "url": "http://127.0.0.1:9/", "organization": "org-a"},
        {"name": "b", "url": "http://127.0.0.1:9/", "organization": "org-b"},
    ],
    "routes": [
        {"name": "ra", "service": "a", "paths": ["/a"], "organization": "org-a"},
        {"name": "rb", "service": "b", "paths": ["/b"], "organization": "org-b"},
    ],
}


@pytest.fixture
async def cache(engine: AsyncEngine, editor: ConfigEditor) -> CacheService:
    await apply_config(engine, CONFIG)
    settings = Settings(database_url="sqlite+aiosqlite://", cache_backend="memory")
    return CacheService(engine, editor, settings)


async def refused(cache: CacheService, op: object, **scope: str) -> ServiceError:
    with pytest.raises(ServiceError) as refusal:
        await cache.purge(op, **scope)  # type: ignore[arg-type]
    return refusal.value


async def test_an_organization_purges_only_its_own_routes(
    engine: AsyncEngine, cache: CacheService
) -> None:
    org_a = operation(engine, "org-a")
    assert (await refused(cache, org_a)).kind is FORBIDDEN
    assert (await refused(cache, org_a, path="/b")).kind is FORBIDDEN
    other = await refused(cache, org_a, route="rb")
    assert (other.kind, other.detail, other.target) == (NOT_FOUND, "no route named 'rb'", "route")
    assert await InvalidationFeed(engine).since(0) == []
    assert await audit_events(engine) == []

    out = await cache.purge(org_a, route="ra", path_prefix="/a/")
    assert (out.route, out.path_prefix, out.backend, out.deleted) == ("ra", "/a/", "memory", None)
    [purge] = await InvalidationFeed(engine).since(0)
    assert (purge.kind, purge.subject) == (InvalidationKind.CACHE_PURGE, "P|ra|/a/")
    [event] = await audit_events(engine)
    assert (event.action, event.resource_type, event.resource_id, event.status) == (
        "purge",
        "cache",
        "ra",
        202,
    )
    assert (event.actor, event.request_id, event.organization_id) == (
        "user:test@example.com",
        "req-1",
        "id-org-a",
    )


async def test_path_and_prefix_together_are_refused_naming_the_prefix(
    engine: AsyncEngine, cache: CacheService
) -> None:
    refusal = await refused(cache, operation(engine), path="/a", path_prefix="/a/")
    assert refusal.kind is VALIDATION_FAILED
    assert [e.pointer for e in refusal.errors] == ["#/path_prefix"]
    assert await InvalidationFeed(engine).since(0) == []


async def test_an_unlimited_caller_purges_everything(
    engine: AsyncEngine, cache: CacheService
) -> None:
    out = await cache.purge(operation(engine))
    assert (out.route, out.path, out.path_prefix) == (None, None, None)
    [purge] = await InvalidationFeed(engine).since(0)
    assert purge.subject == "*"
