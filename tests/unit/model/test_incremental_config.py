"""Incremental results equal full results: the checksum text of an edited document
(`DocumentText.then`) and the cross-reference check of an edited config
(`model.delta.references_hold` inside `revalidate`), over seeded random edits."""

from __future__ import annotations

import random
from typing import Any

import pytest

from portcullis.identity.consumers import ConsumerIndex
from portcullis.model import delta
from portcullis.model.canonical_text import DocumentText, canonical_text
from portcullis.model.config import GatewayConfig
from portcullis.model.delta import revalidate, same_ends
from portcullis.model.loader import ConfigError, _construct_plain, _YamlLoader, load_config_data

ORGS = (None, "acme", "globex")
PLANS = ("free", "acme-gold", "globex-gold", "nope")


def base_document() -> dict[str, Any]:
    """Two tenants and the operator: plans, an API with versions, an override and a boost
    naming consumers, a plugin naming a consumer, and consumers that use all of them."""
    limit = {"limit": 10, "period": "1m", "name": "calls"}
    data: dict[str, Any] = {
        "services": [
            {"name": "acme-svc", "url": "http://127.0.0.1:9", "organization": "acme"},
            {"name": "ops-svc", "url": "http://127.0.0.1:9", "tags": ["a"]},
        ],
        "routes": [
            {"name": "acme-r", "service": "acme-svc", "organization": "acme", "paths": ["/a"]},
            {"name": "ops-r", "service": "ops-svc", "paths": ["/o"]},
            {"name": "v1-r", "service": "ops-svc", "paths": ["/v1"]},
        ],
        "plans": [
            {"name": "acme-gold", "organization": "acme", "limits": [limit]},
            {"name": "globex-gold", "organization": "globex", "limits": [limit]},
            {"name": "free", "limits": [{**limit, "name": "other"}]},
        ],
        "apis": [{"name": "orders", "versions": [{"name": "v1", "routes": ["v1-r"]}]}],
        "consumers": [
            {"username": f"u{i}", "organization": ORGS[i % 3], "metadata": {"n": i}}
            for i in range(30)
        ],
        "overrides": [
            {
                "name": "o1",
                "organization": "acme",
                "consumer": "u1",
                "limits": {"calls": 5},
                "expires_at": "2099-01-01T00:00:00Z",
                "reason": "r",
            }
        ],
        "boosts": [
            {
                "name": "b1",
                "multiplier": 2,
                "starts_at": "2026-01-01T00:00:00Z",
                "ends_at": "2026-01-02T00:00:00Z",
                "target": {"consumer": "u0"},
            }
        ],
        "plugins": [{"name": "key-auth", "route": "ops-r", "config": {"anonymous": "u3"}}],
    }
    data["consumers"][1]["plan"] = "acme-gold"
    return load_config_data(data).canonical()


def random_consumer(rng: random.Random, username: str) -> dict[str, Any]:
    c: dict[str, Any] = {"username": username, "organization": rng.choice(ORGS)}
    if rng.random() < 0.4:
        c["plan"] = rng.choice(PLANS)
    if rng.random() < 0.2:
        c["api_versions"] = {rng.choice(["orders", "missing"]): rng.choice(["v1", "v9"])}
    if rng.random() < 0.5:
        c["metadata"] = {"n": rng.choice([1, True, 1.0, "x"])}
    if rng.random() < 0.3:
        c["tags"] = ["t"]
    return c


