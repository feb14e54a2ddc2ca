"""request-transformer: edit the request on its way upstream.

Three targets, each with `remove`, `rename`, `set` and `add` (applied in that order;
see `portcullis.plugins.transforms`):

- `headers`: the upstream request headers (`ctx.upstream_headers`). Framing and
  routing fields the proxy owns (`Host`, `Content-Length`, `Transfer-Encoding`,
  `Connection` and the other hop-by-hop fields) cannot be edited.
- `query`: query parameters. Untouched parameters keep their exact bytes; the
  result goes upstream through `ctx.query_string` (composes with key-auth, which
  may already have removed a key parameter).
- `body`: fields of a JSON object request body (`application/json` or `+json`),
  addressed by dotted paths. A body that is not a JSON object, is content-coded,
  is empty, or is larger than the proxy's body buffer (8 MiB) goes upstream
  untouched. An edited body is re-serialised compactly (UTF-8) and sent with a
  correct Content-Length, chunked or not on the way in.

Headers and query are edited in the access phase; the body in the `request_body`
phase, which makes the proxy read the body before proxying. Only configs with body
operations get that phase (the plugin is built as a subclass that implements it),
so a header-only transformer never buffers a body.

Priority 700: last in the access phase (after auth, limits and the cache lookup),
so the upstream sees exactly what was validated and counted, and auth plugins see
the client's original headers.
"""

from __future__ import annotations

from typing import ClassVar

from portcullis.model.plugins.request_transformer import (
    FORBIDDEN_REQUEST_HEADERS,
    RequestTransformerConfig,
)
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.transforms import (
    HeaderEditor,
    JsonEditor,
    QueryEditor,
    first,
    identity_encoded,
    is_json,
)


class RequestTransformer(Plugin[RequestTransformerConfig]):
    """Header and query edits (see the module doc); body edits in `_BodyTransformer`."""

    name: ClassVar[str] = "request-transformer"
    priority: ClassVar[int] = 700
    config_model = RequestTransformerConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __new__(cls, config: RequestTransformerConfig, env: PluginEnv) -> RequestTransformer:
        # Only a config with body edits gets the `request_body` phase (and its buffering).
        target = _BodyTransformer if config.body and cls is RequestTransformer else cls
        return super().__new__(target)

    def __init__(self, config: RequestTransformerConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._headers = HeaderEditor(config.headers, FORBIDDEN_REQUEST_HEADERS)
        self._query = QueryEditor(config.query)
        self._body = JsonEditor(config.body)

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        if self._headers.active:
            self._headers.apply(ctx.upstream_headers)
        if self._query.active:
            query = ctx.query_string
            if query is None:
                query = ctx.scope.get("query_string", b"")
            ctx.query_string = self._query.apply(query)
        return None


class _BodyTransformer(RequestTransformer):
    """A request-transformer with JSON body edits: it also runs in `request_body`."""

    phases: ClassVar[frozenset[Phase]] = RequestTransformer.phases | {"request_body"}

    def request_body(self, ctx: RequestContext, body: bytes) -> bytes | None:
        headers = ctx.upstream_headers
        if not body or not is_json(first(headers, b"content-type")):
            return None
        if not identity_encoded(headers):
            return None
        return self._body.transform(body)
