"""The vendored GraphiQL files are the ones npm served, and the page names only local files."""

from __future__ import annotations

import hashlib
import json
import re
from html.parser import HTMLParser

import pytest
from starlette.requests import Request

from portcullis.graph.graphiql import (
    CONTENT_SECURITY_POLICY,
    STATIC_DIR,
    graphiql_html,
    graphiql_response,
    wants_graphiql,
)

OURS = {"graphiql-init.js", "graphiql-page.css", "VENDORED.json"}
ABSOLUTE_URL = re.compile(r"\b(?:https?:)?//[a-z0-9.-]+", re.IGNORECASE)


class _References(HTMLParser):
    """Every src= and href= of a page, and whether it holds an inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []
        self._tag = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]
        self.inline += [f"{tag} {k}" for k, _ in attrs if k == "style" or k.startswith("on")]

    def handle_data(self, data: str) -> None:
        if self._tag in ("script", "style") and data.strip():
            self.inline.append(self._tag)


def _manifest() -> dict[str, str]:
    """file name -> sha256 of every vendored file, from VENDORED.json."""
    packages = json.loads((STATIC_DIR / "VENDORED.json").read_text())["packages"]
    return {name: digest for package in packages for name, digest in package["files"].items()}


def test_vendored_files_are_those_the_vendor_script_recorded() -> None:
    manifest = _manifest()
    assert {
        p["name"]: p["version"]
        for p in json.loads((STATIC_DIR / "VENDORED.json").read_text())["packages"]
    } == {"graphiql": "4.1.2", "react": "18.3.1", "react-dom": "18.3.1"}
    for name, digest in manifest.items():
        assert hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest() == digest, name
    # Nothing else sits in the static folder: each file is vendored (with its licence) or ours.
    assert {p.name for p in STATIC_DIR.iterdir()} == set(manifest) | OURS
    assert {"LICENSE.graphiql", "LICENSE.react", "LICENSE.react-dom"} <= set(manifest)


def test_page_loads_only_local_files_and_no_inline_script() -> None:
    html = graphiql_html("/graphql")
    page = _References()
    page.feed(html)
    assert page.inline == []
    local = [url for url in page.urls if not url.startswith("data:")]
    assert len(local) == 6  # React, ReactDOM, GraphiQL, init script, two stylesheets
    for url in local:
        assert url.startswith("/static/graphiql/"), url
        assert (STATIC_DIR / url.removeprefix("/static/graphiql/")).is_file(), url
    for text in (
        html,
        *((STATIC_DIR / f).read_text() for f in ("graphiql-init.js", "graphiql-page.css")),
    ):
        assert ABSOLUTE_URL.search(text) is None, ABSOLUTE_URL.search(text)


def _request(method: str, path: str, accept: str, query: str = "", root: str = "") -> Request:
    return Request(
        {
            "type": "http",
            "method": method,
            "path": root + path,
            "root_path": root,
            "query_string": query.encode(),
            "headers": [(b"accept", accept.encode()), (b"host", b"admin")],
            "scheme": "http",
            "server": ("admin", 80),
        }
    )


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.mark.parametrize(
    ("method", "accept", "query", "page"),
    [
        ("GET", BROWSER, "", True),
        ("HEAD", BROWSER, "", True),
        ("POST", BROWSER, "", False),
        ("GET", "application/graphql-response+json", "", False),
        ("GET", BROWSER, "query=%7B__typename%7D", False),
        ("GET", "", "", False),
    ],
)
def test_only_a_browser_navigation_gets_the_page(
    method: str, accept: str, query: str, page: bool
) -> None:
    assert wants_graphiql(_request(method, "/graphql", accept, query)) is page


def test_page_behind_a_root_path_points_below_it() -> None:
    response = graphiql_response(_request("GET", "/graphql", BROWSER, root="/admin"))
    body = bytes(response.body).decode()
    assert 'data-endpoint="/admin/graphql"' in body
    assert 'src="/admin/static/graphiql/graphiql-init.js"' in body
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
