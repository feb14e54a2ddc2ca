"""What the data plane knows about one API key (no secret, no hash)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network

from portcullis.identity.keys import Environment


class KeyStatus(StrEnum):
    active = "active"
    suspended = "suspended"
    revoked = "revoked"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as key-auth needs it; times are POSIX seconds (cheap to compare per request).

    `grace_until` is set on a key that was rotated: it keeps working until then.
    Empty `allowed_origins` / `ip_allowlist` mean "no restriction".
    """

    id: str
    consumer: str
    name: str
    environment: Environment
    scopes: frozenset[str]
    status: KeyStatus
    status_reason: str | None
    expires_at: float | None
    grace_until: float | None
    allowed_origins: frozenset[str]
    ip_allowlist: tuple[IPv4Network | IPv6Network, ...]
    plan: str | None
    # API version pins from the key's metadata (`api_version:<api>`: `<version>`): the
    # version this key's requests get on the API's shared routes when they name none;
    # it beats the consumer's pin (runtime/versions.py).
    api_versions: Mapping[str, str] = field(default_factory=dict)


API_VERSION_PREFIX = "api_version:"


def api_version_pins(metadata: Mapping[str, object]) -> dict[str, str]:
    """The API version pins among a key's metadata entries (api name -> version)."""
    return {
        k.removeprefix(API_VERSION_PREFIX): v
        for k, v in metadata.items()
        if k.startswith(API_VERSION_PREFIX) and isinstance(v, str) and v
    }
