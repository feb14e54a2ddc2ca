"""Certificate keys sealed at rest: deterministic, idempotent, bound to the secret."""

from __future__ import annotations

import pytest

from portcullis.store.sealing import (
    UnsealError,
    derive_keys,
    seal_document,
    seal_key,
    unseal_key,
)

KEYS = derive_keys(b"k" * 32)
PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n"


def test_sealing_is_deterministic_idempotent_and_reversible() -> None:
    sealed = seal_key(PEM, KEYS)
    assert sealed.startswith("enc:v1:")
    assert "MIGHAgEA" not in sealed
    assert seal_key(PEM, KEYS) == sealed  # the same config stores one version
    assert seal_key(sealed, KEYS) == sealed
    assert unseal_key(sealed, KEYS) == PEM
    assert unseal_key(PEM, KEYS) == PEM  # a key in clear (a test config) passes


def test_another_secret_cannot_unseal() -> None:
    with pytest.raises(UnsealError):
        unseal_key(seal_key(PEM, KEYS), derive_keys(b"o" * 32))


def test_only_documents_with_keys_in_clear_are_rewritten() -> None:
    assert seal_document({"routes": []}) is None
    sealed = {"certificates": [{"name": "a", "key": seal_key(PEM, KEYS)}]}
    assert seal_document(sealed) is None
