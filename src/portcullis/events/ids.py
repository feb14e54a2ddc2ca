"""Sortable random ids in Crockford base32 (webhook messages, endpoints)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def message_id(
    now: Callable[[], float] = time.time, token_bytes: Callable[[int], bytes] = os.urandom
) -> str:
    """A new `msg_…` id: 48 bits of milliseconds then 80 random bits in Crockford base32,
    so ids sort by creation time (useful in delivery listings) and never collide in practice."""
    value = (int(now() * 1000) & (2**48 - 1)) << 80 | int.from_bytes(token_bytes(10), "big")
    return "msg_" + crockford32(value)


def crockford32(value: int, length: int = 26) -> str:
    """`value` in `length` Crockford base32 digits (lower case), most significant first."""
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))
