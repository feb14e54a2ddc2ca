"""Saving an entity form through the same service the REST API calls, and the merge
view when someone else changed the entity first.

`save_entity` validates the document with the kind's model exactly as the REST
endpoint's body parsing does (same pointers, same messages: `body_errors`) and then
calls `EntityService.create`/`replace` with the page's `Operation` and the form's
ETag as If-Match. Whatever the service refuses comes back as an `Outcome` holding
the problem's pointer errors, which `forms.attach_errors` puts on the fields.

A 412 is never resolved silently: `merge_on_top` lays the three states side by side
(what the form started from, what is stored now, what the form holds) and proposes
"mine on top of theirs": every field the form changed takes the form's value, every
other field keeps the stored one; fields both changed differently are conflicts,
shown as such. The page then offers reload (theirs) or saving the proposal with the
new ETag.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from portcullis.model.plugins.registry import SCHEMAS
from portcullis.model.secrets import REDACTED, redact, schema_of
from portcullis.services.config import ConfigService
from portcullis.services.context import Operation
from portcullis.services.entities import Entity, EntityService
from portcullis.services.entity_kinds import PLUGINS, Kind, entry_of
from portcullis.services.errors import (
    PRECONDITION_FAILED,
    ServiceError,
    invalid,
    pointer_for,
    strip_value_error,
)
from portcullis.web.dashboard.forms import ABSENT


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a save did: the entity saved, or the problem (status, detail, pointer errors)."""

    entity: Entity | None = None
    status: int = 200
    title: str = ""
    detail: str | None = None
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.entity is not None

    @property
    def conflict(self) -> bool:
        return self.status == PRECONDITION_FAILED.status


