"""Gateway entities (services, upstreams, targets, routes, consumers, plugin instances,
plans, boosts, overrides): list, get, create, replace, patch, delete.

Entities are entries of the declarative config, so every change goes through
`ConfigEditor`: a plan computes the new document from the current one and re-runs
on the fresh config when another writer got in first; the whole config is
validated exactly as `portcullis config apply` validates it; the audit event is
written in the config change's own transaction. Every kind follows the same
rules: keyset pagination with filters on scalar fields and tags, an ETag on every
representation, If-Match on replace, patch and delete, JSON Merge Patch, 409
naming dependents on delete, and the organization rules of services/scoping.py.

`EntityCollection` is one kind's collection with its per-config-version caches
(ids, sorted views); it lives as long as the face that serves it. `EntityService`
is the operations on it for one store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.key_repository import KeyNotFound, KeyRepository
from portcullis.identity.secrets import ServerSecret
from portcullis.model.config import GatewayConfig
from portcullis.model.delta import changed_slice, same_json
from portcullis.model.loader import Loc
from portcullis.services.config_editor import ConfigEditor, ConfigState, Edit
from portcullis.services.context import Operation
from portcullis.services.entity_kinds import (
    BOOSTS,
    CERTIFICATES,
    CONSUMERS,
    KIND_BY_COLLECTION,
    OVERRIDES,
    PLUGINS,
    UPSTREAMS,
    Kind,
    entry_of,
)
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    ServiceError,
    invalid,
    pointer_for,
)
from portcullis.services.pagination import (
    Page,
    SortedIndex,
    SortKey,
    has_tags,
    parse_sort,
    split_csv,
)
from portcullis.services.preconditions import apply_merge_patch, check_if_match, etag_of
from portcullis.services.scoping import OrgScope
from portcullis.store.sealing import seal_key

# Sorted views kept per collection (one per sort order and upstream in use).
_MAX_INDEXES = 16
# A new version's sorted view is derived from the last one's up to this many entries
# moved out and in; a bigger change sorts again.
_MAX_INDEX_CHANGES = 1000
# Sorted views are cached by (upstream, sort keys).
_IndexKey = tuple[str | None, tuple[SortKey, ...]]


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity as the API shows it: its id and its representation (the config entry;
    plugin instances also carry their computed `id`)."""

    id: str
    representation: dict[str, Any]

    @property
    def etag(self) -> str:
        return etag_of(self.representation)


@dataclass(frozen=True, slots=True)
class EntityQuery:
    """A list request: page size, cursor, sort (`-field,field`), tags (comma-separated,
    items having all) and exact-match filters on the kind's filter fields."""

    limit: int
    cursor: str | None = None
    sort: str | None = None
    tags: str | None = None
    filters: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class _Step:
    """What one mutation did: the entity, its state before and after (None: absent), and
    where the new state sits in its collection (for error pointers)."""

    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    index: int | None


@dataclass(frozen=True, slots=True)
class _Located:
    """An entity collection inside a config document, and where it sits in it."""

    documents: list[dict[str, Any]]
    ids: list[str]
    loc: Loc
    # Index of each id in `ids` (the first, should one repeat).
    positions: dict[str, int]


