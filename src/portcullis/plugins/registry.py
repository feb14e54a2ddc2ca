"""Known plugin handlers by name, and building a plugin from its instance config.

Validation and the names a config holds are the schemas' (model/plugins/registry.py);
this module is imported by the data plane when it compiles a snapshot.
"""

from __future__ import annotations

from typing import Any

from portcullis.model.plugins.registry import SCHEMAS
from portcullis.model.plugins.registry import plugin_references as plugin_references
from portcullis.model.plugins.registry import validate_plugin as validate_plugin
from portcullis.plugins.acl import Acl
from portcullis.plugins.base import AnyPlugin
from portcullis.plugins.basic_auth import BasicAuth
from portcullis.plugins.cors import Cors
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.hmac_auth import HmacAuth
from portcullis.plugins.ip_restriction import IpRestriction
from portcullis.plugins.jwt_auth import JwtAuth
from portcullis.plugins.key_auth import KeyAuth
from portcullis.plugins.log_shipping import FileLog, HttpLog, Syslog
from portcullis.plugins.mtls_auth import MtlsAuth
from portcullis.plugins.plan_limits import PlanLimits
from portcullis.plugins.rate_limit import RateLimit
from portcullis.plugins.request_size_limit import RequestSizeLimit
from portcullis.plugins.request_termination import RequestTermination
from portcullis.plugins.request_transformer import RequestTransformer
from portcullis.plugins.request_validator import RequestValidator
from portcullis.plugins.response_cache import ResponseCache
from portcullis.plugins.response_transformer import ResponseTransformer

PLUGINS: dict[str, type[AnyPlugin]] = {
    cls.name: cls
    for cls in (
        Acl,
        BasicAuth,
        Cors,
        FileLog,
        HttpLog,
        HmacAuth,
        IpRestriction,
        JwtAuth,
        KeyAuth,
        MtlsAuth,
        PlanLimits,
        RateLimit,
        RequestSizeLimit,
        RequestTermination,
        RequestTransformer,
        RequestValidator,
        ResponseCache,
        ResponseTransformer,
        Syslog,
    )
}


def mismatches() -> list[str]:
    """Handlers and schemas that do not pair up (each handler's `config_model` is its schema)."""
    problems = [f"{n}: no handler" for n in SCHEMAS.keys() - PLUGINS.keys()]
    problems += [f"{n}: no schema" for n in PLUGINS.keys() - SCHEMAS.keys()]
    problems += [
        f"{n}: handler config_model is not the registered schema"
        for n in PLUGINS.keys() & SCHEMAS.keys()
        if PLUGINS[n].config_model is not SCHEMAS[n]
    ]
    return sorted(problems)


def build_plugin(name: str, config: dict[str, Any], env: PluginEnv) -> AnyPlugin:
    cls = PLUGINS[name]
    return cls.build(cls.config_model.model_validate(config), env)
