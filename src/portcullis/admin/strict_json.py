"""Request bodies are validated as JSON, strictly: `"yes"` is not a boolean, `"5"` not a number.

FastAPI validates a decoded body in pydantic's lax Python mode, which coerces
`"strip_path": "yes"` to `true` and `"weight": "5"` to `5`. The admin API takes
JSON, and a JSON value has a type: pydantic's strict JSON mode keeps exactly the
conversions JSON needs (strings to datetimes, enums, UUIDs; arrays to tuples;
integers to floats) and refuses the rest, as a 422 with a pointer per value.

`check_body` applies this to the body parameter of the matched route; it runs in
`dependencies.require`, after the caller was authenticated and authorized, so
nobody learns anything about a body they may not send. Merge-patched documents go
through `validate_strictly` (services/preconditions.py).
"""

from __future__ import annotations

from fastapi import Request
from pydantic import ValidationError

from portcullis.admin.problems import errors_from_pydantic, validation_problem
from portcullis.services.preconditions import json_adapter
from portcullis.services.preconditions import validate_strictly as validate_strictly


def is_json_media_type(content_type: str | None) -> bool:
    """`application/json` or any `application/…+json` (what FastAPI decodes as JSON)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def check_body(request: Request) -> None:
    """422 problem unless the JSON body of the route's body parameter is valid strictly."""
    body_field = getattr(request.scope.get("route"), "body_field", None)
    if body_field is None or not is_json_media_type(request.headers.get("content-type")):
        return
    raw = await request.body()  # already read (and capped) for FastAPI's own validation
    if not raw:
        return
    try:
        json_adapter(body_field.field_info.annotation).validate_json(raw, strict=True)
    except ValidationError as exc:
        raise validation_problem(errors_from_pydantic(exc.errors())) from None
