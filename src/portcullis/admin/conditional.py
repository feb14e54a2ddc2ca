"""ETag responses; the precondition rules themselves live with the operations
(services/preconditions.py) and are re-exported here for the HTTP layer."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from portcullis.services.preconditions import Precondition as Precondition
from portcullis.services.preconditions import apply_merge_patch as apply_merge_patch
from portcullis.services.preconditions import check_if_match as check_if_match
from portcullis.services.preconditions import etag_of as etag_of
from portcullis.services.preconditions import merge_patch as merge_patch


def etag_response(body: Any, status: int = 200, **headers: str) -> JSONResponse:
    """A JSON response carrying the body's ETag (and any other headers given)."""
    return JSONResponse(body, status_code=status, headers={"ETag": etag_of(body), **headers})
