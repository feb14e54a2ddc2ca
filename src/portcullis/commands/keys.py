"""`portcullis keys create|list|show|rotate|revoke|suspend|resume|import|export`.

The commands work on the store directly, like `portcullis config apply`: the URL
comes from `--database-url` or `PORTCULLIS_DATABASE_URL`. A key's consumer must be
in the store's current config. Every change is written to the audit log with
the actor `cli:<os user>`.

Output is split so scripts can capture a new key: the full key (shown once) is
the only thing `create` and `rotate` print on stdout; messages go to stderr.
Listings print a table, or JSON with `--json`. Problems the user can fix are a
`UserError` naming the option, which the CLI prints without a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TextIO, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from portcullis.commands.config import (
    DatabaseUrl,
    _database_url,
    _require_schema,
    _run,
    _store_exists,
)
from portcullis.errors import UserError

E = TypeVar("E", bound=StrEnum)
_PIN_ATTEMPTS = 5

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from portcullis.identity.key_admin import ImportedKey, KeyInfo, Rotation
    from portcullis.identity.key_repository import KeyPage
    from portcullis.services.context import Operation
    from portcullis.services.errors import ServiceError
    from portcullis.services.keys import KeyService

app = typer.Typer(
    name="keys",
    help="Create, list, rotate, suspend and revoke consumer API keys; import and export them.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True, soft_wrap=True, highlight=False)
out = Console(soft_wrap=True, highlight=False)

# Which option a field of the key settings comes from, for error messages.
OPTION_OF = {
    "name": "--name",
    "environment": "--environment",
    "scopes": "--scope",
    "expires_at": "--expires-at",
    "allowed_origins": "--origin",
    "ip_allowlist": "--allow-ip",
    "plan": "--plan",
    "metadata": "--meta",
    "grace_seconds": "--grace",
    "sort": "--sort",
}
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _key_id_argument(value: str) -> str:
    from portcullis.identity.keys import FullKeyGiven, key_id_of

    try:
        return key_id_of(value)
    except FullKeyGiven as exc:
        raise UserError(f"KEY_ID: {exc}") from None


KeyId = Annotated[
    str,
    typer.Argument(
        help="The key's id as `keys list` shows it (its prefix pc_<env>_<id> works too).",
        parser=_key_id_argument,
    ),
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why (recorded with the key; optional).")
]


# --------------------------------------------------------------------------- helpers


def parse_duration(text: str, option: str) -> int:
    """Seconds from `90d`, `24h`, `30m`, `45s`, `2w` or a plain number of seconds."""
    m = _DURATION.match(text.strip().lower())
    if m is None:
        raise UserError(f"{option}: {text!r} is not a duration (e.g. 3600, 45m, 24h, 90d)")
    return int(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def parse_expiry(expires_at: str | None, expires_in: str | None, now: datetime) -> datetime | None:
    """The expiry from `--expires-at` (RFC 3339 or a date, UTC) or `--expires-in` (a duration)."""
    if expires_at is not None and expires_in is not None:
        raise UserError("--expires-at and --expires-in: give one, not both")
    if expires_in is not None:
        return now + timedelta(seconds=parse_duration(expires_in, "--expires-in"))
    if expires_at is None:
        return None
    try:
        value = datetime.fromisoformat(expires_at.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--expires-at: {expires_at!r} is not a date or RFC 3339 time "
            "(e.g. 2027-01-31 or 2027-01-31T12:00:00Z)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parse_metadata(pairs: list[str]) -> dict[str, Any]:
    """`--meta team=payments --meta tier=2` → {"team": "payments", "tier": 2} (JSON values kept)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--meta: {pair!r} is not NAME=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        result[name] = value if isinstance(value, str | int | float | bool) else raw
    return result


def option_errors(exc: Any) -> str:
    """One line per pydantic error, naming the CLI option it concerns."""
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        option = OPTION_OF.get(loc[0], loc[0]) if loc else "(input)"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{option}: {message}")
    return "; ".join(lines)


