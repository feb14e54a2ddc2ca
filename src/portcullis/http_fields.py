"""HTTP field syntax (RFC 9110 §5.1, §5.5): what may be a header name and a header value.

One definition for everything that writes a header: config validation (plugin
header edits, free-text fields the gateway copies into headers) rejects bad text
with a clear error, and the upstream transports check every field they serialise
as the last line of defence against header injection.

Patterns are applied with `fullmatch`: `$` also matches before a trailing newline,
which is exactly the character that must not get through.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# field-value: visible ASCII, SP, HTAB and obs-text; no CR, LF, NUL or other controls.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Text the gateway copies into a header as UTF-8: any character but controls (C0,
# DEL, C1). UTF-8 never encodes a non-ASCII character with a byte below 0x80, so
# such text cannot produce CR, LF or NUL on the wire.
_HEADER_TEXT = re.compile(r"[^\x00-\x1f\x7f-\x9f]*")

# Bytes a serialised field value may not contain (`bytes.translate` deletes the rest).
_VALUE_BYTES = bytes(b for b in range(256) if b == 0x09 or 0x20 <= b <= 0x7E or b >= 0x80)
_TOKEN_BYTES = bytes(c for c in range(256) if _TOKEN.fullmatch(chr(c)))


def is_token(name: str) -> bool:
    """True for an RFC 9110 token (a valid header name)."""
    return _TOKEN.fullmatch(name) is not None


def is_field_value(value: str) -> bool:
    """True for Latin-1 text that is a valid field value (no CR, LF, NUL, controls)."""
    return _FIELD_VALUE.fullmatch(value) is not None


def token_bytes(name: bytes) -> bool:
    """`is_token` for bytes."""
    return bool(name) and not name.translate(None, _TOKEN_BYTES)


def field_value_bytes(value: bytes) -> bool:
    """`is_field_value` for bytes."""
    return not value.translate(None, _VALUE_BYTES)


def check_header_name(name: str) -> str:
    """`name` when it is a token; ValueError naming it otherwise."""
    if not is_token(name):
        raise ValueError(f"invalid header name {name!r}: use letters, digits and !#$%&'*+.^_`|~-")
    return name


def check_field_value(value: str) -> str:
    """`value` when it can be sent as a header value; ValueError naming it otherwise."""
    if not is_field_value(value):
        raise ValueError(
            f"header value {value!r} must be Latin-1 text without control characters "
            "(CR, LF, NUL...)"
        )
    return value


def check_header_text(value: str) -> str:
    """Free text that becomes a header value (UTF-8): no control characters."""
    if _HEADER_TEXT.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} contains a control character (CR, LF, NUL...); "
            "it is sent upstream in a header"
        )
    return value


HeaderText = Annotated[str, AfterValidator(check_header_text)]
"""A config string the gateway copies into a header (e.g. a consumer's custom_id)."""


# RFC 9110 §7.6.1 plus the legacy and proxy-only fields a gateway must not forward.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
