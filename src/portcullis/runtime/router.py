"""The data plane's compiled router: picks the route for a request in near-constant time.

Routes are compiled once per snapshot into hash indexes: hosts by exact name, by
wildcard suffix and by wildcard prefix; within each host bucket, paths by exact
value, by prefix, and regexes by their literal first segment (regexes without one
stay in a short rank-ordered list). `Router.match` runs on every request, so it
does a bounded number of dict lookups that depends on the shape of the request
(labels in the host, segments in the path), not on how many routes exist. Every
candidate carries a precomputed global rank, so choosing among candidates is an
integer comparison, and a candidate list is abandoned as soon as it cannot beat
the best match found so far.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Generic, TypeVar

from portcullis.model import PathMatcher, Route

T = TypeVar("T")

EMPTY_PARAMS: Mapping[str, str] = MappingProxyType({})
"""The `path_params` of every match that captured nothing (shared, immutable)."""

# Specificity ranks; higher is more specific.
_HOST_ANY, _HOST_WILDCARD, _HOST_EXACT = 0, 1, 2
_PATH_REGEX, _PATH_PREFIX, _PATH_EXACT = 0, 1, 2

_PATH_KINDS = {"regex": _PATH_REGEX, "prefix": _PATH_PREFIX, "exact": _PATH_EXACT}

_HeaderRule = tuple[bytes, frozenset[bytes]]

HOST_CACHE_SIZE = 4096
"""How many distinct Host header values a router remembers the host buckets of."""


@dataclass(frozen=True, slots=True)
class RouteSpec(Generic[T]):
    """A route plus the opaque payload the snapshot builder attaches to it."""

    route: Route
    payload: T


@dataclass(frozen=True, slots=True)
class RouteMatch(Generic[T]):
    """The result of routing one request.

    `matched_length` is how many characters of the path the path matcher consumed:
    the prefix's length, the exact path's length, or the end of the regex match.
    The proxy strips `path[:matched_length]` when the route has `strip_path`.
    """

    payload: T
    route: Route
    path_params: Mapping[str, str]
    matched_length: int


class _Entry(Generic[T]):
    """One (route, host pattern, path pattern) combination, ranked against all others."""

    __slots__ = ("has_groups", "headers", "methods", "rank", "regex", "result", "spec")

    def __init__(
        self,
        rank: int,
        spec: RouteSpec[T],
        methods: frozenset[str] | None,
        headers: tuple[_HeaderRule, ...] | None,
        regex: re.Pattern[str] | None,
        matched_length: int,
    ) -> None:
        self.rank = rank
        self.spec = spec
        self.methods = methods
        self.headers = headers
        self.regex = regex
        self.has_groups = regex is not None and bool(regex.groupindex)
        # Exact and prefix matches never vary per request: build the result once.
        self.result: RouteMatch[T] | None = (
            None
            if regex is not None
            else RouteMatch(spec.payload, spec.route, EMPTY_PARAMS, matched_length)
        )


def _headers_match(rules: tuple[_HeaderRule, ...], headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True when, for every rule, some request field has that name and an allowed value."""
    for name, allowed in rules:
        for n, v in headers:
            if n == name and v in allowed:
                break
        else:
            return False
    return True


def _first(
    entries: list[_Entry[T]],
    method: str,
    headers: Sequence[tuple[bytes, bytes]],
    limit: int,
) -> _Entry[T] | None:
    """The best-ranked entry (better than `limit`) whose method and header rules pass."""
    for e in entries:
        if e.rank >= limit:
            return None
        methods = e.methods
        if methods is not None and method not in methods:
            continue
        rules = e.headers
        if rules is not None and not _headers_match(rules, headers):
            continue
        return e
    return None


def _first_regex(
    entries: list[_Entry[T]],
    method: str,
    path: str,
    headers: Sequence[tuple[bytes, bytes]],
    limit: int,
) -> tuple[_Entry[T], re.Match[str]] | None:
    """Like `_first` for regex entries: the best one (better than `limit`) that matches."""
    for e in entries:
        if e.rank >= limit:
            return None
        methods = e.methods
        if methods is not None and method not in methods:
            continue
        m = e.regex.match(path)  # type: ignore[union-attr]
        if m is None:
            continue
        rules = e.headers
        if rules is not None and not _headers_match(rules, headers):
            continue
        return e, m
    return None


_REGEX_META = frozenset(".^$*+?{}[]\\|()")