def cli_actor() -> str:
    """`cli:<os user>`: who made a change from the command line, for the audit log."""
    from portcullis.services.context import cli_actor

    return cli_actor()


def key_service(engine: AsyncEngine) -> tuple[KeyService, Operation]:
    """The key operations on this store, and the operation of this command (recorded in
    the audit log as `cli:<os user>`)."""
    from portcullis.identity.secrets import load_server_secret
    from portcullis.services.audit import AuditLog
    from portcullis.services.config_editor import ConfigEditor
    from portcullis.services.context import Operation
    from portcullis.services.keys import KeyService
    from portcullis.settings import Settings
    from portcullis.store.config_repository import ConfigRepository

    settings = Settings()
    secret = load_server_secret(settings.secret_key, settings.secret_key_file)
    editor = ConfigEditor(ConfigRepository(engine), max_attempts=_PIN_ATTEMPTS)
    return KeyService(engine, secret, editor), Operation.for_cli(AuditLog(engine), clock=_now)


async def _ready(engine: AsyncEngine) -> None:
    if not await _require_schema(engine, migrate_if_empty=False):
        raise UserError("the store is not initialised: run `portcullis migrate` first")


async def _require_config(engine: AsyncEngine) -> None:
    from portcullis.store.config_repository import ConfigRepository

    if await ConfigRepository(engine).current_version() == 0:
        raise UserError(
            "the store has no config yet, so no consumers: "
            "apply one with `portcullis config apply FILE`"
        )


def _with_store(
    url: str,
    work: Callable[[AsyncEngine], Any],
    refusal: Callable[[ServiceError], UserError] | None = None,
) -> Any:
    """Run `work` on a migrated store, turning refusals into messages naming the input
    (`refusal`: how a command group names its options; the key commands' by default)."""
    from portcullis.services.errors import ServiceError

    if not _store_exists(url):
        raise UserError("the store is not initialised: run `portcullis migrate` first")

    async def guarded(engine: AsyncEngine) -> Any:
        await _ready(engine)
        return await work(engine)

    try:
        return _run(url, guarded)
    except ServiceError as exc:
        raise (refusal or _user_error)(exc) from None


def _user_error(exc: ServiceError) -> UserError:
    """A refusal of the key service as the CLI says it: naming the argument or option."""
    from portcullis.services.keys import ImportRefused

    if isinstance(exc, ImportRefused):
        for error in exc.errors:
            console.print(f"[bold red]✗[/] {escape(error.detail)}")
        return UserError(str(exc))
    if exc.errors:
        return UserError(
            "; ".join(f"{OPTION_OF.get(e.field or '', e.field)}: {e.detail}" for e in exc.errors)
        )
    argument = {"key_id": "KEY_ID: ", "cursor": "--cursor: "}.get(exc.target or "", "")
    return UserError(f"{argument}{exc}")


def _time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _print_key(info: KeyInfo) -> None:
    now = datetime.now(UTC)
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for field, value in info.as_json(now).items():
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            text = json.dumps(value, ensure_ascii=False) if value else ""
        else:
            text = "" if value is None else str(value)
        table.add_row(field, escape(text))
    out.print(table)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _show_new_key(full_key: str) -> None:
    """The key on stdout, alone on its line (so `KEY=$(portcullis keys create …)` works)."""
    sys.stdout.write(full_key + "\n")
    sys.stdout.flush()
    console.print("[yellow]This is the only time the key is shown: store it now.[/]")


# --------------------------------------------------------------------------- commands


