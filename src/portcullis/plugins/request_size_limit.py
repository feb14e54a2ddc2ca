"""request-size-limit: reject bodies larger than a limit with 413 before they reach upstream.

A declared Content-Length over the limit is refused at once, before the body is
read. A body without one (chunked) cannot be judged up front: the plugin lowers the
request's body limit (`ctx.body_limit`) and the proxy counts the chunks as they
stream in, answering 413 as soon as the limit is passed (the upstream request is
abandoned, so a partial body is never completed upstream).
"""

from __future__ import annotations

from typing import ClassVar

from portcullis.model.plugins.request_size_limit import (
    RequestSizeLimitConfig,
)
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import PAYLOAD_TOO_LARGE, PROBLEM_CONTENT_TYPE, problem_body


class RequestSizeLimit(Plugin[RequestSizeLimitConfig]):
    """Checks Content-Length up front; chunked bodies are counted by the proxy against it."""

    name: ClassVar[str] = "request-size-limit"
    priority: ClassVar[int] = 951
    config_model = RequestSizeLimitConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: RequestSizeLimitConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.max_bytes = config.max_bytes
        self._reject = problem_body(
            PAYLOAD_TOO_LARGE, f"The request body exceeds {self.max_bytes} bytes."
        )

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        if ctx.content_length is not None and ctx.content_length > self.max_bytes:
            return PluginResponse(
                413, self._reject, [(b"content-type", PROBLEM_CONTENT_TYPE.encode())]
            )
        if self.max_bytes == 0:
            # The proxy reads a zero body limit as "unlimited": refuse any streamed body here.
            if any(n == b"transfer-encoding" for n, _ in ctx.headers):
                return PluginResponse(
                    413, self._reject, [(b"content-type", PROBLEM_CONTENT_TYPE.encode())]
                )
            return None
        limit = ctx.body_limit
        if limit is None or limit > self.max_bytes:
            ctx.body_limit = self.max_bytes
        return None
