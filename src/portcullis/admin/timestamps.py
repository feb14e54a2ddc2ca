"""Times in admin API query parameters: RFC 3339 with an offset, never a bare number.

pydantic's lax mode reads a number (`?until=0.5`) as a Unix time; the API documents RFC
3339, so a number is refused (422 naming the parameter) like any other malformed time.
Request bodies need no such type: they are validated as strict JSON
(admin/strict_json.py), where a number is not a time, and a before-validator there would
hand the strict datetime check a Python string, which it refuses.
"""

from __future__ import annotations

from portcullis.services.query import Rfc3339

__all__ = ["Rfc3339"]
