"""The OpenAPI 3.1 description: valid and complete; local docs. (The live API is fuzzed from
it in test_admin_fuzz_*.py.)"""

from __future__ import annotations

import re

import httpx
from fastapi import FastAPI
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from portcullis.plugins.registry import PLUGINS

PUBLIC = {"/admin/v1/auth/login", "/admin/v1/auth/refresh", "/admin/v1/auth/logout"}
# Authenticated POSTs without Idempotency-Key: they show or take a secret.
NOT_IDEMPOTENT = {"/admin/v1/tokens", "/admin/v1/auth/password"}


def test_description_is_valid_openapi_31(app: FastAPI) -> None:
    spec = app.openapi()
    assert spec["openapi"].startswith("3.1")
    validate(spec)


def test_every_reference_resolves_and_schema_titles_are_distinct(app: FastAPI) -> None:
    """What client generators need beyond validity: openapi-ts stops at a `$ref` to nothing,
    openapi-python-client leaves out the second of two schemas with one title."""
    spec = app.openapi()
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            refs.extend(v for k, v in node.items() if k == "$ref" and isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    dangling = set()
    for ref in refs:
        target: object = spec
        for part in ref.removeprefix("#/").split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            target = target.get(key) if isinstance(target, dict) else None
        if target is None:
            dangling.add(ref)
    assert refs
    assert sorted(dangling) == []
    titles = [s["title"] for s in spec["components"]["schemas"].values() if "title" in s]
    assert sorted({t for t in titles if titles.count(t) > 1}) == []


def test_every_operation_documents_its_errors(app: FastAPI) -> None:
    spec = app.openapi()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, item in spec["paths"].items():
        if not path.startswith("/admin/v1"):
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            if path not in PUBLIC:
                assert operation["security"] == [{"bearer": []}], where
                assert "401" in responses, where
                if path != "/admin/v1/auth/me":  # any signed-in caller may ask who they are
                    assert "403" in responses, where
            assert "Retry-After" in responses["429"]["headers"], where
            assert (
                "RateLimit" in responses["200" if "200" in responses else min(responses)]["headers"]
            ), where
            for status, response in responses.items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], where
            if method in ("put", "patch", "delete") and "{" in path and path not in PUBLIC:
                assert "412" in responses or "tokens" in path, where
                assert "404" in responses, where
            if method == "post" and path not in PUBLIC | NOT_IDEMPOTENT:
                names = [p["name"] for p in operation.get("parameters", [])]
                assert "Idempotency-Key" in names, where


async def test_docs_pages_use_only_local_assets(anonymous: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        response = await anonymous.get(page)
        assert response.status_code == 200
        assert not re.search(r"""(src|href)=["']https?://""", response.text), page
        assets = re.findall(r"""(?:src|href)=["'](/static/docs/[^"']+)""", response.text)
        assert assets, page
        for asset in assets:
            fetched = await anonymous.get(asset)
            assert fetched.status_code == 200, asset
            assert len(fetched.content) > 1000, asset
    swagger = (await anonymous.get("/docs")).text
    assert "/static/docs/swagger-ui-bundle.js" in swagger
    assert "fonts.googleapis" not in (await anonymous.get("/redoc")).text


def test_oauth_endpoints_are_described_with_their_own_errors(app: FastAPI) -> None:
    spec = app.openapi()
    paths = spec["paths"]
    for path, method in (
        ("/oauth/token", "post"),
        ("/oauth/introspect", "post"),
        ("/oauth/revoke", "post"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/oauth-authorization-server", "get"),
    ):
        operation = paths[path][method]
        assert operation["tags"] == ["OAuth 2.0"], path
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                # RFC 6749 §5.2 JSON errors, not the admin API's problem details.
                assert list(response["content"]) == ["application/json"], path
    token = paths["/oauth/token"]["post"]
    form = token["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert form["required"] == ["grant_type"]
    assert "401" in token["responses"]
    assert spec["components"]["schemas"]["OAuthError"]["required"] == ["error"]


def test_plugin_instance_config_is_a_union_discriminated_on_the_plugin_name(
    app: FastAPI,
) -> None:
    spec = app.openapi()
    components = spec["components"]["schemas"]
    names = sorted(PLUGINS)
    for base in ("PluginInstance", "PluginInstanceOut"):
        union = components[base]
        assert union["discriminator"]["propertyName"] == "name"
        assert sorted(union["discriminator"]["mapping"]) == names
        assert len(union["oneOf"]) == len(names)
    # JSON Schema (2020-12, as OpenAPI 3.1 uses it) now checks each plugin's config.
    validator = Draft202012Validator(
        {"$ref": "#/components/schemas/PluginInstance", "components": spec["components"]}
    )
    good = {"name": "rate-limit", "config": {"limits": [{"limit": 5, "period": "1m"}]}}
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({"name": "key-auth", "config": {"query_param": "k"}})) == []
    for bad in (
        {"name": "rate-limit", "config": {"limits": "lots"}},
        {"name": "key-auth", "config": {"header_names": 5}},
        {"name": "no-such-plugin", "config": {}},
    ):
        assert list(validator.iter_errors(bad)), bad


async def test_each_plugin_schema_is_served_and_validates_like_the_gateway(
    owner: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    listed = await owner.get("/admin/v1/schemas/plugins")
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [i["name"] for i in items] == sorted(PLUGINS)
    for item in items:
        r = await owner.get(item["schema_url"])
        assert r.status_code == 200, item
        assert r.headers["content-type"] == "application/schema+json"
        schema = r.json()
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    rate = (await owner.get("/admin/v1/schemas/plugins/rate-limit")).json()
    assert Draft202012Validator(rate).is_valid({"limits": [{"limit": 5, "period": "1m"}]})
    assert not Draft202012Validator(rate).is_valid({"limits": [{"limit": "five"}]})
    missing = await owner.get("/admin/v1/schemas/plugins/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "rate-limit" in missing.json()["detail"]
    assert (await anonymous.get("/admin/v1/schemas/plugins")).status_code == 401
