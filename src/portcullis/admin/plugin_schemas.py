"""Each plugin's config as JSON Schema (2020-12), from the same pydantic models that
validate it, for `GET /admin/v1/schemas/plugins[/{name}]` and the OpenAPI description.

In OpenAPI a plugin instance (`PluginInstance`, `PluginInstanceOut`) is a
`oneOf` discriminated on `name`: one variant per plugin whose `config` refers to
that plugin's schema (`PluginConfig.<name>`, its nested models hoisted as
`PluginConfig.<name>.<Model>`), so a client learns each shape from the
description instead of from 422 round trips.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from portcullis.model.plugins.registry import SCHEMAS

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
COMPONENT = "PluginConfig.{name}"
INSTANCE_SCHEMAS = ("PluginInstance", "PluginInstanceOut")


def plugin_names() -> list[str]:
    return sorted(SCHEMAS)


@cache
def plugin_schema(name: str) -> dict[str, Any]:
    """A standalone JSON Schema document for one plugin's config (KeyError: unknown)."""
    model = SCHEMAS[name]
    schema = model.model_json_schema(mode="validation")
    schema.setdefault("title", f"{name} config")
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def _component_schemas(name: str) -> dict[str, Any]:
    """The plugin's schema as OpenAPI components: its own and its nested models'."""
    prefix = COMPONENT.format(name=name)
    schema = SCHEMAS[name].model_json_schema(
        mode="validation", ref_template=f"#/components/schemas/{prefix}.{{model}}"
    )
    out = {f"{prefix}.{model}": sub for model, sub in schema.pop("$defs", {}).items()}
    out[prefix] = schema
    return out


def discriminate_plugin_instances(components: dict[str, Any]) -> None:
    """Make each plugin-instance schema a `oneOf` on `name`, typed per plugin (in place)."""
    for name in plugin_names():
        components.update(_component_schemas(name))
    for base in INSTANCE_SCHEMAS:
        generic = components.get(base)
        if generic is None:
            continue
        mapping = {}
        for name in plugin_names():
            variant = copy.deepcopy(generic)
            properties = variant.setdefault("properties", {})
            properties["name"] = {"type": "string", "const": name, "title": "Name"}
            properties["config"] = {
                "$ref": f"#/components/schemas/{COMPONENT.format(name=name)}",
                "description": f"The {name} plugin's config (see its schema)",
            }
            variant["title"] = f"{base} ({name})"
            key = f"{base}.{name}"
            components[key] = variant
            mapping[name] = f"#/components/schemas/{key}"
        components[base] = {
            "title": base,
            "description": "A plugin instance; `config` is typed by the plugin `name`.",
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "name", "mapping": mapping},
        }