def _regex_first_segment(pattern: re.Pattern[str]) -> str | None:
    """The first path segment every match must start with (`/svc` for `^/svc/(?P<id>.+)`).

    Found by reading the pattern's leading literal characters, conservatively:
    any alternation, flag, escape or group ends the literal run, and a character
    followed by a quantifier is dropped. None when no complete segment is literal,
    in which case the regex is tried for every path.
    """
    source = pattern.pattern
    if "|" in source or pattern.flags & (re.IGNORECASE | re.VERBOSE):
        return None
    if source.startswith("^"):
        source = source[1:]
    literal: list[str] = []
    for ch in source:
        if ch in _REGEX_META:
            if ch in "*+?{" and literal:
                literal.pop()
            break
        literal.append(ch)
    text = "".join(literal)
    end = text.find("/", 1)
    if not text.startswith("/") or end < 0:
        return None
    return text[:end]


class _PathIndex(Generic[T]):
    """The path side of one host bucket.

    Prefixes live in two dicts keyed by the prefix string: `open` for prefixes
    without a trailing slash (which must end at a segment boundary) and `slash`
    for prefixes ending in `/`. This is a hashed segment trie: walking the request
    path's slashes and looking up `path[:j]` and `path[:j + 1]` visits exactly the
    trie nodes on the path, and `depth` stops the walk below the deepest prefix.
    Regexes whose first segment is literal are keyed by it in `keyed_regexes`;
    the rest are tried in rank order from `regexes`.
    """

    __slots__ = ("depth", "exact", "keyed_regexes", "open", "regexes", "slash")

    def __init__(self) -> None:
        self.exact: dict[str, list[_Entry[T]]] = {}
        self.open: dict[str, list[_Entry[T]]] = {}
        self.slash: dict[str, list[_Entry[T]]] = {}
        self.keyed_regexes: dict[str, list[_Entry[T]]] = {}
        self.regexes: list[_Entry[T]] = []
        self.depth = 0

    def add(self, kind: int, value: str, entry: _Entry[T]) -> None:
        """Index `entry`; entries must arrive in rank order so every list stays sorted."""
        if kind == _PATH_REGEX:
            assert entry.regex is not None
            segment = _regex_first_segment(entry.regex)
            if segment is None:
                self.regexes.append(entry)
            else:
                self.keyed_regexes.setdefault(segment, []).append(entry)
            return
        if kind == _PATH_EXACT:
            self.exact.setdefault(value, []).append(entry)
            return
        slashes = value.count("/")
        if value.endswith("/"):
            self.slash.setdefault(value, []).append(entry)
            # Found at the lookup made on the path's `slashes`-th slash.
            self.depth = max(self.depth, slashes)
        else:
            self.open.setdefault(value, []).append(entry)
            # Found on the slash that follows the prefix, or as the whole path.
            self.depth = max(self.depth, slashes + 1)

    def search(
        self,
        method: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
        limit: int,
    ) -> tuple[int, RouteMatch[T]] | None:
        """The best match ranked better than `limit` in this bucket, with its rank."""
        best: _Entry[T] | None = None
        exact = self.exact
        if exact:
            found = exact.get(path)
            if found is not None:
                best = _first(found, method, headers, limit)
                if best is not None:
                    limit = best.rank
        open_ = self.open
        slash = self.slash
        if open_:
            found = open_.get(path)
            if found is not None and found[0].rank < limit:
                e = _first(found, method, headers, limit)
                if e is not None:
                    best, limit = e, e.rank
        if open_ or slash:
            j = 0
            for _ in range(self.depth):
                j = path.find("/", j)
                if j < 0:
                    break
                if j and open_:
                    found = open_.get(path[:j])
                    if found is not None and found[0].rank < limit:
                        e = _first(found, method, headers, limit)
                        if e is not None:
                            best, limit = e, e.rank
                j += 1
                if slash:
                    found = slash.get(path[:j])
                    if found is not None and found[0].rank < limit:
                        e = _first(found, method, headers, limit)
                        if e is not None:
                            best, limit = e, e.rank
        hit: tuple[_Entry[T], re.Match[str]] | None = None
        keyed = self.keyed_regexes
        if keyed:
            j = path.find("/", 1)
            if j > 0:
                found = keyed.get(path[:j])
                if found is not None:
                    hit = _first_regex(found, method, path, headers, limit)
                    if hit is not None:
                        limit = hit[0].rank
        regexes = self.regexes
        if regexes:
            general = _first_regex(regexes, method, path, headers, limit)
            if general is not None:
                hit = general
        if hit is not None:
            e, m = hit
            if e.has_groups:
                params: Mapping[str, str] = {
                    k: v for k, v in m.groupdict().items() if v is not None
                }
            else:
                params = EMPTY_PARAMS
            spec = e.spec
            return e.rank, RouteMatch(spec.payload, spec.route, params, m.end())
        if best is None:
            return None
        assert best.result is not None
        return best.rank, best.result


