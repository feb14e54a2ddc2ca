"""What the faces of one control plane (REST, GraphQL) share between requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.audit import AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.entities import EntityCollection
from portcullis.services.entity_kinds import Kind
from portcullis.settings import Settings

if TYPE_CHECKING:
    from portcullis.services.portal import PortalServices
    from portcullis.services.streams.hub import StreamHub
    from portcullis.services.streams.presence import PresenceHub
    from portcullis.services.streams.traffic import LiveTraffic


@dataclass(slots=True)
class AdminState:
    settings: Settings
    engine: AsyncEngine
    editor: ConfigEditor
    audit: AuditLog
    # Peppers credential hashes and encrypts signing keys (shared with the data plane).
    secret: ServerSecret
    # Live event streams (services/streams/hub.py); None until the background jobs run.
    streams: StreamHub | None = None
    # Presence on config entities (services/streams/presence.py); None until the jobs run.
    presence: PresenceHub | None = None
    # Live traffic frames (services/streams/traffic.py); None until the background jobs
    # run, or when live_traffic_enabled is off.
    live_traffic: LiveTraffic | None = None
    # The developer portal's services (services/portal.py); None until the app starts.
    portal: PortalServices | None = None
    # Each kind's collection (ids and sorted views cached per config version): of this
    # store, so never shared between control planes, even in one process.
    _collections: dict[tuple[str, bool], EntityCollection] = field(default_factory=dict)

    def collection(self, kind: Kind, *, nested: bool = False) -> EntityCollection:
        key = (kind.collection, nested)
        found = self._collections.get(key)
        if found is None:
            found = self._collections[key] = EntityCollection(kind, nested=nested)
        return found
