"""The events of a new config version: `config.applied` and one `consumer.created` per
consumer it adds.

`ConfigRepository` records them inside the transaction that stores the version, so
every path that changes the config (a declarative apply, an admin edit, the CLI, a
rollback, `portcullis serve` loading a file) emits them once, and they commit or roll
back with the version. The data holds names and counts, never config values (plugin
configs may hold secrets).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.events.bus import NewEvent, record_events
from portcullis.events.catalogue import EventType
from portcullis.model.delta import consumers_changed
from portcullis.model.diff import count_changes
from portcullis.store.organizations import organization_ids_of


async def record_version_events(
    conn: AsyncConnection,
    *,
    version: int,
    previous_version: int,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any],
    author: str | None,
    comment: str | None,
    source_version: int | None,
    checksum: str,
    now: datetime,
) -> None:
    """Record the events of `version` (its document `after`, replacing `before`)."""
    old = before if before is not None else {}
    changes = {
        kind: {"added": a, "removed": r, "changed": c}
        for kind, (a, r, c) in count_changes(old, after).items()
    }
    applied = NewEvent(
        EventType.CONFIG_APPLIED,
        f"config:{version}",
        {
            "version": version,
            "previous_version": previous_version,
            "author": author,
            "comment": comment,
            "source_version": source_version,
            "checksum": checksum,
            "changes": changes,
        },
    )
    removed, added = consumers_changed(old, after)
    known = {str(c.get("username")) for c in removed}
    created = [c for c in added if str(c.get("username")) not in known]
    organizations = await organization_ids_of(conn, (c.get("organization") for c in created))
    consumers = [
        NewEvent(
            EventType.CONSUMER_CREATED,
            f"consumer:{c['username']}",
            {
                "consumer": c["username"],
                "organization": c.get("organization"),
                "plan": c.get("plan"),
                "status": c.get("status", "active"),
                "tags": list(c.get("tags", [])),
                "config_version": version,
            },
            organization_id=organizations.get(c.get("organization") or ""),
        )
        for c in created
    ]
    await record_events(conn, [applied, *consumers], now=now)
