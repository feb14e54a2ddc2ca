"""Jinja2 templates of the web applications and the `render` every page uses.

Templates are autoescaped; `static(path)` gives a static file's URL with its content
hash (`?v=`), so browsers cache assets and a new version is fetched at once. Every
page gets `csrf_token` (the session's synchronizer token, or the pre-session one of a
sign-in form; web/csrf.py), `principal` (whoever is signed in, or None) and `web`
(the application: dashboard or portal).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from portcullis import __version__
from portcullis.web.csrf import csrf_token, set_pending_cookies
from portcullis.web.sessions import web_app_of

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@functools.cache
def _file_hash(path: str) -> str:
    file = (STATIC / path).resolve()
    if not file.is_relative_to(STATIC.resolve()) or not file.is_file():
        raise FileNotFoundError(f"no static file {path!r}")
    return hashlib.sha256(file.read_bytes()).hexdigest()[:12]


def static_url(root: str, path: str) -> str:
    """`<root>/static/<path>?v=<content hash>`."""
    return f"{root}/static/{path}?v={_file_hash(path)}"


def is_htmx(request: Request) -> bool:
    """The request came from htmx (it swaps part of a page: render the partial)."""
    return request.headers.get("hx-request") == "true"


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The template rendered for `request` (see the module for what every page gets)."""
    web = web_app_of(request)
    values: dict[str, Any] = {
        "request": request,
        "web": web,
        "root": web.root,
        "static": functools.partial(static_url, web.root),
        "csrf_token": csrf_token(request),
        "principal": getattr(request.state, "principal", None),
        "version": __version__,
        "htmx": is_htmx(request),
    }
    values.update(context or {})
    body = environment.get_template(template).render(values)
    response = HTMLResponse(body, status_code=status_code, headers=headers)
    set_pending_cookies(request, response)
    return response
