"""Plugin schemas by plugin name: what validating a config needs, without any handler.

`model/config.py` validates every plugin instance against `SCHEMAS` and asks each
schema for the names its config holds (`PluginConfig.references`); the handlers
(plugins/registry.py) are looked up only when the data plane builds a snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from portcullis.model.plugins.acl import AclConfig
from portcullis.model.plugins.base import PluginConfig, Reference
from portcullis.model.plugins.basic_auth import BasicAuthConfig
from portcullis.model.plugins.cors import CorsConfig
from portcullis.model.plugins.hmac_auth import HmacAuthConfig
from portcullis.model.plugins.ip_restriction import IpRestrictionConfig
from portcullis.model.plugins.jwt_auth import JwtAuthConfig
from portcullis.model.plugins.key_auth import KeyAuthConfig
from portcullis.model.plugins.log_shipping import FileLogConfig, HttpLogConfig, SyslogConfig
from portcullis.model.plugins.mtls_auth import MtlsAuthConfig
from portcullis.model.plugins.plan_limits import PLAN_LIMITS_PLUGIN, PlanLimitsConfig
from portcullis.model.plugins.rate_limit import RateLimitConfig
from portcullis.model.plugins.request_size_limit import RequestSizeLimitConfig
from portcullis.model.plugins.request_termination import RequestTerminationConfig
from portcullis.model.plugins.request_transformer import RequestTransformerConfig
from portcullis.model.plugins.request_validator import RequestValidatorConfig
from portcullis.model.plugins.response_cache import ResponseCacheConfig
from portcullis.model.plugins.response_transformer import ResponseTransformerConfig
from portcullis.model.secrets import register_schema_of, schema_of
from portcullis.model.tenancy import PluginReferences

SCHEMAS: dict[str, type[PluginConfig]] = {
    "acl": AclConfig,
    "cors": CorsConfig,
    "file-log": FileLogConfig,
    "http-log": HttpLogConfig,
    "ip-restriction": IpRestrictionConfig,
    "basic-auth": BasicAuthConfig,
    "hmac-auth": HmacAuthConfig,
    "jwt-auth": JwtAuthConfig,
    "key-auth": KeyAuthConfig,
    "mtls-auth": MtlsAuthConfig,
    PLAN_LIMITS_PLUGIN: PlanLimitsConfig,
    "rate-limit": RateLimitConfig,
    "request-size-limit": RequestSizeLimitConfig,
    "request-termination": RequestTerminationConfig,
    "request-transformer": RequestTransformerConfig,
    "request-validator": RequestValidatorConfig,
    "response-cache": ResponseCacheConfig,
    "response-transformer": ResponseTransformerConfig,
    "syslog": SyslogConfig,
}


def _config_schema(instance: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON Schema of a plugin instance's `config` (None: unknown plugin)."""
    model = SCHEMAS.get(str(instance.get("name")))
    return None if model is None else schema_of(model)


register_schema_of("plugin", _config_schema)


def validate_plugin(name: str, config: dict[str, Any]) -> list[str]:
    """Errors for one plugin instance as `field: message` strings (empty when valid)."""
    model = SCHEMAS.get(name)
    if model is None:
        known = ", ".join(sorted(SCHEMAS))
        return [f"name: unknown plugin {name!r} (known: {known})"]
    try:
        model.model_validate(config)
    except ValidationError as exc:
        return [
            "config"
            + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
            + f": {e['msg']}"
            for e in exc.errors()
        ]
    return []


def gateway_errors(
    name: str, config: Mapping[str, Any], scope: tuple[str, str | None], gateway: object
) -> list[str]:
    """What a valid plugin instance misses in the rest of the config (its schema's
    `PluginConfig.gateway_errors`)."""
    model = SCHEMAS.get(name)
    return [] if model is None else model.gateway_errors(config, scope, gateway)


def references_of(gateway: object) -> PluginReferences:
    """The tenancy rule's `PluginReferences` for one gateway config: each plugin's own hook."""

    def plugin_references(name: str, config: Mapping[str, Any]) -> list[Reference]:
        model = SCHEMAS.get(name)
        return [] if model is None else model.references(config, gateway)

    return plugin_references


def plugin_references(name: str, config: Mapping[str, Any]) -> list[Reference]:
    """The entity names a plugin instance's config holds: (field, kind, name).

    For callers without a gateway config at hand (the admin API's visibility checks).
    """
    model = SCHEMAS.get(name)
    return [] if model is None else model.references(config, None)