@dataclass(frozen=True, slots=True)
class _IdCache:
    """Ids (and their positions) of one kind's collection, cached on a router per version."""

    kind: Kind

    def get(
        self, router: EntityCollection, version: int, upstream: str, docs: list[dict[str, Any]]
    ) -> tuple[list[str], dict[str, int]]:
        if router.id_cache_version != version:
            # The last version's ids stay at hand: the next version's are derived from them.
            router.id_cache_previous = router.id_cache
            router.id_cache = {}
            router.id_cache_version = version
        key = f"{self.kind.collection}:{upstream}"
        found = router.id_cache.get(key)
        if found is None:
            before = router.id_cache_previous.get(key)
            found = self._derive(before, docs) if before is not None else None
            if found is None:
                found = (docs, *_with_positions(self.kind.ids_of(docs)))
            router.id_cache[key] = found
        return found[1], found[2]

    def _derive(self, before: _Ids, docs: list[dict[str, Any]]) -> _Ids | None:
        """The ids of `docs` from those of an earlier list sharing most of its entries (an
        edit copies the list and replaces a few): O(change), plus O(n) to renumber positions
        when entries were added or removed. None for plugins, whose ids number repeats."""
        old_docs, ids, positions = before
        if self.kind.collection == "plugins":
            return None
        start, old_end, new_end = changed_slice(old_docs, docs, identity=False)
        changed = self.kind.ids_of(docs[start:new_end])
        if changed == ids[start:old_end]:
            return (docs, ids, positions)
        new_ids = [*ids[:start], *changed, *ids[old_end:]]
        return (docs, *_with_positions(new_ids))


# A collection's documents, their ids and the index of each id (the first, should one repeat).
_Ids = tuple[list[dict[str, Any]], list[str], dict[str, int]]


def _with_positions(ids: list[str]) -> tuple[list[str], dict[str, int]]:
    positions: dict[str, int] = {}
    for i, entity_id in enumerate(ids):
        positions.setdefault(entity_id, i)
    return ids, positions


UPSTREAM_IDS = _IdCache(UPSTREAMS)


