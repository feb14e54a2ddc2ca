"""The base of every plugin config model, and the references hook of the tenancy rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from portcullis.model.tenancy import NAMES_KEYWORD

# Largest upstream response body the proxy buffers for `response_body` plugins (and so the
# largest body a plugin config may ask to buffer).
BODY_BUFFER_LIMIT = 8 * 1024 * 1024
# A name a plugin config writes: (location under `config`, entity kind, name).
Reference = tuple[str, str, str]


class PluginConfig(BaseModel):
    """Base for plugin config models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def references(cls, config: Mapping[str, Any], gateway: object) -> list[Reference]:
        """The entity names this plugin's `config` holds, for the tenancy rule (model/tenancy.py).

        `config` is the raw mapping (it may have failed validation: unusable values are
        the model's to report) and `gateway` the `GatewayConfig` being checked, read
        defensively. By default: every top-level field marked with
        `model.tenancy.names(kind)` that holds a string. A plugin whose config names
        entities another way (in a list, in a nested model) overrides this.
        """
        found: list[Reference] = []
        for field, info in cls.model_fields.items():
            extra = info.json_schema_extra
            kind = extra.get(NAMES_KEYWORD) if isinstance(extra, dict) else None
            value = config.get(field)
            if isinstance(kind, str) and isinstance(value, str):
                found.append((field, kind, value))
        return found

    @classmethod
    def gateway_errors(
        cls, config: Mapping[str, Any], scope: tuple[str, str | None], gateway: object
    ) -> list[str]:
        """What this instance needs of the rest of the gateway config and does not find,
        as `field: message` strings (e.g. a description of the routes it applies to).

        `scope` is the instance's (`global`, None), (`service`, name) or (`route`, name);
        `gateway` the `GatewayConfig` being checked, read defensively (it may hold
        placeholders of entries that failed validation)."""
        return []
