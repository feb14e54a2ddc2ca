"""The one path every admin change to gateway entities takes: read, change, validate, apply.

Services, routes, upstreams, consumers and plugin instances are entries of the
declarative `GatewayConfig`. An admin mutation therefore loads the current config,
builds the changed document, validates the *whole* config (so cross-references
are checked exactly as `portcullis config apply` checks them) and stores it as a
new version through `ConfigRepository.apply`. The data plane polls the version
and picks the change up.

Mutations are serialised by a lock so that a read-modify-write in this process
never loses a concurrent change. Reads are served from a cache keyed by the
current version number, which costs one primary-key read per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from portcullis.admin.problems import validation_problem
from portcullis.model.config import GatewayConfig
from portcullis.model.loader import ConfigError, Loc, load_config_data
from portcullis.store.config_repository import ConfigRepository, ConfigVersion

# Maps the location of a config error to a pointer into the request body (None: not in it).
Locator = Callable[[Loc], str | None]


@dataclass(frozen=True, slots=True)
class ConfigState:
    """The current config and the version it came from (version 0: nothing applied yet)."""

    version: int
    checksum: str | None
    config: GatewayConfig


EMPTY_STATE = ConfigState(0, None, GatewayConfig())


class ConfigEditor:
    """Reads the current config and applies changed documents as new versions."""

    def __init__(self, repository: ConfigRepository) -> None:
        self.repository = repository
        self._lock = asyncio.Lock()
        self._cached = EMPTY_STATE

    async def state(self) -> ConfigState:
        """The current config (cached per version)."""
        version = await self.repository.current_version()
        if version == self._cached.version:
            return self._cached
        current = await self.repository.current()
        if current is None:
            return EMPTY_STATE
        return self._remember(current)

    def _remember(self, version: ConfigVersion) -> ConfigState:
        state = ConfigState(version.version, version.checksum, version.config)
        if state.version >= self._cached.version:
            self._cached = state
        return state

    @asynccontextmanager
    async def editing(self) -> AsyncIterator[ConfigState]:
        """Hold the write lock; yields the config to change (call `apply` inside)."""
        async with self._lock:
            yield await self.state()

    async def apply(
        self,
        document: dict[str, Any],
        *,
        author: str,
        comment: str,
        locate: Locator | None = None,
    ) -> ConfigVersion:
        """Validate `document` as a whole config and store it; 422 problem when invalid."""
        config = validate_document(document, locate)
        stored = await self.repository.apply(config, author=author, comment=comment)
        self._remember(stored)
        return stored

    async def rollback(
        self,
        to_version: int,
        *,
        author: str,
        precondition: Callable[[ConfigState], None] | None = None,
    ) -> ConfigVersion:
        """Restore `to_version` as a new version; `precondition` may veto on the current state."""
        async with self._lock:
            if precondition is not None:
                precondition(await self.state())
            stored = await self.repository.rollback(to_version, author=author)
            self._remember(stored)
            return stored


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
        raise validation_problem(errors) from None
