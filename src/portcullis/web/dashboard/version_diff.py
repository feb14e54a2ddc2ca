"""A side-by-side view of two config versions: per entity kind, the entities added,
removed and changed, each changed one as aligned lines of its JSON (old left, new right).

Entities are matched by their admin API id (`services.entity_kinds`: every kind the
API manages, plans and boosts included), so a moved entry is no change and a renamed
one is a removal and an addition, as the REST diff reports them. Secret values are
redacted on both sides (`model.secrets.redact`, plugin configs by their own schema);
an entity whose only change is a secret says so instead of showing equal lines.
Unchanged stretches longer than `context` lines around a change fold into one row.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from portcullis.model.config import GatewayConfig
from portcullis.model.secrets import redact
from portcullis.services.entity_kinds import KINDS

RowKind = Literal["same", "changed", "removed", "added", "fold"]


@dataclass(frozen=True, slots=True)
class DiffRow:
    """One row of the side-by-side view: a line on each side (None: nothing there).

    `fold` rows stand for `folded` unchanged lines left out.
    """

    kind: RowKind
    left: str | None = None
    right: str | None = None
    left_no: int | None = None
    right_no: int | None = None
    folded: int = 0


@dataclass(frozen=True, slots=True)
class EntityDiff:
    collection: str
    id: str
    status: Literal["added", "removed", "changed"]
    rows: tuple[DiffRow, ...]
    # The entity changed only in values the view redacts.
    secret_only: bool = False


@dataclass(frozen=True, slots=True)
class KindSection:
    collection: str
    title: str
    entities: tuple[EntityDiff, ...]
    reordered: bool = False

    @property
    def counts(self) -> dict[str, int]:
        out = {"added": 0, "removed": 0, "changed": 0}
        for e in self.entities:
            out[e.status] += 1
        return out


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """The whole view: the two versions compared and one section per kind that differs."""

    old_version: int
    new_version: int
    sections: tuple[KindSection, ...] = field(default_factory=tuple)

    @property
    def empty(self) -> bool:
        return not self.sections

    @property
    def summary(self) -> str:
        if self.empty:
            return "no changes"
        totals = {"added": 0, "removed": 0, "changed": 0}
        for s in self.sections:
            for k, n in s.counts.items():
                totals[k] += n
        text = ", ".join(f"{n} {k}" for k, n in totals.items())
        reordered = [s.collection for s in self.sections if s.reordered]
        return text + ("; order changed in " + ", ".join(reordered) if reordered else "")


def _lines(entry: Any) -> list[str]:
    if entry is None:
        return []
    return json.dumps(entry, indent=2, ensure_ascii=False).splitlines()


def side_by_side(old: list[str], new: list[str], *, context: int = 3) -> list[DiffRow]:
    """Aligned rows of two line lists (a replaced block pairs its lines up; the longer
    side's rest are removals or additions), unchanged runs folded beyond `context`."""
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            same = [
                DiffRow("same", old[i], new[j], i + 1, j + 1)
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True)
            ]
            rows.extend(_fold(same, context, first=i1 == 0, last=i2 == len(old)))
            continue
        left = list(range(i1, i2))
        right = list(range(j1, j2))
        for n in range(max(len(left), len(right))):
            i = left[n] if n < len(left) else None
            j = right[n] if n < len(right) else None
            kind: RowKind = (
                "changed"
                if i is not None and j is not None
                else ("removed" if i is not None else "added")
            )
            rows.append(
                DiffRow(
                    kind,
                    None if i is None else old[i],
                    None if j is None else new[j],
                    None if i is None else i + 1,
                    None if j is None else j + 1,
                )
            )
    return rows


def _fold(same: list[DiffRow], context: int, *, first: bool, last: bool) -> list[DiffRow]:
    """Keep `context` unchanged lines next to each change, fold the middle."""
    keep_head = 0 if first else context
    keep_tail = 0 if last else context
    if len(same) <= keep_head + keep_tail + 1:
        return same
    folded = len(same) - keep_head - keep_tail
    middle = DiffRow("fold", folded=folded)
    return [*same[:keep_head], middle, *same[len(same) - keep_tail :]]


def _redacted(document: Mapping[str, Any]) -> dict[str, Any]:
    shown: dict[str, Any] = redact(dict(document), GatewayConfig)
    return shown


def version_diff(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    old_version: int,
    new_version: int,
    context: int = 3,
) -> VersionDiff:
    """The side-by-side view of two config documents (canonical JSON of two versions)."""
    old_shown, new_shown = _redacted(old), _redacted(new)
    sections = []
    for kind in KINDS:
        before: list[dict[str, Any]] = list(old.get(kind.collection) or [])
        after: list[dict[str, Any]] = list(new.get(kind.collection) or [])
        if before == after:
            continue
        before_ids, after_ids = kind.ids_of(before), kind.ids_of(after)
        shown_before = dict(zip(before_ids, old_shown.get(kind.collection) or [], strict=True))
        shown_after = dict(zip(after_ids, new_shown.get(kind.collection) or [], strict=True))
        raw_before = dict(zip(before_ids, before, strict=True))
        raw_after = dict(zip(after_ids, after, strict=True))
        entities: list[EntityDiff] = []
        for entity_id in after_ids:
            if entity_id not in raw_before:
                rows = side_by_side([], _lines(shown_after[entity_id]), context=context)
                entities.append(EntityDiff(kind.collection, entity_id, "added", tuple(rows)))
            elif raw_before[entity_id] != raw_after[entity_id]:
                left = _lines(shown_before[entity_id])
                right = _lines(shown_after[entity_id])
                rows = side_by_side(left, right, context=context)
                entities.append(
                    EntityDiff(
                        kind.collection,
                        entity_id,
                        "changed",
                        tuple(rows),
                        secret_only=left == right,
                    )
                )
        for entity_id in before_ids:
            if entity_id not in raw_after:
                rows = side_by_side(_lines(shown_before[entity_id]), [], context=context)
                entities.append(EntityDiff(kind.collection, entity_id, "removed", tuple(rows)))
        common_before = [i for i in before_ids if i in raw_after]
        common_after = [i for i in after_ids if i in raw_before]
        reordered = common_before != common_after
        if entities or reordered:
            sections.append(KindSection(kind.collection, kind.title, tuple(entities), reordered))
    return VersionDiff(old_version, new_version, tuple(sections))
