"""The request inspector's data-plane state: which routes capture, and what is redacted.

An operator starts a capture session on a route (services/inspector.py): a time box,
a sample rate and a maximum count. Sessions are store rows, not config versions;
each worker learns of them through the invalidation feed (proxy/inspector.py) and
installs them on its `CaptureBoard`.

The board holds one `CaptureSlot` per route name, carried from snapshot to snapshot
(like pools and retry budgets), and each compiled route holds its slot: the proxy's
whole per-request cost on a route without an active session is reading
`route.capture.session` (None). The `Redaction` of a route is compiled with the
snapshot from the credential sources of the route's auth plugins
(`Plugin.credential_sources`): their header and query names are redacted on top of
the ones that always are.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from portcullis.plugins.base import AnyPlugin

# The first this-many bytes of each body are kept (the rest is counted, not stored).
BODY_LIMIT = 1024
REDACTED = "[redacted]"
# Headers that carry credentials whatever the route's plugins (lower-case, as ASGI has them).
ALWAYS_REDACTED_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"set-cookie", b"x-api-key"}
)
# Query parameters commonly carrying credentials (compared case-insensitively).
ALWAYS_REDACTED_QUERY = frozenset(
    {"access_token", "api_key", "apikey", "client_secret", "id_token", "password", "token"}
)


@dataclass(frozen=True, slots=True)
class Redaction:
    """The header and query-parameter names whose values a capture never keeps."""

    headers: frozenset[bytes] = ALWAYS_REDACTED_HEADERS
    query: frozenset[str] = ALWAYS_REDACTED_QUERY

    @classmethod
    def of(cls, plugins: Iterable[AnyPlugin]) -> Redaction:
        """The defaults plus every header and query name the plugins read credentials from.

        A cookie source adds nothing: `Cookie` and `Set-Cookie` are redacted whole.
        """
        headers = set(ALWAYS_REDACTED_HEADERS)
        query = set(ALWAYS_REDACTED_QUERY)
        for plugin in plugins:
            for source in plugin.credential_sources:
                if source.where == "header":
                    headers.add(source.name.lower().encode("latin-1"))
                elif source.where == "query":
                    query.add(source.name.lower())
        if len(headers) == len(ALWAYS_REDACTED_HEADERS) and len(query) == len(
            ALWAYS_REDACTED_QUERY
        ):
            return DEFAULT_REDACTION
        return cls(frozenset(headers), frozenset(query))

    def header_list(
        self, headers: Iterable[tuple[bytes, bytes]], found: set[bytes] | None = None
    ) -> list[list[str]]:
        """`[[name, value], ...]` with credential values replaced; the values replaced
        are added to `found` (to scrub them from bodies: see `scrub`).

        An `Authorization`-style value keeps its scheme (`Bearer [redacted]`): whether
        the client sent Basic or Bearer is what one debugs, the credential is not.
        """
        out: list[list[str]] = []
        for name, value in headers:
            text = value.decode("latin-1")
            lower = name.lower()
            if lower in self.headers:
                scheme, sep, rest = text.partition(" ")
                if sep and scheme.isalpha():
                    text = f"{scheme} {REDACTED}"
                    secret = rest.strip().encode("latin-1")
                else:
                    text = REDACTED
                    secret = value
                if found is not None:
                    found.add(secret)
                    if lower in _COOKIES:
                        found.update(_cookie_values(value))
            out.append([name.decode("latin-1"), text])
        return out

    def query_string(self, raw: bytes, found: set[bytes] | None = None) -> str:
        """The query string with credential parameters' values replaced (order kept)."""
        if not raw:
            return ""
        parts = []
        for part in raw.decode("latin-1").split("&"):
            name, _, value = part.partition("=")
            if unquote_plus(name).lower() in self.query:
                part = f"{name}={REDACTED}"
                if found is not None:
                    found.update({value.encode("latin-1"), unquote_plus(value).encode()})
            parts.append(part)
        return "&".join(parts)


_COOKIES = frozenset({b"cookie", b"set-cookie"})
# Shorter values are not scrubbed from bodies (they would match all sorts of text).
MIN_SCRUBBED = 6


