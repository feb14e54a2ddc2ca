"""Loading and checking jwt-auth static keys (PEM, JWK, HMAC secrets), with PyJWT and cryptography.

The jwt-auth schema imports this only when a config holds a static key to check, so
validating a config without one never imports cryptography.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK
from jwt.algorithms import Algorithm, get_default_algorithms
from jwt.exceptions import PyJWTError
from pydantic import SecretStr


class StaticKeyMaterial(Protocol):
    """What a static key config holds (`model.plugins.jwt_auth.StaticKeyConfig`)."""

    @property
    def algorithm(self) -> str: ...
    @property
    def secret(self) -> SecretStr | None: ...
    @property
    def secret_env(self) -> str | None: ...
    @property
    def secret_base64(self) -> bool: ...
    @property
    def public_key(self) -> str | None: ...
    @property
    def jwk(self) -> dict[str, Any] | None: ...


_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 §3.2
_MIN_RSA_BITS = 2048


_EC_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


ALGORITHMS: dict[str, Algorithm] = {
    name: alg for name, alg in get_default_algorithms().items() if name != "none"
}


def usable(algorithm: str, key: object) -> bool:
    """True if `key` is a public key of the family, size and curve `algorithm` needs."""
    if algorithm[0] == "H":
        return isinstance(key, bytes)
    if algorithm[0] in "RP":
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= _MIN_RSA_BITS
    if algorithm[0] == "E" and algorithm != "EdDSA":
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
            key.curve, _EC_CURVES[algorithm]
        )
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def load_static_key(cfg: StaticKeyMaterial) -> object:
    """The verification key of a static key config (raises ValueError if unusable)."""
    algorithm = cfg.algorithm
    if cfg.secret is not None or cfg.secret_env is not None:
        if cfg.secret is not None:
            raw = cfg.secret.get_secret_value()
        else:
            assert cfg.secret_env is not None
            env_value = os.environ.get(cfg.secret_env)
            if not env_value:
                raise ValueError(f"environment variable {cfg.secret_env} is not set")
            raw = env_value
        if cfg.secret_base64:
            try:
                secret = base64.urlsafe_b64decode(
                    raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4)
                )
            except (binascii.Error, ValueError) as exc:
                raise ValueError("secret is not valid base64") from exc
        else:
            secret = raw.encode()
        if len(secret) < _HMAC_MIN_BYTES[algorithm]:
            raise ValueError(
                f"{algorithm} secrets must be at least {_HMAC_MIN_BYTES[algorithm]} bytes"
            )
        try:
            key: object = ALGORITHMS[algorithm].prepare_key(secret)
        except PyJWTError as exc:
            raise ValueError(str(exc)) from exc
        return key
    try:
        if cfg.jwk is not None:
            if "d" in cfg.jwk:
                raise ValueError("jwk must be a public key (it has a private member 'd')")
            jwk_alg = cfg.jwk.get("alg")
            if jwk_alg is not None and jwk_alg != algorithm:
                raise ValueError(f"jwk alg {jwk_alg!r} differs from algorithm {algorithm}")
            key = PyJWK(cfg.jwk, algorithm).key
        else:
            assert cfg.public_key is not None
            key = ALGORITHMS[algorithm].prepare_key(cfg.public_key.encode())
    except (PyJWTError, TypeError) as exc:
        raise ValueError(f"unusable {algorithm} key: {exc}") from exc
    if not usable(algorithm, key):
        raise ValueError(
            f"not a {algorithm} public key"
            + (f" (RSA keys need >= {_MIN_RSA_BITS} bits)" if algorithm[0] in "RP" else "")
        )
    return key
