"""`portcullis demo` (what `./dev run` starts) as a newcomer meets it: the example API
through the gateway, and the signed webhooks the demo delivers to its upstream's inbox."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from support.processes import wait_for
from support.servers import free_port, stop_process, wait_for_port

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway.yaml"


def test_demo_proxies_the_example_api_and_delivers_signed_webhooks(tmp_path: Path) -> None:
    proxy, admin, upstream, tls = free_port(), free_port(), free_port(), free_port()
    # The example config's upstream is the demo's default port; this run uses a free one.
    config = tmp_path / "gateway.yaml"
    config.write_text(EXAMPLE.read_text().replace("127.0.0.1:9000", f"127.0.0.1:{upstream}"))
    # Its API descriptions are files next to it (openapi_file is relative to the config).
    shutil.copytree(EXAMPLE.parent / "openapi", tmp_path / "openapi")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env |= {
        "PORTCULLIS_LOG_LEVEL": "warning",
        "PORTCULLIS_SHUTDOWN_GRACE": "5",
        "PORTCULLIS_PROXY_TLS_PORT": str(tls),
    }
    argv = [
        sys.executable, "-m", "portcullis", "demo", "--config", str(config),
        "--proxy-port", str(proxy), "--admin-port", str(admin),
        "--upstream-port", str(upstream),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
    )
    try:
        for port in (proxy, admin, upstream, tls):
            wait_for_port(port, proc, timeout=90)
        items = wait_for(
            lambda: _ok(httpx.get(f"http://127.0.0.1:{proxy}/demo/items", timeout=30)),
            "the example API through the gateway",
        )
        assert {"portcullis", "drawbridge"} <= {i["name"] for i in items}
        # The demo API's versions (issue 18's contract): v1 is deprecated with a sunset.
        v1 = httpx.get(f"http://127.0.0.1:{proxy}/v1/items", timeout=30)
        assert v1.status_code == 200
        assert v1.headers["deprecation"] == "@1793491200"  # 2026-11-01
        assert v1.headers["sunset"] == "Fri, 31 Dec 2027 00:00:00 GMT"
        v2 = httpx.get(f"http://127.0.0.1:{proxy}/v2/items", timeout=30)
        assert v2.status_code == 200
        assert "deprecation" not in v2.headers
        assert v2.json() == items  # the guest (no key) reaches the upstream
        # A development key of the demo's consumer (the banner prints one) is answered by
        # v2's sandbox: a mock from the description, not the upstream's items.
        key = _development_key(tmp_path, env)
        mocked = httpx.get(f"http://127.0.0.1:{proxy}/v2/items", headers={"x-api-key": key})
        assert mocked.status_code == 200, mocked.text
        assert mocked.json() != items
        invalid = httpx.post(f"http://127.0.0.1:{proxy}/v2/items", json={"name": 7})
        assert invalid.status_code == 400, invalid.text
        assert invalid.headers["content-type"] == "application/problem+json"

        def applied() -> dict[str, Any] | None:
            inbox = httpx.get(f"http://127.0.0.1:{upstream}/webhooks/inbox", timeout=30).json()
            return next((d for d in inbox if d["payload"]["type"] == "config.applied"), None)

        delivery = wait_for(applied, "config.applied in the demo's webhook inbox")
        assert delivery["webhook_id"].startswith("msg_")
        assert delivery["webhook_signature"].startswith("v1,")
        assert int(delivery["webhook_timestamp"]) > 0
        # The GraphQL admin API the banner points at publishes its schema.
        # The first GraphQL request loads the GraphQL machinery: seconds on a loaded machine.
        sdl = httpx.get(f"http://127.0.0.1:{admin}/graphql/schema.graphql", timeout=60)
        assert sdl.status_code == 200
        assert "services(" in sdl.text
        # So does the catalogue: the demo API's v2 as clients see it through the gateway.
        published = httpx.get(f"http://127.0.0.1:{admin}/apis/demo/v2/openapi.json", timeout=30)
        assert published.status_code == 200, published.text
        document = published.json()
        assert document["servers"][0]["url"] == f"http://127.0.0.1:{proxy}/v2"
        assert "/items" in document["paths"]
        # The web apps (issue 19's contract): HTML under a Content-Security-Policy, at
        # their addresses themselves (the dashboard's home is its sign-in form until then).
        for app in ("portal", "dashboard"):
            url = f"http://127.0.0.1:{admin}/{app}/"
            page = httpx.get(url, timeout=30)
            assert page.status_code == 200, (app, page.text)
            assert page.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert "http://" not in page.text.replace(f"http://127.0.0.1:{admin}", "")
        # The TLS port serves the demo's self-signed certificate for localhost over HTTP/2.
        certificate = tmp_path / "var" / "demo-localhost.pem"
        trust = ssl.create_default_context(cafile=certificate)
        with httpx.Client(verify=trust, http2=True, timeout=10) as client:
            secure = client.get(f"https://localhost:{tls}/demo/items")
        assert (secure.status_code, secure.http_version) == (200, "HTTP/2")
        assert secure.json() == items
        # Every request is shipped to the demo's request log (file-log), off the request path.
        requests_log = tmp_path / "var" / "requests.log"

        def logged_v1() -> dict[str, Any] | None:
            lines = requests_log.read_text().splitlines() if requests_log.exists() else []
            records = [json.loads(line) for line in lines]
            return next((r for r in records if r.get("route") == "demo-v1"), None)

        record = wait_for(logged_v1, "the /v1 request in var/requests.log")
        assert record["status"] == 200
        assert record["method"] == "GET"
        # The demo's own store holds the endpoint; nothing was written to the repo.
        assert (tmp_path / "var" / "portcullis.db").is_file()
    finally:
        stop_process(proc, timeout=30)


def _development_key(tmp_path: Path, env: dict[str, str]) -> str:
    """A new development key of the demo's consumer, made with the CLI in the demo's store."""
    store = f"sqlite+aiosqlite:///{tmp_path / 'var' / 'portcullis.db'}"
    argv = [
        sys.executable, "-m", "portcullis", "keys", "create", "demo-app", "--name", "e2e",
        "--environment", "development", "--json", "--database-url", store,
    ]  # fmt: skip
    result = subprocess.run(
        argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    key: str = json.loads(result.stdout)["key"]
    return key


def _ok(response: httpx.Response) -> Any:
    return response.json() if response.status_code == 200 else None
