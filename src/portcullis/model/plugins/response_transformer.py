"""The `response-transformer` plugin's config (its handler: plugins/response_transformer.py)."""

from __future__ import annotations

from pydantic import Field, model_validator

from portcullis.http_fields import HOP_BY_HOP
from portcullis.model.plugins.base import PluginConfig
from portcullis.model.plugins.transforms import (
    HeaderOps,
    JsonOps,
    validate_header_ops,
)

# Framing fields the proxy computes; editing them would corrupt the response.
FORBIDDEN_RESPONSE_HEADERS = frozenset({n.decode() for n in HOP_BY_HOP} | {"content-length"})


class ResponseTransformerConfig(PluginConfig):
    headers: HeaderOps = Field(default_factory=HeaderOps, description="response header edits")
    body: JsonOps = Field(default_factory=JsonOps, description="JSON body field edits")

    @model_validator(mode="after")
    def _valid(self) -> ResponseTransformerConfig:
        validate_header_ops(self.headers, FORBIDDEN_RESPONSE_HEADERS)
        return self
