"""Known plugins by name, and validation of plugin instance configs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from portcullis.model.tenancy import NAMES_KEYWORD
from portcullis.plugins.acl import Acl
from portcullis.plugins.base import Plugin
from portcullis.plugins.cors import Cors
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.ip_restriction import IpRestriction
from portcullis.plugins.jwt_auth import JwtAuth
from portcullis.plugins.key_auth import KeyAuth
from portcullis.plugins.plan_limits import PlanLimits
from portcullis.plugins.rate_limit import RateLimit
from portcullis.plugins.request_size_limit import RequestSizeLimit
from portcullis.plugins.request_transformer import RequestTransformer
from portcullis.plugins.response_cache import ResponseCache
from portcullis.plugins.response_transformer import ResponseTransformer

PLUGINS: dict[str, type[Plugin]] = {
    cls.name: cls for cls in (RequestSizeLimit, KeyAuth, Acl, JwtAuth, RateLimit)
}
PLUGINS[PlanLimits.name] = PlanLimits
PLUGINS.update(
    (cls.name, cls) for cls in (Cors, IpRestriction, RequestTransformer, ResponseTransformer)
)
PLUGINS[ResponseCache.name] = ResponseCache


def validate_plugin(name: str, config: dict[str, Any]) -> list[str]:
    """Errors for one plugin instance as `field: message` strings (empty when valid)."""
    cls = PLUGINS.get(name)
    if cls is None:
        known = ", ".join(sorted(PLUGINS))
        return [f"name: unknown plugin {name!r} (known: {known})"]
    try:
        cls.config_model.model_validate(config)
    except ValidationError as exc:
        return [
            "config"
            + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
            + f": {e['msg']}"
            for e in exc.errors()
        ]
    return []


def build_plugin(name: str, config: dict[str, Any], env: PluginEnv) -> Plugin:
    cls = PLUGINS[name]
    return cls(cls.config_model.model_validate(config), env)


def plugin_references(name: str, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The entity names a plugin instance's config holds: (field, kind, name).

    Fields are marked with `model.tenancy.names(kind)`; the tenancy rule checks them
    like every other name in the config (unusable values are the config model's to
    report).
    """
    cls = PLUGINS.get(name)
    if cls is None:
        return []
    found = []
    for field, info in cls.config_model.model_fields.items():
        extra = info.json_schema_extra
        kind = extra.get(NAMES_KEYWORD) if isinstance(extra, dict) else None
        value = config.get(field)
        if isinstance(kind, str) and isinstance(value, str):
            found.append((field, kind, value))
    return found