def random_edit(rng: random.Random, document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` with one admin-like edit (the changed list copied, the rest shared)."""
    out = dict(document)
    consumers = list(document["consumers"])
    i = rng.randrange(len(consumers))
    old = consumers[i]
    what = rng.randrange(9)
    if what == 0:  # create, maybe with a taken name
        name = rng.choice([f"new{rng.randrange(5)}", old["username"]])
        consumers.insert(rng.randrange(len(consumers) + 1), random_consumer(rng, name))
    elif what == 1:  # delete (maybe one the override, boost or plugin names)
        del consumers[i]
    elif what == 2:  # rename
        consumers[i] = {**old, "username": rng.choice(["u1", "u3", f"renamed{i}"])}
    elif what == 3:  # organization moved
        consumers[i] = {**old, "organization": rng.choice(ORGS)}
    elif what == 4:  # plan changed (u1 is named by an override)
        consumers[i] = {**old, "plan": rng.choice(PLANS)}
    elif what == 5:  # pinned API version
        consumers[i] = {**old, "api_versions": {"orders": rng.choice(["v1", "v9"])}}
    elif what == 6:  # free fields
        consumers[i] = {**old, "metadata": {"n": rng.choice([1, True, 1.0])}, "tags": ["x"]}
    elif what == 7:  # a route: tags only, or its service
        routes = list(document["routes"])
        j = rng.randrange(len(routes))
        routes[j] = {**routes[j], rng.choice(["tags", "service"]): rng.choice([["t"], "nope"])}
        if isinstance(routes[j]["tags"], str):
            routes[j]["tags"] = []
        out["routes"] = routes
        return out
    else:  # two consumers replaced at once
        consumers[i : i + 2] = [random_consumer(rng, c["username"]) for c in consumers[i : i + 2]]
    out["consumers"] = consumers
    return out


def full(document: dict[str, Any]) -> GatewayConfig | None:
    try:
        return load_config_data(document)
    except ConfigError:
        return None


@pytest.mark.parametrize("seed", range(4))
def test_incremental_revalidation_and_text_equal_the_full_ones(seed: int) -> None:
    rng = random.Random(seed)
    document = base_document()
    config = load_config_data(document)
    text = DocumentText.of(document)
    outcomes = set()
    for _ in range(60):
        edited = random_edit(rng, document)
        expected = full(edited)
        done = revalidate(config, document, edited)
        if expected is None:
            assert done is None, edited
            outcomes.add("invalid")
            continue
        assert done is not None
        config, document = done
        assert config == expected
        assert document == expected.canonical()
        text = text.then(document)
        assert text.text == canonical_text(document)
        outcomes.add("valid")
    assert outcomes == {"valid", "invalid"}


def test_text_reuse_is_by_identity_not_equality() -> None:
    # 1 == True == 1.0 in Python, but their canonical texts differ.
    document = {"format_version": "1", "consumers": [{"username": "a", "metadata": {"n": 1}}]}
    text = DocumentText.of(document)
    for value in (True, 1.0, "1"):
        edited = {**document, "consumers": [{"username": "a", "metadata": {"n": value}}]}
        assert text.then(edited).text == canonical_text(edited)
    assert text.then(document) is text
    other = {"format_version": "1", "consumers": [], "routes": [{"name": "r"}]}
    assert text.then(other).text == canonical_text(other)
    scalar = {"format_version": "2", "consumers": document["consumers"]}
    assert text.then(scalar).text == canonical_text(scalar)


@pytest.mark.parametrize("chunk", [2, 512])
def test_same_ends_match_the_plain_loops(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delta, "_CHUNK", chunk)
    rng = random.Random(7)
    pool = [{"n": 1}, {"n": True}, {"n": 2}, {"n": 2}]
    for _ in range(300):
        old = [rng.choice(pool) for _ in range(rng.randrange(8))]
        new = [rng.choice([*pool, {"n": 1}]) for _ in range(rng.randrange(8))]
        if rng.random() < 0.5:
            new = old[: rng.randrange(len(old) + 1)] + new + old[rng.randrange(len(old) + 1) :]
        for equal in (False, True):

            def same(a: Any, b: Any, equal: bool = equal) -> bool:
                return a is b or (equal and a == b)

            limit = min(len(old), len(new))
            start = 0
            while start < limit and same(old[start], new[start]):
                start += 1
            tail = 0
            while tail < limit - start and same(old[-1 - tail], new[-1 - tail]):
                tail += 1
            assert same_ends(old, new, equal=equal) == (start, tail), (old, new, equal)


@pytest.mark.parametrize("seed", range(2))
def test_a_consumer_index_built_from_the_previous_one_equals_a_fresh_one(seed: int) -> None:
    rng = random.Random(seed)
    document = base_document()
    config = load_config_data(document)
    index = ConsumerIndex.of(config.consumers)
    for _ in range(30):
        edited = random_edit(rng, document)
        done = revalidate(config, document, edited)
        if done is None:
            continue
        config, document = done
        index = ConsumerIndex.of(config.consumers, index)
        fresh = ConsumerIndex(config.consumers)
        assert (index.by_username, index.by_custom_id) == (fresh.by_username, fresh.by_custom_id)
        for org in ORGS:
            for shared in (False, True):
                view, expected = index.view(org, shared), fresh.view(org, shared)
                assert (view.by_username, view.by_custom_id) == (
                    expected.by_username,
                    expected.by_custom_id,
                )


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: [x, 2.5, true, null, 0x1f, '3']\nc: {d: 2026-01-01T00:00:00Z}\n",
        "base: &b {k: v, n: [1, 2]}\none: *b\ntwo: *b\nlist: &l [1]\nagain: *l\n",
        "a: 1\na: 2\nb: {c: 1, c: 3}\n",  # duplicates: the last value, as PyYAML keeps
        "base: &b {k: v}\nmerged:\n  <<: *b\n  x: 1\n",  # merge keys: PyYAML's constructor
        "? [a, b]\n: 1\n",  # a collection as a key
        "a: !!binary aGk=\n",  # another tag
        "",
    ],
)
def test_the_plain_yaml_constructor_builds_what_pyyaml_builds(text: str) -> None:
    def compose() -> Any:
        loader = _YamlLoader(text)
        return loader, loader.get_single_node()

    loader, node = compose()
    if node is None:
        return
    plain = _construct_plain(loader, node)
    if "<<" in text or "?" in text or "!!" in text:
        assert plain is None
        return
    fresh, fresh_node = compose()
    expected = fresh.construct_document(fresh_node)
    assert plain is not None
    data, duplicates = plain
    assert data == expected
    assert duplicates == ("a: 1\na: 2" in text)
    if "again" in text:
        # An alias is the very object of its anchor, as PyYAML makes it.
        assert data["one"] is data["two"]
        assert data["list"] is data["again"]
