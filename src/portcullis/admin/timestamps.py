"""Times in admin API query parameters: RFC 3339 with an offset, never a bare number.

pydantic's lax mode reads a number (`?until=0.5`) as a Unix time; the API documents RFC
3339, so a number is refused (422 naming the parameter) like any other malformed time.
Request bodies need no such type: they are validated as strict JSON
(admin/strict_json.py), where a number is not a time, and a before-validator there would
hand the strict datetime check a Python string, which it refuses.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def rfc3339_only(value: Any) -> Any:
    """Refuse numbers and text that does not start like an RFC 3339 date-time."""
    scalar = isinstance(value, int | float | str) and not isinstance(value, bool)
    if scalar and not _DATE_TIME.match(str(value)):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(rfc3339_only)]
