"""Entity-level and field-level differences between two gateway configs.

Entities are matched by identity, not position: services, upstreams and routes by
`name`, consumers by `username`, plugin instances by (plugin name, instance name,
scope). Changed entities list their changed fields as paths
(`timeouts.read`, `targets[1].weight`). A change of order only (which can decide
ties between routes) is reported too, so an empty diff means an apply would store
nothing new.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from rich.markup import escape

from portcullis.model.config import GatewayConfig, PluginInstance
from portcullis.model.delta import same_ends, same_json
from portcullis.model.loader import format_location


class _Missing:
    """Marks a value absent on one side (an added or removed list element)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed value inside an entity; `old`/`new` are JSON values or `MISSING`."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class EntityChange:
    """An entity present on both sides whose fields differ."""

    key: str
    fields: tuple[FieldChange, ...]


@dataclass(frozen=True, slots=True)
class KindDiff:
    """Differences for one kind of entity (`services`, `routes`, ...)."""

    kind: str
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[EntityChange, ...] = ()
    reordered: bool = False

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.reordered)


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """The difference between two configs, one `KindDiff` per entity kind (in schema order)."""

    kinds: tuple[KindDiff, ...] = field(default_factory=tuple)

    @property
    def is_empty(self) -> bool:
        return all(k.is_empty for k in self.kinds)

    def kind(self, name: str) -> KindDiff:
        for k in self.kinds:
            if k.kind == name:
                return k
        raise KeyError(name)

    def summary(self) -> str:
        """`2 added, 1 removed, 3 changed` (or `no changes`)."""
        if self.is_empty:
            return "no changes"
        added = sum(len(k.added) for k in self.kinds)
        removed = sum(len(k.removed) for k in self.kinds)
        changed = sum(len(k.changed) for k in self.kinds)
        parts = [f"{added} added", f"{removed} removed", f"{changed} changed"]
        reordered = [k.kind for k in self.kinds if k.reordered]
        if reordered:
            parts.append("order changed in " + ", ".join(reordered))
        return ", ".join(parts)

    def render(self, *, markup: bool = False, limit: int | None = None) -> str:
        """Human-readable text: `+` added, `-` removed, `~` changed with `path: old → new`.

        With `markup=True` the text carries rich console markup (colours), with
        every value escaped. With `limit`, at most that many entities are listed per
        kind, then how many more there are (a whole-config import of 50,000 consumers
        is not read line by line, and printing it took longer than applying it).
        """

        def style(text: str, colour: str) -> str:
            return f"[{colour}]{escape(text)}[/{colour}]" if markup else text

        def plain(text: str) -> str:
            return escape(text) if markup else text

        if self.is_empty:
            return "no changes"
        lines: list[str] = []
        for k in self.kinds:
            if k.is_empty:
                continue
            lines.append(style(f"{k.kind}:", "bold"))
            total = len(k.added) + len(k.removed) + len(k.changed)
            shown = total if limit is None else min(total, limit)
            added = k.added[:shown]
            removed = k.removed[: shown - len(added)]
            changed = k.changed[: shown - len(added) - len(removed)]
            lines.extend("  " + style(f"+ {key}", "green") for key in added)
            lines.extend("  " + style(f"- {key}", "red") for key in removed)
            for change in changed:
                lines.append("  " + style(f"~ {change.key}", "yellow"))
                for f in change.fields:
                    lines.append(
                        "      "
                        + plain(f"{f.path}: ")
                        + style(_show(f.old), "red")
                        + plain(" → ")
                        + style(_show(f.new), "green")
                    )
            if shown < total:
                lines.append("  " + plain(f"… and {total - shown} more"))
            if k.reordered:
                lines.append("  " + style("order changed", "yellow"))
        return "\n".join(lines)


def _show(value: Any) -> str:
    if value is MISSING:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def plugin_key(plugin: PluginInstance) -> str:
    """Identity of a plugin instance: `name[instance]@scope`, e.g. `rate-limit@route:orders`."""
    scope, target = plugin.scope
    where = "global" if target is None else f"{scope}:{target}"
    instance = f"[{plugin.instance_name}]" if plugin.instance_name else ""
    return f"{plugin.name}{instance}@{where}"


