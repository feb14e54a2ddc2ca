"""The config head row as a lock: writers of config versions and of credentials take it.

Config writes serialise on the head row (`ConfigRepository`). Credentials (API keys,
OAuth clients) are created for a consumer that must exist in the current config,
and removing a consumer retires its credentials in the config write that removes it.
A credential is therefore created under the same lock, pinned to the config version
in which its consumer was found: the two are ordered, so a key can't slip in for a
consumer whose credentials were just retired.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.store.errors import StoreError
from portcullis.store.tables import HEAD_ROW_ID, ConfigHeadRow


class ConfigConflict(StoreError):
    """The head moved away from the version a read-modify-write started from."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(
            f"config version {actual} is current, not {expected}: it changed meanwhile"
        )
        self.expected = expected
        self.actual = actual


async def lock_config_head(conn: AsyncConnection, expected_version: int | None = None) -> int:
    """The current config version (0: none yet), locked against config writes until the
    transaction ends (FOR UPDATE on PostgreSQL; a SQLite write transaction already holds
    the database's write lock). With `expected_version`, `ConfigConflict` unless that
    version is still current."""
    query = select(ConfigHeadRow.version).where(ConfigHeadRow.id == HEAD_ROW_ID).with_for_update()
    version = await conn.scalar(query)
    current = version or 0
    if expected_version is not None and current != expected_version:
        raise ConfigConflict(expected_version, current)
    return current
