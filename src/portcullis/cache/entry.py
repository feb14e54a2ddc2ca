"""What a response cache stores, how it is serialised, and how keys are laid out.

A key is `<route>|<path>|<digest>`: the route name and the request path (percent-
encoded, so `|` never appears in it) stay readable, which is what makes purging
by route or by path possible without an index (a prefix match in memory, a SCAN
pattern in Redis); everything else the key template selects (method, normalised
query, chosen header values, the consumer) is hashed into the digest. An entry
stored for one variant of a response that has a `Vary` beyond the key lives at
`<key>#<variant digest>`, under the same prefix.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

Headers = tuple[tuple[bytes, bytes], ...]

# Path characters kept as they are in a key (RFC 3986 pchar); others are %-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
# Rough per-entry cost beyond key, headers and body (objects, dict slot): counts
# toward the memory cache's byte cap so a flood of tiny entries is bounded too.
ENTRY_OVERHEAD = 256

_MAGIC = b"PC1"
_META_LEN = struct.Struct(">I")


def key_path(path: str) -> str:
    """A request path as it appears in cache keys and purge patterns."""
    return quote(path, safe=_PATH_SAFE, errors="surrogatepass")


def cache_key(route: str, path: str, digest: str) -> str:
    """The key of a cached response (`path` already passed through `key_path`, or "")."""
    return f"{route}|{path}|{digest}"


def variant_key(key: str, digest: str) -> str:
    """The key of one variant of a response whose `Vary` names headers beyond the key."""
    return f"{key}#{digest}"


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored response, or a marker saying the response varies on more headers.

    A marker (`variants` true) carries only `vary`: the lower-case request header
    names whose values select the variant, stored under `variant_key`.
    """

    status: int
    headers: Headers
    body: bytes
    stored_at: float  # clock seconds (epoch) when stored
    expires_at: float  # clock seconds after which the entry is never served
    age: int = 0  # the Age the upstream reported: the response was this old when stored
    vary: tuple[str, ...] = ()
    variants: bool = False

    @classmethod
    def marker(cls, vary: tuple[str, ...], stored_at: float, expires_at: float) -> CacheEntry:
        return cls(0, (), b"", stored_at, expires_at, vary=vary, variants=True)

    def current_age(self, now: float) -> int:
        """Seconds since the origin produced the response (RFC 9111 §4.2.3, simplified)."""
        return self.age + max(0, int(now - self.stored_at))

    def size(self, key: str) -> int:
        """Bytes this entry is charged in a memory cache."""
        return (
            len(key)
            + len(self.body)
            + sum(len(n) + len(v) for n, v in self.headers)
            + ENTRY_OVERHEAD
        )

    def encode(self) -> bytes:
        """One value: magic, 4-byte length of JSON metadata, the metadata, the body."""
        meta: dict[str, Any] = {
            "s": self.status,
            "h": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
            "t": self.stored_at,
            "e": self.expires_at,
            "a": self.age,
        }
        if self.vary:
            meta["v"] = list(self.vary)
        if self.variants:
            meta["m"] = 1
        raw = json.dumps(meta, separators=(",", ":")).encode()
        return b"".join((_MAGIC, _META_LEN.pack(len(raw)), raw, self.body))

    @classmethod
    def decode(cls, data: bytes) -> CacheEntry:
        """The entry `encode` produced; ValueError for anything else."""
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + _META_LEN.size:
            raise ValueError("not a cache entry")
        start = len(_MAGIC) + _META_LEN.size
        (size,) = _META_LEN.unpack_from(data, len(_MAGIC))
        if start + size > len(data):
            raise ValueError("truncated cache entry")
        meta = json.loads(data[start : start + size])
        return cls(
            status=int(meta["s"]),
            headers=tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in meta["h"]),
            body=data[start + size :],
            stored_at=float(meta["t"]),
            expires_at=float(meta["e"]),
            age=int(meta.get("a", 0)),
            vary=tuple(meta.get("v", ())),
            variants=bool(meta.get("m", 0)),
        )
