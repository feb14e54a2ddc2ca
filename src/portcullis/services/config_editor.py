"""The one path every admin change to gateway entities takes: read, change, validate, apply.

Services, routes, upstreams, consumers and plugin instances are entries of the
declarative `GatewayConfig`. An admin mutation therefore loads the current config,
builds the changed document, validates the *whole* config (so cross-references
are checked exactly as `portcullis config apply` checks them) and stores it as a
new version through `ConfigRepository.apply`. The data plane polls the version
and picks the change up.

A mutation is a *plan*: a function from the current config to an `Edit`. The
plan runs against the version just read, and the edit is stored only if that
version is still current (`expected_version`). When another writer got there
first (another admin process, the CLI), the plan runs again on the fresh config,
so its checks (404, If-Match, duplicates) see the other change and nothing is
ever overwritten. Within one process a lock serialises mutations, so retries
only happen across processes. Reads are served from a cache keyed by the
current version number, which costs one primary-key read per request.

The cached state carries the config's canonical document, shared by every reader:
nobody mutates it. A plan copies the mapping and the one list it changes, so an
edit costs O(change) up to validation: `validate_edit` validates only the entries
that differ from the current document (its models are reused for the rest) and
runs the cross-reference check unless the change provably keeps it (decision 032).
When anything is wrong, the whole document is validated the usual way, so errors
read the same. The checksum's canonical text is kept per entity between edits
(`model.canonical_text.DocumentText`), so only the changed entities are serialised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from portcullis.model.canonical_text import DocumentText
from portcullis.model.config import GatewayConfig
from portcullis.model.delta import Document, revalidate
from portcullis.model.loader import ConfigError, Loc, load_config_data
from portcullis.model.traffic import expired_on_arrival
from portcullis.problems import ProblemKind
from portcullis.services.errors import ServiceError, invalid, pointer_for
from portcullis.store.config_repository import (
    ConfigConflict,
    ConfigRepository,
    ConfigVersion,
    OnWrite,
)

# Maps the location of a config error to a pointer into the request body (None: not in it).
Locator = Callable[[Loc], str | None]
T = TypeVar("T")
# Plans re-run on a fresh config at most this many times in total.
MAX_ATTEMPTS = 8
CONCURRENT_CHANGE = ProblemKind(
    "concurrent-change", "The config kept changing while this change was being applied", 409
)


@dataclass(frozen=True, slots=True)
class ConfigState:
    """The current config and the version it came from (version 0: nothing applied yet).

    `document` is the config's canonical document, shared: never mutate it.
    """

    version: int
    checksum: str | None
    config: GatewayConfig
    document: Document


EMPTY_STATE = ConfigState(0, None, GatewayConfig(), GatewayConfig().canonical())


@dataclass(frozen=True, slots=True)
class Edit(Generic[T]):
    """What a plan decided: the new config document (None: change nothing) and its result.

    `locate` maps config error locations to request-body pointers for the 422;
    `on_write` runs in the write transaction (the audit record).
    """

    document: dict[str, Any] | None
    result: T
    comment: str = ""
    locate: Locator | None = None
    on_write: OnWrite | None = None


@dataclass(frozen=True, slots=True)
class Applied(Generic[T]):
    """A plan's result, the state it was computed from, and the stored version (if any)."""

    result: T
    state: ConfigState
    stored: ConfigVersion | None


class ConfigEditor:
    """Reads the current config and applies planned changes as new versions."""

    def __init__(self, repository: ConfigRepository, *, max_attempts: int = MAX_ATTEMPTS) -> None:
        self.repository = repository
        self.max_attempts = max_attempts
        self._lock = asyncio.Lock()
        self._cached = EMPTY_STATE
        # The canonical text, in parts, of the last document this editor wrote (built on the
        # first edit): the next edit's checksum re-serialises only the entities it changed.
        self._text: DocumentText | None = None

    async def state(self) -> ConfigState:
        """The current config (cached per version)."""
        version = await self.repository.current_version()
        if version == self._cached.version:
            return self._cached
        cached = self._cached
        # Another writer moved the head: only what differs from the cached config is
        # validated, off the event loop (a whole-file apply from the CLI revalidates it all).
        base = (cached.config, cached.document) if cached.version else None
        current = await self.repository.current(base=base)
        if current is None:
            return EMPTY_STATE
        return self._remember(current)

    def _remember(self, version: ConfigVersion) -> ConfigState:
        document = version.document if version.document is not None else version.config.canonical()
        state = ConfigState(version.version, version.checksum, version.config, document)
        if state.version >= self._cached.version:
            self._cached = state
        return state

    async def mutate(self, plan: Callable[[ConfigState], Edit[T]], *, author: str) -> Applied[T]:
        """Run `plan` on the current config and store its document, re-planning on conflict.

        The plan may raise (`ServiceError` for 404, 409, 412 …); it is called once per
        attempt, always with the config the store holds at that moment. After
        `max_attempts` conflicts in a row, a 409 problem asks the client to retry.
        """
        async with self._lock:
            for _ in range(self.max_attempts):
                current = await self.state()
                edit = plan(current)
                if edit.document is None:
                    return Applied(edit.result, current, None)
                config, document = validate_edit(current, edit.document, edit.locate)
                _admit(current.config, config, edit.locate)
                base = self._text.then(current.document) if self._text else None
                text = (base or DocumentText.of(current.document)).then(document)
                try:
                    stored = await self.repository.apply(
                        config,
                        author=author,
                        comment=edit.comment,
                        expected_version=current.version,
                        on_write=edit.on_write,
                        previous=current.config,
                        document=document,
                        previous_document=current.document,
                        text=text,
                    )
                except ConfigConflict:
                    continue
                self._text = text
                self._remember(stored)
                return Applied(edit.result, current, stored)
        raise _too_busy()

    async def pinned(self, work: Callable[[ConfigState], Awaitable[T]]) -> T:
        """Run `work` on the current config, again on the fresh one when it raises
        `ConfigConflict`: it pinned the version it read (a credential created for a
        consumer found in it, see store/config_head.py) and the config moved on."""
        for _ in range(self.max_attempts):
            current = await self.state()
            try:
                return await work(current)
            except ConfigConflict:
                continue
        raise _too_busy()

    async def rollback(
        self,
        to_version: int,
        *,
        author: str,
        precondition: Callable[[ConfigState], None] | None = None,
        on_write: Callable[[ConfigState], OnWrite | None] | None = None,
    ) -> ConfigVersion:
        """Restore `to_version` as a new version.

        `precondition` may veto on the current state (If-Match); `on_write` makes the
        write hook for it (the audit record, whose `before` is that state). Both are
        re-run on the fresh state when another writer moved the head meanwhile.
        """
        async with self._lock:
            for _ in range(self.max_attempts):
                current = await self.state()
                if precondition is not None:
                    precondition(current)
                try:
                    stored = await self.repository.rollback(
                        to_version,
                        author=author,
                        expected_version=current.version,
                        on_write=on_write(current) if on_write is not None else None,
                        previous=current.config,
                        previous_document=current.document,
                    )
                except ConfigConflict:
                    continue
                self._remember(stored)
                return stored
        raise _too_busy()


