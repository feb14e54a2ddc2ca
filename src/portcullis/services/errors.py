"""Why an operation of the control plane was refused, without HTTP.

A `ServiceError` carries a problem kind (a stable `type` slug, a title and the
status a web face answers with), a detail, the input fields it concerns
(`FieldError`: a JSON pointer into the operation's input and a message) and, for
"not found", the argument that named the missing thing (`target`, so the CLI can
name its option). The REST face renders every one as an RFC 9457 problem in one
exception handler (admin/problems.py); the CLI turns it into a `UserError`.

The kinds come from the one registry, `portcullis.problems` (re-exported here for
the operations); a resource family defines its own next to its operations (e.g.
`services.keys.KEY_STATE_CONFLICT`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

# The control plane's generic kinds, from the one registry (portcullis.problems).
from portcullis.problems import ALREADY_EXISTS as ALREADY_EXISTS
from portcullis.problems import FORBIDDEN as FORBIDDEN
from portcullis.problems import HAS_DEPENDENTS as HAS_DEPENDENTS
from portcullis.problems import INVALID_CURSOR as INVALID_CURSOR
from portcullis.problems import NOT_FOUND as NOT_FOUND
from portcullis.problems import PRECONDITION_FAILED as PRECONDITION_FAILED
from portcullis.problems import UNSUPPORTED_MEDIA_TYPE as UNSUPPORTED_MEDIA_TYPE
from portcullis.problems import VALIDATION_FAILED as VALIDATION_FAILED
from portcullis.problems import ProblemKind


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input: where (a JSON pointer fragment, `#/scopes/0`) and what."""

    pointer: str
    detail: str

    @property
    def field(self) -> str | None:
        """The top-level input field the pointer names (None: the whole input)."""
        parts = self.pointer.removeprefix("#").split("/")
        return parts[1].replace("~1", "/").replace("~0", "~") if len(parts) > 1 else None

    def as_json(self) -> dict[str, str]:
        return {"pointer": self.pointer, "detail": self.detail}


class ServiceError(Exception):
    """An operation refused: a problem kind, a detail, the fields it concerns."""

    def __init__(
        self,
        kind: ProblemKind,
        detail: str | None = None,
        *,
        errors: Sequence[FieldError | Mapping[str, str]] = (),
        headers: Mapping[str, str] | None = None,
        target: str | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or kind.title)
        self.kind = kind
        self.detail = detail
        self.errors = tuple(
            e if isinstance(e, FieldError) else FieldError(e["pointer"], e["detail"])
            for e in errors
        )
        self.headers = dict(headers or {})
        self.target = target
        self.extensions = extensions

    @property
    def members(self) -> dict[str, Any]:
        """The problem's extension members (`errors` included when there are any)."""
        if not self.errors:
            return dict(self.extensions)
        return {**self.extensions, "errors": [e.as_json() for e in self.errors]}


def not_found(detail: str, *, target: str | None = None) -> ServiceError:
    """A 404: the thing named by `target` (an argument of the operation) does not exist
    or is not visible to the caller."""
    return ServiceError(NOT_FOUND, detail, target=target)


def invalid(errors: Sequence[tuple[str, str]], detail: str | None = None) -> ServiceError:
    """A 422 from `(pointer, detail)` pairs."""
    items = [FieldError(p, d) for p, d in errors]
    return ServiceError(
        VALIDATION_FAILED,
        detail or f"{len(items)} validation error{'s' if len(items) != 1 else ''}",
        errors=items,
    )


def pointer_for(loc: Sequence[str | int]) -> str:
    """An RFC 6901 pointer fragment (`#/timeouts/read`) for a pydantic location."""
    if not loc:
        return "#"
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def strip_value_error(msg: str) -> str:
    """A pydantic message without its `Value error, ` / `Assertion failed, ` prefix."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def errors_from_pydantic(errors: Sequence[Any], *, skip: int = 0) -> list[tuple[str, str]]:
    """`(pointer, detail)` pairs from pydantic error dicts, dropping `skip` leading loc parts."""
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))[skip:]
        out.append((pointer_for(loc), strip_value_error(str(err.get("msg", "invalid")))))
    return out


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any) -> M:
    """`data` as `model`; a 422 naming each bad field (JSON pointers) otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(errors_from_pydantic(exc.errors())) from None
