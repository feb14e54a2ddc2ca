"""Checks of a certificate's PEM material: it parses, the key is the leaf's, the chain is in order.

Imported only when a config holds certificates (`Certificate`'s validator imports it
lazily), so validating a config without certificates loads no crypto library (the
`model-is-pure` contract lists this module as its one `cryptography` edge beside
`plugins.jwt_keys`). Expiry is not checked here: a stored config must stay loadable
after its certificate expires (the expiry metric and `certificate.expiring` events
report it instead, docs/tls.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


class PemError(ValueError):
    """Bad PEM material; `field` is the certificate's field it is about (`cert`, `key`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def load_chain(cert: str) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(cert.encode("ascii", "replace"))
    except ValueError as exc:
        raise PemError("cert", f"not a PEM certificate chain ({exc})") from None
    for i in range(len(chain) - 1):
        if chain[i].issuer != chain[i + 1].subject:
            raise PemError(
                "cert",
                f"certificate {i + 2} of the chain did not issue certificate {i + 1}: "
                "list the chain leaf first, each certificate followed by its issuer",
            )
    return chain


def load_key(key: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(key.encode("ascii", "replace"), password=None)
    except TypeError:
        raise PemError("key", "an encrypted private key: give it unencrypted") from None
    except ValueError as exc:
        raise PemError("key", f"not a PEM private key ({exc})") from None


def _public_bytes(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_material(cert: str, key: str) -> None:
    """Raise `PemError` unless `cert` is a chain in order and `key` is its leaf's key."""
    chain = load_chain(cert)
    private = load_key(key)
    if not isinstance(
        private,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        raise PemError("key", "a TLS server key must be RSA, ECDSA or EdDSA")
    if _public_bytes(private.public_key()) != _public_bytes(chain[0].public_key()):
        raise PemError("key", "does not match the certificate (the first of the chain)")


def not_after(cert: str) -> datetime:
    """When the chain's leaf expires (UTC)."""
    return load_chain(cert)[0].not_valid_after_utc.astimezone(UTC)
