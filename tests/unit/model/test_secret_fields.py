"""Redaction by schema: what the models mark secret is redacted, whatever its key is called."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, SecretStr

from portcullis.model.config import GatewayConfig, PluginInstance
from portcullis.model.secrets import REDACTED, Secret, redact
from portcullis.plugins.registry import PLUGINS


class Inner(BaseModel):
    plain: str = ""
    hidden: Secret[str] = ""


class Outer(BaseModel):
    name: str
    password_hint: str = ""  # secret-looking name, not marked: stays
    innocent: Secret[str] | None = None  # innocent-looking name, marked: redacted
    stored: SecretStr | None = None
    values: dict[str, Secret[int]] = {}
    inner: Inner | None = None
    many: list[Inner] = []


def test_marked_fields_and_leaf_types_are_redacted_whatever_their_names() -> None:
    document: dict[str, Any] = {
        "name": "n",
        "password_hint": "visible",
        "innocent": "x1",
        "stored": "x2",
        "values": {"a": 1, "b": 2},
        "inner": {"plain": "p", "hidden": "x3"},
        "many": [{"plain": "q", "hidden": "x4"}],
        "unknown": "kept",
    }
    assert redact(document, Outer) == {
        "name": "n",
        "password_hint": "visible",
        "innocent": REDACTED,
        "stored": REDACTED,
        "values": {"a": REDACTED, "b": REDACTED},
        "inner": {"plain": "p", "hidden": REDACTED},
        "many": [{"plain": "q", "hidden": REDACTED}],
        "unknown": "kept",
    }
    assert redact({"name": "n", "innocent": None, "inner": None}, Outer) == {
        "name": "n",
        "innocent": None,
        "inner": None,
    }


def test_plugin_configs_are_redacted_with_their_plugins_models() -> None:
    transformer = {
        "name": "request-transformer",
        "config": {
            "headers": {"set": {"Authorization": "Bearer t"}, "remove": ["Cookie"]},
            "query": {"add": {"api_key": "k"}, "rename": {"a": "b"}},
        },
    }
    jwt = {
        "name": "jwt-auth",
        "config": {"keys": [{"kid": "k1", "algorithm": "HS256", "secret": "s" * 40}]},
    }
    unknown = {"name": "no-such-plugin", "config": {"anything": "x"}}
    config = {"format_version": "1", "plugins": [transformer, jwt, unknown]}
    plugins = redact(config, GatewayConfig)["plugins"]
    assert plugins[0]["config"] == {
        "headers": {"set": {"Authorization": REDACTED}, "remove": ["Cookie"]},
        "query": {"add": {"api_key": REDACTED}, "rename": {"a": "b"}},
    }
    assert plugins[1]["config"]["keys"] == [{"kid": "k1", "algorithm": "HS256", "secret": REDACTED}]
    assert plugins[2]["config"] == REDACTED  # no model to go by: all of it
    assert redact(transformer, PluginInstance)["config"] == plugins[0]["config"]


def test_every_plugin_schema_marks_its_known_secrets() -> None:
    """The markers the audit relies on are in the published schemas."""
    schema = PLUGINS["request-transformer"].config_model.model_json_schema()
    header_ops = schema["$defs"]["HeaderOps"]["properties"]
    assert header_ops["set"]["additionalProperties"]["writeOnly"] is True
    assert "writeOnly" not in header_ops["remove"]["items"]
