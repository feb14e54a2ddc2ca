"""HTTP caching rules (RFC 9111) as small pure functions the response-cache plugin uses.

`CacheControl.parse` reads `Cache-Control` field lines into directives (names
lower-cased, quoted values unquoted; a directive given twice keeps its first
value, as §4.2.1 allows). `freshness_lifetime` is §4.2.1 for a shared cache:
`s-maxage`, else `max-age`, else `Expires` minus `Date`; an invalid value there
means the response is already stale (lifetime 0), and None means the response
says nothing (the cache's default applies).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_DIRECTIVE = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?\s*(?:,|$)"""
)
_ESCAPE = re.compile(r"\\(.)")
# A value that is not a delta-seconds: a directive present but unusable.
INVALID = -1
# RFC 9111 §1.2.2: delta-seconds beyond this are taken as this (68 years).
MAX_DELTA = 2_147_483_648


@dataclass(frozen=True, slots=True)
class CacheControl:
    directives: dict[str, str | None]

    @classmethod
    def parse(cls, values: Iterable[bytes]) -> CacheControl:
        found: dict[str, str | None] = {}
        for raw in values:
            text = raw.decode("latin-1")
            pos = 0
            while pos < len(text):
                match = _DIRECTIVE.match(text, pos)
                if match is None or match.end() == pos:
                    # Skip a malformed piece up to the next comma.
                    comma = text.find(",", pos)
                    if comma < 0:
                        break
                    pos = comma + 1
                    continue
                pos = match.end()
                name, value = match.group(1).lower(), match.group(2)
                if value is not None and value.startswith('"'):
                    value = _ESCAPE.sub(r"\1", value[1:-1])
                found.setdefault(name, value)
        return cls(found)

    def __contains__(self, name: str) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> int | None:
        """A delta-seconds directive: None when absent, INVALID when not a number."""
        if name not in self.directives:
            return None
        value = self.directives[name]
        if value is None or not value.isdigit():
            return INVALID
        return min(int(value), MAX_DELTA)


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date as epoch seconds; None when absent or invalid."""
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def freshness_lifetime(
    cc: CacheControl, expires: bytes | None, date: bytes | None, now: float
) -> float | None:
    """Seconds the response is fresh for from its origin (see the module doc)."""
    for name in ("s-maxage", "max-age"):
        value = cc.seconds(name)
        if value is not None:
            return 0.0 if value == INVALID else float(value)
    if expires is None:
        return None
    until = http_date(expires)
    if until is None:
        return 0.0  # "Expires: 0" and other invalid dates mean already expired
    origin = http_date(date)
    return max(0.0, until - (origin if origin is not None else now))
