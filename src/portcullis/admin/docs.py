"""Swagger UI at /docs and ReDoc at /redoc, with every asset served by Portcullis itself.

FastAPI's default pages load their JavaScript and CSS from a CDN, which many
networks (and this project's machines) cannot reach. The PyPI package
`fastapi-offline` ships the Swagger UI and ReDoc bundles; they are served from
/static/docs/ and the pages point there (no Google Fonts either).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/static/docs"
logger = logging.getLogger("portcullis.admin")


def docs_assets_dir() -> Path | None:
    """Where the bundled Swagger UI / ReDoc files are, or None if the package is missing."""
    try:
        root = resources.files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def install_docs(app: FastAPI) -> bool:
    """Mount /docs, /redoc and their assets; False (and a warning) when assets are missing."""
    assets = docs_assets_dir()
    if assets is None:
        logger.warning("API docs disabled: the fastapi-offline package (docs assets) is missing")
        return False
    app.mount(ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")
    title = f"{app.title} {app.version}"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": False, "displayRequestDuration": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    return True