class _HostPattern:
    """A parsed route host: its bucket kind, lookup key, and specificity length."""

    __slots__ = ("key", "kind", "length", "table")

    def __init__(self, raw: str) -> None:
        host = raw.lower()
        self.length = len(host)
        if host.startswith("*."):
            # "*.example.com[:port]" -> suffix ".example.com" or ".example.com:port"
            self.kind, self.table, self.key = _HOST_WILDCARD, "suffix", host[1:]
        elif host.endswith(".*"):
            # "api.*" -> prefix "api."
            self.kind, self.table, self.key = _HOST_WILDCARD, "prefix", host[:-1]
        else:
            self.kind, self.table, self.key = _HOST_EXACT, "exact", host


class Router(Generic[T]):
    """Chooses the route for a request.

    A route matches when ALL of its configured conditions match:

    - hosts (if any): one of them matches the Host header, compared
      case-insensitively, ignoring one trailing dot. `api.example.com` is exact;
      `*.example.com` matches any host ending in `.example.com` with at least one
      character before it (so `a.b.example.com`, but not `example.com`);
      `api.*` matches any host starting with `api.` with something after it.
      A pattern without a port matches any port (or none); a pattern with
      `:port` matches only a Host header carrying that literal port. An empty
      Host or an IPv6 literal (`[::1]:8000`) only matches routes without hosts.
    - paths: one of them matches the path (case-sensitive, the percent-decoded
      ASGI path). `=/p` is exact. `/p` is a segment-aware prefix: it matches
      `/p`, `/p/` and `/p/...` but not `/px`; a prefix ending in `/` (including
      `/` itself) matches every path starting with it. `~regex` is applied with
      `re.match`, i.e. anchored at the start of the path (add `$` to anchor the
      end); its named groups that took part in the match become `path_params`.
    - methods (if any): the request method is one of them (exact; HEAD does not
      imply GET).
    - headers: for every configured header name, some request field with that
      name has exactly one of the allowed values (case-sensitive, whole value).

    Among matching routes the winner is decided by, in order:

    1. higher `priority`;
    2. the more specific host that matched: exact > wildcard > no hosts, and
       within a kind the longer pattern (so `a.com:8080` beats `a.com` and
       `*.api.example.com` beats `*.example.com`);
    3. the more specific path that matched: exact > prefix > regex, and within a
       kind the longer value (longer prefix, longer regex pattern);
    4. earlier declaration in `specs`.

    When one route has several matching paths, the most specific (then the
    first declared) decides its rank and its `matched_length`.

    Cost per request: one dict lookup for the Host value (its matching host
    buckets are memoised, see `HOST_CACHE_SIZE`; only when some route has hosts),
    then per bucket consulted a few dict lookups per path segment (bounded by the
    deepest configured prefix), a scan of the candidates that share a bucket and
    path key (routes told apart only by methods or headers), the regexes keyed
    under the path's first segment, and the regexes without a literal first
    segment. Regexes are tried in rank order and only while they could still beat
    the best candidate found.
    """

    __slots__ = (
        "_any",
        "_exact_hosts",
        "_exact_ported",
        "_has_hosts",
        "_host_cache",
        "_prefix_depth",
        "_prefix_hosts",
        "_size",
        "_suffix_depth",
        "_suffix_hosts",
        "_suffix_ported",
        "specs",
    )

    def __init__(self, specs: Sequence[RouteSpec[T]]) -> None:
        self.specs: tuple[RouteSpec[T], ...] = tuple(specs)
        self._any: _PathIndex[T] | None = None
        self._exact_hosts: dict[str, _PathIndex[T]] = {}
        self._suffix_hosts: dict[str, _PathIndex[T]] = {}
        self._prefix_hosts: dict[str, _PathIndex[T]] = {}
        self._suffix_depth = 0
        self._prefix_depth = 0
        # Whether any exact / wildcard-suffix host pattern carries a `:port`.
        self._exact_ported = False
        self._suffix_ported = False
        # Raw Host header -> its matching host buckets. Host values repeat, so this
        # turns host parsing into one dict lookup. It is never evicted: once full,
        # unseen hosts are resolved per request instead of growing it (a client
        # sending random Host headers cannot make it unbounded).
        self._host_cache: dict[str, tuple[_PathIndex[T], ...]] = {}

        pending: list[tuple[tuple[int, ...], _HostPattern | None, PathMatcher, RouteSpec[T]]] = []
        for route_index, spec in enumerate(self.specs):
            route = spec.route
            hosts: list[_HostPattern | None] = [_HostPattern(h) for h in route.hosts] or [None]
            for host_index, host in enumerate(hosts):
                host_kind = host.kind if host is not None else _HOST_ANY
                host_len = host.length if host is not None else 0
                for path_index, pm in enumerate(route.path_matchers):
                    key = (
                        -route.priority,
                        -host_kind,
                        -host_len,
                        -_PATH_KINDS[pm.kind],
                        -len(pm.value),
                        route_index,
                        path_index,
                        host_index,
                    )
                    pending.append((key, host, pm, spec))
        pending.sort(key=lambda item: item[0])
        self._size = len(pending)

        compiled: dict[int, tuple[frozenset[str] | None, tuple[_HeaderRule, ...] | None]] = {}
        regexes: dict[str, re.Pattern[str]] = {}
        for rank, (_, host, pm, spec) in enumerate(pending):
            route = spec.route
            if id(spec) not in compiled:
                compiled[id(spec)] = (_methods(route), _header_rules(route))
            methods, rules = compiled[id(spec)]
            regex = None
            if pm.kind == "regex":
                regex = regexes.get(pm.value)
                if regex is None:
                    regex = regexes[pm.value] = re.compile(pm.value)
            entry = _Entry(rank, spec, methods, rules, regex, len(pm.value))
            self._bucket(host).add(_PATH_KINDS[pm.kind], pm.value, entry)
        self._has_hosts = bool(self._exact_hosts or self._suffix_hosts or self._prefix_hosts)

    def _bucket(self, host: _HostPattern | None) -> _PathIndex[T]:
        if host is None:
            if self._any is None:
                self._any = _PathIndex()
            return self._any
        if host.table == "exact":
            table = self._exact_hosts
            self._exact_ported = self._exact_ported or ":" in host.key
        elif host.table == "suffix":
            table = self._suffix_hosts
            self._suffix_ported = self._suffix_ported or ":" in host.key
            self._suffix_depth = max(self._suffix_depth, host.key.partition(":")[0].count("."))
        else:
            table = self._prefix_hosts
            self._prefix_depth = max(self._prefix_depth, host.key.count("."))
        index = table.get(host.key)
        if index is None:
            index = table[host.key] = _PathIndex()
        return index

    def __len__(self) -> int:
        return len(self.specs)

    def _host_buckets(self, host: str) -> tuple[_PathIndex[T], ...]:
        """Every host bucket whose pattern matches the raw Host header `host`."""
        if host[0] == "[":
            return ()  # IPv6 literal: route hosts cannot name one
        host = host.lower()
        colon = host.rfind(":")
        if colon >= 0:
            name, port = host[:colon], host[colon + 1 :]
        else:
            name, port = host, ""
        if name.endswith("."):
            name = name[:-1]
        found: list[_PathIndex[T] | None] = []
        exact = self._exact_hosts
        if exact:
            if port and self._exact_ported:
                found.append(exact.get(name + ":" + port))
            found.append(exact.get(name))
        suffixes = self._suffix_hosts
        if suffixes:
            ported = bool(port) and self._suffix_ported
            i = len(name)
            for _ in range(self._suffix_depth):
                i = name.rfind(".", 0, i)
                if i <= 0:
                    break
                found.append(suffixes.get(name[i:]))
                if ported:
                    found.append(suffixes.get(name[i:] + ":" + port))
        prefixes = self._prefix_hosts
        if prefixes:
            i = -1
            last = len(name) - 1
            for _ in range(self._prefix_depth):
                i = name.find(".", i + 1)
                if i < 0 or i >= last:
                    break
                found.append(prefixes.get(name[: i + 1]))
        return tuple(index for index in found if index is not None)

    def match(
        self,
        method: str,
        host: str,
        path: str,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> RouteMatch[T] | None:
        """The winning route for a request, or None (see the class docstring for the rules)."""
        limit = self._size
        best: RouteMatch[T] | None = None
        if host and self._has_hosts:
            cache = self._host_cache
            buckets = cache.get(host)
            if buckets is None:
                buckets = self._host_buckets(host)
                if len(cache) < HOST_CACHE_SIZE:
                    cache[host] = buckets
            for index in buckets:
                found = index.search(method, path, headers, limit)
                if found is not None:
                    limit, best = found
        hostless = self._any
        if hostless is not None:
            found = hostless.search(method, path, headers, limit)
            if found is not None:
                return found[1]
        return best


def _methods(route: Route) -> frozenset[str] | None:
    return frozenset(m.upper() for m in route.methods) if route.methods else None


def _header_rules(route: Route) -> tuple[_HeaderRule, ...] | None:
    if not route.headers:
        return None
    return tuple(
        (name.lower().encode("latin-1"), frozenset(v.encode("utf-8") for v in values))
        for name, values in route.headers.items()
    )
