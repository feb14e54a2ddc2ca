"""The `request-size-limit` plugin's config (its handler: plugins/request_size_limit.py)."""

from __future__ import annotations

from pydantic import Field

from portcullis.model.plugins.base import PluginConfig


class RequestSizeLimitConfig(PluginConfig):
    max_bytes: int = Field(ge=0, description="largest accepted request body in bytes")
