"""What a page raises to leave its handler: web/app.py turns each into a response."""

from __future__ import annotations

from starlette.exceptions import HTTPException

from portcullis.services.errors import ServiceError


class LoginRequired(Exception):
    """The page needs a signed-in session: sign-in first, then back to `next`."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageForbidden(Exception):
    """The signed-in principal may not see this page (their role lacks `permission`)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def page_error(exc: ServiceError) -> HTTPException:
    """A refusal the page cannot show in a form (not found...) as an error page."""
    return HTTPException(exc.kind.status, exc.detail or exc.kind.title)