@app.command()
def create(
    consumer: Annotated[str, typer.Argument(help="The consumer (username) the key is for.")],
    name: Annotated[str, typer.Option("--name", "-n", help="A name for the key.")],
    environment: Annotated[
        str, typer.Option("--environment", "-e", help="production, staging or development.")
    ] = "production",
    scope: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="A scope (repeat for more).")
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="Expiry: RFC 3339 time or date (UTC).")
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="Expiry as a duration, e.g. 90d.")
    ] = None,
    origin: Annotated[
        list[str] | None,
        typer.Option("--origin", help="Browser origin allowed to use the key (repeat)."),
    ] = None,
    allow_ip: Annotated[
        list[str] | None,
        typer.Option("--allow-ip", help="Client network (CIDR, v4 or v6) allowed (repeat)."),
    ] = None,
    plan: Annotated[str | None, typer.Option("--plan", help="Traffic plan for the key.")] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="Metadata NAME=VALUE (repeat).")
    ] = None,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an API key for CONSUMER and print it (once) on stdout."""
    from pydantic import ValidationError

    from portcullis.identity.key_admin import KeySpec

    try:
        spec = KeySpec.model_validate(
            {
                "name": name,
                "environment": environment,
                "scopes": scope or [],
                "expires_at": parse_expiry(expires_at, expires_in, _now()),
                "allowed_origins": origin or [],
                "ip_allowlist": allow_ip or [],
                "plan": plan,
                "metadata": parse_metadata(meta or []),
            }
        )
    except ValidationError as exc:
        raise UserError(option_errors(exc)) from None

    async def work(engine: AsyncEngine) -> tuple[KeyInfo, str]:
        from portcullis.services.errors import ServiceError

        await _require_config(engine)
        service, op = key_service(engine)
        try:
            created = await service.create(op, consumer, spec)
        except ServiceError as exc:
            if exc.target != "consumer":
                raise
            raise UserError(
                f"CONSUMER: unknown consumer {consumer!r} (not in the store's current config)"
            ) from None
        return created.info, created.key

    info, full_key = _with_store(_database_url(database_url), work)
    if as_json:
        _print_json({**info.as_json(_now()), "key": full_key})
        return
    console.print(
        f"[bold green]✓[/] created key {escape(info.id)} ({escape(info.name)}) "
        f"for {escape(consumer)}"
    )
    _show_new_key(full_key)


def _now() -> datetime:
    return datetime.now(UTC)


def _choice(kind: type[E], value: str | None, option: str) -> E | None:
    """`value` as a member of the enum `kind`; a `UserError` listing the choices otherwise."""
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(m.value for m in kind)
        raise UserError(f"{option}: {value!r} is not one of {choices}") from None


@app.command("list")
def list_keys(
    consumer: Annotated[str | None, typer.Option("--consumer", "-c", help="Only its keys.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="active, grace, replaced, expired, suspended or revoked."),
    ] = None,
    environment: Annotated[
        str | None, typer.Option("--environment", "-e", help="Only this environment.")
    ] = None,
    organization: Annotated[
        str | None, typer.Option("--organization", help="Only this organization.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only keys with this name.")] = None,
    sort: Annotated[
        str | None,
        typer.Option("--sort", help="created_at, name, consumer, expires_at, last_used_at; -desc."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10_000)] = 50,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Continue after a previous listing.")
    ] = None,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List API keys (metadata only), newest first unless --sort says otherwise."""
    from portcullis.identity.key_admin import KeyState
    from portcullis.identity.key_repository import KeyFilter
    from portcullis.identity.keys import Environment

    where = KeyFilter(
        consumer=consumer,
        organization=organization,
        environment=_choice(Environment, environment, "--environment"),
        state=_choice(KeyState, status, "--status"),
        name=name,
    )

    async def work(engine: AsyncEngine) -> KeyPage:
        service, op = key_service(engine)
        return await service.list_keys(op, where, limit=limit, cursor=cursor, sort=sort)

    page: KeyPage = _with_store(_database_url(database_url), work)
    now = _now()
    if as_json:
        _print_json(
            {"items": [i.as_json(now) for i in page.items], "next_cursor": page.next_cursor}
        )
        return
    if not page.items:
        console.print("no API keys match")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "consumer", "name", "env", "state", "scopes", "expires", "last used"):
        table.add_column(column)
    for info in page.items:
        table.add_row(
            escape(info.id),
            escape(info.consumer),
            escape(info.name),
            str(info.environment),
            str(info.state(now)),
            escape(" ".join(info.scopes)),
            _time(info.expires_at),
            _time(info.last_used_at),
        )
    out.print(table)
    if page.next_cursor is not None:
        console.print(f"[dim]more: --cursor {page.next_cursor}[/]")


