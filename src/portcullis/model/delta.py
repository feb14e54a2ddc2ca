"""Deltas between two canonical config documents, at the granularity of entities.

A canonical document (`GatewayConfig.canonical()`) is a mapping of a few scalar
members (`format_version`) and entity lists (`services`, `routes`, `consumers` …).
The delta of two documents says, per entity list, which one slice of the old list
is replaced by which entries (`splice`: `[start, end, entries]`, found by trimming
the common prefix and suffix), and which other members changed (`set`). An admin
edit changes one entity, so its delta holds that entity and two numbers; an import
that rewrites everything gives a delta as big as the document, and the repository
stores a keyframe instead.

Deltas never alias the documents they are applied to: `apply_delta` copies the
lists it changes and shares the untouched entries, which nobody mutates (canonical
documents are treated as immutable once stored or cached).

`revalidate` is the other half: given a validated config, its canonical document
and a changed copy of that document, it validates only the entries that changed
and reuses the models of the rest, then runs the cross-reference check over the
whole config unless `references_hold` shows the change can't have broken it (fields no
check reads, consumers added or re-planned, checked alone: decision 032). Admin edits
(services/config_editor.py) and data-plane reloads (runtime/watcher.py) both use it, so
a typical edit costs O(change) instead of validating 50,000 consumers again.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from portcullis.model.apis import api_reference_errors
from portcullis.model.config import Consumer, GatewayConfig
from portcullis.model.loader import ENTITY_LISTS
from portcullis.model.plugins.registry import references_of
from portcullis.model.tenancy import reference_errors

Document = dict[str, Any]
Delta = dict[str, Any]


def compute_delta(old: Document, new: Document) -> Delta | None:
    """What turns `old` into `new`; `{}` when they are equal, None when the members differ
    in a way a delta does not describe (a member added or removed: store a keyframe)."""
    if old.keys() != new.keys():
        return None
    splices: dict[str, list[Any]] = {}
    sets: dict[str, Any] = {}
    for key, new_value in new.items():
        old_value = old[key]
        if old_value is new_value:
            continue
        if isinstance(old_value, list) and isinstance(new_value, list):
            splice = splice_of(old_value, new_value)
            if splice is not None:
                splices[key] = splice
        elif not same_json(old_value, new_value):
            sets[key] = new_value
    delta: Delta = {}
    if splices:
        delta["splice"] = splices
    if sets:
        delta["set"] = sets
    return delta


def _identical_prefix(old: Iterable[Any], new: Iterable[Any], limit: int) -> int:
    """How many of the first `limit` entries are the very same objects (scanned in C)."""
    head = list(itertools.islice(map(operator.is_, old, new), limit))
    try:
        return head.index(False)
    except ValueError:
        return len(head)


# Entries compared per list comparison when looking for the first unequal one.
_CHUNK = 512


def _equal_prefix(old: list[Any], new: list[Any], limit: int) -> int:
    """How many of the first `limit` entries are equal (`is` or `==`): chunks compare as
    lists in C, which skips identical entries by pointer; Python looks inside only the
    one chunk that differs."""
    n = 0
    while n < limit:
        end = min(n + _CHUNK, limit)
        if old[n:end] == new[n:end]:
            n = end
            continue
        while old[n] == new[n]:
            n += 1
        return n
    return n


def _equal_suffix(old: list[Any], new: list[Any], limit: int) -> int:
    """`_equal_prefix` from the ends of the lists."""
    lo, ln = len(old), len(new)
    n = 0
    while n < limit:
        size = min(_CHUNK, limit - n)
        if old[lo - n - size : lo - n] == new[ln - n - size : ln - n]:
            n += size
            continue
        while old[lo - 1 - n] == new[ln - 1 - n]:
            n += 1
        return n
    return n


def same_json(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same: `==` says `1 == True == 1.0`, whose JSON
    texts differ (a metadata value edited from `1` to `true` is a change)."""
    if a is b:
        return True
    if a != b:
        return False
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _exact_run(old: list[Any], new: list[Any], run: int, *, from_end: bool = False) -> int:
    """How many of the first (or, `from_end`, last) `run` entries, already `==` one by one,
    are also the same JSON. Identical entries are skipped in C (an edit shares all but a
    few); the others are compared as JSON text, in one `json.dumps` of all of them when
    there are many (a whole document re-read: ~0.2 s for 50,000 consumers, a third of
    one call per entry)."""
    lo, ln = len(old), len(new)
    pairs = (reversed(old), reversed(new)) if from_end else (old, new)
    differ = list(itertools.compress(range(run), map(operator.is_not, *pairs)))

    def at(n: int) -> tuple[Any, Any]:
        return (old[lo - 1 - n], new[ln - 1 - n]) if from_end else (old[n], new[n])

    if len(differ) > _CHUNK:
        both = [at(n) for n in differ]
        if json.dumps([a for a, _ in both], sort_keys=True) == json.dumps(
            [b for _, b in both], sort_keys=True
        ):
            return run
    for n in differ:
        if not same_json(*at(n)):
            return n
    return run


