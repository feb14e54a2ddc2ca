"""The persisted-document store contract, run on the in-memory store and on the SQL
store over SQLite and PostgreSQL: registration (idempotent, trust only ever granted),
lookups by hash, the LRU cap on APQ documents, the size limit, removal and its audit;
then what only the SQL store does: reads mark use at most once a minute, and two
control-plane nodes on one PostgreSQL database share every document."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.services.graphql_documents import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DOCUMENTS,
    DocumentStore,
    MemoryDocumentStore,
    SqlDocumentStore,
    document_hash,
    resolve_document,
)
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.graphql_documents import DateClock, RecordingAudit, cli_operation
from support.migrations import migrate
from support.postgres import PostgresServer

QUERY = "query Services { services { nodes { name } } }"
SHA = document_hash(QUERY)
MakeStore = Callable[..., Awaitable[DocumentStore]]


@pytest.fixture
def clock() -> DateClock:
    return DateClock()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: DateClock
) -> AsyncIterator[MakeStore]:
    """Builds a store of the parametrised kind (SQL ones on a fresh migrated database)."""
    engines: list[AsyncEngine] = []

    async def make(
        *, max_documents: int = DEFAULT_MAX_DOCUMENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> DocumentStore:
        if request.param == "memory":
            return MemoryDocumentStore(
                clock=clock, max_documents=max_documents, max_bytes=max_bytes
            )
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / f'store{len(engines)}.db'}"
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            url = server.create_database()
        await upgrade_to_head(url)
        engines.append(create_engine(url))
        return SqlDocumentStore(
            engines[-1], clock=clock, max_documents=max_documents, max_bytes=max_bytes
        )

    yield make
    for engine in engines:
        await engine.dispose()


async def test_registering_and_reading_documents(make_store: MakeStore, clock: DateClock) -> None:
    store = await make_store()
    audit = RecordingAudit()
    op = cli_operation(audit, clock)
    assert await store.get(SHA) is None
    assert await store.register(QUERY, trusted=False, operation=None) == SHA
    assert await store.register(QUERY, trusted=False, operation=None) == SHA
    assert await store.get(SHA) == QUERY
    assert await store.get(SHA.upper()) == QUERY
    assert await store.get(SHA, trusted_only=True) is None
    assert not await store.trusted(SHA)
    for nonsense in ("", "x" * 64, SHA[:-1], "'; drop table graphql_documents; --"):
        assert await store.get(nonsense) is None
        assert not await store.trusted(nonsense)

    # An operator trusting the same text promotes it (audited); a client registering it
    # again never takes the trust away.
    clock.advance(5)
    assert await store.register(QUERY, trusted=True, operation=op) == SHA
    assert await store.register(QUERY, trusted=False, operation=None) == SHA
    assert await store.trusted(SHA)
    assert await store.get(SHA, trusted_only=True) == QUERY
    [stored] = await store.list_documents()
    assert (stored.sha256, stored.trusted, stored.size) == (SHA, True, len(QUERY))
    assert stored.created_by is None  # a client registered it first
    assert stored.as_json(text=True)["document"] == QUERY
    assert "document" not in stored.as_json()

    other = "{ __typename }"
    clock.advance(5)
    await store.register(other, trusted=True, operation=op)
    assert [d.document for d in await store.list_documents()] == [other, QUERY]
    assert [d.document for d in await store.list_documents(trusted=False)] == []
    assert [d.document for d in await store.list_documents(limit=1)] == [other]
    assert (await store.list_documents())[0].created_by == op.actor
    assert [(e["action"], e["resource_id"], e["status"]) for e in audit.events] == [
        ("trust", SHA, 200),
        ("create", document_hash(other), 201),
    ]


async def test_removing_a_document(make_store: MakeStore) -> None:
    store = await make_store()
    audit = RecordingAudit()
    op = cli_operation(audit)
    await store.register(QUERY, trusted=True, operation=None)
    removed = await store.remove(SHA.upper(), operation=op)
    assert (removed.sha256, removed.trusted) == (SHA, True)
    assert await store.get(SHA) is None
    assert not await store.trusted(SHA)
    with pytest.raises(ServiceError) as caught:
        await store.remove(SHA, operation=op)
    assert (caught.value.kind, caught.value.target) == (NOT_FOUND, "sha256")
    [event] = audit.events
    assert (event["action"], event["resource_id"], event["status"]) == ("delete", SHA, 204)
    assert event["before"]["trusted"] is True
    assert "document" not in event["before"]
    if isinstance(store, SqlDocumentStore):
        assert event["in_transaction"]  # it commits with the removal


async def test_any_admin_may_register_whatever_the_length_of_their_name(
    make_store: MakeStore,
) -> None:
    # An e-mail may have 254 characters: the actor is as long as the audit log allows.
    actor = "user:" + "x" * 320 + "@example.com"
    op = replace(cli_operation(RecordingAudit()), actor=actor)
    store = await make_store()
    await store.register(QUERY, trusted=True, operation=op)
    [stored] = await store.list_documents()
    assert stored.created_by == actor


async def test_the_cap_evicts_the_least_recently_used_apq_documents(
    make_store: MakeStore, clock: DateClock
) -> None:
    store = await make_store(max_documents=3)
    trusted = ["{ t1 }", "{ t2 }"]
    for text in trusted:
        await store.register(text, trusted=True, operation=None)
    apq = [f"{{ d{i} }}" for i in range(4)]
    for text in apq[:3]:
        clock.advance(120)
        await store.register(text, trusted=False, operation=None)
    clock.advance(120)
    assert await store.get(document_hash(apq[0])) == apq[0]  # d0: now the most recent
    clock.advance(120)
    await store.register(apq[3], trusted=False, operation=None)
    assert await store.get(document_hash(apq[1])) is None  # d1 was the least recent
    remaining = {d.document for d in await store.list_documents(trusted=False)}
    assert remaining == {apq[0], apq[2], apq[3]}
    # Trusted documents are neither evicted nor counted.
    assert {d.document for d in await store.list_documents(trusted=True)} == set(trusted)
    assert store.evicted == 1  # type: ignore[attr-defined]
    # Registering a stored one again refreshes it: d2 (the least recent) stays, d0 goes.
    clock.advance(120)
    await store.register(apq[2], trusted=False, operation=None)
    clock.advance(120)
    await store.register(apq[1], trusted=False, operation=None)
    remaining = {d.document for d in await store.list_documents(trusted=False)}
    assert remaining == {apq[1], apq[2], apq[3]}


async def test_documents_over_the_size_limit_or_not_utf8_are_refused(
    make_store: MakeStore,
) -> None:
    store = await make_store(max_bytes=len(QUERY))
    await store.register(QUERY, trusted=False, operation=None)
    for text, message in [
        (QUERY + " ", f"has {len(QUERY) + 1} bytes, over the limit of {len(QUERY)}"),
        ("{ é" + "x" * (len(QUERY) - 4) + "}", "over the limit"),  # bytes, not characters
        ("{ \ud800 }", "not valid UTF-8"),
        ("  ", "the document is empty"),
    ]:
        with pytest.raises(ServiceError) as caught:
            await store.register(text, trusted=True, operation=None)
        assert message in caught.value.errors[0].detail, text
    assert [d.document for d in await store.list_documents()] == [QUERY]


# ------------------------------------------------------------------- the SQL store


async def test_reads_mark_use_at_most_once_a_minute(engine: AsyncEngine) -> None:
    clock = DateClock()
    store = SqlDocumentStore(engine, clock=clock)
    await store.register(QUERY, trusted=False, operation=None)
    registered = clock.now
    clock.advance(59)
    assert await store.get(SHA) == QUERY
    [stored] = await store.list_documents()
    assert stored.last_used_at == registered  # no write for this read
    clock.advance(1)
    assert await store.get(SHA) == QUERY
    [stored] = await store.list_documents()
    assert stored.last_used_at == clock.now


@pytest.fixture
async def two_nodes(postgres_server: PostgresServer) -> AsyncIterator[list[SqlDocumentStore]]:
    """The document stores of two control-plane nodes (an engine each) on one
    PostgreSQL database, capped at 3 APQ documents."""
    url = postgres_server.create_database()
    await upgrade_to_head(url)
    engines = [create_engine(url), create_engine(url)]
    yield [SqlDocumentStore(e, max_documents=3) for e in engines]
    for engine in engines:
        await engine.dispose()


@pytest.mark.postgres
async def test_two_nodes_on_one_database_share_every_document(
    two_nodes: list[SqlDocumentStore],
) -> None:
    one, two = two_nodes
    # A client registers through node one and is then served by node two.
    with pytest.raises(Exception, match="PersistedQueryNotFound"):
        await resolve_document(None, {"persistedQuery": _pq(SHA)}, two, trusted_only=False)
    document, to_register = await resolve_document(
        QUERY, {"persistedQuery": _pq(SHA)}, one, trusted_only=False
    )
    assert to_register is not None
    await one.register(document, trusted=False, operation=None)
    assert await resolve_document(None, {"persistedQuery": _pq(SHA)}, two, trusted_only=False) == (
        QUERY,
        None,
    )
    # Trust granted on one node holds on the other; so does its removal.
    op = cli_operation(RecordingAudit())
    await two.register(QUERY, trusted=True, operation=op)
    assert await one.trusted(SHA)
    await one.remove(SHA, operation=op)
    assert await two.get(SHA) is None


@pytest.mark.postgres
async def test_the_cap_holds_exactly_while_two_nodes_register_at_once(
    two_nodes: list[SqlDocumentStore],
) -> None:
    for round_ in range(5):
        # Each document from both nodes at once: no conflict error, one row each.
        texts = [f"{{ r{round_}n{i} }}" for i in range(8)]
        await asyncio.gather(
            *(node.register(t, trusted=False, operation=None) for t in texts for node in two_nodes)
        )
        for node in two_nodes:
            assert len(await node.list_documents()) == 3, round_


def _pq(sha256: str) -> dict[str, object]:
    return {"version": 1, "sha256Hash": sha256}


async def test_migration_0012_goes_down_and_up_again(database_url: str) -> None:
    await migrate(database_url, "head")
    await migrate(database_url, "0011", down=True)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert "graphql_documents" not in tables
        await migrate(database_url, "head")
        await SqlDocumentStore(engine).register(QUERY, trusted=True, operation=None)
        assert await SqlDocumentStore(engine).trusted(SHA)
    finally:
        await engine.dispose()
