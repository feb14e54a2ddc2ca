"""Every data-plane problem carries `request_id` and `instance` (RFC 9457), whoever
built it: the proxy (404, 413), an auth plugin (401) or a limit plugin (429).

A real gateway: the request id the client sent comes back in the header and the
body, and `instance` is the request path (never the query, which may hold a key).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import yaml

from support.servers import Gateway, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("occurrence")
    with granian_app(DEMO, workers=1) as upstream:
        cfg = tmp / "gateway.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
                    "routes": [
                        {"name": "keyed", "service": "echo", "paths": ["/keyed"]},
                        {"name": "jwt", "service": "echo", "paths": ["/jwt"]},
                        {"name": "limited", "service": "echo", "paths": ["/limited"]},
                        {"name": "small", "service": "echo", "paths": ["/small"]},
                    ],
                    "plugins": [
                        {"name": "key-auth", "route": "keyed", "config": {"query_param": "k"}},
                        {"name": "jwt-auth", "route": "jwt", "config": {}},
                        {
                            "name": "rate-limit",
                            "route": "limited",
                            "config": {"limits": [{"limit": 1, "period": "1h"}]},
                        },
                        {
                            "name": "request-size-limit",
                            "route": "small",
                            "config": {"max_bytes": 8},
                        },
                    ],
                }
            )
        )
        with gateway(tmp, cfg, workers=1) as g:
            yield g


def check(response: httpx.Response, status: int, rid: str, path: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-request-id"] == rid
    body = response.json()
    assert body["status"] == status
    assert body["request_id"] == rid, body
    assert body["instance"] == path, body
    return dict(body)


def test_every_data_plane_problem_names_its_request(gw: Gateway) -> None:
    with httpx.Client(base_url=gw.url, timeout=10) as client:
        r = client.get("/nowhere/x", headers={"x-request-id": "rid-404"})
        check(r, 404, "rid-404", "/nowhere/x")
        # The query (here a wrong key) is not echoed into `instance`.
        r = client.get("/keyed/orders?k=nope", headers={"x-request-id": "rid-401k"})
        check(r, 401, "rid-401k", "/keyed/orders")
        r = client.get("/keyed/orders", headers={"x-request-id": "rid-401"})
        body = check(r, 401, "rid-401", "/keyed/orders")
        assert "expected_credentials" in body
        r = client.get("/jwt/a", headers={"x-request-id": "rid-401j"})
        check(r, 401, "rid-401j", "/jwt/a")
        assert client.get("/limited/a").status_code == 200
        r = client.get("/limited/a", headers={"x-request-id": "rid-429"})
        body = check(r, 429, "rid-429", "/limited/a")
        assert body["violated-policies"]
        r = client.post("/small/up", content=b"x" * 64, headers={"x-request-id": "rid-413"})
        check(r, 413, "rid-413", "/small/up")
        # Without a client id the generated one is in both places too.
        r = client.get("/jwt/b")
        check(r, 401, r.headers["x-request-id"], "/jwt/b")
