"""The data plane's view of consumers, compiled once per config snapshot.

Auth plugins resolve a credential to a consumer username; the index turns it into
a `ConsumerInfo` with everything later plugins need (groups for acl, plan for
traffic control) and the header values sent upstream, precomputed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from portcullis.model.config import Consumer, ConsumerStatus


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer as the hot path sees it."""

    username: str
    custom_id: str | None
    organization: str | None
    groups: frozenset[str]
    plan: str | None
    suspended: bool
    tags: frozenset[str]
    # Upstream identity headers, encoded once.
    upstream_headers: tuple[tuple[bytes, bytes], ...]

    @classmethod
    def of(cls, consumer: Consumer) -> ConsumerInfo:
        headers = [
            (b"x-consumer-id", consumer.username.encode()),
            (b"x-consumer-name", consumer.username.encode()),
        ]
        if consumer.custom_id:
            headers.append((b"x-consumer-custom-id", consumer.custom_id.encode("utf-8")))
        if consumer.groups:
            headers.append((b"x-consumer-groups", ", ".join(consumer.groups).encode()))
        return cls(
            username=consumer.username,
            custom_id=consumer.custom_id,
            organization=consumer.organization,
            groups=frozenset(consumer.groups),
            plan=consumer.plan,
            suspended=consumer.status is ConsumerStatus.suspended,
            tags=frozenset(consumer.tags),
            upstream_headers=tuple(headers),
        )


class ConsumerIndex:
    """Consumers by username and by custom id (for JWT claim mapping)."""

    __slots__ = ("by_custom_id", "by_username")

    def __init__(self, consumers: Iterable[Consumer] = ()) -> None:
        self.by_username: dict[str, ConsumerInfo] = {}
        self.by_custom_id: dict[str, ConsumerInfo] = {}
        for c in consumers:
            info = ConsumerInfo.of(c)
            self.by_username[c.username] = info
            if c.custom_id:
                self.by_custom_id[c.custom_id] = info

    def get(self, username: str) -> ConsumerInfo | None:
        return self.by_username.get(username)

    def __len__(self) -> int:
        return len(self.by_username)


EMPTY_CONSUMERS = ConsumerIndex()
