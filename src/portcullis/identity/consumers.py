"""The data plane's view of consumers, compiled once per config snapshot.

Auth plugins resolve a credential to a consumer username; the index turns it into
a `ConsumerInfo` with everything later plugins need (groups for acl, plan for
traffic control) and the header values sent upstream, precomputed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from portcullis.model.config import Consumer, ConsumerStatus
from portcullis.model.delta import changed_slice


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

    def without_groups(self) -> ConsumerInfo:
        """This consumer as a route of another organization sees it: in none of its groups."""
        if not self.groups:
            return self
        headers = tuple(h for h in self.upstream_headers if h[0] != b"x-consumer-groups")
        return replace(self, groups=frozenset(), upstream_headers=headers)

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
    """Consumers by username and by custom id (for JWT claim mapping).

    The index of a whole config holds every consumer; what a route's auth plugins
    look credentials up in is its `view` (see there), built when the snapshot is
    compiled.
    """

    __slots__ = ("_by_organization", "_infos", "_models", "_views", "by_custom_id", "by_username")

    def __init__(self, consumers: Iterable[Consumer] = ()) -> None:
        self.by_username: dict[str, ConsumerInfo] = {}
        self.by_custom_id: dict[str, ConsumerInfo] = {}
        self._by_organization: dict[str | None, list[ConsumerInfo]] = {}
        self._views: dict[tuple[str | None, bool], ConsumerIndex] = {}
        # The consumer models indexed (a whole config's) and their infos, in order: the next
        # snapshot's index reuses the infos of the models it shares (`ConsumerIndex.of`).
        self._models: list[Consumer] = []
        self._infos: list[ConsumerInfo] = []
        self._add(ConsumerInfo.of(c) for c in consumers)

    @classmethod
    def of(cls, consumers: list[Consumer], previous: ConsumerIndex | None = None) -> ConsumerIndex:
        """The index of a config's `consumers`; with the `previous` snapshot's index, the
        infos of the consumer models both share (the very same objects: revalidating an
        edit keeps the models of unchanged entries) are reused, not rebuilt."""
        index = cls()
        if previous is not None and previous._models:
            start, old_end, new_end = changed_slice(previous._models, consumers, identity=False)
            infos = [
                *previous._infos[:start],
                *(ConsumerInfo.of(c) for c in consumers[start:new_end]),
                *previous._infos[old_end:],
            ]
        else:
            infos = [ConsumerInfo.of(c) for c in consumers]
        index._models, index._infos = consumers, infos
        index._add(infos)
        return index

    def _add(self, infos: Iterable[ConsumerInfo], *, shared: bool = False) -> None:
        for info in infos:
            self.by_username[info.username] = info
            # A custom id is the owner's to choose: a shared consumer's never hides an own one.
            if info.custom_id and not (shared and info.custom_id in self.by_custom_id):
                self.by_custom_id[info.custom_id] = info
            self._by_organization.setdefault(info.organization, []).append(info)

    def get(self, username: str) -> ConsumerInfo | None:
        return self.by_username.get(username)

    def view(self, organization: str | None, shared: bool = False) -> ConsumerIndex:
        """The consumers a route of `organization` accepts credentials of.

        Its own organization's (the operator's routes: consumers without one). With
        `shared` (the route's `shared_consumers`) also those its owner trusts without
        owning them: on a tenant's route the operator's consumers, on the operator's
        routes every organization's. Group names belong to their organization, so a
        consumer accepted through sharing is in none of the route's groups: it shows
        no groups there (to acl, and upstream in X-Consumer-Groups). Memoised: one
        view per (organization, shared) per snapshot.
        """
        key = (organization, shared)
        found = self._views.get(key)
        if found is not None:
            return found
        view = ConsumerIndex()
        view._add(self._by_organization.get(organization, ()))
        if shared:
            for org, infos in self._by_organization.items():
                if org != organization and (organization is None or org is None):
                    view._add((info.without_groups() for info in infos), shared=True)
        self._views[key] = view
        return view

    def __len__(self) -> int:
        return len(self.by_username)


EMPTY_CONSUMERS = ConsumerIndex()
