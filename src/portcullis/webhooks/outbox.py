"""The transactional outbox, as the delivery side sees it.

The outbox itself lives beside the event log (`portcullis.events.outbox`): recording
an event writes its messages, and the event package must not import this one.
"""

from __future__ import annotations

from portcullis.events.outbox import PENDING, TEST_KIND, Subscription, enqueue, payload

__all__ = ["PENDING", "TEST_KIND", "Subscription", "enqueue", "payload"]
