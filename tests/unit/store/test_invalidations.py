"""The invalidation feed hands each subscriber the kinds it asked for, in feed order."""

from __future__ import annotations

from datetime import UTC, datetime

from portcullis.store.invalidations import (
    Invalidation,
    InvalidationFeed,
    InvalidationKind,
    InvalidationPoller,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)


class ListFeed(InvalidationFeed):
    """The feed over a list instead of the store."""

    def __init__(self, items: list[tuple[InvalidationKind, str]]) -> None:
        self.items = [Invalidation(i + 1, k, s, AT) for i, (k, s) in enumerate(items)]

    async def latest(self) -> int:
        return len(self.items)

    async def since(self, seq: int, limit: int = 10_000) -> list[Invalidation]:
        return self.items[seq : seq + limit]


async def test_subscribers_get_only_their_kinds_and_all_kinds_when_unfiltered() -> None:
    feed = ListFeed(
        [
            (InvalidationKind.KEY, "h1"),
            (InvalidationKind.CACHE_PURGE, "route:a"),
            (InvalidationKind.TOKEN, "jti"),
            (InvalidationKind.CACHE_PURGE, "all"),
        ]
    )
    poller = InvalidationPoller(feed)
    cache: list[list[str]] = []
    keys: list[list[str]] = []
    everything: list[list[str]] = []
    poller.subscribe(lambda b: cache.append([e.subject for e in b]), [InvalidationKind.CACHE_PURGE])
    poller.subscribe(lambda b: keys.append([e.subject for e in b]), [InvalidationKind.KEY])
    poller.subscribe(lambda b: everything.append([e.subject for e in b]))
    assert await poller.poll() == 4
    assert cache == [["route:a", "all"]]
    assert keys == [["h1"]]
    assert everything == [["h1", "route:a", "jti", "all"]]


async def test_a_batch_without_a_subscriber_kind_is_not_delivered_to_it() -> None:
    feed = ListFeed([(InvalidationKind.KEY, "h1")])
    poller = InvalidationPoller(feed)
    calls: list[list[Invalidation]] = []
    poller.subscribe(calls.append, [InvalidationKind.CACHE_PURGE])
    assert await poller.poll() == 1
    assert calls == []
    assert poller.position == 1


async def test_prime_starts_at_the_end_of_the_feed() -> None:
    feed = ListFeed([(InvalidationKind.KEY, "old")])
    poller = InvalidationPoller(feed)
    seen: list[list[Invalidation]] = []
    poller.subscribe(seen.append)
    await poller.prime()
    assert await poller.poll() == 0
    feed.items.append(Invalidation(2, InvalidationKind.KEY, "new", AT))
    assert await poller.poll() == 1
    assert [[e.subject for e in b] for b in seen] == [["new"]]
