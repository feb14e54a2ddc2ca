"""Control-plane FastAPI application: the admin REST API under /admin/v1, health, docs.

The lifespan opens the store, starts the auth service (printing a one-time
bootstrap token when the store has no admin user yet) and shares the admin
services through `app.state`.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request, WebSocket
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import BaseRoute

from portcullis import __version__
from portcullis.admin.background import BackgroundJobs
from portcullis.admin.body_guard import BodyGuardMiddleware
from portcullis.admin.dependencies import deployment_wide_reader
from portcullis.admin.docs import install_docs
from portcullis.admin.idempotency import IdempotencyMiddleware
from portcullis.admin.middleware import SecurityHeadersMiddleware
from portcullis.admin.openapi import install_openapi
from portcullis.admin.problems import install_problem_handlers
from portcullis.admin.ratelimit import AdminRateLimiter, Policy, RateLimitMiddleware
from portcullis.identity.secrets import load_server_secret
from portcullis.logging import configure_logging
from portcullis.problems import PROBLEM_CONTENT_TYPE, ProblemKind, problem_body
from portcullis.runtime.heartbeat import list_nodes
from portcullis.services.admin_auth import AuthService
from portcullis.services.audit import AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.data_plane import FRESH_BEATS, NodeState, classify, data_plane_problem
from portcullis.services.rbac import Permission
from portcullis.services.state import AdminState
from portcullis.services.web_sessions import WebSessions
from portcullis.settings import Settings
from portcullis.silent_connections import SilentConnectionReaper

if TYPE_CHECKING:
    from argon2 import PasswordHasher

NOT_READY = ProblemKind("not-ready", "Control plane is not ready", 503)
API_PREFIX = "/admin/v1"
logger = logging.getLogger("portcullis.admin")


def print_bootstrap_token(token: str, admin_url: str) -> None:
    """Show the one-time bootstrap token on stderr (the only place it ever appears)."""
    line = "=" * 72
    print(
        f"\n{line}\n"
        "Portcullis has no admin user yet. Create the first owner with this one-time token:\n\n"
        f"    {token}\n\n"
        f"  curl -X POST {admin_url}{API_PREFIX}/admin-users \\\n"
        f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        '    -d \'{"email": "you@example.com", "password": "…", "role": "owner"}\'\n\n'
        "It stops working once an admin user exists, and a restart replaces it.\n"
        f"(Or run: portcullis admin create --email you@example.com --role owner)\n{line}\n",
        file=sys.stderr,
        flush=True,
    )


def build_api_router() -> APIRouter:
    from portcullis.admin.routers import audit as audit_routes
    from portcullis.admin.routers import auth as auth_routes
    from portcullis.admin.routers import cache as cache_routes
    from portcullis.admin.routers import config as config_routes
    from portcullis.admin.routers import credentials as credential_routes
    from portcullis.admin.routers import data_plane as data_plane_routes
    from portcullis.admin.routers import keys as key_routes
    from portcullis.admin.routers import oauth_clients as oauth_client_routes
    from portcullis.admin.routers import organizations as org_routes
    from portcullis.admin.routers.entities import build_entity_router

    api = APIRouter(prefix=API_PREFIX)
    api.include_router(build_entity_router())
    api.include_router(config_routes.router)
    api.include_router(auth_routes.router)
    api.include_router(org_routes.router)
    api.include_router(audit_routes.router)
    api.include_router(data_plane_routes.router)
    api.include_router(key_routes.router)
    api.include_router(oauth_client_routes.router)
    api.include_router(credential_routes.router)
    api.include_router(cache_routes.router)
    from portcullis.admin.routers import analytics as analytics_routes

    api.include_router(analytics_routes.router)
    from portcullis.admin.routers import usage as usage_routes

    api.include_router(usage_routes.router)
    from portcullis.admin.routers import alerts as alert_routes

    api.include_router(alert_routes.router)
    from portcullis.admin.routers import event_types as event_type_routes
    from portcullis.admin.routers import schemas as schema_routes

    api.include_router(schema_routes.router)
    api.include_router(event_type_routes.router)
    from portcullis.admin.routers import stream as stream_routes
    from portcullis.admin.routers import webhooks as webhook_routes

    api.include_router(webhook_routes.router)
    api.include_router(stream_routes.router)
    from portcullis.admin.routers import ws as ws_routes

    api.include_router(ws_routes.router)
    from portcullis.admin.routers import catalogue as catalogue_routes

    api.include_router(catalogue_routes.router)
    from portcullis.admin.routers import sdks as sdk_routes

    api.include_router(sdk_routes.router)
    return api


@functools.cache
def shared_routes(build: Callable[[], APIRouter]) -> list[BaseRoute]:
    """The routes of `build()`'s router, built once per process and shared by every app
    made in it (a test process makes hundreds; FastAPI builds the routes of an included
    router again for each app, about 0.8 s of CPU for the admin API).

    Only for routers whose routes keep nothing of an app: their endpoints and
    dependencies find the app's state through the request (`request.app.state`), and
    what they cache belongs to that state (per store), never to the route."""
    holder = APIRouter()
    holder.include_router(build())
    return list(holder.routes)


def build_oauth_router() -> APIRouter:
    from portcullis.admin.routers import oauth as oauth_routes

    return oauth_routes.router


def build_catalogue_router() -> APIRouter:
    from portcullis.admin.routers.catalogue import public_router

    return public_router


def build_consumer_router() -> APIRouter:
    from portcullis.admin.routers.analytics import consumer_router

    return consumer_router


def build_graph_router(app: FastAPI, settings: Settings) -> APIRouter:
    """The GraphQL face (`/graphql`), on the same services, state and authentication.

    Its machinery (strawberry, the schema built from every model: about 1.3 s of CPU)
    is loaded by the first GraphQL request, not when the app is made: a control plane
    that never gets one (most, and most test servers) does not pay for it."""
    built: list[Any] = []

    def endpoint() -> Any:
        if not built:
            built.append(_graph_endpoint(app, settings))
        return built[0]

    async def graphql(request: Request) -> Response:
        from portcullis.admin import graphql_sse

        if graphql_sse.wants_event_stream(request):
            return await graphql_sse.handle(request, endpoint(), app.state.authenticator, settings)
        response: Response = await endpoint().handle(request)
        return response

    async def graphql_ws(websocket: WebSocket) -> None:
        from portcullis.admin import graphql_ws

        await graphql_ws.serve(websocket, endpoint(), app.state.authenticator, settings)

    async def schema_sdl(request: Request) -> Response:
        response: Response = await endpoint().schema_sdl(request)
        return response

    router = APIRouter()
    router.add_api_route("/graphql", graphql, methods=["GET", "POST"], include_in_schema=False)
    router.add_api_websocket_route("/graphql", graphql_ws)
    router.add_api_route(
        "/graphql/schema.graphql", schema_sdl, methods=["GET"], include_in_schema=False
    )
    return router


def _graph_endpoint(app: FastAPI, settings: Settings) -> Any:
    from portcullis.admin.plugin_schemas import plugin_names, plugin_schema
    from portcullis.admin.routers.oauth import oauth_server_of
    from portcullis.graph.context import GraphDeps
    from portcullis.graph.http import GraphEndpoint, GraphOptions
    from portcullis.graph.limits import limits_from
    from portcullis.services.graphql_documents import PersistedQueries

    # Application-wide objects the GraphQL resolvers ask for by name (GraphDeps.extras).
    extras: dict[str, Callable[[], Any]] = {
        "oauth_server": lambda: oauth_server_of(app),
        "authenticator": lambda: app.state.authenticator,
        "plugin_schemas": lambda: (plugin_names, plugin_schema),
    }
    deps = GraphDeps(
        state=lambda: app.state.admin,
        authenticate=lambda credential: app.state.authenticator.authenticate(credential),
        extras=lambda name: extras[name]() if name in extras else None,
    )
    options = GraphOptions(
        limits=limits_from(settings),
        introspection=settings.graphql_introspection,
        persisted=PersistedQueries.from_settings(settings),
    )
    return GraphEndpoint(deps, options)


def create_admin_app(
    settings: Settings | None = None, *, password_hasher: PasswordHasher | None = None
) -> FastAPI:
    """The control plane on `settings`; `password_hasher` replaces the argon2 default
    (production parameters) for in-process tests, which sign hundreds of admins in."""
    settings = settings or Settings()
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from portcullis.admin.routers.oauth import oauth_server_of
        from portcullis.services.portal import build_portal
        from portcullis.store.config_repository import ConfigRepository
        from portcullis.store.engine import create_engine
        from portcullis.store.migrations import is_at_head

        engine = create_engine(settings.database_url)
        state["engine"] = engine
        secret = load_server_secret(settings.secret_key, settings.secret_key_file)
        auth = AuthService(engine, secret=secret, hasher=password_hasher)
        app.state.authenticator = auth
        app.state.web_sessions = WebSessions(engine)
        app.state.admin = AdminState(
            settings=settings,
            engine=engine,
            editor=ConfigEditor(
                ConfigRepository(engine, keep_versions=settings.config_history_keep)
            ),
            audit=AuditLog(engine),
            secret=secret,
        )
        app.state.admin.portal = build_portal(
            app.state.admin, auth.hasher, lambda: oauth_server_of(app)
        )
        try:
            migrated = await is_at_head(engine)
        except Exception:
            logger.exception("could not read the store's schema version")
            migrated = False
        jobs = BackgroundJobs()
        if migrated:
            bootstrap = await auth.start()
            if bootstrap is not None:
                print_bootstrap_token(bootstrap, settings.admin_url)
            jobs.start(app.state.admin)
        else:
            logger.warning("the store is not migrated; the admin API answers 401 until it is")
        silent = SilentConnectionReaper(settings.admin_port, settings.client_first_byte_timeout)
        if settings.client_first_byte_timeout > 0:
            silent.start()
        yield
        silent.stop()
        await jobs.stop()
        await engine.dispose()

    app = FastAPI(
        title="Portcullis control plane",
        version=__version__,
        summary="Admin REST API of the Portcullis API gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_problem_handlers(app)
    app.add_middleware(
        IdempotencyMiddleware,
        engine=lambda: app.state.admin.engine,
        authenticate=lambda credential: app.state.authenticator.authenticate(credential),
        secret=lambda: app.state.admin.secret,
    )
    # Outside the Idempotency-Key middleware, which reads bodies itself.
    app.add_middleware(BodyGuardMiddleware, routes=lambda: app.routes)
    # Consumers' self-service endpoints (API-key authenticated) and the API catalogue
    # (GET /apis…, open to anyone for public APIs) get the same limits, each its own.
    for prefix in (API_PREFIX, "/consumer/v1", "/apis"):
        app.add_middleware(
            RateLimitMiddleware,
            limiter=AdminRateLimiter(
                Policy(
                    "caller", settings.admin_rate_limit_per_minute, settings.admin_rate_limit_burst
                ),
                Policy(
                    "ip",
                    settings.admin_rate_limit_ip_per_minute,
                    settings.admin_rate_limit_ip_burst,
                ),
            ),
            prefix=prefix,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    # CORS is off unless origins are configured (`Settings.admin_cors_origins`, read
    # defensively so the control plane also runs with settings that lack the field).
    cors_origins: list[str] = list(settings.admin_cors_origins)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "If-Match", "Idempotency-Key"],
            expose_headers=[
                "ETag",
                "Location",
                "Link",
                "RateLimit",
                "RateLimit-Policy",
                "Retry-After",
            ],
        )

    @app.get("/health/live", tags=["Health"])
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/health/ready",
        tags=["Health"],
        description='200 `{"status": "ok"}` when ready, else a 503 problem. The details '
        "(config version, the data-plane workers with their PIDs, upstream health, and what "
        "failed) are shown to a deployment-wide admin credential with `config:read`, or to "
        "anyone when `readiness_details` is `public`.",
        responses={
            503: {
                "description": "Not ready; with the details, the problem's `component` names "
                "what failed: `store` (unreachable), `migrations` (schema not current) or "
                "`data-plane` (no worker heartbeat within three intervals, or a worker still "
                "serving an older config version after the propagation window; `nodes` lists "
                "the live workers)",
                "content": {
                    PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
        },
    )
    async def ready(request: Request) -> Any:
        from portcullis.store.config_repository import ConfigRepository
        from portcullis.store.migrations import is_at_head

        async def detailed() -> bool:
            if settings.readiness_details == "public":
                return True
            try:
                return bool(await deployment_wide_reader(request, Permission.CONFIG_READ))
            except Exception:  # no caller can be checked on a store that is down
                return False

        engine: AsyncEngine = state["engine"]
        try:
            head = await ConfigRepository(engine).head()
        except Exception as exc:
            return _not_ready(await detailed(), "store", f"store unreachable: {type(exc).__name__}")
        if not await is_at_head(engine):
            return _not_ready(
                await detailed(), "migrations", "database schema is not at the latest migration"
            )
        body: dict[str, Any] = {"status": "ok", "config_version": head.version}
        if not settings.ready_requires_data_plane:
            return body if await detailed() else {"status": "ok"}
        listed = await list_nodes(engine)
        statuses = classify(
            listed,
            head,
            now=datetime.now(UTC),
            heartbeat_interval=settings.heartbeat_interval,
            poll_interval=settings.config_poll_interval,
        )
        nodes = [s.as_json() for s in statuses if s.state is not NodeState.STALE]
        failure = data_plane_problem(statuses, head, FRESH_BEATS * settings.heartbeat_interval)
        if failure is not None:
            return _not_ready(
                await detailed(),
                "data-plane",
                failure,
                config_version=head.version,
                nodes=nodes,
            )
        if not await detailed():
            return {"status": "ok"}
        from portcullis.analytics.health import merge_upstream_health, upstream_statuses

        upstreams = merge_upstream_health(
            listed, fresh_for=FRESH_BEATS * settings.heartbeat_interval
        )
        # Upstream health is reported, never a readiness condition: the gateway is ready
        # even while an upstream is down (it answers 503 problems for that service).
        body["data_plane"] = {"nodes": nodes, "upstreams": upstream_statuses(upstreams)}
        return body

    from portcullis.admin.metrics_endpoint import install_metrics

    install_metrics(app, settings)
    app.router.routes.extend(shared_routes(build_api_router))
    app.include_router(build_graph_router(app, settings))
    app.router.routes.extend(shared_routes(build_oauth_router))
    app.router.routes.extend(shared_routes(build_consumer_router))
    app.router.routes.extend(shared_routes(build_catalogue_router))
    from portcullis.admin.routers.event_types import install_webhook_docs

    install_webhook_docs(app)
    install_openapi(app)
    install_docs(app)
    from portcullis.graph.graphiql import install_graphiql_assets

    install_graphiql_assets(app)
    install_web(app)
    return app


def install_web(app: FastAPI) -> None:
    """Mount the dashboard (`/dashboard/`) and the developer portal (`/portal/`)
    (portcullis/web, docs/web.md) on the control plane's services."""
    from portcullis.web.app import build_web_apps

    def services(name: str) -> Any:
        return {
            "admin": lambda: app.state.admin,
            "auth": lambda: app.state.authenticator,
            "web_sessions": lambda: app.state.web_sessions,
        }[name]()

    for path, web_app in build_web_apps(services).items():
        app.mount(path, web_app)


def _not_ready(detailed: bool, component: str, detail: str, **extensions: Any) -> Response:
    """The 503 problem; without `detailed`, it says only that the gateway is not ready."""
    content = (
        problem_body(NOT_READY, detail, component=component, **extensions)
        if detailed
        else problem_body(NOT_READY, "not ready")
    )
    return Response(
        content=content,
        status_code=503,
        media_type=PROBLEM_CONTENT_TYPE,
        headers={"retry-after": "5"},
    )


def create_app() -> FastAPI:
    """granian factory for the control-plane process."""
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return create_admin_app(settings)
