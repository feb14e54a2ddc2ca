"""Errors as data: the problems a mutation answers with, mapped from the service
layer's `ServiceError` kinds (the same kinds REST renders as RFC 9457 problems).

Every mutation returns a union of its payload and these types, so a client learns
from the schema what can go wrong and reads field errors as data. Each type
carries the problem's `type` URI, `title`, `status` (what REST would answer) and
`detail`, through the `Problem` interface; a client that knows nothing more can
select those on `... on Problem`.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

import strawberry
from strawberry.scalars import JSON

from portcullis.problems import ProblemKind
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    PRECONDITION_FAILED,
    VALIDATION_FAILED,
    FieldError,
    ServiceError,
)


@strawberry.interface(description="Why an operation was refused (RFC 9457 problem members).")
class Problem:
    type: str = strawberry.field(description="The problem type URI (as REST's `type`)")
    title: str
    status: int = strawberry.field(description="The HTTP status REST answers with")
    detail: str | None


@strawberry.type(description="One invalid input: a JSON pointer into the input and why.")
class FieldProblem:
    pointer: str
    detail: str
    field: str | None = strawberry.field(description="The top-level input field concerned")


@strawberry.type(description="The input is not valid; `errors` names each field.")
class ValidationProblem(Problem):
    errors: list[FieldProblem]


@strawberry.type(description="The thing an argument names does not exist or is not yours.")
class NotFoundProblem(Problem):
    target: str | None = strawberry.field(description="The argument that named it")


@strawberry.type(description="A resource with this name already exists.")
class AlreadyExistsProblem(Problem):
    pass


@strawberry.type(description="The `ifMatch` ETag no longer matches: re-read and retry.")
class PreconditionFailedProblem(Problem):
    pass


@strawberry.type(description="Other resources still refer to this one; they are named.")
class HasDependentsProblem(Problem):
    dependents: JSON | None


@strawberry.type(description="The caller lacks the permission the operation needs.")
class ForbiddenProblem(Problem):
    required_permission: str | None


@strawberry.type(description="Any other refusal (a conflict of state, an unavailable store...).")
class OtherProblem(Problem):
    members: JSON | None = strawberry.field(description="The problem's extension members")


PROBLEM_TYPES: tuple[type[Any], ...] = (
    ValidationProblem,
    NotFoundProblem,
    AlreadyExistsProblem,
    PreconditionFailedProblem,
    HasDependentsProblem,
    ForbiddenProblem,
    OtherProblem,
)


def result_union(name: str, payload: type[Any]) -> Any:
    """`<name>`: the union of a mutation's payload and every problem type."""
    members = (payload, *PROBLEM_TYPES)
    return Annotated[Union[members], strawberry.union(name)]  # noqa: UP007


def _common(kind: ProblemKind, detail: str | None) -> dict[str, Any]:
    return {"type": kind.type_uri, "title": kind.title, "status": kind.status, "detail": detail}


def problem_of(exc: ServiceError) -> Problem:
    """The problem object for a refused operation."""
    kind, common = exc.kind, _common(exc.kind, exc.detail)
    if kind is VALIDATION_FAILED:
        return ValidationProblem(errors=[_field(e) for e in exc.errors], **common)
    if kind is NOT_FOUND:
        return NotFoundProblem(target=exc.target, **common)
    if kind is ALREADY_EXISTS:
        return AlreadyExistsProblem(**common)
    if kind is PRECONDITION_FAILED:
        return PreconditionFailedProblem(**common)
    if kind is HAS_DEPENDENTS:
        return HasDependentsProblem(dependents=exc.extensions.get("dependents"), **common)
    if kind is FORBIDDEN:
        return ForbiddenProblem(
            required_permission=exc.extensions.get("required_permission"), **common
        )
    members: Any = exc.members or None
    return OtherProblem(members=members, **common)


def _field(error: FieldError) -> FieldProblem:
    return FieldProblem(pointer=error.pointer, detail=error.detail, field=error.field)
