"""The server secret, and the keys derived from it.

One secret per deployment (`PORTCULLIS_SECRET_KEY`, or a file created on first
start next to the embedded database) derives, with HKDF, independent keys for
each purpose: the pepper mixed into API-key hashes, and the key that encrypts
token-signing private keys at rest. Every node of a cluster must share it; a
store copied without it holds no usable key material.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portcullis.deployment_secret import read_deployment_secret
from portcullis.errors import UserError

_MIN_SECRET_BYTES = 32


def _derive(secret: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"portcullis", info=purpose.encode()
    ).derive(secret)


@dataclass(frozen=True, slots=True)
class ServerSecret:
    """Purpose-bound keys derived from the deployment's secret."""

    key_pepper: bytes
    at_rest_key: bytes
    # Keyed once: copying a keyed HMAC is ~25% cheaper than keying a new one per request.
    _keyed: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyed", hmac.new(self.key_pepper, digestmod=sha256))

    @classmethod
    def from_secret(cls, secret: bytes) -> ServerSecret:
        if len(secret) < _MIN_SECRET_BYTES:
            raise UserError(
                f"secret_key: must be at least {_MIN_SECRET_BYTES} bytes (got {len(secret)})"
            )
        return cls(
            key_pepper=_derive(secret, "api-key-pepper/v1"),
            at_rest_key=_derive(secret, "at-rest-encryption/v1"),
        )

    def hash_credential(self, credential: str) -> str:
        """The stored form of a high-entropy credential: HMAC-SHA256 with the pepper."""
        mac = self._keyed.copy()
        mac.update(credential.encode("utf-8"))
        return mac.hexdigest()

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        """AES-256-GCM; `context` (e.g. a key id) is authenticated, so rows can't be swapped."""
        nonce = os.urandom(12)
        return nonce + AESGCM(self.at_rest_key).encrypt(nonce, plaintext, context)

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes:
        return AESGCM(self.at_rest_key).decrypt(blob[:12], blob[12:], context)


def load_server_secret(value: str | None, file: Path) -> ServerSecret:
    """The secret from `value` (base64 or text), else from `file`, created on first use.

    Creation uses O_EXCL, so concurrent first starts (several workers) agree on one
    secret: the losers read the winner's file.
    """
    return ServerSecret.from_secret(read_deployment_secret(value, file))
