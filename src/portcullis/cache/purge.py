"""What a purge removes, and how it travels to every data-plane worker.

A purge names everything, one route, or requests for one path (exactly, or by
prefix), optionally within one route. The control plane deletes shared (Redis)
entries itself and appends one `cache-purge` event whose subject encodes the
scope; each worker's event poller hands it to its memory cache.

Event subjects are at most 128 characters (the store's column). A scope too long
to encode is widened (path within a route → the whole route → everything): a
purge may remove more than asked, never less.
"""

from __future__ import annotations

from dataclasses import dataclass

from portcullis.cache.entry import key_path

SUBJECT_MAX = 128
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def _glob_escape(text: str) -> str:
    return text.translate(_GLOB_SPECIAL)


@dataclass(frozen=True, slots=True)
class PurgeScope:
    """Entries to remove: all (the default), of a route, and/or of a path.

    `path` is in key form (`key_path`: percent-encoded); `exact` false means every
    path starting with it. Build scopes from request paths with `of`.
    """

    route: str | None = None
    path: str | None = None
    exact: bool = True

    @classmethod
    def of(
        cls, route: str | None = None, path: str | None = None, path_prefix: str | None = None
    ) -> PurgeScope:
        """A scope from a route name and a decoded request path or path prefix."""
        if path is not None and path_prefix is not None:
            raise ValueError("give path or path_prefix, not both")
        if path is not None:
            return cls(route, key_path(path), True)
        if path_prefix is not None:
            return cls(route, key_path(path_prefix), False)
        return cls(route)

    @property
    def everything(self) -> bool:
        return self.route is None and self.path is None

    def matches(self, key: str) -> bool:
        """True when the entry stored under `key` falls in this scope."""
        route, _, rest = key.partition("|")
        if self.route is not None and route != self.route:
            return False
        if self.path is None:
            return True
        path = rest.partition("|")[0]
        return path == self.path if self.exact else path.startswith(self.path)

    def redis_pattern(self, prefix: str) -> str:
        """A SCAN MATCH pattern for the scope's keys under a Redis key prefix."""
        head = _glob_escape(prefix)
        if self.path is None:
            return f"{head}*" if self.route is None else f"{head}{_glob_escape(self.route)}|*"
        # Route names never contain "|", so "[^|]*" pins the first segment to one route.
        route = "[^|]*" if self.route is None else _glob_escape(self.route)
        tail = "|*" if self.exact else "*"
        return f"{head}{route}|{_glob_escape(self.path)}{tail}"

    def subject(self) -> str:
        """The event subject; widened when too long (see the module doc)."""
        if self.path is not None:
            text = f"{'p' if self.exact else 'P'}|{self.route or ''}|{self.path}"
            if len(text) <= SUBJECT_MAX:
                return text
        if self.route is not None:
            text = f"r|{self.route}"
            if len(text) <= SUBJECT_MAX:
                return text
        return "*"

    @classmethod
    def from_subject(cls, subject: str) -> PurgeScope:
        """The scope an event subject encodes (anything unknown purges everything)."""
        kind, _, rest = subject.partition("|")
        if kind == "r" and rest:
            return cls(route=rest)
        if kind in ("p", "P"):
            route, sep, path = rest.partition("|")
            if sep and path:
                return cls(route or None, path, kind == "p")
        return cls()
