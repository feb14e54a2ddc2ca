"""response-transformer: edit the upstream's response on its way to the client.

Two targets, each with `remove`, `rename`, `set` and `add` (applied in that order;
see `portcullis.plugins.transforms`):

- `headers`: the response headers, edited in the `response` phase (after the
  gateway's own headers were added, so those can be edited too). Framing fields
  (`Content-Length`, `Transfer-Encoding`, `Connection` and the other hop-by-hop
  fields) cannot be edited.
- `body`: fields of a JSON object response body (`application/json` or `+json`),
  addressed by dotted paths, edited in the `response_body` phase. A body that is
  not JSON by its Content-Type, is not a valid JSON object, is content-coded
  (gzip...), or is larger than the proxy's buffer (8 MiB) passes through untouched.
  The proxy fixes Content-Length when the body changes.

Only configs with body operations get the `response_body` phase (the plugin is
built as a subclass that implements it), since that phase makes the proxy buffer
every response of the route; a header-only transformer keeps responses streaming.

Replies the gateway produces itself (a plugin's 401/429, a 502 problem) are not
upstream responses and are not transformed.

Priority 750: in the body phase the transformer runs before a response cache
(lower priority), so the cache stores the final body.
"""

from __future__ import annotations

from typing import ClassVar

from portcullis.model.plugins.response_transformer import (
    FORBIDDEN_RESPONSE_HEADERS,
    ResponseTransformerConfig,
)
from portcullis.plugins.base import Headers, Phase, Plugin, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.transforms import (
    HeaderEditor,
    JsonEditor,
    first,
    identity_encoded,
    is_json,
)


class ResponseTransformer(Plugin[ResponseTransformerConfig]):
    """Header edits (see the module doc); body edits in `_BodyTransformer`."""

    name: ClassVar[str] = "response-transformer"
    priority: ClassVar[int] = 750
    config_model = ResponseTransformerConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"response"})

    def __new__(cls, config: ResponseTransformerConfig, env: PluginEnv) -> ResponseTransformer:
        # Only a config with body edits gets the `response_body` phase (and its buffering).
        target = _BodyTransformer if config.body and cls is ResponseTransformer else cls
        return super().__new__(target)

    def __init__(self, config: ResponseTransformerConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._headers = HeaderEditor(config.headers, FORBIDDEN_RESPONSE_HEADERS)
        self._body = JsonEditor(config.body)

    def response(self, ctx: RequestContext, status: int, headers: Headers) -> None:
        if self._headers.active:
            self._headers.apply(headers)


class _BodyTransformer(ResponseTransformer):
    """A response-transformer with JSON body edits: it also runs in `response_body`."""

    phases: ClassVar[frozenset[Phase]] = ResponseTransformer.phases | {"response_body"}

    def response_body(
        self, ctx: RequestContext, status: int, headers: Headers, body: bytes
    ) -> bytes | None:
        if not body or not is_json(first(headers, b"content-type")):
            return None
        if not identity_encoded(headers):
            return None
        return self._body.transform(body)