_KINDS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("services", lambda e: e.name),
    ("upstreams", lambda e: e.name),
    ("routes", lambda e: e.name),
    ("consumers", lambda e: e.username),
    ("plugins", plugin_key),
)


def diff_configs(old: GatewayConfig, new: GatewayConfig) -> ConfigDiff:
    """Compare two configs entity by entity (both are assumed valid)."""
    return ConfigDiff(
        tuple(
            _diff_kind(kind, key_of, getattr(old, kind), getattr(new, kind))
            for kind, key_of in _KINDS
        )
    )


def _keyed(entities: list[Any], key_of: Callable[[Any], str]) -> dict[str, Any]:
    """Entities by identity; a repeated identity (allowed for plugins) gets `#2`, `#3`, …"""
    out: dict[str, Any] = {}
    for entity in entities:
        base = key = key_of(entity)
        n = 1
        while key in out:
            n += 1
            key = f"{base}#{n}"
        out[key] = entity
    return out


def _diff_kind(kind: str, key_of: Callable[[Any], str], old: list[Any], new: list[Any]) -> KindDiff:
    before, after = _keyed(old, key_of), _keyed(new, key_of)
    added = tuple(k for k in after if k not in before)
    removed = tuple(k for k in before if k not in after)
    # Models compare like their JSON forms; only the changed ones are dumped, to say how.
    changed = tuple(
        EntityChange(k, tuple(_field_changes(_dumped(before[k]), _dumped(after[k]), ())))
        for k in after
        if k in before and before[k] is not after[k] and before[k] != after[k]
    )
    common_before = [k for k in before if k in after]
    common_after = [k for k in after if k in before]
    return KindDiff(kind, added, removed, changed, reordered=common_before != common_after)


def _dumped(entity: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = entity.model_dump(mode="json")
    return dumped


def _field_changes(old: Any, new: Any, loc: tuple[str | int, ...]) -> Iterator[FieldChange]:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for k in [*old, *(k for k in new if k not in old)]:
            yield from _field_changes(old.get(k, MISSING), new.get(k, MISSING), (*loc, k))
        return
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and any(isinstance(v, dict) for v in (*old, *new))
    ):
        # Lists of objects (targets, …) are compared element by element; lists of
        # scalars (paths, methods, tags) read better as one whole-value change.
        for i in range(max(len(old), len(new))):
            o = old[i] if i < len(old) else MISSING
            n = new[i] if i < len(new) else MISSING
            yield from _field_changes(o, n, (*loc, i))
        return
    yield FieldChange(format_location(loc), old, new)


def _identity(kind: str, entry: Any) -> str:
    if not isinstance(entry, dict):
        return json.dumps(entry, sort_keys=True)
    if kind == "consumers":
        return str(entry.get("username"))
    if kind == "plugins":
        return json.dumps([entry.get(k) for k in ("name", "instance_name", "service", "route")])
    return str(entry.get("name"))


def count_changes(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> dict[str, tuple[int, int, int]]:
    """(added, removed, changed) entities per entity list of two canonical documents, for
    the lists that differ; entities are matched by identity as in `diff_configs`.

    Works on documents (no validation, O(entities)): the config repository counts the
    changes of every version it stores, 50,000 consumers included."""
    counts: dict[str, tuple[int, int, int]] = {}
    for kind in sorted(set(old) | set(new)):
        before, after = old.get(kind, []), new.get(kind, [])
        if before is after or not isinstance(before, list) or not isinstance(after, list):
            continue
        # Entries equal at both ends are unchanged (an edit touches a few in the middle);
        # with unique identities, what changed lies in the middle slices.
        start, tail = same_ends(before, after, equal=True, exact=True)
        keyed_before: dict[str, Any] = {}
        for entry in before[start : len(before) - tail]:
            keyed_before.setdefault(_identity(kind, entry), entry)
        keyed_after: dict[str, Any] = {}
        for entry in after[start : len(after) - tail]:
            keyed_after.setdefault(_identity(kind, entry), entry)
        added = sum(1 for k in keyed_after if k not in keyed_before)
        removed = sum(1 for k in keyed_before if k not in keyed_after)
        changed = sum(
            1
            for k, v in keyed_after.items()
            if k in keyed_before and not same_json(keyed_before[k], v)
        )
        if added or removed or changed:
            counts[kind] = (added, removed, changed)
    return counts