def same_ends(
    old: list[Any], new: list[Any], *, equal: bool, exact: bool = False
) -> tuple[int, int]:
    """(start, tail): the first `start` and the last `tail` entries of `old` and `new`
    match one by one: with `equal` by `is` or `==`, else by identity only; with `exact`
    too, equal entries that are not the same objects must also be the same JSON
    (`same_json`). An edit shares its unchanged entries with the document it came from,
    so each costs a scan in C (plus, with `equal`, `==` of the few entries in the chunk
    where it stops)."""
    limit = min(len(old), len(new))
    if equal:
        start = _equal_prefix(old, new, limit)
        if exact:
            start = _exact_run(old, new, start)
        tail = _equal_suffix(old, new, limit - start)
        if exact:
            tail = _exact_run(old, new, tail, from_end=True)
        return start, tail
    start = _identical_prefix(old, new, limit)
    return start, _identical_prefix(reversed(old), reversed(new), limit - start)


def splice_of(old: list[Any], new: list[Any]) -> list[Any] | None:
    """`[start, end, entries]` such that old[:start] + entries + old[end:] == new (None: equal)."""
    start, tail = same_ends(old, new, equal=True, exact=True)
    if start == len(old) == len(new):
        return None
    return [start, len(old) - tail, new[start : len(new) - tail]]


def changed_slice(old: list[Any], new: list[Any], *, identity: bool = True) -> tuple[int, int, int]:
    """(start, old_end, new_end) such that old[:start] and old[old_end:] are, entry by entry,
    the very same objects as new[:start] and new[new_end:]; with `identity=False` equal
    ones (`==`, which is faster to find but says `1 == True` although their JSON texts
    differ: fine for names and models, not for serialised forms)."""
    start, tail = same_ends(old, new, equal=not identity)
    return start, len(old) - tail, len(new) - tail


