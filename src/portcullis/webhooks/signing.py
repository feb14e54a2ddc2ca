"""Standard Webhooks signatures: `v1` (HMAC-SHA256 with a `whsec_` secret) and `v1a`
(ed25519 with a `whsk_` signing key, verified with its `whpk_` public key).

The signed content is `{webhook-id}.{webhook-timestamp}.{body}` over the exact body bytes
sent. An endpoint may hold several keys at once (the new secret and, for a grace period
after a rotation, the old one); every key signs and the signatures travel space-separated
in one `webhook-signature` header, so a receiver holding either secret verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from portcullis.events.ids import crockford32 as crockford32  # re-exported
from portcullis.events.ids import message_id as message_id  # re-exported

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - a prefix, not a secret
SIGNING_KEY_PREFIX: Final = "whsk_"
PUBLIC_KEY_PREFIX: Final = "whpk_"

# The spec's bounds for a symmetric secret: at least 24 bytes, at most 64.
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64
SECRET_BYTES: Final = 32

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"


def generate_secret(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A new symmetric secret in its shown form, `whsec_<base64>`."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(SECRET_BYTES)).decode("ascii")


def generate_signing_key() -> tuple[str, str]:
    """A new ed25519 pair in its shown forms: (`whsk_<base64 seed>`, `whpk_<base64 key>`)."""
    private = Ed25519PrivateKey.generate()
    return signing_key_text(private), public_key_text(private)


def signing_key_text(private: Ed25519PrivateKey) -> str:
    seed = private.private_bytes_raw()
    return SIGNING_KEY_PREFIX + base64.b64encode(seed).decode("ascii")


def public_key_text(private: Ed25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def _decode(text: str, prefix: str, what: str) -> bytes:
    if not text.startswith(prefix):
        raise ValueError(f"{what} must start with {prefix!r}")
    try:
        return base64.b64decode(text[len(prefix) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64 after {prefix!r}") from None


def parse_secret(text: str) -> bytes:
    """The key bytes of a `whsec_` secret; `ValueError` saying what is wrong otherwise."""
    raw = _decode(text, SECRET_PREFIX, "a webhook secret")
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes "
            f"(this one holds {len(raw)})"
        )
    return raw


def parse_signing_key(text: str) -> Ed25519PrivateKey:
    """The ed25519 key of a `whsk_` signing key; `ValueError` otherwise."""
    raw = _decode(text, SIGNING_KEY_PREFIX, "a webhook signing key")
    if len(raw) != 32:
        raise ValueError("a webhook signing key must hold a 32-byte ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(raw)


@dataclass(frozen=True, slots=True)
class SigningKeys:
    """The keys one endpoint signs with, newest first. Built from their shown forms;
    each is either a `whsec_` secret (v1) or a `whsk_` signing key (v1a)."""

    hmac_keys: tuple[bytes, ...]
    ed25519_keys: tuple[Ed25519PrivateKey, ...]

    @classmethod
    def parse(cls, texts: Iterable[str]) -> SigningKeys:
        hmac_keys: list[bytes] = []
        ed25519_keys: list[Ed25519PrivateKey] = []
        for text in texts:
            if text.startswith(SIGNING_KEY_PREFIX):
                ed25519_keys.append(parse_signing_key(text))
            else:
                hmac_keys.append(parse_secret(text))
        if not hmac_keys and not ed25519_keys:
            raise ValueError("an endpoint needs at least one signing secret")
        return cls(tuple(hmac_keys), tuple(ed25519_keys))

    def signature(self, message_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` value: one `v1,`/`v1a,` signature per key."""
        if "." in message_id or not message_id:
            # A `.` would let one (id, timestamp) pair be re-split into another.
            raise ValueError("a webhook id must be non-empty and contain no '.'")
        content = f"{message_id}.{timestamp}.".encode() + body
        parts = [
            "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
            for key in self.hmac_keys
        ]
        parts.extend("v1a," + base64.b64encode(k.sign(content)).decode() for k in self.ed25519_keys)
        return " ".join(parts)

    def headers(self, message_id: str, timestamp: int, body: bytes) -> Mapping[str, str]:
        """The three Standard Webhooks headers for one attempt."""
        return {
            ID_HEADER: message_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: self.signature(message_id, timestamp, body),
        }
