"""basic-auth: credentials parsing, every refusal and its challenge, tenant isolation,
identity headers, anonymous access, the verified-credential cache and outages."""

from __future__ import annotations

import asyncio
from base64 import b64encode

import pytest

from portcullis.identity.credential_store import CredentialKind
from portcullis.plugins.basic_auth import BasicAuth
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import PLUGINS, build_plugin
from support.auth_credentials import Harness, basic_record, header, problem, upstream


def basic(user: str, password: str) -> tuple[bytes, bytes]:
    return (b"authorization", b"Basic " + b64encode(f"{user}:{password}".encode()))


def harness(**config: object) -> Harness:
    h = Harness("basic-auth", dict(config))
    h.store.add(basic_record("alice", "s3cret-pass", "alice"))
    h.store.add(basic_record("bob", "bob-pass", "bob"))
    h.store.add(basic_record("mallory", "m-pass", "mallory"))  # another organization's
    return h


def test_registered_and_needs_the_credential_cache() -> None:
    assert PLUGINS["basic-auth"] is BasicAuth
    with pytest.raises(ValueError, match="credential cache"):
        build_plugin("basic-auth", {}, PluginEnv())


async def test_valid_credentials_identify_the_consumer_and_hide_the_header() -> None:
    h = harness()
    reply, ctx = await h.call([basic("alice", "s3cret-pass"), (b"x-consumer-id", b"spoof")])
    assert reply is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "alice"
    sent = upstream(ctx)
    assert sent[b"x-consumer-id"] == b"alice"
    assert sent[b"x-credential-id"] == b"cc_alice_basic"
    assert b"authorization" not in sent
    # Kept when hide_credentials is off.
    h2 = harness(hide_credentials=False)
    _, ctx2 = await h2.call([basic("alice", "s3cret-pass")])
    assert b"authorization" in upstream(ctx2)


async def test_missing_credentials_name_the_scheme_and_header() -> None:
    reply, _ = await harness(realm="shop").call()
    body = problem(reply)
    assert reply is not None
    assert header(reply, b"www-authenticate") == ['Basic realm="shop", charset="UTF-8"']
    assert "`Authorization: Basic <credentials>`" in body["detail"]
    assert body["expected_credentials"] == [
        {"in": "header", "name": "Authorization", "scheme": "Basic"}
    ]
    # A Bearer token is not ours: the same "missing" answer.
    reply, _ = await harness().call([(b"authorization", b"Bearer abc")])
    assert "required" in problem(reply)["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        [basic("alice", "wrong")],
        [basic("nobody", "x")],
        [basic("mallory", "m-pass")],  # a consumer of another organization
        [(b"authorization", b"Basic !!!notbase64")],
        [(b"authorization", b"Basic " + b64encode(b"no-colon"))],
    ],
)
async def test_wrong_unknown_foreign_and_malformed_credentials_get_the_same_401(
    headers: list[tuple[bytes, bytes]],
) -> None:
    reply, ctx = await harness().call(headers)
    body = problem(reply)
    assert body["detail"].startswith("Invalid username or password")
    assert reply is not None
    assert header(reply, b"www-authenticate")
    assert ctx.consumer is None


async def test_a_username_of_two_organizations_resolves_to_the_routes_own() -> None:
    h = harness()
    # Registered first: another organization's consumer's "shared".
    h.store.add(basic_record("shared", "theirs-pass", "mallory"))
    h.store.add(basic_record("shared", "ours-pass", "guest"))
    reply, ctx = await h.call([basic("shared", "ours-pass")])
    assert reply is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "guest"
    assert "Invalid" in problem((await h.call([basic("shared", "theirs-pass")]))[0])["detail"]


async def test_suspended_consumer_is_told_only_with_the_right_password() -> None:
    h = harness()
    assert "suspended" in problem((await h.call([basic("bob", "bob-pass")]))[0])["detail"]
    assert "Invalid" in problem((await h.call([basic("bob", "nope")]))[0])["detail"]


async def test_anonymous_when_no_credentials_but_never_for_wrong_ones() -> None:
    h = harness(anonymous="guest")
    reply, ctx = await h.call()
    assert reply is None
    assert ctx.consumer is not None
    assert ctx.consumer.username == "guest"
    assert upstream(ctx)[b"x-anonymous-consumer"] == b"true"
    problem((await h.call([basic("alice", "wrong")]))[0])


async def test_verified_credentials_are_cached_until_their_credential_event() -> None:
    h = harness()
    for _ in range(3):
        assert (await h.call([basic("alice", "s3cret-pass")]))[0] is None
    assert h.cache.verifies == 1
    assert h.store.finds == 1
    assert h.cache.verified_size == 1
    # A rotation's event drops the record and its verified passwords.
    h.cache.invalidate("basic:alice")
    assert h.cache.verified_size == 0
    h.store.add(basic_record("alice", "new-pass", "alice"))
    problem((await h.call([basic("alice", "s3cret-pass")]))[0])
    assert (await h.call([basic("alice", "new-pass")]))[0] is None


async def test_concurrent_cold_requests_share_one_verify() -> None:
    h = harness()
    replies = await asyncio.gather(*(h.call([basic("alice", "s3cret-pass")]) for _ in range(5)))
    assert all(r is None for r, _ in replies)
    assert h.cache.verifies == 1


async def test_store_outage_is_503_not_401() -> None:
    h = harness()
    h.store.fail = True
    reply, _ = await h.call([basic("alice", "s3cret-pass")])
    assert problem(reply, 503)["status"] == 503
    h.store.fail = False
    assert (await h.call([basic("alice", "s3cret-pass")]))[0] is None


async def test_a_full_verify_queue_answers_busy() -> None:
    h = harness()
    h.cache._verify_queue = 0
    reply, _ = await h.call([basic("alice", "s3cret-pass")])
    assert problem(reply, 503)["status"] == 503
    assert h.cache.resolve  # the record itself was found
    assert (CredentialKind.BASIC, "alice") in h.store.records
