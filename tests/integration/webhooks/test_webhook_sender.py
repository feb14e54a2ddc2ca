"""One attempt against a real receiver that verifies with the Standard Webhooks library."""

from __future__ import annotations

import time

from portcullis.webhooks.destinations import DestinationPolicy, parse_allowed_networks
from portcullis.webhooks.retry import AttemptResult, ErrorKind, Next, decide
from portcullis.webhooks.sender import Sender
from portcullis.webhooks.signing import SigningKeys, generate_secret, message_id
from support.webhook_receiver import Answer, Hold, webhook_receiver

LOOPBACK = DestinationPolicy(parse_allowed_networks('["127.0.0.0/8"]'))
BODY = b'{"type":"key.revoked","timestamp":"2026-12-07T05:00:00Z","data":{"key_id":"k1"}}'


async def _attempt(sender: Sender, url: str, keys: SigningKeys, msg: str) -> AttemptResult:
    headers = keys.headers(msg, int(time.time()), BODY)
    return await sender.send(url, headers, BODY)


async def test_a_signed_delivery_verifies_at_the_receiver_and_succeeds() -> None:
    secret = generate_secret()
    sender = Sender(LOOPBACK)
    try:
        async with webhook_receiver(secret) as receiver:
            receiver.answer(Answer(200, body=b"thanks"))
            msg = message_id()
            result = await _attempt(sender, receiver.url, SigningKeys.parse([secret]), msg)
    finally:
        await sender.close()
    assert result.status == 200
    assert result.succeeded
    assert result.excerpt == b"thanks"
    [delivery] = receiver.deliveries
    assert delivery.verified is True
    assert delivery.headers["webhook-id"] == msg
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.body == BODY


async def test_the_same_id_is_sent_on_every_retry_and_old_secrets_keep_verifying() -> None:
    old, new = generate_secret(), generate_secret()
    sender = Sender(LOOPBACK)
    msg = message_id()
    try:
        async with webhook_receiver(old) as receiver:
            receiver.answer(Answer(500))
            first = await _attempt(sender, receiver.url, SigningKeys.parse([old]), msg)
            # The secret rotates between attempts; a receiver still on the old one verifies.
            second = await _attempt(sender, receiver.url, SigningKeys.parse([new, old]), msg)
    finally:
        await sender.close()
    assert (first.status, second.status) == (500, 204)
    assert [d.headers["webhook-id"] for d in receiver.deliveries] == [msg, msg]
    assert [d.verified for d in receiver.deliveries] == [True, True]


async def test_redirects_are_not_followed_and_count_as_failures() -> None:
    sender = Sender(LOOPBACK)
    try:
        async with webhook_receiver() as receiver:
            receiver.answer(Answer(307, {"Location": receiver.url + "/elsewhere"}))
            result = await _attempt(
                sender, receiver.url, SigningKeys.parse([generate_secret()]), "m1"
            )
    finally:
        await sender.close()
    assert result.status == 307
    assert len(receiver.deliveries) == 1
    assert decide(1, result).next is Next.RETRY


async def test_retry_after_is_read_from_a_429() -> None:
    sender = Sender(LOOPBACK)
    try:
        async with webhook_receiver() as receiver:
            receiver.answer(Answer(429, {"Retry-After": "90"}))
            result = await _attempt(
                sender, receiver.url, SigningKeys.parse([generate_secret()]), "m1"
            )
    finally:
        await sender.close()
    assert (result.status, result.retry_after) == (429, 90)
    assert decide(1, result, lambda a, b: 1.0).delay == 90


async def test_only_the_first_4_kib_of_an_answer_are_kept() -> None:
    sender = Sender(LOOPBACK)
    try:
        async with webhook_receiver() as receiver:
            receiver.answer(Answer(200, body=b"x" * 1_000_000))
            result = await _attempt(
                sender, receiver.url, SigningKeys.parse([generate_secret()]), "m1"
            )
    finally:
        await sender.close()
    assert result.succeeded
    assert result.excerpt == b"x" * 4096


async def test_a_receiver_that_never_answers_times_out() -> None:
    sender = Sender(LOOPBACK, timeout=0.3)
    try:
        async with webhook_receiver() as receiver:
            receiver.answer(Hold())
            result = await _attempt(
                sender, receiver.url, SigningKeys.parse([generate_secret()]), "m1"
            )
    finally:
        await sender.close()
    assert (result.status, result.error) == (None, ErrorKind.TIMEOUT)
    assert result.latency >= 0.3


async def test_loopback_is_refused_by_address_and_by_name_without_an_allowlist() -> None:
    sender = Sender(DestinationPolicy())
    keys = SigningKeys.parse([generate_secret()])
    try:
        async with webhook_receiver() as receiver:
            by_address = await _attempt(sender, receiver.url, keys, "m1")
            by_name = await _attempt(sender, f"http://localhost:{receiver.port}/hook", keys, "m2")
            metadata = await _attempt(
                sender, "http://169.254.169.254/latest/meta-data/", keys, "m3"
            )
    finally:
        await sender.close()
    for result in (by_address, by_name, metadata):
        assert result.error is ErrorKind.DESTINATION_REFUSED, result
        assert "PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS" in result.detail
    assert receiver.deliveries == []


async def test_a_closed_port_is_a_connect_error() -> None:
    async with webhook_receiver() as receiver:
        url = receiver.url
    sender = Sender(LOOPBACK)
    try:
        result = await _attempt(sender, url, SigningKeys.parse([generate_secret()]), "m1")
    finally:
        await sender.close()
    assert result.error is ErrorKind.CONNECT
