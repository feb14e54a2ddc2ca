"""GraphiQL at GET /graphql for browsers, with every asset served by Portcullis (no CDN).

The page loads GraphiQL 4's UMD browser build and React 18's UMD builds, vendored in
`static/` by `scripts/vendor-graphiql` (versions and sha256 in `static/VENDORED.json`),
and a small `graphiql-init.js` that starts it: no inline script, so the page's
Content-Security-Policy allows scripts from this origin only.

Authentication is the admin API's: the user pastes `{"Authorization": "Bearer <token>"}`
into GraphiQL's Headers editor (open by default), then re-fetches the schema. Headers
are not persisted in the browser's storage.

`graphiql_response(request)` is the page for a GET of the endpoint by a browser
(`wants_graphiql` tells such a request apart); `static_app` serves the assets under
`STATIC_URL` (`install_graphiql_assets(app)` mounts it).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_URL = "/static/graphiql"
# Loaded in this order (`defer` keeps it): GraphiQL's UMD build reads the React globals.
SCRIPTS = (
    "react.production.min.js",
    "react-dom.production.min.js",
    "graphiql.min.js",
    "graphiql-init.js",
)
STYLESHEETS = ("graphiql.min.css", "graphiql-page.css")
# The docs pages' rules (admin/middleware.py) without their inline scripts: scripts and
# requests to this origin only; inline styles because React and CodeMirror set them; the
# fonts GraphiQL bundles are data: URLs in its stylesheet.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

static_app = StaticFiles(directory=STATIC_DIR)


def wants_graphiql(request: Request) -> bool:
    """A browser navigating to the endpoint: a GET that accepts HTML and runs no query."""
    if request.method not in ("GET", "HEAD") or "query" in request.query_params:
        return False
    return "text/html" in request.headers.get("accept", "")


def graphiql_html(endpoint: str, assets: str = STATIC_URL) -> str:
    """The page: GraphiQL on `endpoint`, its files under `assets` (paths on this origin)."""
    links = "\n".join(
        f'    <link rel="stylesheet" href="{escape(assets)}/{name}">' for name in STYLESHEETS
    )
    scripts = "\n".join(
        f'    <script src="{escape(assets)}/{name}" defer></script>' for name in SCRIPTS
    )
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>Portcullis GraphQL admin API - GraphiQL</title>
    <link rel="icon" href="data:,">
{links}
{scripts}
  </head>
  <body>
    <div id="graphiql" data-endpoint="{escape(endpoint)}">Loading GraphiQL…</div>
    <noscript>GraphiQL needs JavaScript; POST queries to {escape(endpoint)} instead.</noscript>
  </body>
</html>
"""


def graphiql_response(request: Request) -> Response:
    """The GraphiQL page for the endpoint the request was sent to (behind any root path)."""
    root = request.base_url.path.rstrip("/")
    return HTMLResponse(
        graphiql_html(endpoint=request.url.path, assets=root + STATIC_URL),
        headers={"content-security-policy": CONTENT_SECURITY_POLICY, "cache-control": "no-store"},
    )


def install_graphiql_assets(app: Starlette) -> None:
    """Serve the vendored GraphiQL files under `STATIC_URL`."""
    app.mount(STATIC_URL, static_app, name="graphiql-assets")
