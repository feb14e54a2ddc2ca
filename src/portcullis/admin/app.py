"""Control-plane FastAPI application (health and config status; the full admin API grows here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis import __version__
from portcullis.logging import configure_logging
from portcullis.problems import PROBLEM_CONTENT_TYPE, ProblemKind, problem_body
from portcullis.settings import Settings

NOT_READY = ProblemKind("not-ready", "Control plane is not ready", 503)


def create_admin_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from portcullis.store.engine import create_engine

        engine = create_engine(settings.database_url)
        state["engine"] = engine
        yield
        await engine.dispose()

    app = FastAPI(
        title="Portcullis control plane",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/health/live", tags=["health"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/health/ready", tags=["health"], responses={503: {"description": "Not ready"}})
    async def ready() -> Any:
        from portcullis.store.config_repository import ConfigRepository
        from portcullis.store.migrations import is_at_head

        engine: AsyncEngine = state["engine"]
        try:
            version = await ConfigRepository(engine).current_version()
        except Exception as exc:
            return _not_ready("store", f"store unreachable: {type(exc).__name__}")
        if not await is_at_head(settings.database_url):
            return _not_ready("migrations", "database schema is not at the latest migration")
        return {"status": "ok", "config_version": version}

    return app


def _not_ready(component: str, detail: str) -> Response:
    return Response(
        content=problem_body(NOT_READY, detail, component=component),
        status_code=503,
        media_type=PROBLEM_CONTENT_TYPE,
        headers={"retry-after": "5"},
    )


def create_app() -> FastAPI:
    """granian factory for the control-plane process."""
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_admin_app(settings)