def _too_busy() -> ServiceError:
    return ServiceError(
        CONCURRENT_CHANGE,
        "other writers changed the config on every attempt; retry the request",
        headers={"Retry-After": "1"},
    )


def _admit(before: GatewayConfig, after: GatewayConfig, locate: Locator | None) -> None:
    """Rules for what a change may introduce, beyond what a valid config is.

    An override that is new, or whose `expires_at` changed, must not have expired
    already: it would be stored and do nothing. One that lapsed since it was stored
    is left alone (its other fields may still be edited).
    """
    errors = []
    for i in expired_on_arrival(before.overrides, after.overrides, datetime.now(UTC)):
        loc: Loc = ("overrides", i, "expires_at")
        pointer = locate(loc) if locate is not None else pointer_for(loc)
        detail = (
            f"must be in the future: {after.overrides[i].expires_at.isoformat()} has passed, "
            "so the override would never apply"
        )
        errors.append((pointer or "#", detail))
    if errors:
        raise invalid(errors)


def validate_edit(
    current: ConfigState, document: Document, locate: Locator | None = None
) -> tuple[GatewayConfig, Document]:
    """The config of an edited copy of `current.document`, and its canonical document.

    Only the entries that changed are validated (`model.delta.revalidate`); when that
    path can't vouch for the result, the whole document is validated by
    `validate_document`, whose 422 names every problem.
    """
    done = revalidate(current.config, current.document, document)
    if done is not None:
        return done
    config = validate_document(document, locate)
    return config, config.canonical()


def validate_document(document: Any, locate: Locator | None = None) -> GatewayConfig:
    """A `GatewayConfig` from a document, or a 422 problem with one pointer per issue.

    `locate` turns an issue's location in the config into a pointer relative to the
    request body; issues elsewhere get the pointer `#` and their config location in
    the detail text.
    """
    try:
        return load_config_data(document, source="request")
    except ConfigError as exc:
        errors = []
        for issue in exc.errors:
            pointer = locate(issue.loc) if locate is not None else issue.pointer
            if pointer is None:
                where = issue.location or "(document)"
                errors.append(("#", f"{where}: {issue.message}"))
            else:
                errors.append((pointer, issue.message))
        raise invalid(errors) from None


class RequestConfig(ConfigEditor):
    """One request's view of an editor (e.g. one GraphQL document): the first `state()`
    reads the store and the rest of the request sees that same state, so every field
    that reads the config costs no statement and all of them see one version. Every
    change goes through the shared editor (its lock, its retries) and drops the kept
    state, so a read after a write in the same request sees the write."""

    def __init__(self, editor: ConfigEditor) -> None:
        # Not ConfigEditor.__init__: nothing of its own to lock or cache.
        self._editor = editor
        self.repository = editor.repository
        self.max_attempts = editor.max_attempts
        self._kept: ConfigState | None = None
        # Fields resolve concurrently: the first read is shared, not repeated.
        self._reading = asyncio.Lock()

    async def state(self) -> ConfigState:
        if self._kept is None:
            async with self._reading:
                if self._kept is None:
                    self._kept = await self._editor.state()
        return self._kept

    async def mutate(self, plan: Callable[[ConfigState], Edit[T]], *, author: str) -> Applied[T]:
        self._kept = None
        try:
            return await self._editor.mutate(plan, author=author)
        finally:
            self._kept = None

    async def pinned(self, work: Callable[[ConfigState], Awaitable[T]]) -> T:
        self._kept = None
        try:
            return await self._editor.pinned(work)
        finally:
            self._kept = None

    async def rollback(
        self,
        to_version: int,
        *,
        author: str,
        precondition: Callable[[ConfigState], None] | None = None,
        on_write: Callable[[ConfigState], OnWrite | None] | None = None,
    ) -> ConfigVersion:
        self._kept = None
        try:
            return await self._editor.rollback(
                to_version, author=author, precondition=precondition, on_write=on_write
            )
        finally:
            self._kept = None
