"""Certificate private keys encrypted at rest in stored config versions.

A config version's document keeps each certificate's `key` sealed: `enc:v1:` and
the base64url of AES-256-GCM over the PEM, under a key derived (HKDF) from the
deployment secret. Sealing is deterministic (the nonce is an HMAC of the plaintext,
as in SIV constructions), so applying the same config twice stores one version and
sealing a sealed key changes nothing. Exports and admin API responses therefore
carry sealed keys, which the same deployment accepts back; only the TLS listener
unseals (`unseal_key`), when it builds its contexts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portcullis.deployment_secret import read_deployment_secret
from portcullis.model.certificates import SEALED_KEY_PREFIX
from portcullis.model.config import GatewayConfig

_CONTEXT = b"portcullis certificate key"


@cache
def _keys() -> tuple[bytes, bytes]:
    from portcullis.settings import Settings

    settings = Settings()
    secret = read_deployment_secret(settings.secret_key, settings.secret_key_file)
    return derive_keys(secret)


def derive_keys(secret: bytes) -> tuple[bytes, bytes]:
    """(encryption key, nonce key) for `secret`."""
    okm = HKDF(
        algorithm=hashes.SHA256(), length=64, salt=b"portcullis", info=b"config-secrets/v1"
    ).derive(secret)
    return okm[:32], okm[32:]


def seal_key(pem: str, keys: tuple[bytes, bytes] | None = None) -> str:
    if pem.startswith(SEALED_KEY_PREFIX):
        return pem
    enc, mac = keys or _keys()
    data = pem.encode("utf-8")
    nonce = hmac.new(mac, data, hashlib.sha256).digest()[:12]
    blob = nonce + AESGCM(enc).encrypt(nonce, data, _CONTEXT)
    return SEALED_KEY_PREFIX + base64.urlsafe_b64encode(blob).decode("ascii")


class UnsealError(ValueError):
    """A key sealed under another deployment secret (or altered)."""


def unseal_key(value: str, keys: tuple[bytes, bytes] | None = None) -> str:
    """The PEM of a sealed key (a key in clear is returned as it is)."""
    if not value.startswith(SEALED_KEY_PREFIX):
        return value
    enc, _ = keys or _keys()
    try:
        blob = base64.urlsafe_b64decode(value[len(SEALED_KEY_PREFIX) :])
        return AESGCM(enc).decrypt(blob[:12], blob[12:], _CONTEXT).decode("utf-8")
    except (InvalidTag, ValueError) as exc:
        raise UnsealError(
            "a certificate key sealed under another deployment secret (or altered)"
        ) from exc


def seal_document(document: dict[str, Any]) -> dict[str, Any] | None:
    """A copy of a config document with its certificates' keys sealed, or None when
    there is nothing to seal (the document is then stored as it is)."""
    certificates = document.get("certificates")
    if not isinstance(certificates, list) or not any(
        isinstance(c, dict)
        and isinstance(c.get("key"), str)
        and not c["key"].startswith(SEALED_KEY_PREFIX)
        for c in certificates
    ):
        return None
    return {
        **document,
        "certificates": [
            {**c, "key": seal_key(c["key"])} if isinstance(c.get("key"), str) else c
            for c in certificates
        ],
    }


def sealed_config(config: GatewayConfig) -> GatewayConfig:
    """`config` with its certificates' keys sealed (itself when none is in clear): what
    the store will hold, so comparing it with a stored config shows no key change."""
    if not any(not c.key.startswith(SEALED_KEY_PREFIX) for c in config.certificates):
        return config
    return config.model_copy(
        update={
            "certificates": [
                c.model_copy(update={"key": seal_key(c.key)}) for c in config.certificates
            ]
        }
    )
