"""KeyRepository against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.events import EventKind, IdentityEventFeed
from portcullis.identity.key_admin import (
    ImportRejected,
    KeyInfo,
    KeySettings,
    KeySpec,
    KeyState,
    export_csv,
    export_jsonl,
    parse_import_csv,
)
from portcullis.identity.key_records import KeyStatus
from portcullis.identity.key_repository import (
    InvalidCursor,
    KeyConflict,
    KeyFilter,
    KeyInvalid,
    KeyNotFound,
    KeyRepository,
)
from portcullis.identity.keys import Environment, generate_key, parse_key
from portcullis.identity.secrets import ServerSecret
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.identity_tables import ApiKeyRow
from portcullis.store.migrations import upgrade_to_head

SECRET = ServerSecret.from_secret(b"k" * 32)
T0 = datetime(2030, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


ORGANIZATIONS = ("org", "org-a", "org-b")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    # Keys store their organization's id, looked up by name when they are created.
    async with write_transaction(eng) as conn:
        for name in ORGANIZATIONS:
            await conn.execute(
                insert(OrganizationRow).values(
                    id=f"id-{name}", name=name, created_at=T0, updated_at=T0
                )
            )
    yield eng
    await eng.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repo(engine: AsyncEngine, clock: Clock) -> KeyRepository:
    return KeyRepository(engine, SECRET, clock=clock)


def spec(**fields: object) -> KeySpec:
    return KeySpec.model_validate({"name": "k", **fields})


async def events(engine: AsyncEngine) -> list[tuple[EventKind, str]]:
    return [(e.kind, e.subject) for e in await IdentityEventFeed(engine).since(0)]


async def dump_store(engine: AsyncEngine) -> str:
    """Every row of every table, as text."""
    out = []
    async with engine.connect() as conn:
        names = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
        for name in names:
            rows = (await conn.execute(text(f'SELECT * FROM "{name}"'))).all()
            out.append(f"{name}: {rows!r}")
    return "\n".join(out)


async def test_create_stores_only_a_hash_and_the_data_plane_finds_the_record(
    repo: KeyRepository, engine: AsyncEngine
) -> None:
    created = await repo.create(
        "acme",
        spec(
            name="checkout",
            environment="staging",
            scopes=["orders:read", "orders:write"],
            expires_at="2031-01-01T00:00:00Z",
            allowed_origins=["https://App.example.com:443"],
            ip_allowlist=["10.0.0.0/8", "2001:db8::/32"],
            plan="gold",
            metadata={"team": "payments"},
        ),
        created_by="user:a@example.com",
        organization="org-a",
    )
    key, info = created.key, created.info
    parsed = parse_key(key)
    assert parsed is not None
    assert parsed.id == info.id
    assert parsed.environment is Environment.staging
    assert info.prefix is not None
    assert key.startswith(info.prefix + "_")
    assert key not in repr(created)

    record = await repo.find_by_hash(SECRET.hash_credential(key))
    assert record is not None
    assert record.id == info.id
    assert record.consumer == "acme"
    assert record.plan == "gold"
    assert record.scopes == frozenset({"orders:read", "orders:write"})
    assert record.allowed_origins == frozenset({"https://app.example.com"})
    assert record.ip_allowlist == (ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"))
    assert record.expires_at == datetime(2031, 1, 1, tzinfo=UTC).timestamp()
    assert record.grace_until is None
    assert record.status is KeyStatus.active
    assert await repo.find_by_hash(SECRET.hash_credential(key + "x")) is None
    # The hash is peppered: a plain SHA-256 of the key finds nothing.
    assert await repo.find_by_hash(hashlib.sha256(key.encode()).hexdigest()) is None

    got = await repo.get(info.id)
    assert got == info
    assert (info.organization, info.organization_id) == ("org-a", "id-org-a")
    assert info.created_by == "user:a@example.com"
    assert info.created_at == T0
    assert info.state(T0) is KeyState.active
    assert await events(engine) == [(EventKind.KEY, SECRET.hash_credential(key))]

    dump = await dump_store(engine)
    secret_part = key[len(info.prefix) + 1 :]
    assert key not in dump
    assert secret_part not in dump
    assert secret_part[:22] not in dump
    with pytest.raises(KeyNotFound):
        await repo.get("nope")


async def test_create_rejects_an_expiry_in_the_past(repo: KeyRepository) -> None:
    with pytest.raises(KeyInvalid) as caught:
        await repo.create(
            "acme", spec(expires_at="2020-01-01T00:00:00Z"), created_by="t", organization=None
        )
    assert caught.value.field == "expires_at"


async def test_touch_used_batches_and_only_moves_forward(
    repo: KeyRepository, engine: AsyncEngine
) -> None:
    a = (await repo.create("acme", spec(), created_by="t", organization=None)).info
    b = (await repo.create("acme", spec(), created_by="t", organization=None)).info
    later = T0 + timedelta(minutes=5)
    await repo.touch_used({a.id: later, b.id: T0, "unknown": later})
    assert (await repo.get(a.id)).last_used_at == later
    assert (await repo.get(b.id)).last_used_at == T0
    # An older stamp (another worker flushed earlier data late) changes nothing.
    await repo.touch_used({a.id: T0})
    assert (await repo.get(a.id)).last_used_at == later
    await repo.touch_used({})
    # Usage is not a change: updated_at stays and no event is appended.
    assert (await repo.get(a.id)).updated_at == T0
    assert len(await events(engine)) == 2


async def test_update_replaces_settings_and_invalidates(
    repo: KeyRepository, engine: AsyncEngine, clock: Clock
) -> None:
    created = await repo.create(
        "acme", spec(scopes=["a"], metadata={"x": 1}), created_by="t", organization=None
    )
    clock.now = T0 + timedelta(seconds=10)
    settings = KeySettings(
        name="renamed",
        scopes=["b", "c"],
        ip_allowlist=["192.0.2.7"],
        expires_at=T0 + timedelta(days=1),
    )
    after = await repo.update(created.info.id, settings)
    assert after.name == "renamed"
    assert after.scopes == ("b", "c")
    assert after.ip_allowlist == ("192.0.2.7/32",)
    assert after.metadata == {}
    assert after.updated_at == clock.now
    assert after.created_at == T0
    record = await repo.find_by_hash(SECRET.hash_credential(created.key))
    assert record is not None
    assert record.scopes == frozenset({"b", "c"})
    assert len(await events(engine)) == 2
    with pytest.raises(KeyInvalid):
        await repo.update(created.info.id, KeySettings(name="x", expires_at=T0))
    await repo.revoke(created.info.id, "leaked")
    with pytest.raises(KeyConflict):
        await repo.update(created.info.id, KeySettings(name="y"))
    with pytest.raises(KeyNotFound):
        await repo.update("missing", KeySettings(name="y"))


async def test_rotation_keeps_the_old_key_for_the_grace_period(
    repo: KeyRepository, engine: AsyncEngine, clock: Clock
) -> None:
    old = await repo.create(
        "acme",
        spec(scopes=["s"], plan="p", ip_allowlist=["::1"], environment="development"),
        created_by="t",
        organization="org",
    )
    clock.now = T0 + timedelta(hours=1)
    rotation = await repo.rotate(old.info.id, grace_seconds=600, created_by="rotator")
    new = rotation.new
    assert new.id != old.info.id
    assert rotation.key != old.key
    assert rotation.key not in repr(rotation)
    assert (new.consumer, new.scopes, new.plan, new.ip_allowlist, new.environment) == (
        "acme",
        ("s",),
        "p",
        ("::1/128",),
        Environment.development,
    )
    assert new.organization == "org"
    assert new.rotated_from == old.info.id
    assert new.created_by == "rotator"
    assert rotation.old.replaced_by == new.id
    assert rotation.old.grace_until == clock.now + timedelta(seconds=600)
    assert rotation.old.state(clock.now) is KeyState.grace
    assert rotation.old.state(clock.now + timedelta(seconds=601)) is KeyState.replaced

    old_record = await repo.find_by_hash(SECRET.hash_credential(old.key))
    assert old_record is not None
    assert old_record.grace_until == (clock.now + timedelta(seconds=600)).timestamp()
    new_record = await repo.find_by_hash(SECRET.hash_credential(rotation.key))
    assert new_record is not None
    assert new_record.grace_until is None
    subjects = [s for _, s in await events(engine)]
    assert subjects[-2:] == [SECRET.hash_credential(old.key), SECRET.hash_credential(rotation.key)]

    with pytest.raises(KeyConflict, match="already rotated"):
        await repo.rotate(old.info.id, grace_seconds=0, created_by="t")
    again = await repo.rotate(new.id, grace_seconds=0, created_by="t")
    assert again.old.grace_until == clock.now
    assert again.old.state(clock.now) is KeyState.replaced
    with pytest.raises(KeyInvalid):
        await repo.rotate(again.new.id, grace_seconds=-1, created_by="t")


async def test_rotation_refuses_revoked_suspended_and_expired_keys(
    repo: KeyRepository, clock: Clock
) -> None:
    a = (await repo.create("acme", spec(), created_by="t", organization=None)).info
    await repo.suspend(a.id, "investigating")
    with pytest.raises(KeyConflict, match="suspended"):
        await repo.rotate(a.id, grace_seconds=0, created_by="t")
    await repo.revoke(a.id, "leaked")
    with pytest.raises(KeyConflict, match="revoked"):
        await repo.rotate(a.id, grace_seconds=0, created_by="t")

    b = (
        await repo.create(
            "acme", spec(expires_at=T0 + timedelta(hours=1)), created_by="t", organization=None
        )
    ).info
    clock.now = T0 + timedelta(hours=2)
    with pytest.raises(KeyInvalid) as caught:
        await repo.rotate(b.id, grace_seconds=0, created_by="t")
    assert caught.value.field == "expires_at"
    renewed = await repo.rotate(b.id, grace_seconds=0, created_by="t", expires_at=None)
    assert renewed.new.expires_at is None
    assert renewed.new.state(clock.now) is KeyState.active


async def test_status_transitions_and_their_events(
    repo: KeyRepository, engine: AsyncEngine
) -> None:
    created = await repo.create("acme", spec(), created_by="t", organization=None)
    key_id, key_hash = created.info.id, SECRET.hash_credential(created.key)
    suspended = await repo.suspend(key_id, "billing overdue")
    assert (suspended.status, suspended.status_reason) == (KeyStatus.suspended, "billing overdue")
    record = await repo.find_by_hash(key_hash)
    assert record is not None
    assert record.status is KeyStatus.suspended
    with pytest.raises(KeyConflict):
        await repo.suspend(key_id, "again")
    resumed = await repo.resume(key_id)
    assert (resumed.status, resumed.status_reason) == (KeyStatus.active, None)
    with pytest.raises(KeyConflict):
        await repo.resume(key_id)
    revoked = await repo.revoke(key_id, "leaked on GitHub")
    assert (revoked.status, revoked.status_reason) == (KeyStatus.revoked, "leaked on GitHub")
    record = await repo.find_by_hash(key_hash)
    assert record is not None
    assert (record.status, record.status_reason) == (KeyStatus.revoked, "leaked on GitHub")
    for change in (repo.resume(key_id), repo.suspend(key_id, "x"), repo.revoke(key_id, "x")):
        with pytest.raises(KeyConflict):
            await change
    assert await events(engine) == [(EventKind.KEY, key_hash)] * 4
    with pytest.raises(KeyNotFound):
        await repo.revoke("missing", "x")


async def test_list_filters_and_paginates_in_every_sort_order(
    repo: KeyRepository, clock: Clock
) -> None:
    ids = []
    for i in range(7):
        clock.now = T0 + timedelta(seconds=i // 2)  # equal created_at values: the id breaks ties
        info = (
            await repo.create(
                "acme" if i % 2 else "globex",
                spec(
                    name=f"key-{i % 3}",
                    environment="development" if i == 3 else "production",
                    expires_at=(T0 + timedelta(days=i)).isoformat() if i % 3 else None,
                ),
                created_by="t",
                organization="org-a" if i < 4 else "org-b",
            )
        ).info
        ids.append(info.id)
    await repo.touch_used({ids[0]: T0, ids[5]: T0 + timedelta(days=1)})
    await repo.suspend(ids[2], "x")
    await repo.revoke(ids[6], "x")
    everything = {i.id: i for i in (await repo.list_keys(limit=100)).items}
    assert set(everything) == set(ids)

    for field in ("created_at", "name", "consumer", "expires_at", "last_used_at"):
        for descending in (False, True):
            sort = ("-" if descending else "") + field
            seen: list[str] = []
            cursor = None
            while True:
                page = await repo.list_keys(limit=2, cursor=cursor, sort=sort)
                seen += [i.id for i in page.items]
                cursor = page.next_cursor
                if cursor is None:
                    break

            assert seen == expected_order(everything, field, descending), sort

    def found(**where: object) -> set[str]:
        return {i for i in everything if _matches(everything[i], where)}

    async def listed(where: KeyFilter) -> set[str]:
        return {i.id for i in (await repo.list_keys(where, limit=100)).items}

    assert await listed(KeyFilter(consumer="acme")) == found(consumer="acme")
    assert await listed(KeyFilter(organization="org-b")) == found(organization="org-b")
    assert await listed(KeyFilter(environment=Environment.development)) == {ids[3]}
    assert await listed(KeyFilter(name="key-1")) == found(name="key-1")
    assert await listed(KeyFilter(state=KeyState.suspended)) == {ids[2]}
    assert await listed(KeyFilter(state=KeyState.revoked)) == {ids[6]}
    clock.now = T0 + timedelta(days=2, seconds=1)  # keys 1 and 2 have expired by now
    assert await listed(KeyFilter(state=KeyState.expired)) == {ids[1]}  # 2 is suspended
    assert await listed(KeyFilter(state=KeyState.active)) == {ids[0], ids[3], ids[4], ids[5]}
    rotation = await repo.rotate(ids[4], grace_seconds=60, created_by="t")
    assert await listed(KeyFilter(state=KeyState.grace)) == {ids[4]}
    clock.now += timedelta(seconds=61)
    assert await listed(KeyFilter(state=KeyState.replaced)) == {ids[4]}
    assert rotation.new.id in await listed(KeyFilter(state=KeyState.active))

    with pytest.raises(InvalidCursor):
        await repo.list_keys(cursor="garbage!", sort="name")
    first = await repo.list_keys(limit=1, sort="name")
    assert first.next_cursor is not None
    with pytest.raises(InvalidCursor, match="another sort"):
        await repo.list_keys(cursor=first.next_cursor, sort="-name")
    with pytest.raises(KeyInvalid):
        await repo.list_keys(sort="key_hash")


def expected_order(everything: dict[str, KeyInfo], field: str, descending: bool) -> list[str]:
    """Values ascending (nulls last) or descending (nulls first); ties by ascending id."""
    present = sorted(k for k, i in everything.items() if getattr(i, field) is not None)
    missing = sorted(k for k, i in everything.items() if getattr(i, field) is None)
    # Python's sort is stable, also with reverse=True: equal values keep the id order.
    present.sort(key=lambda k: getattr(everything[k], field), reverse=descending)
    return missing + present if descending else present + missing


def _matches(info: object, where: dict[str, object]) -> bool:
    return all(getattr(info, k) == v for k, v in where.items())


async def test_import_is_all_or_nothing_and_hashes_supplied_keys(
    repo: KeyRepository, engine: AsyncEngine
) -> None:
    _, pc_key = generate_key(Environment.staging)
    legacy = "legacy_" + "Z" * 40
    document = (
        "consumer,name,scopes,ip_allowlist,key,metadata\n"
        'acme,generated,a b,10.0.0.0/8,,"{""n"": 1}"\n'
        f"acme,ported,,,{pc_key},\n"
        f"globex,legacy,x,,{legacy},\n"
    )
    rows = parse_import_csv(document)
    orgs = {"acme": "org-a", "globex": None}
    progress: list[int] = []

    dry = await repo.import_keys(rows, orgs, created_by="importer", dry_run=True)
    assert [d.row for d in dry] == [1, 2, 3]
    assert all(d.key is None for d in dry)
    assert (await repo.list_keys()).items == []

    imported = await repo.import_keys(
        rows, orgs, created_by="importer", on_progress=progress.append
    )
    assert progress == [3]
    generated, ported, foreign = imported
    assert generated.key is not None
    assert ported.key is None
    assert foreign.key is None
    assert generated.info.scopes == ("a", "b")
    assert generated.info.metadata == {"n": 1}
    parsed = parse_key(pc_key)
    assert parsed is not None
    assert ported.info.id == parsed.id
    assert ported.info.environment is Environment.staging
    assert foreign.info.id.startswith("imp_")
    assert foreign.info.prefix is None
    assert foreign.info.organization is None
    assert generated.info.organization == "org-a"
    for full in (generated.key, pc_key, legacy):
        record = await repo.find_by_hash(SECRET.hash_credential(full))
        assert record is not None
    assert len(await events(engine)) == 3

    # A second import containing an already stored key stores nothing at all.
    again = parse_import_csv(f"consumer,name,key\nacme,fresh,\nacme,dup,{legacy}\n")
    with pytest.raises(ImportRejected) as caught:
        await repo.import_keys(again, orgs, created_by="importer")
    assert [(e.row, e.column) for e in caught.value.errors] == [(2, "key")]
    assert legacy not in str(caught.value.errors)
    assert len((await repo.list_keys(limit=100)).items) == 3

    expired = parse_import_csv("consumer,name,expires_at\nacme,old,2001-01-01T00:00:00Z\n")
    with pytest.raises(ImportRejected) as caught:
        await repo.import_keys(expired, orgs, created_by="importer")
    assert caught.value.errors[0].pointer == "#/rows/1/expires_at"

    dump = await dump_store(engine)
    for secret in (generated.key, pc_key, legacy, legacy[7:]):
        assert secret not in dump


async def test_large_import_and_streamed_export_carry_no_secrets(
    repo: KeyRepository, engine: AsyncEngine
) -> None:
    lines = ["consumer,name,environment"] + [f"acme,bulk-{i},development" for i in range(2500)]
    imported = await repo.import_keys(
        parse_import_csv("\n".join(lines)), {"acme": None}, created_by="importer"
    )
    assert len(imported) == 2500
    streamed = [i async for i in repo.stream_keys(KeyFilter(consumer="acme"))]
    assert sorted(i.id for i in streamed) == sorted(i.info.id for i in imported)
    csv_text = "".join([c async for c in export_csv(repo.stream_keys(), T0)])
    jsonl_text = "".join([c async for c in export_jsonl(repo.stream_keys(), T0)])
    assert csv_text.count("\r\n") == 2501
    assert jsonl_text.count("\n") == 2500
    async with engine.connect() as conn:
        hashes = set((await conn.execute(select(ApiKeyRow.key_hash))).scalars())
    for item in imported[:50]:
        assert item.key is not None
        assert item.key not in csv_text
        assert item.key not in jsonl_text
    assert not any(h in csv_text or h in jsonl_text for h in hashes)
