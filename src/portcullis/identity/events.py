"""Identity's names for the shared invalidation feed (`store/invalidations.py`).

Revoking, suspending or rotating a key, revoking a token, rotating a signing key or
changing an OAuth client appends an invalidation in the same transaction as the
change; every worker's credential caches subscribe to these kinds. The feed itself
is general: the response cache subscribes to its purges the same way.
"""

from __future__ import annotations

from portcullis.store.invalidations import (
    Invalidation,
    InvalidationFeed,
    InvalidationKind,
    InvalidationPoller,
    append_invalidations,
)

EventKind = InvalidationKind
IdentityEvent = Invalidation
IdentityEventFeed = InvalidationFeed
IdentityEventPoller = InvalidationPoller
append_events = append_invalidations

__all__ = [
    "EventKind",
    "IdentityEvent",
    "IdentityEventFeed",
    "IdentityEventPoller",
    "append_events",
]
