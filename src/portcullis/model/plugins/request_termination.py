"""The `request-termination` plugin's config (its handler: plugins/request_termination.py).

Kong's plugin of the same name: answer every request of a route, service or the
whole gateway with a fixed response instead of proxying (maintenance windows,
retired endpoints, stubs). Either a `message` (sent as `{"message": ...}` JSON) or a
raw `body` with its `content_type`; with neither, the message is the status's
reason phrase.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Self

from pydantic import Field, model_validator

from portcullis.http_fields import HeaderText
from portcullis.model.plugins.base import PluginConfig

# Statuses that never carry a body (RFC 9110 §15.3.5, §15.4.5).
_BODYLESS = frozenset({204, 304})
MAX_BODY = 64 * 1024


class RequestTerminationConfig(PluginConfig):
    status_code: int = Field(default=503, ge=200, le=599, description="the response status")
    message: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description='sent as {"message": ...} (application/json); not with `body`',
    )
    body: str | None = Field(
        default=None, max_length=MAX_BODY, description="the raw response body; not with `message`"
    )
    content_type: HeaderText | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="the body's media type (only with `body`; default application/json)",
    )

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        if self.message is not None and self.body is not None:
            raise ValueError("set message or body, not both")
        if self.content_type is not None and self.body is None:
            raise ValueError("content_type describes `body`: set body too")
        if self.status_code in _BODYLESS and (self.message is not None or self.body is not None):
            raise ValueError(f"a {self.status_code} response has no body: drop message and body")
        try:
            HTTPStatus(self.status_code)
        except ValueError:
            raise ValueError(f"{self.status_code} is not a registered HTTP status") from None
        return self

    def default_message(self) -> str | None:
        """The message sent when the config names neither body nor message."""
        if self.body is not None or self.status_code in _BODYLESS:
            return self.message
        return self.message or HTTPStatus(self.status_code).phrase