@app.command()
def show(key_id: KeyId, as_json: JsonFlag = False, database_url: DatabaseUrl = None) -> None:
    """Show one API key's metadata (never the key itself)."""

    async def work(engine: AsyncEngine) -> KeyInfo:
        service, op = key_service(engine)
        return await service.get(op, key_id)

    info: KeyInfo = _with_store(_database_url(database_url), work)
    if as_json:
        _print_json(info.as_json(_now()))
    else:
        _print_key(info)


@app.command()
def rotate(
    key_id: KeyId,
    grace: Annotated[
        str, typer.Option("--grace", help="How long the old key keeps working (0: stop now).")
    ] = "24h",
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="The new key's expiry (default: the old's).")
    ] = None,
    expires_in: Annotated[
        str | None, typer.Option("--expires-in", help="The new key's expiry as a duration.")
    ] = None,
    no_expiry: Annotated[
        bool, typer.Option("--no-expiry", help="The new key never expires.")
    ] = False,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Issue a successor key (printed once on stdout); the old key works for --grace."""
    grace_seconds = parse_duration(grace, "--grace")
    new_expiry: datetime | Literal["keep"] | None = "keep"
    if no_expiry:
        if expires_at is not None or expires_in is not None:
            raise UserError("--no-expiry: can't be combined with --expires-at/--expires-in")
        new_expiry = None
    elif expires_at is not None or expires_in is not None:
        new_expiry = parse_expiry(expires_at, expires_in, _now())

    async def work(engine: AsyncEngine) -> Rotation:
        service, op = key_service(engine)
        return await service.rotate(op, key_id, grace_seconds=grace_seconds, expires_at=new_expiry)

    rotation: Rotation = _with_store(_database_url(database_url), work)
    if as_json:
        _print_json(
            {
                **rotation.new.as_json(_now()),
                "key": rotation.key,
                "previous": rotation.old.as_json(_now()),
            }
        )
        return
    until = rotation.old.grace_until
    console.print(
        f"[bold green]✓[/] rotated {escape(key_id)} → {escape(rotation.new.id)}; the old key "
        + (f"works until {_time(until)} UTC" if grace_seconds else "stopped working now")
    )
    _show_new_key(rotation.key)


def _transition(
    key_id: str, action: Literal["revoke", "suspend", "resume"], reason: str | None, url: str
) -> KeyInfo:
    from pydantic import TypeAdapter, ValidationError

    from portcullis.identity.key_admin import Reason

    if reason is not None:
        try:
            reason = TypeAdapter(Reason).validate_python(reason)
        except ValidationError as exc:
            raise UserError(
                "--reason: " + str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
            ) from None

    async def work(engine: AsyncEngine) -> KeyInfo:
        service, op = key_service(engine)
        return await service.transition(op, key_id, action, reason=reason)

    info: KeyInfo = _with_store(url, work)
    return info


@app.command()
def revoke(key_id: KeyId, reason: ReasonOption = None, database_url: DatabaseUrl = None) -> None:
    """Revoke a key for good (every gateway worker refuses it within a second)."""
    _transition(key_id, "revoke", reason, _database_url(database_url))
    console.print(f"[bold green]✓[/] revoked {escape(key_id)}")


@app.command()
def suspend(key_id: KeyId, reason: ReasonOption = None, database_url: DatabaseUrl = None) -> None:
    """Suspend a key until it is resumed."""
    _transition(key_id, "suspend", reason, _database_url(database_url))
    console.print(f"[bold green]✓[/] suspended {escape(key_id)}")


@app.command()
def resume(key_id: KeyId, database_url: DatabaseUrl = None) -> None:
    """Resume a suspended key."""
    _transition(key_id, "resume", None, _database_url(database_url))
    console.print(f"[bold green]✓[/] resumed {escape(key_id)}")


@app.command("import")
def import_keys(
    file: Annotated[Path, typer.Argument(help="CSV file with a header row (columns below).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check everything, store nothing.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write generated keys here (mode 0600), not stdout."),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Import keys from CSV, all or nothing.

    Columns: consumer, name (required), environment, scopes, expires_at,
    allowed_origins, ip_allowlist, plan, metadata, key. List cells are separated
    by spaces; metadata is a JSON object; `key` imports an existing key (32+
    characters, only its hash is stored), otherwise one is generated. Generated
    keys are written once, as CSV (row,id,consumer,name,key), to stdout or --output.
    """
    from portcullis.identity.key_admin import DEFAULT_MAX_IMPORT_ROWS

    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{file}: cannot read: {exc.strerror or exc}") from None

    async def work(engine: AsyncEngine) -> list[ImportedKey]:
        await _require_config(engine)
        service, op = key_service(engine)
        with Progress(
            TextColumn("[bold]importing[/]"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("", total=None)
            return await service.import_csv(
                op,
                text,
                dry_run=dry_run,
                max_rows=100 * DEFAULT_MAX_IMPORT_ROWS,
                on_progress=lambda n, total: progress.update(task, completed=n, total=total),
            )

    imported: list[ImportedKey] = _with_store(_database_url(database_url), work)
    if dry_run:
        console.print(f"[bold green]✓[/] {len(imported)} rows are valid; nothing was stored")
        return
    generated = [i for i in imported if i.key is not None]
    if generated:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(("row", "id", "consumer", "name", "key"))
        for item in generated:
            writer.writerow((item.row, item.info.id, item.info.consumer, item.info.name, item.key))
        _write_secret_output(buffer.getvalue(), output)
    console.print(
        f"[bold green]✓[/] imported {len(imported)} keys "
        f"({len(generated)} generated, {len(imported) - len(generated)} supplied)"
    )


def _write_secret_output(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write: {exc.strerror or exc}") from None
    console.print(f"generated keys written to {escape(str(output))} (shown only there)")


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or jsonl.")] = "csv",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    consumer: Annotated[str | None, typer.Option("--consumer", "-c")] = None,
    organization: Annotated[str | None, typer.Option("--organization")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Export key metadata (never keys or hashes) as CSV or JSON lines."""
    from portcullis.identity.key_repository import KeyFilter

    if fmt not in ("csv", "jsonl"):
        raise UserError(f"--format must be 'csv' or 'jsonl', not {fmt!r}")
    where = KeyFilter(consumer=consumer, organization=organization)
    target: TextIO = sys.stdout
    if output is not None:
        try:
            target = output.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise UserError(f"--output {output}: cannot write: {exc.strerror or exc}") from None

    async def work(engine: AsyncEngine) -> int:
        service, op = key_service(engine)
        count = 0
        async for chunk in service.export(op, where, "csv" if fmt == "csv" else "jsonl"):
            target.write(chunk)
            count += 1
        return count - 1 if fmt == "csv" else count  # the CSV header is not a key

    try:
        count: int = _with_store(_database_url(database_url), work)
    finally:
        if output is not None:
            target.close()
        else:
            target.flush()
    if output is not None:
        console.print(f"[bold green]✓[/] exported {count} keys to {escape(str(output))}")


def register_keys(root: typer.Typer) -> None:
    """Mount the `keys` command group on the root CLI."""
    root.add_typer(app, name="keys", help="Manage consumer API keys.")
