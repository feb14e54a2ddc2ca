"""The `request-transformer` plugin's config (its handler: plugins/request_transformer.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from portcullis.http_fields import HOP_BY_HOP
from portcullis.model.plugins.base import PluginConfig
from portcullis.model.plugins.transforms import (
    HeaderOps,
    JsonOps,
    QueryOps,
    validate_header_ops,
)

# Fields the proxy sets or frames itself; editing them would break the request.
FORBIDDEN_REQUEST_HEADERS = frozenset({n.decode() for n in HOP_BY_HOP} | {"host", "content-length"})


class RequestTransformerConfig(PluginConfig):
    headers: HeaderOps = Field(default_factory=HeaderOps, description="request header edits")
    query: QueryOps = Field(default_factory=QueryOps, description="query parameter edits")
    body: JsonOps = Field(default_factory=JsonOps, description="JSON body field edits")

    @model_validator(mode="after")
    def _valid(self) -> RequestTransformerConfig:
        validate_header_ops(self.headers, FORBIDDEN_REQUEST_HEADERS)
        return self
