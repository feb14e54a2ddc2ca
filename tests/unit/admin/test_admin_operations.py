"""The HTTP side of service errors: one handler renders them; query inputs are re-pointed."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from portcullis.admin.operations import as_query_errors
from portcullis.admin.problems import install_problem_handlers
from portcullis.services.errors import NOT_FOUND, VALIDATION_FAILED, ServiceError, invalid


async def test_a_service_error_is_answered_as_a_problem_naming_its_fields() -> None:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/refused")
    async def refused() -> None:
        raise invalid([("#/scopes/0", "not a scope")], "1 validation error")

    @app.get("/missing")
    async def missing() -> None:
        raise ServiceError(NOT_FOUND, "key 'x' does not exist", target="key_id", hint="h")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
        answer = await client.get("/refused")
        gone = await client.get("/missing")
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json() == {
        "type": "https://portcullis.dev/problems/validation-failed",
        "title": "The request is not valid",
        "status": 422,
        "detail": "1 validation error",
        "instance": "/refused",
        "errors": [{"pointer": "#/scopes/0", "detail": "not a scope"}],
    }
    assert gone.status_code == 404
    # The target is for faces that name their own arguments; it is not part of the problem.
    assert gone.json()["hint"] == "h"
    assert "target" not in gone.json()


def test_query_inputs_are_named_as_query_parameters() -> None:
    refused = invalid([("#/sort", "unknown field 'x'"), ("#/name", "too long")])
    repointed = as_query_errors(refused, ("sort",))
    assert repointed.kind is VALIDATION_FAILED
    assert [(e.pointer, e.detail) for e in repointed.errors] == [
        ("#", "query parameter 'sort': unknown field 'x'"),
        ("#/name", "too long"),
    ]
    unrelated = invalid([("#/name", "too long")])
    assert as_query_errors(unrelated, ("sort",)) is unrelated
    missing = ServiceError(NOT_FOUND, "gone")
    assert as_query_errors(missing, ("sort",)) is missing
