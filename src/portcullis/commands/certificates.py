"""`portcullis certificates list|add|remove`: TLS certificates from the command line.

Like `portcullis apis`, the commands work on the store directly (`--database-url` or
`PORTCULLIS_DATABASE_URL`) through the admin API's entity service, acting as
`cli:<os user>` in the audit log; the TLS port serves a change without a restart.
Keys are read from files and stored sealed with the deployment secret (run with the
gateway's `PORTCULLIS_SECRET_KEY` or secret file).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from portcullis.commands.config import DatabaseUrl, _database_url
from portcullis.commands.keys import JsonFlag, _print_json, _with_store, console, out
from portcullis.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from portcullis.services.context import Operation
    from portcullis.services.entities import EntityService
    from portcullis.services.errors import ServiceError

app = typer.Typer(
    name="certificates",
    help="TLS certificates served by SNI on the proxy's TLS port (docs/tls.md).",
    no_args_is_help=True,
    add_completion=False,
)
_FIELDS = {"/cert": "--cert-file", "/key": "--key-file", "/snis": "--sni", "/name": "NAME"}


def _refusal(exc: ServiceError) -> UserError:
    for error in exc.errors:
        where = error.pointer.split("/certificates/0", 1)[-1] if error.pointer else ""
        option = next((o for p, o in _FIELDS.items() if where.startswith(p)), error.pointer)
        console.print(f"[bold red]✗[/] [cyan]{escape(option or '')}[/]: {escape(error.detail)}")
    return UserError(str(exc))


def _store(database_url: str | None, work: Callable[[EntityService, Operation], Any]) -> Any:
    async def run(engine: AsyncEngine) -> Any:
        from portcullis.identity.secrets import load_server_secret
        from portcullis.services.audit import AuditLog
        from portcullis.services.config_editor import ConfigEditor
        from portcullis.services.context import Operation
        from portcullis.services.entities import EntityService
        from portcullis.services.entity_kinds import CERTIFICATES
        from portcullis.services.state import AdminState
        from portcullis.settings import Settings
        from portcullis.store.config_repository import ConfigRepository

        settings = Settings()
        audit = AuditLog(engine)
        state = AdminState(
            settings=settings,
            engine=engine,
            editor=ConfigEditor(ConfigRepository(engine)),
            audit=audit,
            secret=load_server_secret(settings.secret_key, settings.secret_key_file),
        )
        service = EntityService(state.collection(CERTIFICATES), state.editor, engine, state.secret)
        return await work(service, Operation.for_cli(audit))

    return _with_store(_database_url(database_url), run, _refusal)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None


def _expiry(cert: str) -> str:
    from portcullis.model.certificate_pem import not_after

    try:
        end = not_after(cert)
    except ValueError:
        return "?"
    days = (end - datetime.now(UTC)).days
    return f"{end:%Y-%m-%d} ({days} days)" if days >= 0 else f"{end:%Y-%m-%d} (EXPIRED)"


@app.command("list")
def list_certificates(json_output: JsonFlag = False, database_url: DatabaseUrl = None) -> None:
    """List the certificates: server names and expiry (keys are never shown)."""

    async def work(service: EntityService, op: Operation) -> list[dict[str, Any]]:
        from portcullis.services.entities import EntityQuery

        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await service.list(op, EntityQuery(limit=500, cursor=cursor))
            items += page.items
            if page.next_cursor is None:
                return items
            cursor = page.next_cursor

    items = _store(database_url, work)
    rows = [
        {"name": c["name"], "snis": c.get("snis", []), "expires": _expiry(c["cert"])} for c in items
    ]
    if json_output:
        _print_json(rows)
        return
    table = Table("name", "server names", "expires")
    for row in rows:
        table.add_row(row["name"], ", ".join(row["snis"]) or "(not served)", row["expires"])
    out.print(table)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The certificate's name.")],
    cert_file: Annotated[
        Path, typer.Option("--cert-file", help="PEM chain, leaf first.", exists=True)
    ],
    key_file: Annotated[Path, typer.Option("--key-file", help="PEM private key.", exists=True)],
    sni: Annotated[
        list[str] | None,
        typer.Option("--sni", help="A server name to serve it for (repeat; '*.' wildcards)."),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the certificate of that name (renewal).")
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Add (or with --replace renew) a certificate; served without a restart."""
    from pydantic import ValidationError

    from portcullis.model.certificates import Certificate

    data = {"name": name, "cert": _read(cert_file), "key": _read(key_file), "snis": sni or []}
    try:
        given = Certificate.model_validate(data).model_dump(mode="json", exclude_defaults=True)
    except ValidationError as exc:
        for error in exc.errors():
            where = "/" + "/".join(str(p) for p in error["loc"])
            option = next((o for p, o in _FIELDS.items() if where.startswith(p)), where)
            console.print(f"[bold red]✗[/] [cyan]{escape(option)}[/]: {escape(error['msg'])}")
        raise UserError("the certificate was refused") from None

    async def work(service: EntityService, op: Operation) -> Any:
        if replace:
            return await service.replace(op, name, given)
        return await service.create(op, given)

    _store(database_url, work)
    console.print(f"certificate [bold]{escape(name)}[/] {'replaced' if replace else 'added'}")


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The certificate's name.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Remove a certificate (its server names get the default certificate)."""

    async def work(service: EntityService, op: Operation) -> Any:
        return await service.delete(op, name)

    _store(database_url, work)
    console.print(f"certificate [bold]{escape(name)}[/] removed")


def register_certificates(root: typer.Typer) -> None:
    root.add_typer(app, name="certificates")
