"""What the faces of one control plane (REST, GraphQL) share between requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.audit import AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.settings import Settings

if TYPE_CHECKING:
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