class EntityCollection:
    """One kind's collection (optionally nested under an upstream, for targets), with
    its ids and sorted views cached per config version."""

    def __init__(self, kind: Kind, *, nested: bool = False) -> None:
        self.kind = kind
        self.nested = nested
        # Sorted views of the current version's collection, by (upstream, sort keys).
        self._indexes: dict[_IndexKey, tuple[list[dict[str, Any]], SortedIndex]] = {}
        self._previous_indexes: dict[_IndexKey, tuple[list[dict[str, Any]], SortedIndex]] = {}
        self._indexes_version = -1
        # Ids of the current version's collections (by upstream for targets).
        self.id_cache: dict[str, _Ids] = {}
        self.id_cache_previous: dict[str, _Ids] = {}
        self.id_cache_version = -1

    def locate(
        self,
        document: dict[str, Any],
        upstream: str | None,
        scope: OrgScope,
        *,
        version: int,
        writable: bool = False,
    ) -> _Located:
        """The collection this router serves inside `document`, the canonical document of
        config `version` (404 for an unknown upstream, or one outside the caller's
        organization). Ids are computed once per version.

        With `writable`, `document` is a shallow copy of a shared canonical document:
        the lists (and, for targets, the upstream entry) on the way to the collection
        are copied into it first, so changing the collection changes nothing shared.
        """
        # Ids are computed on (and cached with) the shared list, before any copy: the
        # next version's are derived from it, so it must not be one a plan changes.
        if not self.nested:
            docs: list[dict[str, Any]] = document[self.kind.collection]
            ids, positions = self._ids(version, None, docs)
            if writable:
                docs = document[self.kind.collection] = list(docs)
            return _Located(docs, ids, (self.kind.collection,), positions)
        ups = document["upstreams"]
        _, upstream_positions = UPSTREAM_IDS.get(self, version, "", ups)
        i = upstream_positions.get(upstream) if upstream is not None else None
        if i is None or not scope.sees(ups[i]):
            raise ServiceError(NOT_FOUND, f"upstream {upstream!r} does not exist")
        ids, positions = self._ids(version, upstream, ups[i]["targets"])
        if writable:
            ups = document["upstreams"] = list(ups)
            ups[i] = {**ups[i], "targets": list(ups[i]["targets"])}
        docs = ups[i]["targets"]
        return _Located(docs, ids, ("upstreams", i, "targets"), positions)

    def _ids(
        self, version: int, upstream: str | None, docs: list[dict[str, Any]]
    ) -> tuple[list[str], dict[str, int]]:
        return _IdCache(self.kind).get(self, version, upstream or "", docs)

    def sorted(
        self, current: ConfigState, upstream: str | None, scope: OrgScope, keys: tuple[SortKey, ...]
    ) -> SortedIndex:
        """The collection in `keys` order, built once per config version (and upstream)."""
        located = self.locate(current.document, upstream, scope, version=current.version)
        cache_key = (upstream, keys)
        if self._indexes_version != current.version:
            # The last version's indexes stay at hand: the next version's are derived.
            self._previous_indexes = self._indexes
            self._indexes = {}
            self._indexes_version = current.version
        found = self._indexes.get(cache_key)
        if found is None:
            before = self._previous_indexes.get(cache_key)
            index = self._derive_index(before, located.documents) if before else None
            if index is None:
                items = [
                    self.represent(doc, entity_id)
                    for doc, entity_id in zip(located.documents, located.ids, strict=True)
                ]
                index = SortedIndex(items, self.identity, keys)
            if len(self._indexes) >= _MAX_INDEXES:
                self._indexes.pop(next(iter(self._indexes)))
            found = self._indexes[cache_key] = (located.documents, index)
        return found[1]

    def _derive_index(
        self, before: tuple[list[dict[str, Any]], SortedIndex], docs: list[dict[str, Any]]
    ) -> SortedIndex | None:
        """The sorted view of `docs` from that of an earlier list sharing most entries: the
        entries between the equal ends move out and in (not for plugins, whose ids are
        made per list, nor for a change too big to be worth it)."""
        old_docs, index = before
        if self.kind is PLUGINS:
            return None
        start, old_end, new_end = changed_slice(old_docs, docs, identity=False)
        if (old_end - start) + (new_end - start) > _MAX_INDEX_CHANGES:
            return None
        return index.changed(old_docs[start:old_end], docs[start:new_end])

    def identity(self, item: dict[str, Any]) -> str:
        if self.kind is PLUGINS:
            return str(item["id"])
        return str(item[self.kind.identity_fields[0]])

    def represent(self, document: dict[str, Any], entity_id: str) -> dict[str, Any]:
        if self.kind is CERTIFICATES and isinstance(document.get("key"), str):
            # Shown as stored: sealed with the deployment secret (store/sealing.py).
            return {**document, "key": seal_key(document["key"])}
        return {**document, "id": entity_id} if self.kind is PLUGINS else document

    def find(self, located: _Located, entity_id: str, scope: OrgScope) -> int:
        """The entity's index; 404 when missing or outside the caller's organization."""
        index = located.positions.get(entity_id)
        if index is not None and (self.nested or scope.sees(located.documents[index])):
            return index
        raise ServiceError(NOT_FOUND, f"{self.kind.singular} {entity_id!r} does not exist")

    def existing(
        self, located: _Located, entity_id: str, scope: OrgScope, if_match: str | None
    ) -> tuple[int, dict[str, Any]]:
        """The entity to change (index and document): 404 if invisible, 412 if If-Match fails."""
        index = self.find(located, entity_id, scope)
        old = located.documents[index]
        check_if_match(if_match, etag_of(self.represent(old, entity_id)))
        return index, old

    def locator(self, loc: Loc, index: int) -> Callable[[Loc], str | None]:
        prefix = (*loc, index)

        def locate(issue_loc: Loc) -> str | None:
            if issue_loc[: len(prefix)] == prefix:
                return pointer_for(issue_loc[len(prefix) :])
            return None

        return locate

    def name_taken(self, entity_id: str, scope: OrgScope) -> ServiceError:
        """409 for a create whose name is in use.

        Entity names are one namespace for the whole gateway (routes, plugins, keys and
        the data plane refer to entities by name), so a name another organization holds
        can't be given twice. An organization-limited caller gets the same answer
        whether the holder is theirs or not, naming no organization and saying nothing
        of the holder, so the answer tells them only what any create would: the name is
        not free.
        """
        field = self.kind.identity_fields[0]
        what = self.kind.singular
        if scope.limited:
            detail = (
                f"the {what} name {entity_id!r} is not available (names are unique across "
                "the gateway, not per organization); choose another"
            )
        else:
            detail = f"{what} {entity_id!r} already exists"
        return ServiceError(
            ALREADY_EXISTS, detail, errors=[{"pointer": f"#/{field}", "detail": "already in use"}]
        )

    def check_identity(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """PUT/PATCH may not change the fields that make up the id."""
        wrong = [
            (f"#/{f}", f"{f} is part of the {self.kind.singular}'s id and cannot change")
            for f in self.kind.identity_fields
            if new.get(f) != old.get(f)
        ]
        if wrong:
            raise invalid(wrong)

    def claim(
        self,
        scope: OrgScope,
        document: dict[str, Any],
        old: dict[str, Any] | None,
        new: dict[str, Any],
    ) -> dict[str, Any]:
        """Enforce the caller's organization on a new or changed entity (see services/scoping.py).

        An organization-limited caller's entity belongs to their organization (filled
        in when left out, 403 for another) and may refer only to entities of it.
        """
        if not self.kind.scoped or scope.organization is None:
            return new
        org = new.get("organization")
        if org is None:
            new = {**new, "organization": scope.organization}
        elif org != scope.organization:
            raise ServiceError(
                FORBIDDEN,
                f"you can only manage {self.kind.collection} of your organization "
                f"{scope.organization!r}, not {org!r}",
                errors=[{"pointer": "#/organization", "detail": "not your organization"}],
            )
        if self.kind is PLUGINS and new.get("service") is None and new.get("route") is None:
            raise ServiceError(
                FORBIDDEN,
                "a global plugin applies to every organization's traffic; scope it to one of "
                f"your services or routes (organization {scope.organization!r})",
                errors=[{"pointer": "#/route", "detail": "required for your organization"}],
            )
        wrong = self._traffic_problems(scope, document, old, new)
        for field, collection in self.kind.references:
            target = new.get(field)
            if target is None or (old is not None and old.get(field) == target):
                continue
            field_name = KIND_BY_COLLECTION[collection].identity_fields[0]
            if target not in scope.visible_names(document[collection], field_name):
                wrong.append(
                    (
                        f"#/{field}",
                        f"unknown {KIND_BY_COLLECTION[collection].singular} {target!r} "
                        f"in organization {scope.organization!r}",
                    )
                )
        if wrong:
            raise invalid(wrong)
        return new

    def _traffic_problems(
        self,
        scope: OrgScope,
        document: dict[str, Any],
        old: dict[str, Any] | None,
        new: dict[str, Any],
    ) -> list[tuple[str, str]]:
        """An organization-limited caller's boosts, overrides and plan choices stay inside
        their organization (see services/scoping.py): 403 for a boost of everyone or of a
        tag, (pointer, detail) problems for references to what they can't see."""
        org = scope.organization
        wrong: list[tuple[str, str]] = []
        if self.kind is BOOSTS:
            target = new.get("target") or {}
            if target.get("everyone") or target.get("tag") is not None:
                which = "everyone" if target.get("everyone") else "tag"
                raise ServiceError(
                    FORBIDDEN,
                    "a boost of everyone or of a consumer tag raises every organization's "
                    f"limits (tags are shared); target one of your consumers or routes "
                    f"(organization {org!r})",
                    errors=[
                        {"pointer": f"#/target/{which}", "detail": "not for your organization"}
                    ],
                )
            before = (old or {}).get("target") or {}
            for name, collection, field_name in (
                ("consumer", "consumers", "username"),
                ("route", "routes", "name"),
            ):
                value = target.get(name)
                if value is None or before.get(name) == value:
                    continue
                if value not in scope.visible_names(document[collection], field_name):
                    wrong.append(
                        (f"#/target/{name}", f"unknown {name} {value!r} in organization {org!r}")
                    )
        elif self.kind is OVERRIDES:
            key_id = new.get("credential")
            changed = key_id is not None and (old is None or old.get("credential") != key_id)
            if changed and not scope.owns(scope.key_organizations.get(str(key_id))):
                wrong.append(
                    ("#/credential", f"unknown API key {key_id!r} in organization {org!r}")
                )
        elif self.kind is CONSUMERS:
            plan = new.get("plan")
            if plan is not None and (old is None or old.get("plan") != plan):
                offered = {
                    str(p["name"])
                    for p in document["plans"]
                    if p.get("organization") in (None, org)
                }
                if plan not in offered:
                    wrong.append(
                        ("#/plan", f"unknown plan {plan!r} in organization {org!r} (nor shared)")
                    )
        return wrong

    def check_dependents(
        self, config: GatewayConfig, document: dict[str, Any], entity_id: str, scope: OrgScope
    ) -> None:
        """409 naming what refers to the entity (other organizations' entities only counted)."""
        if self.nested:
            return
        dependents = self.kind.dependents(config, entity_id)
        if not dependents:
            return
        shown = [d for d in dependents if scope.sees(entry_of(document, d.kind, d.id) or {})]
        named = ", ".join(f"{d.kind[:-1]} {d.id!r}" for d in shown)
        hidden = len(dependents) - len(shown)
        if hidden:
            named += (", " if named else "") + f"{hidden} entities of other organizations"
        raise ServiceError(
            HAS_DEPENDENTS,
            f"{self.kind.singular} {entity_id!r} is used by {named}; change or delete them first",
            dependents=[{"kind": d.kind, "id": d.id, "field": d.field} for d in shown],
        )


class EntityService:
    """The operations on one kind's collection in the store behind `editor` (`engine` and
    `secret` look up the API keys an override names)."""

    def __init__(
        self,
        collection: EntityCollection,
        editor: ConfigEditor,
        engine: AsyncEngine,
        secret: ServerSecret,
    ) -> None:
        self.collection = collection
        self.kind = collection.kind
        self._editor = editor
        self._engine = engine
        self._secret = secret

    async def list(self, op: Operation, query: EntityQuery, upstream: str | None = None) -> Page:
        """One page of the entities the caller may see, in `query.sort` order."""
        c, kind, scope = self.collection, self.kind, op.scope
        keys = parse_sort(query.sort, kind.sort_fields, kind.sort_fields[0])
        current = await self._editor.state()
        index = c.sorted(current, upstream, scope, keys)
        wanted_tags = split_csv(query.tags)
        wanted = [(f, query.filters[f]) for f in kind.filter_fields if f in query.filters]

        def matches(doc: dict[str, Any]) -> bool:
            if not c.nested and not scope.sees(doc):
                return False
            if wanted_tags and not has_tags(doc, wanted_tags):
                return False
            return all(_text(doc.get(f)) == value for f, value in wanted)

        return index.page(matches, limit=query.limit, cursor=query.cursor)

    async def get(self, op: Operation, entity_id: str, upstream: str | None = None) -> Entity:
        """One entity; not found also when it (or its upstream) is outside the caller's
        organization."""
        c = self.collection
        current = await self._editor.state()
        located = c.locate(current.document, upstream, op.scope, version=current.version)
        index = c.find(located, entity_id, op.scope)
        return Entity(entity_id, c.represent(located.documents[index], entity_id))

    async def create(
        self, op: Operation, given: dict[str, Any], upstream: str | None = None
    ) -> Entity:
        """Add an entity (`given`: its validated JSON document)."""
        c = self.collection

        def step(
            current: ConfigState, document: dict[str, Any], located: _Located, scope: OrgScope
        ) -> _Step:
            new = c.claim(scope, document, None, given)
            base_id = self.kind.base_id(new)
            if base_id in located.positions:
                raise c.name_taken(base_id, scope)
            located.documents.append(new)
            return _Step(base_id, None, new, len(located.documents) - 1)

        done = await self._change(op, "create", 201, step, upstream, given)
        assert done.after is not None
        return Entity(done.entity_id, c.represent(done.after, done.entity_id))

    async def replace(
        self,
        op: Operation,
        entity_id: str,
        given: dict[str, Any],
        *,
        if_match: str | None = None,
        upstream: str | None = None,
    ) -> Entity:
        """Replace an entity with `given` (its id fields can't change)."""
        return await self._update(
            op, entity_id, lambda _old: given, "replace", if_match, upstream, given
        )

    async def patch(
        self,
        op: Operation,
        entity_id: str,
        patch: dict[str, Any],
        *,
        if_match: str | None = None,
        upstream: str | None = None,
    ) -> Entity:
        """Apply a JSON Merge Patch to an entity; the result is validated strictly."""
        model = self.kind.model

        def patched(old: dict[str, Any]) -> dict[str, Any]:
            return apply_merge_patch(model, old, patch).model_dump(mode="json")

        return await self._update(op, entity_id, patched, "update", if_match, upstream, patch)

    async def delete(
        self,
        op: Operation,
        entity_id: str,
        *,
        if_match: str | None = None,
        upstream: str | None = None,
    ) -> None:
        """Remove an entity; 409 naming what still refers to it."""
        c = self.collection

        def step(
            current: ConfigState, document: dict[str, Any], located: _Located, scope: OrgScope
        ) -> _Step:
            index, old = c.existing(located, entity_id, scope, if_match)
            c.check_dependents(current.config, document, entity_id, scope)
            del located.documents[index]
            return _Step(entity_id, old, None, None)

        await self._change(op, "delete", 204, step, upstream, None)

    async def _update(
        self,
        op: Operation,
        entity_id: str,
        produce: Callable[[dict[str, Any]], dict[str, Any]],
        action: str,
        if_match: str | None,
        upstream: str | None,
        given: dict[str, Any],
    ) -> Entity:
        c = self.collection

        def step(
            current: ConfigState, document: dict[str, Any], located: _Located, scope: OrgScope
        ) -> _Step:
            index, old = c.existing(located, entity_id, scope, if_match)
            new = produce(old)
            c.check_identity(old, new)
            new = c.claim(scope, document, old, new)
            located.documents[index] = new
            return _Step(entity_id, old, new, index)

        done = await self._change(op, action, 200, step, upstream, given)
        assert done.after is not None
        return Entity(entity_id, c.represent(done.after, entity_id))

    async def _change(
        self,
        op: Operation,
        action: str,
        status: int,
        step: Callable[[ConfigState, dict[str, Any], _Located, OrgScope], _Step],
        upstream: str | None,
        given: dict[str, Any] | None,
    ) -> _Step:
        """Run one mutation through `ConfigEditor.mutate`, with its audit record.

        `step` edits the config document in place and says what changed; it re-runs
        on the fresh config if another writer got in first.
        """
        c = self.collection
        scope = op.scope
        if self.kind is OVERRIDES and scope.limited:
            scope = await self._with_key_owner(scope, given)

        def plan(current: ConfigState) -> Edit[_Step]:
            document = dict(current.document)
            located = c.locate(document, upstream, scope, version=current.version, writable=True)
            done = step(current, document, located, scope)
            if same_json(done.after, done.before):
                return Edit(None, done)
            return Edit(
                document,
                done,
                comment=f"admin API: {action} {self.kind.singular} {done.entity_id!r}",
                locate=None if done.index is None else c.locator(located.loc, done.index),
                on_write=op.on_config_write(
                    action,
                    self.kind.singular,
                    done.entity_id,
                    before=done.before,
                    after=done.after,
                    status=status,
                    schema=self.kind.model,
                ),
            )

        return (await self._editor.mutate(plan, author=op.actor)).result

    async def _with_key_owner(self, scope: OrgScope, given: dict[str, Any] | None) -> OrgScope:
        """The scope, knowing the organization of the API key an override names (if any)."""
        key_id = given.get("credential") if given is not None else None
        if not isinstance(key_id, str):
            return scope
        try:
            info = await KeyRepository(self._engine, self._secret).get(key_id)
        except KeyNotFound:
            return scope
        return OrgScope(
            scope.organization,
            scope.organization_id,
            key_organizations={key_id: info.organization_id},
        )
