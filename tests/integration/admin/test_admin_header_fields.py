"""The admin API refuses text that the gateway would copy into a header, naming the field."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

SMUGGLING = "crm-42\r\ncontent-length: 0\r\n\r\nGET /admin HTTP/1.1\r\nx-ignore: 1"


def errors(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    found: list[dict[str, Any]] = response.json()["errors"]
    return found


async def test_a_consumer_custom_id_with_crlf_is_refused(owner: httpx.AsyncClient) -> None:
    response = await owner.post(
        "/admin/v1/consumers", json={"username": "acme", "custom_id": SMUGGLING}
    )
    assert any(
        e["pointer"] == "#/custom_id" and "control character" in e["detail"]
        for e in errors(response)
    )
    assert (await owner.get("/admin/v1/consumers/acme")).status_code == 404


async def test_a_custom_id_with_crlf_cannot_be_patched_in(owner: httpx.AsyncClient) -> None:
    created = await owner.post("/admin/v1/consumers", json={"username": "acme", "custom_id": "1"})
    assert created.status_code == 201, created.text
    response = await owner.patch("/admin/v1/consumers/acme", json={"custom_id": "2\nx: y"})
    assert response.status_code == 422, response.text
    assert "custom_id" in response.text
    assert (await owner.get("/admin/v1/consumers/acme")).json()["custom_id"] == "1"


@pytest.mark.parametrize(
    ("plugin", "config", "pointer"),
    [
        ("request-transformer", {"headers": {"set": {"x-a": "v\n"}}}, "#/config/headers/set"),
        ("response-transformer", {"headers": {"add": {"x-a": "a\r\nb"}}}, "#/config/headers/add"),
        ("key-auth", {"realm": "api\n"}, "#/config/realm"),
    ],
)
async def test_plugin_header_values_with_a_newline_are_refused(
    owner: httpx.AsyncClient, plugin: str, config: dict[str, Any], pointer: str
) -> None:
    response = await owner.post("/admin/v1/plugins", json={"name": plugin, "config": config})
    assert any(e["pointer"] == pointer for e in errors(response)), response.text


async def test_a_key_scope_with_a_trailing_newline_is_refused(owner: httpx.AsyncClient) -> None:
    created = await owner.post("/admin/v1/consumers", json={"username": "acme"})
    assert created.status_code == 201, created.text
    response = await owner.post(
        "/admin/v1/consumers/acme/keys", json={"name": "main", "scopes": ["orders:read\n"]}
    )
    assert response.status_code == 422, response.text
    assert "scope" in response.text
