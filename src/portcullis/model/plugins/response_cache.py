"""The `response-cache` plugin's config (its handler: plugins/response_cache.py)."""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from portcullis.model.plugins.base import BODY_BUFFER_LIMIT, PluginConfig

MAX_TTL = 365 * 86_400
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_MEDIA_RANGE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+/([!#$%&'*+.^_`|~0-9A-Za-z-]+|\*)$")


# Statuses the proxy never hands to `response_body` (no body), so they can't be stored.
_UNSTORABLE_STATUSES = frozenset({204, 205, 304})
_KEY_PARTS = ("method", "path", "query", "consumer")


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"invalid header name {name!r}")
    return name.lower()


class ResponseCacheConfig(PluginConfig):
    ttl: float = Field(
        default=60, gt=0, le=MAX_TTL, description="seconds, when the response sets no freshness"
    )
    max_ttl: float = Field(
        default=3600, gt=0, le=MAX_TTL, description="cap on the freshness a response asks for"
    )
    methods: list[Literal["GET", "HEAD"]] = Field(default=["GET", "HEAD"], min_length=1)
    statuses: list[int] = Field(default=[200, 203, 300, 301, 308, 404, 410], min_length=1)
    content_types: list[str] | None = Field(
        default=None, description="media types to store (type/subtype or type/*); default any"
    )
    key: list[str] = Field(
        default=["method", "path", "query"],
        max_length=16,
        description="method, path, query, consumer, header:<name>",
    )
    vary_headers: list[str] = Field(
        default_factory=list, max_length=16, description="request headers always in the key"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=0, le=BODY_BUFFER_LIMIT)
    honour_cache_control: bool = True
    cache_authenticated: Literal["per-consumer", "shared", "never"] = "per-consumer"

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        for status in v:
            if not 200 <= status <= 599 or status in _UNSTORABLE_STATUSES:
                raise ValueError(f"status {status} can't be cached (200-599, not 204/205/304)")
        return v

    @field_validator("content_types")
    @classmethod
    def _content_types(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = []
        for media in v:
            media = media.strip().lower()
            if not _MEDIA_RANGE.fullmatch(media):
                raise ValueError(f"invalid media type {media!r} (type/subtype or type/*)")
            out.append(media)
        return out

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[str]) -> list[str]:
        out = []
        for part in v:
            kind, sep, arg = part.partition(":")
            if sep and kind == "header":
                out.append(f"header:{_header_name(arg)}")
            elif not sep and part in _KEY_PARTS:
                out.append(part)
            else:
                raise ValueError(
                    f"unknown key part {part!r}: use {', '.join(_KEY_PARTS)} or header:<name>"
                )
        if len(set(out)) != len(out):
            raise ValueError("key parts must not repeat")
        return out

    @field_validator("vary_headers")
    @classmethod
    def _vary(cls, v: list[str]) -> list[str]:
        return [_header_name(name) for name in v]

    @model_validator(mode="after")
    def _ttls(self) -> Self:
        if self.ttl > self.max_ttl:
            raise ValueError("ttl must not exceed max_ttl")
        return self
