"""ETags and If-Match: the rules live with the operations (services/preconditions.py) and
are re-exported here for the HTTP layer; `operations.respond` sends an ETagged response."""

from __future__ import annotations

from portcullis.services.preconditions import Precondition as Precondition
from portcullis.services.preconditions import apply_merge_patch as apply_merge_patch
from portcullis.services.preconditions import check_if_match as check_if_match
from portcullis.services.preconditions import etag_of as etag_of
from portcullis.services.preconditions import merge_patch as merge_patch