def consumers_changed(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[list[Any], list[Any]]:
    """The consumer entries of `after` that stand in place of some of `before`'s:
    (removed, added), the slices between the ends the two lists share by identity.
    Usernames are unique in a valid document, so a username in `removed` but not in
    `added` is gone, and one in `added` but not in `removed` is new: O(change) for an
    edit of a document that shares its unchanged entries."""
    old, new = before.get("consumers", []), after.get("consumers", [])
    if old is new:
        return [], []
    start, old_end, new_end = changed_slice(old, new, identity=False)
    return old[start:old_end], new[start:new_end]


def apply_delta(base: Document, delta: Delta) -> Document:
    """The document `delta` makes of `base` (a new mapping; `base` is left unchanged)."""
    out = dict(base)
    for key, (start, end, entries) in delta.get("splice", {}).items():
        items = list(out[key])
        items[start:end] = entries
        out[key] = items
    out.update(delta.get("set", {}))
    return out


def revalidate(
    config: GatewayConfig, document: Document, changed: Document
) -> tuple[GatewayConfig, Document] | None:
    """The config of `changed` (an edited copy of `config`'s canonical `document`) and
    its canonical document, or None when this path can't vouch for it (an entry that
    does not validate, a broken reference, a member other than an entity list that
    changed): the caller then validates `changed` whole, which reports every problem.

    Lists that are the same object as in `document` keep their models; in a changed
    list only the slice between the common prefix and suffix is validated.
    """
    if changed.keys() != document.keys():
        return None
    fields: dict[str, Any] = {}
    canonical: Document = {}
    changes: list[Change] = []
    for key, value in changed.items():
        old = document[key]
        models = getattr(config, key)
        if value is old:
            fields[key], canonical[key] = models, old
            continue
        if key not in ENTITY_LISTS or not isinstance(old, list) or not isinstance(value, list):
            if value != old:
                return None
            fields[key], canonical[key] = models, old
            continue
        splice = splice_of(old, value)
        if splice is None:
            fields[key], canonical[key] = models, old
            continue
        start, end, entries = splice
        try:
            validated = [ENTITY_LISTS[key].model_validate(e) for e in entries]
        except ValidationError:
            return None
        fields[key] = [*models[:start], *validated, *models[end:]]
        canonical[key] = [*old[:start], *(m.model_dump(mode="json") for m in validated), *old[end:]]
        changes.append(Change(key, start, models[start:end], validated))
    result = GatewayConfig.model_construct(**fields)
    if references_hold(config, result, changes):
        return result, canonical
    try:
        # The pydantic mypy plugin types a model validator as its decorator proxy.
        result._references()  # type: ignore[operator]
    except ValueError:
        return None
    return result, canonical


# ----------------------------------------------------------------- incremental references


@dataclass(frozen=True, slots=True)
class Change:
    """One entity list's change: `removed` (models of the old config from `start` on)
    replaced by `added` (validated models of the new config)."""

    key: str
    start: int
    removed: list[Any]
    added: list[Any]


# Fields no cross-reference check reads (`GatewayConfig._references` and the functions it
# calls): an entity that differs from the one it replaces only in these leaves the check's
# result as it was. A check that starts reading one of them must drop it from here
# (tests/unit/model/test_delta.py compares this path with the full check on random edits).
FREE_FIELDS: dict[str, frozenset[str]] = {
    "consumers": frozenset({"custom_id", "status", "groups", "metadata", "tags", "priority_class"}),
    "routes": frozenset({"tags", "priority_class"}),
    "services": frozenset({"tags"}),
    "upstreams": frozenset({"tags"}),
}


def _projection(key: str, model: Any) -> dict[str, Any]:
    """What the cross-reference check may read of an entity of list `key`."""
    free = FREE_FIELDS.get(key)
    return dict(model) if not free else {k: v for k, v in model if k not in free}


def references_hold(old: GatewayConfig, new: GatewayConfig, changes: list[Change]) -> bool:
    """True when `new` (= `old` with `changes`) is known to pass the cross-reference check
    because `old` did, at a cost proportional to the change; False: run the check.

    Holds when every changed entity keeps what the check reads of it (`FREE_FIELDS`),
    and for consumers also when consumers are added or keep their username and
    organization but change their plan or pinned API versions: the new ones then
    need a unique username, and what they name (plan, APIs and their versions) must
    resolve, checked on those consumers alone. Anything else (a delete, a rename, an
    organization moved, any other kind's change of a read field) runs the whole check.
    `old` must be a config that passed it.
    """
    for change in changes:
        if change.key == "consumers":
            if not _consumers_hold(old, new, change):
                return False
        elif len(change.removed) != len(change.added) or any(
            _projection(change.key, a) != _projection(change.key, b)
            for a, b in zip(change.removed, change.added, strict=True)
        ):
            return False
    return True


def _consumers_hold(old: GatewayConfig, new: GatewayConfig, change: Change) -> bool:
    before = {c.username: c for c in change.removed}
    after: dict[str, Consumer] = {}
    for c in change.added:
        if c.username in after:
            return False
        after[c.username] = c
    for name, was in before.items():
        now = after.get(name)
        if now is None or now.organization != was.organization:
            return False  # removed or moved: what named it may no longer resolve
    named_by_overrides = {o.consumer for o in new.overrides}
    resolve: list[Consumer] = []
    for name, c in after.items():
        was = before.get(name)
        if was is not None and _projection("consumers", was) == _projection("consumers", c):
            continue
        if was is not None and was.plan != c.plan and name in named_by_overrides:
            return False  # the override's limits are checked against the consumer's plan
        resolve.append(c)
    if not resolve:
        return True
    added = {c.username for c in resolve if c.username not in before}
    if added and any(
        c.username in added
        for c in itertools.chain(
            old.consumers[: change.start], old.consumers[change.start + len(change.removed) :]
        )
    ):
        return False  # a duplicate username: the check words the error
    # What these consumers name: their plan and pinned API versions (model/tenancy.py,
    # model/apis.py), checked with nothing else around them.
    alone = GatewayConfig.model_construct(consumers=resolve, plans=new.plans, apis=new.apis)
    if api_reference_errors(new.apis, resolve):
        return False
    return not reference_errors(alone, references_of(alone))
