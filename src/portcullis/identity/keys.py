"""The API key format: `pc_<env>_<id>_<secret><checksum>`.

- `env` is `live`, `stg` or `dev` (production, staging, development), so a leaked
  key says where it works;
- `id` (12 base62 characters) is the key's public, stored identifier;
- `secret` is 22 base62 characters from `secrets` (about 131 bits);
- `checksum` is the CRC32 of everything before it, as 6 base62 characters, so
  secret scanners (and the gateway, before any lookup) can tell a real key from
  a typo or random text offline, as GitHub's token format does.

Only `hash_credential(full key)` is stored; the full key is shown once.
"""

from __future__ import annotations

import re
import secrets
import zlib
from dataclasses import dataclass
from enum import StrEnum

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH = 12
SECRET_LENGTH = 22
CHECKSUM_LENGTH = 6
KEY_PATTERN = re.compile(
    rf"^pc_(live|stg|dev)_([0-9A-Za-z]{{{ID_LENGTH}}})_"
    rf"([0-9A-Za-z]{{{SECRET_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})$"
)
MAX_KEY_LENGTH = 3 + 5 + ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH
# A whole key anywhere in a text (a URL path, a log line): what `redact_keys` hides.
_KEY_IN_TEXT = re.compile(
    rf"(pc_(?:live|stg|dev)_[0-9A-Za-z]{{{ID_LENGTH}}})_"
    rf"[0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH}}}(?![0-9A-Za-z])"
)
_DISPLAY_PREFIX = re.compile(rf"^pc_(?:live|stg|dev)_([0-9A-Za-z]{{{ID_LENGTH}}})$")


class Environment(StrEnum):
    development = "development"
    staging = "staging"
    production = "production"


_ENV_TAG = {
    Environment.production: "live",
    Environment.staging: "stg",
    Environment.development: "dev",
}
_TAG_ENV = {tag: env for env, tag in _ENV_TAG.items()}


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def _random(width: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(width))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


@dataclass(frozen=True, slots=True)
class ParsedKey:
    environment: Environment
    id: str


def new_key_id() -> str:
    return _random(ID_LENGTH)


def generate_key(environment: Environment, key_id: str | None = None) -> tuple[str, str]:
    """A new key as `(key id, full key)`."""
    key_id = key_id or new_key_id()
    body = f"pc_{_ENV_TAG[environment]}_{key_id}_{_random(SECRET_LENGTH)}"
    return key_id, body + checksum(body)


def parse_key(text: str) -> ParsedKey | None:
    """The key's environment and id if `text` has the format and a valid checksum."""
    if len(text) > MAX_KEY_LENGTH:
        return None
    m = KEY_PATTERN.fullmatch(text)
    if m is None:
        return None
    body = text[:-CHECKSUM_LENGTH]
    if checksum(body) != m.group(4):
        return None
    return ParsedKey(_TAG_ENV[m.group(1)], m.group(2))


def display_prefix(environment: Environment, key_id: str) -> str:
    """The non-secret part of a key, safe to show in lists and logs."""
    return f"pc_{_ENV_TAG[environment]}_{key_id}"


def redact_keys(text: str) -> str:
    """`text` with the secret part of every whole key in it replaced: a key pasted into
    a URL must not come back in a problem's `instance` or go into a log."""
    if "pc_" not in text:
        return text
    return _KEY_IN_TEXT.sub(r"\1_[redacted]", text)


class FullKeyGiven(ValueError):
    """A whole secret key was given where only its id is wanted."""


def key_id_of(reference: str) -> str:
    """The key id a person names a key by: its id, or its display prefix `pc_<env>_<id>`
    (what lists show). A whole key is refused (`FullKeyGiven`): a secret does not
    belong in a command line or a URL, and its id is in the message."""
    m = _DISPLAY_PREFIX.fullmatch(reference)
    if m is not None:
        return m.group(1)
    parsed = parse_key(reference)
    if parsed is not None:
        raise FullKeyGiven(
            f"that is a whole secret key; name it by its id {parsed.id!r} "
            "(and revoke it if it was exposed)"
        )
    return reference
