"""`portcullis credentials create|list|show|rotate|delete KIND CONSUMER ...`.

basic-auth, hmac-auth and mtls-auth credentials of consumers (KIND: `basic-auth`,
`hmac-auth` or `mtls-auth`), on the store directly like `portcullis keys`: the same
service as the admin API (services/credentials.py), audited as `cli:<os user>`. A
secret made by the gateway (an hmac secret, a generated basic-auth password) is
the only thing `create` and `rotate` print on stdout; messages go to stderr. A
basic-auth password of your own is read from stdin (`--password-stdin`), never
from the command line (where `ps` would show it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from portcullis.commands.config import DatabaseUrl, _database_url
from portcullis.commands.keys import (
    JsonFlag,
    _print_json,
    _require_config,
    _with_store,
    console,
    out,
)
from portcullis.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from portcullis.identity.credential_store import CredentialKind
    from portcullis.services.context import Operation
    from portcullis.services.credentials import CredentialService
    from portcullis.services.errors import ServiceError

app = typer.Typer(
    name="credentials",
    help="Create, list, rotate and delete consumers' basic-auth, hmac-auth and mtls-auth "
    "credentials.",
    no_args_is_help=True,
    add_completion=False,
)
Kind = Annotated[str, typer.Argument(help="basic-auth, hmac-auth or mtls-auth.")]
ConsumerArg = Annotated[str, typer.Argument(help="The consumer (username).")]
IdArg = Annotated[str, typer.Argument(help="The credential id (cc_…).")]
_OPTIONS = {
    "username": "--username",
    "password": "--password-stdin",
    "match": "--match",
    "credential_id": "CREDENTIAL_ID",
    "consumer": "CONSUMER",
}


def _kind(value: str) -> CredentialKind:
    from portcullis.services.credentials import PATHS

    for kind, path in PATHS.items():
        if value in (path, kind.value):
            return kind
    raise UserError(f"KIND: {value!r} is not one of basic-auth, hmac-auth, mtls-auth")


def _service(engine: AsyncEngine) -> tuple[CredentialService, Operation]:
    from portcullis.commands.keys import _now
    from portcullis.identity.secrets import load_server_secret
    from portcullis.services.audit import AuditLog
    from portcullis.services.config_editor import ConfigEditor
    from portcullis.services.context import Operation
    from portcullis.services.credentials import CredentialService
    from portcullis.settings import Settings
    from portcullis.store.config_repository import ConfigRepository

    settings = Settings()
    secret = load_server_secret(settings.secret_key, settings.secret_key_file)
    editor = ConfigEditor(ConfigRepository(engine), max_attempts=5)
    return CredentialService(engine, secret, editor), Operation.for_cli(
        AuditLog(engine), clock=_now
    )


def _refusal(exc: ServiceError) -> UserError:
    if exc.errors:
        return UserError(
            "; ".join(
                f"{_OPTIONS.get((e.field or '').lstrip('/'), e.field or 'input')}: {e.detail}"
                for e in exc.errors
            )
        )
    argument = _OPTIONS.get(exc.target or "")
    return UserError(f"{argument}: {exc}" if argument else str(exc))


def _run(database_url: str | None, work: Any) -> Any:
    async def guarded(engine: AsyncEngine) -> Any:
        await _require_config(engine)
        service, op = _service(engine)
        return await work(service, op)

    return _with_store(_database_url(database_url), guarded, _refusal)


def _password_from_stdin() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UserError("--password-stdin: no password on stdin")
    return password


def _validated(model: Any, body: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        option = _OPTIONS.get(str(first["loc"][0]) if first["loc"] else "", "input")
        raise UserError(f"{option}: {first['msg']}") from None


def _print(credential: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for field, value in credential.items():
        table.add_row(field, escape("" if value is None else str(value)))
    out.print(table)


def _show_secret(secret: str | None) -> None:
    if secret is None:
        return
    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    console.print("[yellow]This is the only time the secret is shown: store it now.[/]")


@app.command()
def create(
    kind: Kind,
    consumer: ConsumerArg,
    username: Annotated[
        str | None, typer.Option("--username", help="basic-auth: the username (default: CONSUMER).")
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin", help="basic-auth: read the password from stdin (else generated)."
        ),
    ] = False,
    match: Annotated[
        str | None,
        typer.Option(
            "--match", help="mtls-auth: subject:<RFC 4514 DN>, dns:, uri:, email: or ip:<SAN>."
        ),
    ] = None,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a credential for CONSUMER; a generated secret is printed (once) on stdout."""
    from portcullis.services.credentials import CredentialCreate

    which = _kind(kind)
    body: dict[str, Any] = {}
    if username is not None:
        body["username"] = username
    if password_stdin:
        body["password"] = _password_from_stdin()
    if match is not None:
        body["match"] = match
    request = _validated(CredentialCreate, body)

    async def work(service: CredentialService, op: Operation) -> Any:
        return await service.create(op, consumer, which, request)

    credential, secret = _run(database_url, work)
    if as_json:
        _print_json({**credential.as_json(), **({"secret": secret} if secret else {})})
        return
    console.print(
        f"[bold green]✓[/] created {escape(kind)} credential {escape(credential.id)} "
        f"for {escape(consumer)}"
    )
    _print(credential.as_json())
    _show_secret(secret)


