"""The editor's O(change) paths give what the whole-config paths give: the checksum of
an edit (kept text) and the state after another writer moved the head (validated
against the cached config, in a thread)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.model.canonical_text import canonical_text, checksum_of
from portcullis.model.loader import load_config_data
from portcullis.services.config_editor import ConfigEditor, Edit, validate_document
from portcullis.services.entities import EntityCollection, EntityQuery, EntityService
from portcullis.services.entity_kinds import CONSUMERS as CONSUMERS_KIND
from portcullis.services.pagination import SortedIndex, parse_sort
from portcullis.store.config_repository import ConfigRepository
from support.services import apply_config, operation

CONFIG: dict[str, Any] = {
    "consumers": [{"username": f"u{i}", "metadata": {"n": i}} for i in range(20)],
}


def edit_consumer(index: int, metadata: dict[str, Any]) -> Any:
    def plan(current: Any) -> Edit[None]:
        document = dict(current.document)
        consumers = document["consumers"] = list(document["consumers"])
        consumers[index] = {**consumers[index], "metadata": metadata}
        return Edit(document, None)

    return plan


async def test_edits_store_the_checksum_of_the_whole_canonical_text(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    await apply_config(engine, CONFIG)
    for i, value in enumerate([1, True, 1.0, "1", None]):
        applied = await editor.mutate(edit_consumer(i % 3, {"n": value}), author="t")
        assert applied.stored is not None
        stored = await ConfigRepository(engine).get(applied.stored.version)
        assert stored.document is not None
        assert applied.stored.checksum == checksum_of(canonical_text(stored.document))
    # Rolling back gives the old checksum back.
    first = (await ConfigRepository(engine).list_versions(limit=100))[-1]
    back = await editor.rollback(first.version, author="t")
    assert back.checksum == first.checksum


async def test_state_after_another_writer_equals_a_full_load(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    await apply_config(engine, CONFIG)
    before = await editor.state()
    changed = {
        "consumers": [
            *CONFIG["consumers"][:5],
            {"username": "new", "tags": ["t"]},
            *CONFIG["consumers"][7:],
        ]
    }
    other = ConfigRepository(engine)  # another writer: the CLI, another admin process
    await other.apply(validate_document(changed), author="cli", comment=None)
    after = await editor.state()
    assert after.version == before.version + 1
    full = load_config_data(changed)
    assert after.config == full
    assert after.document == full.canonical()


@pytest.mark.parametrize("sort", ["name", "-priority,name", "service,-name"])
def test_a_sorted_view_derived_from_the_last_one_equals_a_fresh_sort(sort: str) -> None:
    rng = random.Random(sort)
    keys = parse_sort(sort, ("name", "priority", "service"), "name")

    def route(i: int) -> dict[str, Any]:
        return {"name": f"r{i}", "priority": rng.choice([None, 0, 5]), "service": f"s{i % 3}"}

    docs = [route(i) for i in range(40)]
    index = SortedIndex(docs, lambda d: str(d["name"]), keys)
    for step in range(60):
        new = list(docs)
        i = rng.randrange(len(new))
        what = rng.randrange(3)
        if what == 0:
            new[i] = {**new[i], "priority": rng.choice([None, 1, 9]), "service": "s9"}
        elif what == 1:
            new.insert(i, route(100 + step))
        else:
            del new[i]
        derived = index.changed(
            docs[i : i + 1] if what != 1 else [], new[i : i + 1] if what != 2 else []
        )
        fresh = SortedIndex(new, lambda d: str(d["name"]), keys)
        assert derived is not None
        everything = derived.page(lambda _d: True, limit=1000, cursor=None).items
        assert everything == fresh.page(lambda _d: True, limit=1000, cursor=None).items
        docs, index = new, derived


async def test_ids_and_pages_derived_from_the_last_version_follow_every_change(
    engine: AsyncEngine, editor: ConfigEditor
) -> None:
    consumers = EntityService(
        EntityCollection(CONSUMERS_KIND), editor, engine, ServerSecret.from_secret(b"s" * 32)
    )
    op = operation(engine)
    await apply_config(engine, CONFIG)

    async def names() -> list[str]:
        page = await consumers.list(op, EntityQuery(limit=100))
        return [c["username"] for c in page.items]

    assert len(await names()) == 20
    await consumers.delete(op, "u3")
    assert "u3" not in await names()
    await consumers.create(op, {"username": "u3", "tags": ["again"]})  # a namesake: no 409
    # Changes one after another, no read in between: each plan is the first to see its
    # version (and works on a copy of the collection it changes).
    await consumers.create(op, {"username": "a0"})
    await consumers.delete(op, "a0")
    await consumers.create(op, {"username": "a0"})
    await consumers.patch(op, "u5", {"tags": ["x"]})
    assert await names() == sorted([f"u{i}" for i in range(20)] + ["a0"])
    assert (await consumers.get(op, "u3")).representation["tags"] == ["again"]
