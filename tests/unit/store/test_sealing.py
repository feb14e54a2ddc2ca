"""Certificate keys sealed at rest: deterministic, idempotent, bound to the secret."""

from __future__ import annotations

from collections.abc import Iterator

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


@pytest.fixture
def deployment_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from portcullis.store import sealing

    monkeypatch.setenv("PORTCULLIS_SECRET_KEY", "unit-test-deployment-secret-0123456789")
    sealing._keys.cache_clear()
    yield
    sealing._keys.cache_clear()


@pytest.mark.usefixtures("deployment_secret")
def test_a_config_in_clear_compares_equal_to_its_stored_form() -> None:
    from portcullis.model.config import GatewayConfig
    from portcullis.model.diff import diff_configs
    from portcullis.store import sealing
    from support.tls import CertificateAuthority

    issued = CertificateAuthority().issue("a.example.com")
    config = GatewayConfig.model_validate(
        {"certificates": [{"name": "a", "cert": issued.cert, "key": issued.key}]}
    )
    stored = sealing.sealed_config(config)
    assert stored.certificates[0].key.startswith("enc:v1:")
    assert sealing.unseal_key(stored.certificates[0].key) == config.certificates[0].key
    assert diff_configs(stored, sealing.sealed_config(config)).is_empty
