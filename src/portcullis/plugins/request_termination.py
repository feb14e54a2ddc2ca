"""request-termination: answer with a fixed response instead of proxying (Kong's plugin).

Config (model/plugins/request_termination.py):

    status_code: 503          # 200-599
    message: "Down for maintenance"     # or body + content_type
    body: '<h1>Moved</h1>'
    content_type: text/html

It runs last in the access phase (priority 2, as in Kong), so authentication, acl
and limits still apply to the requests it answers; the upstream is never called.
The response is built once, when the snapshot is compiled.
"""

from __future__ import annotations

import json
from typing import ClassVar

from portcullis.model.plugins.request_termination import RequestTerminationConfig
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv

_JSON = b"application/json; charset=utf-8"


class RequestTermination(Plugin[RequestTerminationConfig]):
    """Replies with the configured status and body; the request never goes upstream."""

    name: ClassVar[str] = "request-termination"
    priority: ClassVar[int] = 2
    config_model = RequestTerminationConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: RequestTerminationConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        message = config.default_message()
        if config.body is not None:
            content_type = (config.content_type or _JSON.decode()).encode("latin-1")
            self._body, self._headers = config.body.encode(), [(b"content-type", content_type)]
        elif message is not None:
            body = json.dumps({"message": message}).encode()
            self._body, self._headers = body, [(b"content-type", _JSON)]
        else:
            self._body, self._headers = b"", []

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        return PluginResponse(self.config.status_code, self._body, list(self._headers))
