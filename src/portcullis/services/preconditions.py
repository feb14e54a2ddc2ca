"""ETags, If-Match preconditions and JSON Merge Patch (RFC 9110 §13, RFC 7396), for every
operation and every face.

If-Match is a compare-and-set: an operation reads the resource (for 404 and its own
checks), but the ETag is compared by the store, inside the transaction that
writes, against the state it locked there (`Precondition` is the `Check` the store
runs; see `portcullis.store.engine`). Config entities get the same from
`ConfigEditor`, which re-runs the plan (and its If-Match) against the version it
writes over.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, Generic, TypeVar, cast

from pydantic import TypeAdapter, ValidationError

from portcullis.services.errors import PRECONDITION_FAILED, ServiceError, errors_from_pydantic
from portcullis.services.errors import invalid as invalid_input

T = TypeVar("T")


def etag_of(value: Any) -> str:
    """A strong ETag for a JSON value: equal documents give equal tags, on every process."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def etag_without(value: dict[str, Any], volatile: Iterable[str]) -> str:
    """The ETag of a representation without its `volatile` members (ones that change
    without anyone editing the resource, like a key's `last_used_at`, or that are shown
    once, like a new secret)."""
    skipped = frozenset(volatile)
    return etag_of({k: v for k, v in value.items() if k not in skipped})


def check_if_match(if_match: str | None, current_etag: str | None) -> None:
    """Refuse (412) unless `If-Match` (when sent) matches the current representation.

    `*` matches any existing representation. Weak tags (`W/"…"`) never match, as
    RFC 9110 requires strong comparison for If-Match.
    """
    if if_match is None:
        return
    tags = [t.strip() for t in if_match.split(",") if t.strip()]
    if current_etag is not None and ("*" in tags or current_etag in tags):
        return
    raise ServiceError(
        PRECONDITION_FAILED,
        "the resource does not exist"
        if current_etag is None
        else f"If-Match {if_match} does not match the current ETag {current_etag}",
    )


class Precondition(Generic[T]):
    """`If-Match` as a `Check` for a store write (`check_if_match` on the locked state).

    `etag` gives the ETag of a state as the resource's representation has it. The
    state last checked is kept in `seen` (None: gone, or not yet checked): what
    the write changed, for the audit record's `before`.
    """

    def __init__(self, if_match: str | None, etag: Callable[[T], str]) -> None:
        self.if_match = if_match
        self.etag = etag
        self.seen: T | None = None

    def __call__(self, current: T | None) -> None:
        self.seen = current
        check_if_match(self.if_match, None if current is None else self.etag(current))


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7396 JSON Merge Patch: objects merge, `null` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@lru_cache(maxsize=512)
def json_adapter(annotation: Any) -> TypeAdapter[Any]:
    """A cached pydantic adapter for `annotation`."""
    return TypeAdapter(annotation)


def validate_strictly(model: type[T], document: Any) -> T:
    """`document` (JSON data) as `model`, validated in pydantic's strict JSON mode (`"5"` is
    not a number); a 422 naming each invalid field otherwise."""
    try:
        value: T = json_adapter(cast(Any, model)).validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        raise invalid_input(errors_from_pydantic(exc.errors())) from None
    return value


def apply_merge_patch(model: type[T], target: Any, patch: Any) -> T:
    """`target` (a JSON document) with `patch` merged in, validated strictly as `model`;
    a 422 when the result is not valid."""
    return validate_strictly(model, merge_patch(target, patch))
