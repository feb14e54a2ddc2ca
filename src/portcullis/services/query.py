"""Rules for the query inputs of read operations, shared by their query models."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def rfc3339_only(value: Any) -> Any:
    """A `mode="before"` validator for date-time inputs: pydantic would read a bare number
    as a Unix time, and the API documents RFC 3339."""
    if (
        isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and not _DATE_TIME.match(str(value))
    ):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


# A time in a query input: RFC 3339 with an offset, never a bare number.
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(rfc3339_only)]
