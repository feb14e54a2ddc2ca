"""`portcullis serve` and `portcullis demo`: run the data plane and control plane processes.

Each plane is its own granian server process (the data plane with `--workers N`).
This process supervises them (`portcullis.supervision`): it refuses ports that are
already held, restarts a plane that dies, and forwards SIGINT/SIGTERM so granian
drains in-flight requests.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from portcullis.errors import UserError
from portcullis.hybrid.roles import is_loopback, role_problems
from portcullis.settings import Settings
from portcullis.supervision.planes import (
    Plane,
    gateway_planes,
    granian_argv,
    role_planes,
    tls_planes,
)
from portcullis.supervision.ports import refuse_held_ports
from portcullis.supervision.supervisor import Supervisor

console = Console(stderr=True)
if TYPE_CHECKING:
    from portcullis.model.certificates import Certificate
    from portcullis.model.config import GatewayConfig
    from portcullis.supervision.tls_engine import TlsControl

REPO_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "gateway.yaml"
DEMO_UPSTREAM_PORT = 9000


async def prepare_store(
    settings: Settings,
    config_file: Path | None,
    *,
    demo_inbox: str | None = None,
    demo_log: Path | None = None,
    demo_tls: tuple[Path, Path] | None = None,
) -> tuple[int, list[Certificate]]:
    """Migrate the store, apply `config_file` if given; return the current config version
    and its certificates (the TLS port's "auto" and engine).

    `demo_inbox`: a webhook endpoint for every event is made there first (once), so the
    demo's receiver hears of the config being applied and of everything after.
    `demo_log`: a global `file-log` plugin writes every request there (the example config
    can't name it: the path must be absolute, and the demo runs anywhere).
    `demo_tls`: a certificate (file, key file) served for `localhost` on the TLS port."""
    from portcullis.model.loader import ConfigError, load_config_file
    from portcullis.store.config_repository import ConfigRepository
    from portcullis.store.engine import create_engine
    from portcullis.store.migrations import upgrade_to_head

    await upgrade_to_head(settings.database_url)
    engine = create_engine(settings.database_url)
    try:
        repo = ConfigRepository(engine, keep_versions=settings.config_history_keep)
        if demo_inbox is not None:
            from portcullis.commands.webhooks import ensure_endpoint

            await ensure_endpoint(engine, demo_inbox, "the demo upstream's inbox")
        if config_file is not None:
            try:
                config = load_config_file(config_file)
            except ConfigError as exc:
                raise UserError(f"{config_file}: invalid config\n{exc}") from None
            if demo_log is not None or demo_tls is not None:
                config = _demo_additions(config, demo_log, demo_tls)
            version = await repo.apply(config, author="portcullis serve", comment=str(config_file))
            return version.version, list(config.certificates)
        current = await repo.current()
        if current is None:
            return 0, []
        return current.version, list(current.config.certificates)
    finally:
        await engine.dispose()


def _demo_additions(
    config: GatewayConfig, log: Path | None, tls: tuple[Path, Path] | None
) -> GatewayConfig:
    from portcullis.commands.demo_tls import DEMO_SERVER_NAME
    from portcullis.model.config import GatewayConfig

    document = config.model_dump(mode="json")
    if log is not None:
        document["plugins"].append({"name": "file-log", "config": {"path": str(log)}})
    if tls is not None:
        cert, key = tls
        document["certificates"].append(
            {
                "name": "demo-localhost",
                "cert": cert.read_text(),
                "key": key.read_text(),
                "snis": [DEMO_SERVER_NAME],
            }
        )
    return GatewayConfig.model_validate(document)


DEMO_SANDBOX_CONSUMER = "demo-app"


async def demo_sandbox_key(settings: Settings) -> str:
    """A new development key of the demo's consumer, shown in the banner (a key is shown
    only once, so each demo start makes one; it expires after a day)."""
    from portcullis.commands.keys import key_service
    from portcullis.identity.key_admin import KeySpec
    from portcullis.identity.keys import Environment
    from portcullis.store.engine import create_engine

    engine = create_engine(settings.database_url)
    try:
        service, op = key_service(engine)
        spec = KeySpec(
            name="demo sandbox key",
            environment=Environment.development,
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        created = await service.create(op, DEMO_SANDBOX_CONSUMER, spec)
        return created.key
    finally:
        await engine.dispose()


DEMO_DEVELOPER = "developer@example.com"
DEMO_ADMIN = "admin@example.com"


async def demo_admin(settings: Settings) -> tuple[str, str]:
    """The demo's dashboard owner and a new password for it, shown in the banner (each
    demo start sets one, as for the portal developer; the store is the demo's own)."""
    import secrets

    from portcullis.services.admin_auth import AuthService
    from portcullis.services.rbac import Role
    from portcullis.store.engine import create_engine

    engine = create_engine(settings.database_url)
    try:
        auth = AuthService(engine)
        password = secrets.token_urlsafe(12)
        existing = [u for u in await auth.list_users() if u.email == DEMO_ADMIN]
        if existing:
            await auth.update_user(existing[0].id, password=password, disabled=False)
        else:
            await auth.create_user(DEMO_ADMIN, password, Role.OWNER, None)
        return DEMO_ADMIN, password
    finally:
        await engine.dispose()


async def demo_developer(settings: Settings) -> tuple[str, str]:
    """The demo's portal developer (verified, with a personal team) and a new password for
    it, shown in the banner (each demo start sets one)."""
    import secrets

    from argon2 import PasswordHasher

    from portcullis.services.audit import AuditLog
    from portcullis.services.context import RequestFacts
    from portcullis.services.portal_accounts import PortalAccounts
    from portcullis.services.portal_mail import mail_sender
    from portcullis.store.engine import create_engine

    engine = create_engine(settings.database_url)
    try:
        accounts = PortalAccounts(
            engine,
            AuditLog(engine),
            mail_sender(settings, engine),
            PasswordHasher(),
            base_url=settings.portal_url or settings.admin_url,
        )
        password = secrets.token_urlsafe(12)
        facts = RequestFacts(f"cli-{secrets.token_hex(8)}", None)
        await accounts.ensure_developer(facts, DEMO_DEVELOPER, password, "Demo Developer")
        return DEMO_DEVELOPER, password
    finally:
        await engine.dispose()


def supervise(
    planes: list[Plane], settings: Settings, banner: str | None, tls: TlsControl | None = None
) -> int:
    """Run `planes` until SIGINT/SIGTERM (or a crash loop); returns the exit code."""
    env = os.environ.copy()
    env.update(
        {
            "PORTCULLIS_DATABASE_URL": settings.database_url,
            "PORTCULLIS_PROXY_PORT": str(settings.proxy_port),
            "PORTCULLIS_ADMIN_PORT": str(settings.admin_port),
            "PORTCULLIS_PROXY_TLS_PORT": str(settings.proxy_tls_port),
            # Workers split gateway-wide allowances (the retry budget's reserve).
            "PORTCULLIS_WORKERS": str(settings.workers),
            "PORTCULLIS_ROLE": settings.role,
            "PORTCULLIS_LKG_DIR": str(settings.lkg_dir),
        }
    )
    from portcullis.analytics.metrics import MULTIPROC_ENV, prepare_metrics_dir

    # Every plane writes its Prometheus metrics here; the control plane serves them all.
    env[MULTIPROC_ENV] = str(prepare_metrics_dir(settings.metrics_dir))
    return Supervisor(planes, settings, env, tls).run(banner)


def with_tls(
    planes: list[Plane], settings: Settings, certificates: Sequence[Certificate]
) -> TlsControl | None:
    """The TLS port's planes (granian or hypercorn: supervision/tls_engine.py) when
    `proxy_tls` says so ("auto": the config serves a certificate now); its port is
    checked like the others'."""
    serves_certificates = any(c.snis for c in certificates)
    wanted = settings.proxy_tls == "on" or (settings.proxy_tls == "auto" and serves_certificates)
    if not wanted:
        return None
    from portcullis.supervision.tls_engine import TlsControl

    refuse_held_ports([*planes, tls_planes(settings)[0]])
    return TlsControl(settings, certificates)


def _settings(
    proxy_port: int | None,
    admin_port: int | None,
    host: str | None,
    workers: int | None,
    role: str | None = None,
) -> Settings:
    overrides: dict[str, object] = {}
    if role is not None:
        overrides["role"] = role
    if proxy_port is not None:
        overrides["proxy_port"] = proxy_port
    if admin_port is not None:
        overrides["admin_port"] = admin_port
    if host is not None:
        overrides["proxy_host"] = host
        overrides["admin_host"] = host
    if workers is not None:
        overrides["workers"] = workers
    return Settings(**overrides)  # type: ignore[arg-type]


class Role(enum.StrEnum):
    all = "all"
    control_plane = "control-plane"
    data_plane = "data-plane"


ProxyPort = Annotated[int | None, typer.Option("--proxy-port", help="Data-plane port [8000].")]
AdminPort = Annotated[int | None, typer.Option("--admin-port", help="Control-plane port [8001].")]
Host = Annotated[str | None, typer.Option("--host", help="Address both planes bind to.")]
Workers = Annotated[int | None, typer.Option("--workers", min=1, help="Data-plane workers.")]


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Annotated[
            Path | None,
            typer.Option("--config", "-c", help="Apply this config file before starting."),
        ] = None,
        proxy_port: ProxyPort = None,
        admin_port: AdminPort = None,
        host: Host = None,
        workers: Workers = None,
        role: Annotated[
            Role | None,
            typer.Option(
                "--role",
                help="all: both planes on one store (the default; also PORTCULLIS_ROLE); "
                "control-plane: the admin API, which data planes connect to; data-plane: "
                "the proxy only, config from PORTCULLIS_CONTROL_PLANE_URL (docs/hybrid.md).",
            ),
        ] = None,
    ) -> None:
        """Run the gateway: data plane and control plane (or one of them: --role)."""
        settings = _settings(proxy_port, admin_port, host, workers, role.value if role else None)
        problems = role_problems(settings)
        if problems:
            raise UserError("\n".join(problems))
        planes = role_planes(settings)
        if settings.role == "data-plane":
            if config is not None:
                raise UserError(
                    "--config: a data plane has no store; apply config on the control plane"
                )
            refuse_held_ports(planes)
            banner = (
                f"proxy   {settings.proxy_url}\n"
                f"node    {settings.admin_url}/health/ready\n"
                f"config  from {settings.control_plane_url} "
                f"(last-known-good: {settings.lkg_dir})"
            )
            if settings.proxy_tls != "off":
                console.print(
                    "[yellow]a data plane serves no TLS port yet (docs/hybrid.md): "
                    "PORTCULLIS_PROXY_TLS is ignored[/]"
                )
            raise typer.Exit(supervise(planes, settings, banner))
        # Before the store is touched: a held port means another gateway may be using it.
        refuse_held_ports(planes)
        version, certificates = asyncio.run(prepare_store(settings, config))
        if settings.role == "control-plane":
            if settings.admin_tls_cert_file is None and not is_loopback(settings.admin_host):
                console.print(
                    "[yellow]the control plane listens without TLS on "
                    f"{settings.admin_host}: data planes must not send the cluster token "
                    "over a network in clear (PORTCULLIS_ADMIN_TLS_CERT_FILE/_KEY_FILE, or "
                    "a TLS terminator in front)[/]"
                )
            banner = (
                f"admin   {settings.admin_url}/health/ready\n"
                f"nodes   {settings.admin_url}/cluster/v1/connect (data planes connect here)\n"
                f"config  version {version}  ({settings.database_url})"
            )
            raise typer.Exit(supervise(planes, settings, banner))
        tls = with_tls(planes, settings, certificates)
        banner = (
            f"proxy   {settings.proxy_url}\n"
            + (f"tls     {settings.proxy_tls_url}  (HTTP/2, {tls.engine})\n" if tls else "")
            + f"admin   {settings.admin_url}/health/ready\n"
            f"config  version {version}  ({settings.database_url})"
        )
        raise typer.Exit(supervise(planes, settings, banner, tls))

    @app.command()
    def demo(
        config: Annotated[
            Path, typer.Option("--config", "-c", help="Demo gateway config to apply.")
        ] = REPO_EXAMPLE,
        upstream_port: Annotated[
            int, typer.Option("--upstream-port", help="Port of the bundled demo upstream.")
        ] = DEMO_UPSTREAM_PORT,
        proxy_port: ProxyPort = None,
        admin_port: AdminPort = None,
        workers: Workers = None,
    ) -> None:
        """Run the gateway on the embedded default with a demo upstream and routes."""
        from portcullis.commands.demo_tls import demo_certificate

        if not config.is_file():
            raise UserError(f"--config: file not found: {config}")
        # The demo's webhook receiver is on loopback: allowed unless the user said otherwise.
        os.environ.setdefault("PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS", '["127.0.0.1/32"]')
        # The portal's mail stays in the store; the demo shows it at /portal/outbox.
        os.environ.setdefault("PORTCULLIS_PORTAL_OUTBOX_VIEW", "true")
        settings = _settings(proxy_port, admin_port, None, workers)
        planes = [
            Plane(
                "demo upstream",
                granian_argv(
                    "portcullis.demo.upstream:create_demo_app",
                    "127.0.0.1",
                    upstream_port,
                    1,
                    settings,
                    grace=1,
                ),
                "127.0.0.1",
                upstream_port,
            ),
            *gateway_planes(settings),
        ]
        # Before the store is touched: a held port means another gateway may be using it.
        refuse_held_ports(planes)
        Path("var").mkdir(exist_ok=True)
        inbox = f"http://127.0.0.1:{upstream_port}/webhooks/inbox"
        requests_log = Path("var/requests.log").resolve()
        tls_files = demo_certificate(Path("var"))
        version, certificates = asyncio.run(
            prepare_store(
                settings, config, demo_inbox=inbox, demo_log=requests_log, demo_tls=tls_files
            )
        )
        tls = with_tls(planes, settings, certificates)
        sandbox_key = asyncio.run(demo_sandbox_key(settings))
        developer, developer_password = asyncio.run(demo_developer(settings))
        admin, admin_password = asyncio.run(demo_admin(settings))
        proxy = settings.proxy_url
        tls_url = f"https://localhost:{settings.proxy_tls_port}"
        tls_lines = (
            (
                f"tls        {tls_url} (HTTP/2 and HTTP/1.1; a self-signed certificate for "
                f"localhost: {tls_files[0]})\n"
            )
            if tls is not None
            else ""
        )
        tls_try = (
            f"      curl -i --http2 --cacert {tls_files[0]} {tls_url}/demo/items   (TLS, HTTP/2)\n"
            if tls is not None
            else ""
        )
        banner = (
            f"proxy      {proxy}\n"
            f"{tls_lines}"
            f"admin      {settings.admin_url}/health/ready\n"
            f"REST API   {settings.admin_url}/docs (Swagger UI; /openapi.json)\n"
            f"GraphQL    {settings.admin_url}/graphql (GraphiQL in a browser; "
            "SDL at /graphql/schema.graphql)\n"
            f"live       {settings.admin_url}/admin/v1/stream (server-sent events; "
            "docs/realtime.md)\n"
            f"dashboard  {settings.admin_url}/dashboard/ (owner {admin}, password "
            f"{admin_password}; docs/web.md)\n"
            f"upstream   http://127.0.0.1:{upstream_port}/openapi.json (demo API)\n"
            f"catalogue  {settings.admin_url}/apis/demo/v2/openapi.json (the demo API as "
            "clients see it; all APIs: /apis)\n"
            f"portal     {settings.admin_url}/portal/ (developer {developer}, password "
            f"{developer_password}; mail: /portal/outbox)\n"
            f"config     version {version} from {config}\n"
            f"store      {settings.database_url}\n"
            f"requests   {requests_log} (file-log: one JSON line per request; "
            "docs/log-shipping.md)\n\n"
            f"try:  curl -i {proxy}/demo/items\n"
            f"      curl -i -X POST {proxy}/demo/items -H 'content-type: application/json' "
            '-d \'{"name": "moat", "price": 300}\'\n'
            f"{tls_try}"
            f"      curl -i {proxy}/nope   (404 problem+json)\n"
            f"      curl -i {proxy}/v1/items   (API demo v1: Deprecation and Sunset headers)\n"
            f"      curl -i {proxy}/v2/items -H 'x-api-key: {sandbox_key}'\n"
            "            (a development key: answered by the v2 sandbox's mock, from the "
            "description)\n"
            f"      portcullis sdk generate --api demo --version v2 --lang python --out sdk "
            f"--admin-url {settings.admin_url}\n"
            f"      curl -s {inbox}   (signed webhooks the gateway sent: every event)\n\n"
            "Ctrl-C stops everything."
        )
        raise typer.Exit(supervise(planes, settings, banner, tls))
