"""The persisted-query protocol without HTTP (`resolve_document`, every path), on the
in-memory document store; the memory store's own cap and trust rules. The SQL store
runs the same contract in tests/integration/store/test_graphql_document_stores.py."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from portcullis.services.errors import ServiceError
from portcullis.services.graphql_documents import (
    MemoryDocumentStore,
    PersistedQueryError,
    add_trusted,
    check_document,
    document_hash,
    resolve_document,
)
from support.graphql_documents import RecordingAudit, cli_operation

QUERY = "query Services { services { nodes { name } } }"
OTHER = "{ __typename }"
SHA = hashlib.sha256(QUERY.encode()).hexdigest()


def pq(sha256: Any = SHA, version: Any = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256}}


@pytest.fixture
def store() -> MemoryDocumentStore:
    return MemoryDocumentStore()


async def refused(
    query: str | None,
    extensions: dict[str, Any] | None,
    store: MemoryDocumentStore,
    *,
    trusted_only: bool = False,
    apq_enabled: bool = True,
) -> PersistedQueryError:
    with pytest.raises(PersistedQueryError) as caught:
        await resolve_document(
            query, extensions, store, trusted_only=trusted_only, apq_enabled=apq_enabled
        )
    return caught.value


def test_the_hash_is_the_lowercase_hex_sha256_of_the_utf8_text() -> None:
    assert document_hash(QUERY) == SHA
    assert document_hash("{ é }") == hashlib.sha256("{ é }".encode()).hexdigest()
    # A lone surrogate (JSON may carry one) hashes instead of crashing the request.
    assert len(document_hash("{ \ud800 }")) == 64


# ------------------------------------------------------------------- no persistedQuery


async def test_a_plain_query_runs_and_registers_nothing(store: MemoryDocumentStore) -> None:
    assert await resolve_document(QUERY, None, store, trusted_only=False) == (QUERY, None)
    assert await resolve_document(QUERY, {"other": 1}, store, trusted_only=False) == (QUERY, None)
    assert await store.list_documents() == []


@pytest.mark.parametrize("query", [None, ""])
async def test_neither_query_nor_hash_is_a_bad_request(
    store: MemoryDocumentStore, query: str | None
) -> None:
    error = await refused(query, None, store)
    assert (error.code, error.status) == ("BAD_REQUEST", 400)
    assert "non-empty `query` or a `persistedQuery`" in error.message


async def test_trusted_only_runs_the_full_text_of_a_trusted_document_only(
    store: MemoryDocumentStore,
) -> None:
    error = await refused(QUERY, None, store, trusted_only=True)
    assert (error.code, error.status) == ("TRUSTED_DOCUMENT_REQUIRED", 403)
    await store.register(QUERY, trusted=False, operation=None)  # an APQ one is not enough
    assert (
        await refused(QUERY, None, store, trusted_only=True)
    ).code == "TRUSTED_DOCUMENT_REQUIRED"
    await store.register(QUERY, trusted=True, operation=None)
    assert await resolve_document(QUERY, None, store, trusted_only=True) == (QUERY, None)
    # The exact text: another spelling of the same operation is another document.
    assert (await refused(QUERY + " ", None, store, trusted_only=True)).code == (
        "TRUSTED_DOCUMENT_REQUIRED"
    )


# ------------------------------------------------------------------- hash only


async def test_an_unknown_hash_is_not_found_as_apollo_clients_expect(
    store: MemoryDocumentStore,
) -> None:
    error = await refused(None, pq(), store)
    assert (error.code, error.message, error.status) == (
        "PERSISTED_QUERY_NOT_FOUND",
        "PersistedQueryNotFound",
        404,
    )


@pytest.mark.parametrize("sha256", ["zz" * 32, SHA[:-1], 42, None, SHA + "0"])
async def test_a_hash_no_document_can_have_is_not_found(
    store: MemoryDocumentStore, sha256: Any
) -> None:
    await store.register(QUERY, trusted=False, operation=None)
    assert (await refused(None, pq(sha256), store)).code == "PERSISTED_QUERY_NOT_FOUND"


async def test_the_apq_round_trip(store: MemoryDocumentStore) -> None:
    assert (await refused(None, pq(), store)).code == "PERSISTED_QUERY_NOT_FOUND"
    document, to_register = await resolve_document(QUERY, pq(), store, trusted_only=False)
    assert (document, to_register) == (QUERY, SHA)
    # Nothing is stored by resolving: the caller registers once the document validated.
    assert (await refused(None, pq(), store)).code == "PERSISTED_QUERY_NOT_FOUND"
    assert await store.register(document, trusted=False, operation=None) == to_register
    assert await resolve_document(None, pq(), store, trusted_only=False) == (QUERY, None)
    assert await resolve_document(None, pq(SHA.upper()), store, trusted_only=False) == (
        QUERY,
        None,
    )


async def test_trusted_only_runs_a_hash_of_a_trusted_document_only(
    store: MemoryDocumentStore,
) -> None:
    error = await refused(None, pq(), store, trusted_only=True)
    assert error.code == "TRUSTED_DOCUMENT_REQUIRED"
    await store.register(QUERY, trusted=False, operation=None)
    # Registered by a client before the mode was switched on: it does not run.
    assert (await refused(None, pq(), store, trusted_only=True)).code == "TRUSTED_DOCUMENT_REQUIRED"
    await store.register(QUERY, trusted=True, operation=None)
    assert await resolve_document(None, pq(), store, trusted_only=True) == (QUERY, None)
    # APQ switched off does not switch off trusted documents.
    assert await resolve_document(None, pq(), store, trusted_only=True, apq_enabled=False) == (
        QUERY,
        None,
    )


# ------------------------------------------------------------------- hash and query


@pytest.mark.parametrize("sha256", [document_hash(OTHER), "zz" * 32, 42, None, SHA[:10]], ids=str)
async def test_a_hash_that_is_not_the_querys_is_a_mismatch(
    store: MemoryDocumentStore, sha256: Any
) -> None:
    error = await refused(QUERY, pq(sha256), store)
    assert (error.code, error.status) == ("PERSISTED_QUERY_HASH_MISMATCH", 400)
    assert (await refused(QUERY, pq(sha256), store, trusted_only=True)).code == (
        "PERSISTED_QUERY_HASH_MISMATCH"
    )
    assert await store.list_documents() == []


async def test_trusted_only_registers_nothing_and_runs_trusted_text_only(
    store: MemoryDocumentStore,
) -> None:
    error = await refused(QUERY, pq(), store, trusted_only=True)
    assert error.code == "TRUSTED_DOCUMENT_REQUIRED"
    await store.register(QUERY, trusted=True, operation=None)
    assert await resolve_document(QUERY, pq(), store, trusted_only=True) == (QUERY, None)


# ------------------------------------------------------------------- the extension


@pytest.mark.parametrize(
    "persisted",
    [
        {"version": 2, "sha256Hash": SHA},
        {"version": "1", "sha256Hash": SHA},
        {"version": True, "sha256Hash": SHA},
        {"version": 1.0, "sha256Hash": SHA},
        {"sha256Hash": SHA},
        "1:" + SHA,
        [1, SHA],
    ],
    ids=str,
)
async def test_anything_but_version_1_is_refused(
    store: MemoryDocumentStore, persisted: Any
) -> None:
    for query in (None, QUERY):
        error = await refused(query, {"persistedQuery": persisted}, store)
        assert (error.code, error.status) == ("UNSUPPORTED_PERSISTED_QUERY_VERSION", 400)


async def test_with_apq_off_a_persisted_query_is_not_supported(
    store: MemoryDocumentStore,
) -> None:
    await store.register(QUERY, trusted=False, operation=None)
    for query in (None, QUERY):
        error = await refused(query, pq(), store, apq_enabled=False)
        assert (error.code, error.message) == (
            "PERSISTED_QUERY_NOT_SUPPORTED",
            "PersistedQueryNotSupported",
        )
    assert await resolve_document(QUERY, None, store, trusted_only=False, apq_enabled=False) == (
        QUERY,
        None,
    )


# ------------------------------------------------------------------- trusted documents


def test_a_trusted_document_must_parse_and_hold_an_operation() -> None:
    check_document(QUERY)
    for text, message in [
        ("query {", "not a GraphQL document at line 1, column 8: Syntax Error"),
        ("fragment F on Service { name }", "holds no operation"),
        ("   \n", "the document is empty"),
    ]:
        with pytest.raises(ServiceError) as caught:
            check_document(text, max_bytes=1000)
        assert message in caught.value.errors[0].detail, text
        assert caught.value.errors[0].pointer == "#/document"
    with pytest.raises(ServiceError, match="validation error") as caught:
        check_document(QUERY, max_bytes=10)
    assert "has 46 bytes, over the limit of 10" in caught.value.errors[0].detail


async def test_adding_a_trusted_document_is_idempotent_and_audited_once() -> None:
    store = MemoryDocumentStore()
    audit = RecordingAudit()
    op = cli_operation(audit)
    await store.register(QUERY, trusted=False, operation=None)
    assert await add_trusted(store, QUERY, op) == (SHA, True)
    assert await add_trusted(store, QUERY, op) == (SHA, False)
    assert await add_trusted(store, OTHER, op) == (document_hash(OTHER), True)
    assert [(e["action"], e["resource_id"]) for e in audit.events] == [
        ("trust", SHA),  # it was an APQ document: now trusted
        ("create", document_hash(OTHER)),
    ]
    assert all(e["actor"] == op.actor for e in audit.events)
    with pytest.raises(ServiceError):
        await add_trusted(store, "query {", op)


async def test_the_memory_store_evicts_the_least_recently_used_apq_documents() -> None:
    store = MemoryDocumentStore(max_documents=2)
    a, b, c = "{ a }", "{ b }", "{ c }"
    trusted = "{ t }"
    await store.register(trusted, trusted=True, operation=None)
    await store.register(a, trusted=False, operation=None)
    await store.register(b, trusted=False, operation=None)
    assert await store.get(document_hash(a)) == a  # a is now the most recently used
    await store.register(c, trusted=False, operation=None)
    assert await store.get(document_hash(b)) is None
    assert {d.document for d in await store.list_documents()} == {a, c, trusted}
    assert store.evicted == 1
    # Registering a stored one again refreshes it rather than adding it.
    await store.register(a, trusted=False, operation=None)
    await store.register(b, trusted=False, operation=None)
    assert {d.document for d in await store.list_documents(trusted=False)} == {a, b}


async def test_the_memory_store_refuses_what_it_cannot_hold() -> None:
    store = MemoryDocumentStore(max_bytes=8)
    with pytest.raises(ServiceError) as caught:
        await store.register("{ abcdefgh }", trusted=False, operation=None)
    assert "over the limit of 8" in caught.value.errors[0].detail
    with pytest.raises(ServiceError) as caught:
        await store.register("{\ud800}", trusted=False, operation=None)
    assert "not valid UTF-8" in caught.value.errors[0].detail
    assert await store.list_documents() == []
