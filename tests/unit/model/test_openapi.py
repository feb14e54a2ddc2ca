"""A version's OpenAPI description: external `$ref` bundling, validation with JSON
pointers, and `openapi_file` in config files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from portcullis.model.loader import ConfigError, load_config_file, load_config_text
from portcullis.model.openapi import (
    DescriptionError,
    bundle,
    description_errors,
    file_loader,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _doc(schema: dict[str, Any], **components: Any) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/pets": {
                "get": {
                    "responses": {
                        "200": {
                            "description": "ok",
                            "content": {"application/json": {"schema": schema}},
                        }
                    }
                }
            }
        },
        **({"components": components} if components else {}),
    }


def _loader(documents: dict[str, Any]) -> Any:
    def load(uri: str) -> Any:
        if uri not in documents:
            raise OSError(f"no {uri}")
        return documents[uri]

    return load


def test_component_refs_are_hoisted_renamed_on_a_clash_and_stay_recursive() -> None:
    root = _doc(
        {"$ref": "common.yaml#/components/schemas/Pet"},
        schemas={"Pet": {"type": "string"}},
    )
    common = {
        "components": {
            "schemas": {
                "Pet": {
                    "type": "object",
                    "properties": {"parent": {"$ref": "#/components/schemas/Pet"}},
                }
            }
        }
    }
    out = bundle(root, "https://x.test/api.yaml", _loader({"https://x.test/common.yaml": common}))
    schema = out["paths"]["/pets"]["get"]["responses"]["200"]["content"]["application/json"]
    assert schema["schema"] == {"$ref": "#/components/schemas/Pet_2"}
    assert out["components"]["schemas"]["Pet"] == {"type": "string"}  # the root's own
    assert out["components"]["schemas"]["Pet_2"]["properties"]["parent"] == {
        "$ref": "#/components/schemas/Pet_2"
    }
    assert description_errors(out) == []
    assert root["components"]["schemas"] == {"Pet": {"type": "string"}}  # input untouched


def test_other_refs_are_inlined_and_a_cycle_through_them_is_an_error() -> None:
    root = _doc({"$ref": "pet.json", "description": "a pet"})
    pet = {
        "type": "object",
        "properties": {"tag": {"$ref": "#/definitions/Tag"}},
        "definitions": {"Tag": {"type": "string"}},
    }
    out = bundle(root, "https://x.test/a/api.json", _loader({"https://x.test/a/pet.json": pet}))
    schema = out["paths"]["/pets"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    assert schema["properties"]["tag"] == {"type": "string"}
    assert schema["description"] == "a pet"

    loop = {"type": "object", "properties": {"next": {"$ref": "#"}}}
    with pytest.raises(DescriptionError) as caught:
        bundle(root, "https://x.test/a/api.json", _loader({"https://x.test/a/pet.json": loop}))
    assert "refers to itself" in caught.value.message
    assert caught.value.path[-1] == "$ref"


def test_a_missing_target_is_located_at_the_referring_ref() -> None:
    root = _doc({"$ref": "common.yaml#/components/schemas/Nope"})
    with pytest.raises(DescriptionError) as caught:
        bundle(root, "https://x.test/api.yaml", _loader({"https://x.test/common.yaml": {}}))
    assert caught.value.path == (
        "paths",
        "/pets",
        "get",
        "responses",
        "200",
        "content",
        "application/json",
        "schema",
        "$ref",
    )
    assert "does not exist" in caught.value.message


def test_file_references_may_not_reach_urls() -> None:
    load = file_loader()
    with pytest.raises(DescriptionError, match="may refer to other files only"):
        load("https://example.com/x.yaml")


def test_errors_carry_the_location_inside_the_document() -> None:
    bad = _doc({"type": "object"})
    del bad["paths"]["/pets"]["get"]["responses"]["200"]["description"]
    bad["info"].pop("version")
    assert sorted(description_errors(bad)) == [
        (("info",), '"version" is a required property'),
        (("paths", "/pets", "get", "responses", "200"), '"description" is a required property'),
    ]
    assert description_errors({**_doc({}), "openapi": "2.0"}) == [
        (("openapi",), "must be an OpenAPI version 3.0.x or 3.1.x")
    ]
    external = _doc({"$ref": "other.yaml#/Pet"})
    ((where, message),) = description_errors(external)
    assert where[-1] == "$ref"
    assert "external $ref" in message
    v30 = {**_doc({"type": "object", "nullable": True}), "openapi": "3.0.3"}
    assert description_errors(v30) == []


def test_a_config_with_an_invalid_description_names_the_place_inside_it() -> None:
    bad = _doc({"type": "object"})
    del bad["paths"]["/pets"]["get"]["responses"]["200"]["description"]
    config = {
        "services": [{"name": "s", "url": "http://s.test"}],
        "routes": [{"name": "r", "service": "s", "paths": ["/v1"]}],
        "apis": [{"name": "a", "versions": [{"name": "v1", "routes": ["r"], "openapi": bad}]}],
    }
    with pytest.raises(ConfigError) as caught:
        load_config_text(json.dumps(config), source="t", format="json")
    (issue,) = caught.value.errors
    assert issue.pointer == "#/apis/0/versions/0/openapi/paths/~1pets/get/responses/200"
    assert issue.message == '"description" is a required property'


def test_openapi_file_is_read_relative_to_the_config_and_bundled(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "api.yaml").write_text(
        yaml.safe_dump(_doc({"$ref": "schemas.yaml#/components/schemas/Pet"}))
    )
    (tmp_path / "specs" / "schemas.yaml").write_text(
        yaml.safe_dump({"components": {"schemas": {"Pet": {"type": "object"}}}})
    )
    config = {
        "services": [{"name": "s", "url": "http://s.test"}],
        "routes": [{"name": "r", "service": "s", "paths": ["/v1"]}],
        "apis": [
            {
                "name": "a",
                "versions": [{"name": "v1", "routes": ["r"], "openapi_file": "specs/api.yaml"}],
            }
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config_file(path)
    document = loaded.apis[0].versions[0].openapi
    assert document is not None
    assert document["components"]["schemas"] == {"Pet": {"type": "object"}}

    config["apis"][0]["versions"][0]["openapi_file"] = "specs/missing.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as caught:
        load_config_file(path)
    (issue,) = caught.value.errors
    assert issue.location == "apis[0].versions[0].openapi_file"
    assert "cannot read" in issue.message
    assert issue.line is not None

    # Text without a file behind it (stdin, the admin API) has nothing to be relative to.
    with pytest.raises(ConfigError) as caught:
        load_config_text(yaml.safe_dump(config), source="<stdin>")
    assert "only a config read from a file" in caught.value.errors[0].message


def test_the_demo_config_carries_both_demo_descriptions() -> None:
    config = load_config_file(EXAMPLES / "gateway.yaml")
    (demo,) = config.apis
    for version in demo.versions:
        assert version.openapi is not None
        assert description_errors(version.openapi) == []
    v1 = demo.version("v1")
    assert v1 is not None
    assert v1.openapi is not None
    # demo-v1.yaml refers to demo-schemas.yaml: bundled into its own components.
    assert set(v1.openapi["components"]["schemas"]) == {"Item", "NotFound"}