def _cookie_values(value: bytes) -> list[bytes]:
    pairs = value.split(b";")
    return [pair.partition(b"=")[2].strip() for pair in pairs if b"=" in pair]


def scrub(body: bytes, secrets: Iterable[bytes]) -> bytes:
    """`body` without the credential values a request carried (an upstream that echoes
    its request would put them there), and without a trailing start of one (the body
    was cut at `BODY_LIMIT`, maybe inside a credential)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) < MIN_SCRUBBED:
            continue
        if secret in body:
            body = body.replace(secret, REDACTED.encode())
        for keep in range(len(secret) - 1, MIN_SCRUBBED - 2, -1):
            if body.endswith(secret[:keep]):
                body = body[: len(body) - keep] + REDACTED.encode()
                break
    return body


DEFAULT_REDACTION = Redaction()


@dataclass(slots=True)
class CapturedExchange:
    """One sampled request and its response, redacted, bodies cut at `BODY_LIMIT`.

    `*_body_size` is the number of body bytes seen (None: the body was not read,
    e.g. a plugin refused the request first); the body is truncated when the size
    is larger than what is kept.
    """

    session_id: str
    route: str
    captured_at: float
    request_id: str
    method: str
    path: str
    query: str
    request_headers: list[list[str]]
    response_headers: list[list[str]]
    status: int
    latency_ms: float
    consumer: str | None
    credential_id: str | None
    request_body: bytes | None
    request_body_size: int | None
    response_body: bytes | None
    response_body_size: int | None


Sink = Callable[[CapturedExchange], None]


class CaptureSlot:
    """A route's capture flag: the active session, or None (the common case)."""

    __slots__ = ("session",)

    def __init__(self) -> None:
        self.session: CaptureSession | None = None


@dataclass(slots=True)
class CaptureSession:
    """An active capture on one worker: which requests to sample, and where they go.

    `ends_at` is wall-clock epoch seconds (the session row's time box). `taken`
    counts this worker's samples; the store caps the session's total at
    `max_count` across workers (store/captures.py). `clock` and `random` are
    injectable for tests.
    """

    id: str
    route: str
    ends_at: float
    sample_rate: float
    max_count: int
    sink: Sink
    clock: Callable[[], float] = time.time
    random: Callable[[], float] = random.random
    taken: int = 0
    slot: CaptureSlot | None = field(default=None, repr=False)

    def admit(self) -> bool:
        """Whether to capture the request now starting. Past its time box or its count,
        the session takes itself off its route's slot (the flag drops to None)."""
        if self.taken >= self.max_count or self.clock() >= self.ends_at:
            self.retire()
            return False
        if self.sample_rate < 1.0 and self.random() >= self.sample_rate:
            return False
        self.taken += 1
        return True

    def retire(self) -> None:
        slot = self.slot
        if slot is not None and slot.session is self:
            slot.session = None


class CaptureBoard:
    """One worker's capture slots by route name, shared by every snapshot it compiles.

    Snapshots compile in a worker thread (runtime/watcher.py) while the event loop may
    install sessions: a slot is created with one atomic `setdefault`, and the slots are
    iterated over a copy, so each route name has exactly one slot whichever side made it.
    """

    __slots__ = ("any", "slots")

    def __init__(self) -> None:
        self.slots: dict[str, CaptureSlot] = {}
        # Whether some session is installed (the proxy then builds its per-request record
        # even when nothing else observes requests).
        self.any = False

    def slot(self, route: str) -> CaptureSlot:
        slot = self.slots.get(route)
        if slot is None:
            slot = self.slots.setdefault(route, CaptureSlot())
        return slot

    def install(self, sessions: Iterable[CaptureSession]) -> None:
        """Make `sessions` the active ones (one per route; others' slots are cleared)."""
        wanted = {s.route: s for s in sessions}
        for route, slot in list(self.slots.items()):
            if route not in wanted:
                slot.session = None
        for route, session in wanted.items():
            slot = self.slot(route)
            session.slot = slot
            slot.session = session
        self.any = bool(wanted)

    def active(self) -> dict[str, CaptureSession]:
        return {r: s.session for r, s in list(self.slots.items()) if s.session is not None}
