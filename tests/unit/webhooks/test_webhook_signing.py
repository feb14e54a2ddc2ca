"""Signatures checked by an independent implementation: the Standard Webhooks reference
library for `v1`, and `cryptography`'s ed25519 verification for `v1a`."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from portcullis.webhooks.signing import (
    SigningKeys,
    generate_secret,
    generate_signing_key,
    message_id,
    parse_secret,
    parse_signing_key,
)

BODY = b'{"type":"key.revoked","timestamp":"2026-12-07T05:00:00Z","data":{"key_id":"k1"}}'


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


def test_v1_signature_verifies_with_the_reference_library() -> None:
    secret = generate_secret()
    stamp = _now()
    headers = SigningKeys.parse([secret]).headers("msg_1", stamp, BODY)
    assert Webhook(secret).verify(BODY, dict(headers)) == {
        "type": "key.revoked",
        "timestamp": "2026-12-07T05:00:00Z",
        "data": {"key_id": "k1"},
    }


def test_a_changed_body_id_or_timestamp_does_not_verify() -> None:
    secret = generate_secret()
    stamp = _now()
    headers = dict(SigningKeys.parse([secret]).headers("msg_1", stamp, BODY))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"k1", b"k2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**headers, "webhook-timestamp": str(stamp - 1)})


def test_during_a_rotation_either_secret_verifies_and_a_third_does_not() -> None:
    new, old = generate_secret(), generate_secret()
    headers = dict(SigningKeys.parse([new, old]).headers("msg_1", _now(), BODY))
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, headers)
    Webhook(old).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


def test_v1a_signature_verifies_with_the_public_key() -> None:
    signing, public = generate_signing_key()
    stamp = _now()
    header = SigningKeys.parse([signing]).signature("msg_1", stamp, BODY)
    version, signature = header.split(",", 1)
    assert version == "v1a"
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    key.verify(base64.b64decode(signature), f"msg_1.{stamp}.".encode() + BODY)
    with pytest.raises(InvalidSignature):
        key.verify(base64.b64decode(signature), f"msg_1.{stamp + 1}.".encode() + BODY)


def test_symmetric_and_asymmetric_keys_sign_side_by_side() -> None:
    secret = generate_secret()
    signing, _ = generate_signing_key()
    header = SigningKeys.parse([secret, signing]).signature("msg_1", _now(), BODY)
    assert [part.split(",", 1)[0] for part in header.split(" ")] == ["v1", "v1a"]


def test_a_message_id_with_a_dot_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no '\.'"):
        SigningKeys.parse([generate_secret()]).signature("msg.1", _now(), BODY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sec_AAAA", "must start with 'whsec_'"),
        ("whsec_not base64!", "not valid base64"),
        ("whsec_" + base64.b64encode(b"x" * 23).decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24 to 64 bytes"),
    ],
)
def test_bad_secrets_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_secret(text)


def test_bad_signing_keys_and_empty_key_lists_are_refused() -> None:
    with pytest.raises(ValueError, match="32-byte"):
        parse_signing_key("whsk_" + base64.b64encode(b"x" * 31).decode())
    with pytest.raises(ValueError, match="at least one"):
        SigningKeys.parse([])


def test_generated_secrets_hold_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert len(parse_secret(first)) == 32
    assert first != second


def test_message_ids_sort_by_creation_time_and_differ() -> None:
    early = message_id(now=lambda: 1_000.0, token_bytes=lambda n: b"\xff" * n)
    late = message_id(now=lambda: 1_000.001, token_bytes=lambda n: b"\x00" * n)
    assert early.startswith("msg_")
    assert len(early) == 30
    assert early < late
    assert message_id() != message_id()
    assert "." not in message_id()
