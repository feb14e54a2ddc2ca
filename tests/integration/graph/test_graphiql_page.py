"""GraphiQL on the control plane: a browser navigating to /graphql gets the page, and
everything the page loads is served by the admin app itself (issue 16: no CDN).

The admin app runs in process (the app `portcullis serve` puts on :8001): starting a real
gateway costs 15-25 s on the loaded suite machine and adds nothing to serving files;
test_codegen.py drives a real one."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from portcullis.admin.app import create_admin_app
from portcullis.graph.graphiql import CONTENT_SECURITY_POLICY, STATIC_DIR
from portcullis.settings import Settings

# What Chromium sends when it navigates to a URL.
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
ABSOLUTE_URL = re.compile(r"https?://", re.IGNORECASE)
JAVASCRIPT = ("text/javascript", "application/javascript")


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.endpoint: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            assert values.get("src"), "an inline script"
            self.scripts.append(str(values["src"]))
        elif tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(str(values["href"]))
        elif values.get("id") == "graphiql":
            self.endpoint = values.get("data-endpoint")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The control-plane app on an empty store (the page and its files need no data)."""
    app = create_admin_app(
        Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}", log_json=False)
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            yield client


def _sha256s() -> dict[str, str]:
    packages = json.loads((STATIC_DIR / "VENDORED.json").read_text())["packages"]
    return {name: digest for p in packages for name, digest in p["files"].items()}


async def test_browser_gets_graphiql_with_every_asset_from_the_admin_app(
    browser: httpx.AsyncClient,
) -> None:
    page = await browser.get("/graphql", headers={"accept": BROWSER_ACCEPT})
    assert page.status_code == 200, page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert ABSOLUTE_URL.search(page.text) is None
    assets = _Assets()
    assets.feed(page.text)
    assert assets.endpoint == "/graphql"
    assert [Path(s).name for s in assets.scripts] == [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "graphiql-init.js",
    ]
    assert len(assets.stylesheets) == 2
    vendored = _sha256s()
    for url, types in [(s, JAVASCRIPT) for s in assets.scripts] + [
        (s, ("text/css",)) for s in assets.stylesheets
    ]:
        assert url.startswith("/"), url  # this origin, whatever its host
        fetched = await browser.get(url)
        assert fetched.status_code == 200, url
        assert fetched.headers["content-type"].split(";")[0] in types, url
        assert fetched.headers["x-content-type-options"] == "nosniff", url
        name = Path(url).name
        if name in vendored:
            assert hashlib.sha256(fetched.content).hexdigest() == vendored[name], url
        else:  # ours: the init script and the page's stylesheet
            assert ABSOLUTE_URL.search(fetched.text) is None, url


async def test_api_clients_still_get_graphql_not_the_page(browser: httpx.AsyncClient) -> None:
    # A GET query (even from a browser) and a POST are GraphQL requests: unauthenticated here.
    query = await browser.get(
        "/graphql", params={"query": "{ __typename }"}, headers={"accept": BROWSER_ACCEPT}
    )
    posted = await browser.post("/graphql", json={"query": "{ __typename }"})
    for response in (query, posted):
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/graphql-response+json"
        assert "<html" not in response.text


def test_wheel_ships_the_graphiql_files(tmp_path: Path) -> None:
    """The files are package data: hatch's wheel must carry every one of them."""
    root = Path(__file__).resolve().parents[3]
    built = subprocess.run(
        [sys.executable, "-m", "uv", "build", "--wheel", "--out-dir", str(tmp_path), str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("portcullis-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("portcullis/graph/static/")}
    assert shipped == {f"portcullis/graph/static/{p.name}" for p in STATIC_DIR.iterdir()}
