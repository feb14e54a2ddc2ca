"""Saving an entity form through the entity service: the REST body's errors, If-Match,
and the merge view a 412 leads to (mine on top of theirs, conflicts named)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.config import ConfigService
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.entities import EntityCollection, EntityService
from portcullis.services.entity_kinds import PLUGINS, ROUTES
from portcullis.store.config_repository import ConfigRepository
from portcullis.web.dashboard.editing import (
    base_of,
    body_errors,
    merge_on_top,
    save_entity,
    show,
)
from portcullis.web.dashboard.forms import ABSENT
from support.services import apply_config, migrated_store, operation

SECRET = ServerSecret.from_secret(b"s" * 32)
CONFIG: dict[str, Any] = {
    "services": [{"name": "orders", "url": "http://orders:8080"}],
    "routes": [{"name": "orders", "service": "orders", "paths": ["/orders"], "priority": 1}],
}


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = await migrated_store(tmp_path)
    await apply_config(eng, CONFIG)
    yield eng
    await eng.dispose()


@pytest.fixture
def editor(engine: AsyncEngine) -> ConfigEditor:
    return ConfigEditor(ConfigRepository(engine))


def entities(kind: Any, editor: ConfigEditor, engine: AsyncEngine) -> EntityService:
    return EntityService(EntityCollection(kind), editor, engine, SECRET)


async def test_a_bad_plugin_config_is_refused_with_pointers_into_the_form(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    plugins = entities(PLUGINS, editor, engine)
    outcome = await save_entity(
        plugins,
        operation(engine),
        {"name": "request-termination", "route": "orders", "config": {"status_code": 99}},
    )
    assert outcome.status == 422
    assert outcome.errors == (
        ("#/config/status_code", "Input should be greater than or equal to 200"),
    )
    # What the request body's own model refuses reads as the REST API's body errors.
    assert body_errors(ROUTES, {"service": "orders", "priority": "high"}) == [
        ("#/name", "Field required"),
        ("#/priority", "Input should be a valid integer, unable to parse string as an integer"),
    ]


async def test_a_stale_etag_is_a_conflict_and_the_merge_keeps_both_changes(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    routes = entities(ROUTES, editor, engine)
    op = operation(engine)
    loaded = await routes.get(op, "orders")
    version = (await editor.state()).version
    # Someone else changes the priority; the form changed the paths.
    theirs = await routes.patch(op, "orders", {"priority": 5}, if_match=loaded.etag)
    mine = {**loaded.representation, "paths": ["/orders", "/v2/orders"]}
    outcome = await save_entity(routes, op, mine, entity_id="orders", if_match=loaded.etag)
    assert outcome.conflict
    assert outcome.entity is None

    base = await base_of(ConfigService(editor), op, ROUTES, "orders", version)
    assert base == loaded.representation
    merge = merge_on_top(ROUTES, base, mine, theirs.representation)
    assert merge.result["paths"] == ["/orders", "/v2/orders"]
    assert merge.result["priority"] == 5
    assert merge.conflicts == 0
    assert {r.path for r in merge.rows} == {"/paths", "/priority"}
    saved = await save_entity(routes, op, merge.result, entity_id="orders", if_match=theirs.etag)
    assert saved.ok

    # Both changed the same field: a conflict, the form's value proposed.
    both = merge_on_top(ROUTES, base, {**base, "priority": 9}, theirs.representation)
    [row] = both.rows
    assert (row.path, row.base, row.theirs, row.mine, row.result) == ("/priority", 1, 5, 9, 9)
    assert row.conflict


async def test_without_the_starting_point_every_difference_is_a_conflict(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    # An organization-limited admin may not read the version history.
    limited = operation(engine, "org-a")
    assert await base_of(ConfigService(editor), limited, ROUTES, "orders", 1) is None
    merge = merge_on_top(ROUTES, None, {"name": "r", "priority": 2}, {"name": "r", "priority": 3})
    assert [(r.path, r.base, r.conflict) for r in merge.rows] == [("/priority", ABSENT, True)]
    assert not merge.three_way


def test_secrets_in_the_merge_view_are_redacted() -> None:
    base: dict[str, Any] = {"name": "jwt-auth", "config": {"keys": []}}
    theirs = {"name": "jwt-auth", "config": {"keys": [{"algorithm": "HS256", "secret": "x" * 40}]}}
    mine = {"name": "jwt-auth", "enabled": False, "config": {"keys": []}}
    merge = merge_on_top(PLUGINS, base, mine, theirs)
    assert "x" * 40 not in repr(merge.rows)
    assert merge.result["config"]["keys"] == theirs["config"]["keys"]
    assert merge.result["enabled"] is False
    assert show(ABSENT) == "(absent)"