@app.command("list")
def list_credentials(
    kind: Kind,
    consumer: ConsumerArg,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List CONSUMER's credentials of KIND (never their secrets)."""
    which = _kind(kind)

    async def work(service: CredentialService, op: Operation) -> Any:
        return await service.list_for_consumer(
            op, consumer, which, limit=1000, cursor=None, sort=None
        )

    page = _run(database_url, work)
    if as_json:
        _print_json(page.items)
        return
    table = Table("id", "username / key id / match", "created")
    for item in page.items:
        name = item.get("username") or item.get("key_id") or item.get("match") or ""
        table.add_row(escape(item["id"]), escape(str(name)), escape(str(item["created_at"])))
    out.print(table)


@app.command()
def show(
    kind: Kind,
    consumer: ConsumerArg,
    credential_id: IdArg,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show one credential (never its secret)."""
    which = _kind(kind)

    async def work(service: CredentialService, op: Operation) -> Any:
        return await service.get(op, consumer, which, credential_id)

    found = _run(database_url, work)
    if as_json:
        _print_json(found.as_json())
    else:
        _print(found.as_json())


@app.command()
def rotate(
    kind: Kind,
    consumer: ConsumerArg,
    credential_id: IdArg,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="basic-auth: read the new password from stdin (else generated).",
        ),
    ] = False,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Replace a basic-auth or hmac-auth credential's secret (the old one stops working)."""
    from portcullis.services.credentials import CredentialRotate

    which = _kind(kind)
    body = {"password": _password_from_stdin()} if password_stdin else {}
    request = _validated(CredentialRotate, body)

    async def work(service: CredentialService, op: Operation) -> Any:
        return await service.rotate(op, consumer, which, credential_id, request)

    credential, secret = _run(database_url, work)
    if as_json:
        _print_json({**credential.as_json(), **({"secret": secret} if secret else {})})
        return
    console.print(f"[bold green]✓[/] rotated {escape(credential.id)}")
    _show_secret(secret)


@app.command()
def delete(
    kind: Kind,
    consumer: ConsumerArg,
    credential_id: IdArg,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete a credential (it stops working within the data plane's poll interval)."""
    which = _kind(kind)

    async def work(service: CredentialService, op: Operation) -> None:
        await service.delete(op, consumer, which, credential_id)

    _run(database_url, work)
    console.print(f"[bold green]✓[/] deleted {escape(credential_id)}")


def register_credentials(root: typer.Typer) -> None:
    """Mount the `credentials` command group on the root CLI."""
    root.add_typer(app, name="credentials", help="Manage basic/hmac/mtls credentials.")