def body_errors(kind: Kind, document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the REST API answers for `document` as the request body of this kind
    (`admin/problems.py`'s request-validation handler): (pointer, detail) pairs."""
    return model_errors(kind.model, document)


def model_errors(model: type[BaseModel], document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What the REST API answers for `document` as a request body of `model`."""
    try:
        model.model_validate(dict(document))
    except ValidationError as exc:
        return [
            (pointer_for(tuple(e.get("loc", ()))), strip_value_error(str(e.get("msg", "invalid"))))
            for e in exc.errors()
        ]
    return []


def _body(kind: Kind, document: Mapping[str, Any]) -> dict[str, Any]:
    """The document as the REST endpoint hands it to the service (its model's JSON dump)."""
    errors = body_errors(kind, document)
    if errors:
        raise invalid(errors)
    body: dict[str, Any] = kind.model.model_validate(dict(document)).model_dump(mode="json")
    return body


async def save_entity(
    service: EntityService,
    op: Operation,
    document: Mapping[str, Any],
    *,
    entity_id: str | None = None,
    if_match: str | None = None,
) -> Outcome:
    """Create (no `entity_id`) or replace the entity as `PUT` would, with If-Match."""
    try:
        body = _body(service.kind, document)
        if entity_id is None:
            entity = await service.create(op, body)
        else:
            entity = await service.replace(op, entity_id, body, if_match=if_match)
    except ServiceError as exc:
        return refused(exc)
    return Outcome(entity, 201 if entity_id is None else 200)


async def delete_entity(
    service: EntityService, op: Operation, entity_id: str, *, if_match: str | None
) -> Outcome:
    try:
        await service.delete(op, entity_id, if_match=if_match)
    except ServiceError as exc:
        return refused(exc)
    return Outcome(None, 204)


def refused(exc: ServiceError) -> Outcome:
    """A service refusal as an outcome a page shows."""
    return Outcome(
        None,
        exc.kind.status,
        exc.kind.title,
        exc.detail,
        tuple((e.pointer, e.detail) for e in exc.errors),
    )


# --- the merge view -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MergeRow:
    """One field that differs between what is stored and what the form holds.

    Values are as shown (secrets redacted); `ABSENT` where a side has no value.
    """

    path: str
    base: Any
    theirs: Any
    mine: Any
    result: Any
    conflict: bool


@dataclass(frozen=True, slots=True)
class Merge:
    """Mine on top of theirs: the proposed document, and the rows that explain it."""

    result: dict[str, Any]
    rows: tuple[MergeRow, ...] = field(default_factory=tuple)
    # False: the form's starting point is unknown, every difference counts as a conflict.
    three_way: bool = True

    @property
    def conflicts(self) -> int:
        return sum(1 for r in self.rows if r.conflict)


def _merge(base: Any, mine: Any, theirs: Any) -> Any:
    if mine == base:
        return theirs
    if theirs in (base, mine):
        return mine
    if isinstance(base, dict) and isinstance(mine, dict) and isinstance(theirs, dict):
        out = {}
        for key in [*theirs, *(k for k in mine if k not in theirs)]:
            value = _merge(base.get(key, ABSENT), mine.get(key, ABSENT), theirs.get(key, ABSENT))
            if value is not ABSENT:
                out[key] = value
        return out
    return mine


@dataclass(frozen=True, slots=True)
class _Sides:
    """The three states and the proposal at one path: raw and as shown."""

    base: Any
    mine: Any
    theirs: Any
    result: Any

    def at(self, key: str) -> _Sides:
        return _Sides(*(v.get(key, ABSENT) if isinstance(v, dict) else ABSENT for v in self))

    def __iter__(self) -> Any:
        return iter((self.base, self.mine, self.theirs, self.result))


def _rows(raw: _Sides, shown: _Sides, path: str, three_way: bool) -> list[MergeRow]:
    if raw.mine == raw.theirs:
        return []
    if isinstance(raw.mine, dict) and isinstance(raw.theirs, dict):
        out = []
        for key in [*raw.theirs, *(k for k in raw.mine if k not in raw.theirs)]:
            out += _rows(raw.at(key), shown.at(key), f"{path}/{key}", three_way)
        return out
    conflict = not three_way or (raw.mine != raw.base and raw.theirs != raw.base)
    return [
        MergeRow(
            path or "/",
            shown.base,
            shown.theirs,
            shown.mine,
            shown.result,
            conflict=conflict,
        )
    ]


def merge_on_top(
    kind: Kind, base: Mapping[str, Any] | None, mine: Mapping[str, Any], theirs: Mapping[str, Any]
) -> Merge:
    """The form's changes (`mine` against `base`, the entity when the form was loaded)
    applied on top of the stored entity (`theirs`); without `base`, the form's values
    win wherever they differ, each difference marked as a conflict."""
    three_way = base is not None
    start: Any = _normal(kind, base) if base is not None else ABSENT
    mine, theirs = _normal(kind, mine), _normal(kind, theirs)
    result = _merge(start, mine, theirs) if three_way else mine
    raw = _Sides(start, mine, theirs, result)
    shown = _Sides(*(_shown(kind, d) for d in raw))
    return Merge(result, tuple(_rows(raw, shown, "", three_way)), three_way)


def _normal(kind: Kind, document: Mapping[str, Any]) -> dict[str, Any]:
    """A document with its defaults filled in (a plugin's config by its plugin's model),
    so that a value left out and its default compare equal; as it is when invalid."""
    body = without_id(kind, document)
    try:
        body = kind.model.model_validate(body).model_dump(mode="json")
    except ValidationError:
        return body
    if kind is PLUGINS and body.get("name") in SCHEMAS and isinstance(body.get("config"), dict):
        # Not the plugin model's dump: it would mask SecretStr values (jwt-auth's keys).
        properties = schema_of(SCHEMAS[body["name"]]).get("properties", {})
        defaults = {k: p["default"] for k, p in properties.items() if "default" in p}
        body["config"] = {**defaults, **body["config"]}
    return body


def _shown(kind: Kind, document: Any) -> Any:
    """A document as the merge view may show it: secrets redacted."""
    if not isinstance(document, dict):
        return document
    return redact(document, kind.model)


async def base_of(
    config: ConfigService, op: Operation, kind: Kind, entity_id: str, version: int | None
) -> dict[str, Any] | None:
    """The entity as it was in config `version` (what an edit form was loaded from), or
    None when unknown (no version, the entity not in it, or a caller who may not read
    the version history: organization-limited admins)."""
    if version is None:
        return None
    try:
        stored = await config.version(op, version)
    except ServiceError:
        return None
    entry = entry_of(stored.config.canonical(), kind.collection, entity_id)
    return None if entry is None else _representation(kind, entry, entity_id)


def _representation(kind: Kind, entry: dict[str, Any], entity_id: str) -> dict[str, Any]:
    return {**entry, "id": entity_id} if kind is PLUGINS else entry


def without_id(kind: Kind, representation: Mapping[str, Any]) -> dict[str, Any]:
    """An entity's representation as a body (plugin instances carry a computed `id`)."""
    body = dict(representation)
    if kind is PLUGINS:
        body.pop("id", None)
    return body


def show(value: Any) -> str:
    """A merge value as text."""
    if value is ABSENT:
        return "(absent)"
    if value == REDACTED:
        return "(secret)"
    return json.dumps(value, ensure_ascii=False)
