"""`portcullis webhooks create|list|show|update|delete|enable|disable|rotate-secret|
deliveries|replay|replay-failed|test`.

Like `portcullis keys`, the commands work on the store directly (`--database-url` or
`PORTCULLIS_DATABASE_URL`) through the same service as the admin API
(`services/webhooks.py`), acting unlimited as `cli:<os user>` in the audit log. The
control plane's delivery worker sends what they queue.

The signing secret (`whsec_…`, or a v1a endpoint's `whpk_` public key) is the only
thing `create` and `rotate-secret` print on stdout, so `SECRET=$(portcullis webhooks
create …)` works; messages go to stderr. Listings print a table, or JSON with `--json`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from portcullis.commands.config import DatabaseUrl, _database_url
from portcullis.commands.keys import (
    JsonFlag,
    _print_json,
    _with_store,
    console,
    out,
    parse_duration,
)
from portcullis.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from portcullis.services.context import Operation
    from portcullis.services.errors import ServiceError
    from portcullis.services.webhooks import WebhookService

app = typer.Typer(
    name="webhooks",
    help="Manage outgoing webhook endpoints, their deliveries, replays and test events.",
    no_args_is_help=True,
    add_completion=False,
)

# Which argument or option an input field comes from, for error messages.
OPTION_OF = {
    "url": "URL",
    "event_types": "--event",
    "description": "--description",
    "filters": "--filter",
    "consumer": "--consumer",
    "headers": "--header",
    "rate_limit": "--rate-limit",
    "max_concurrency": "--max-concurrency",
    "ordered": "--ordered",
    "organization": "--organization",
    "signature": "--signature",
    "grace_seconds": "--grace",
    "since": "--since",
    "until": "--until",
    "sort": "--sort",
}
_TARGETS = {"endpoint_id": "ENDPOINT_ID: ", "message_id": "MESSAGE_ID: ", "cursor": "--cursor: "}

EndpointId = Annotated[str, typer.Argument(help="The endpoint's id (ep_…), as `list` shows it.")]
Events = Annotated[
    list[str] | None,
    typer.Option("--event", "-e", help="Event kind, area (key.*) or * (repeat for more)."),
]
Filters = Annotated[
    list[str] | None,
    typer.Option("--filter", help="Payload filter NAME=VALUE (route, service, consumer; repeat)."),
]
Headers = Annotated[
    list[str] | None,
    typer.Option("--header", "-H", help="Custom header 'Name: value' (repeat; sealed at rest)."),
]
Since = Annotated[str | None, typer.Option("--since", help="From this time (RFC 3339 or date).")]
Until = Annotated[str | None, typer.Option("--until", help="Before this time (RFC 3339 or date).")]


# --------------------------------------------------------------------------- helpers


def _now() -> datetime:
    return datetime.now(UTC)


def _service(engine: AsyncEngine) -> tuple[WebhookService, Operation]:
    from portcullis.identity.secrets import load_server_secret
    from portcullis.services.audit import AuditLog
    from portcullis.services.config_editor import ConfigEditor
    from portcullis.services.context import Operation
    from portcullis.services.webhooks import WebhookService
    from portcullis.settings import Settings
    from portcullis.store.config_repository import ConfigRepository
    from portcullis.webhooks.runner import destination_policy

    settings = Settings()
    secret = load_server_secret(settings.secret_key, settings.secret_key_file)
    service = WebhookService(
        engine, secret, ConfigEditor(ConfigRepository(engine)), destination_policy(settings)
    )
    return service, Operation.for_cli(AuditLog(engine), clock=_now)


def _user_error(exc: ServiceError) -> UserError:
    """A refusal of the webhook service as the CLI says it: naming the option."""
    if exc.errors:
        return UserError(
            "; ".join(f"{OPTION_OF.get(e.field or '', e.field)}: {e.detail}" for e in exc.errors)
        )
    return UserError(f"{_TARGETS.get(exc.target or '', '')}{exc}")


def _store(database_url: str | None, work: Callable[[AsyncEngine], Any]) -> Any:
    return _with_store(_database_url(database_url), work, _user_error)


def _pairs(values: list[str] | None, option: str, separator: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values or []:
        name, sep, rest = value.partition(separator)
        if not sep or not name.strip():
            shape = "NAME=VALUE" if separator == "=" else "'Name: value'"
            raise UserError(f"{option}: {value!r} is not {shape}")
        result[name.strip()] = rest.strip()
    return result


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"{option}: {value!r} is not a date or RFC 3339 time (e.g. 2027-01-31T12:00:00Z)"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _validation_error(exc: Any) -> UserError:
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        option = OPTION_OF.get(loc[0], loc[0]) if loc else "(input)"
        where = f" ({'/'.join(loc[1:])})" if len(loc) > 1 else ""
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{option}{where}: {message}")
    return UserError("; ".join(lines))


def _print_endpoint(endpoint: dict[str, Any]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in endpoint.items():
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            text = "" if value is None else str(value)
        table.add_row(name, escape(text))
    out.print(table)


def _show_secret(secret: str) -> None:
    import sys

    sys.stdout.write(secret + "\n")
    sys.stdout.flush()
    if secret.startswith("whsec_"):
        console.print("[yellow]This is the only time the secret is shown: store it now.[/]")
    else:
        console.print("receivers verify v1a signatures with this public key")


# --------------------------------------------------------------------------- commands


@app.command()
def create(
    url: Annotated[str, typer.Argument(help="Where deliveries are POSTed (http or https).")],
    event: Events = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    filters: Filters = None,
    consumer: Annotated[
        str | None, typer.Option("--consumer", help="Only this consumer's events.")
    ] = None,
    header: Headers = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    rate_limit: Annotated[
        int | None, typer.Option("--rate-limit", help="Deliveries per second at most.")
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", help="Attempts in flight at once (1-64).")
    ] = 4,
    ordered: Annotated[
        bool, typer.Option("--ordered", help="One at a time, oldest event first.")
    ] = False,
    organization: Annotated[
        str | None, typer.Option("--organization", help="The organization it belongs to.")
    ] = None,
    signature: Annotated[
        str, typer.Option("--signature", help="v1 (HMAC, whsec_ secret) or v1a (ed25519).")
    ] = "v1",
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Create an endpoint and print its signing secret (once) on stdout."""
    from pydantic import ValidationError

    from portcullis.services.webhooks import WebhookCreate

    if not event:
        raise UserError("--event: name at least one event kind (e.g. --event 'key.*')")
    try:
        spec = WebhookCreate.model_validate(
            {
                "url": url,
                "event_types": event,
                "description": description,
                "filters": _pairs(filters, "--filter", "="),
                "consumer": consumer,
                "headers": _pairs(header, "--header", ":"),
                "enabled": not disabled,
                "rate_limit": rate_limit,
                "max_concurrency": max_concurrency,
                "ordered": ordered,
                "organization": organization,
                "signature": signature,
            }
        )
    except ValidationError as exc:
        raise _validation_error(exc) from None

    async def work(engine: AsyncEngine) -> tuple[dict[str, Any], str]:
        service, op = _service(engine)
        return await service.create(op, spec)

    endpoint, secret = _store(database_url, work)
    if as_json:
        _print_json({**endpoint, "secret": secret})
        return
    console.print(f"[bold green]✓[/] created webhook endpoint {escape(endpoint['id'])}")
    _show_secret(secret)


@app.command("list")
def list_endpoints(
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Only enabled/disabled ones.")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--event-type", help="Only those receiving this kind.")
    ] = None,
    organization: Annotated[str | None, typer.Option("--organization")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor")] = None,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List webhook endpoints, newest first."""

    async def work(engine: AsyncEngine) -> Any:
        service, op = _service(engine)
        return await service.list_endpoints(
            op,
            enabled=enabled,
            event_type=event_type,
            organization=organization,
            limit=limit,
            cursor=cursor,
        )

    page = _store(database_url, work)
    if as_json:
        _print_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    if not page.items:
        console.print("no webhook endpoints match")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "url", "events", "enabled", "organization", "failing since"):
        table.add_column(column)
    for item in page.items:
        state = "yes" if item["enabled"] else f"no ({item['disabled_reason']})"
        table.add_row(
            escape(item["id"]),
            escape(item["url"]),
            escape(" ".join(item["event_types"])),
            state,
            escape(item["organization"] or ""),
            item["failing_since"] or "",
        )
    out.print(table)
    if page.next_cursor is not None:
        console.print(f"[dim]more: --cursor {page.next_cursor}[/]")


@app.command()
def show(
    endpoint_id: EndpointId, as_json: JsonFlag = False, database_url: DatabaseUrl = None
) -> None:
    """Show one endpoint (never its secret or header values)."""

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        service, op = _service(engine)
        return await service.get(op, endpoint_id)

    endpoint = _store(database_url, work)
    if as_json:
        _print_json(endpoint)
    else:
        _print_endpoint(endpoint)


@app.command()
def update(
    endpoint_id: EndpointId,
    url: Annotated[str | None, typer.Option("--url", help="A new destination.")] = None,
    event: Events = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    filters: Filters = None,
    clear_filters: Annotated[bool, typer.Option("--clear-filters")] = False,
    consumer: Annotated[str | None, typer.Option("--consumer")] = None,
    header: Headers = None,
    remove_header: Annotated[
        list[str] | None, typer.Option("--remove-header", help="Stop sending this header.")
    ] = None,
    rate_limit: Annotated[int | None, typer.Option("--rate-limit")] = None,
    no_rate_limit: Annotated[bool, typer.Option("--no-rate-limit")] = False,
    max_concurrency: Annotated[int | None, typer.Option("--max-concurrency")] = None,
    ordered: Annotated[bool | None, typer.Option("--ordered/--unordered")] = None,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Change an endpoint; only the options given change."""
    patch: dict[str, Any] = {}
    for name, value in (
        ("url", url),
        ("event_types", event or None),
        ("description", description),
        ("consumer", consumer),
        ("rate_limit", rate_limit),
        ("max_concurrency", max_concurrency),
        ("ordered", ordered),
    ):
        if value is not None:
            patch[name] = value
    if no_rate_limit:
        patch["rate_limit"] = None
    if clear_filters:
        patch["filters"] = None
    elif filters:
        patch["filters"] = _pairs(filters, "--filter", "=")
    headers: dict[str, Any] = dict(_pairs(header, "--header", ":"))
    headers.update(dict.fromkeys(remove_header or []))
    if headers:
        patch["headers"] = headers
    if not patch:
        raise UserError("nothing to change: give at least one option (see --help)")

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        service, op = _service(engine)
        return await service.update(op, endpoint_id, patch)

    endpoint = _store(database_url, work)
    if as_json:
        _print_json(endpoint)
        return
    console.print(f"[bold green]✓[/] updated {escape(endpoint_id)}")


@app.command()
def delete(endpoint_id: EndpointId, database_url: DatabaseUrl = None) -> None:
    """Delete an endpoint with its queued deliveries and their history."""

    async def work(engine: AsyncEngine) -> None:
        service, op = _service(engine)
        await service.delete(op, endpoint_id)

    _store(database_url, work)
    console.print(f"[bold green]✓[/] deleted {escape(endpoint_id)}")


def _set_enabled(endpoint_id: str, enabled: bool, database_url: str | None) -> None:
    async def work(engine: AsyncEngine) -> dict[str, Any]:
        service, op = _service(engine)
        return await service.set_enabled(op, endpoint_id, enabled)

    _store(database_url, work)
    console.print(f"[bold green]✓[/] {'enabled' if enabled else 'disabled'} {escape(endpoint_id)}")


@app.command()
def enable(endpoint_id: EndpointId, database_url: DatabaseUrl = None) -> None:
    """Enable an endpoint (clears why it was disabled)."""
    _set_enabled(endpoint_id, True, database_url)


@app.command()
def disable(endpoint_id: EndpointId, database_url: DatabaseUrl = None) -> None:
    """Disable an endpoint: nothing new is queued for it."""
    _set_enabled(endpoint_id, False, database_url)


@app.command("rotate-secret")
def rotate_secret(
    endpoint_id: EndpointId,
    grace: Annotated[
        str, typer.Option("--grace", help="How long the old secret keeps signing (0: stop now).")
    ] = "24h",
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Rotate the signing secret and print the new one (once) on stdout."""
    seconds = parse_duration(grace, "--grace")

    async def work(engine: AsyncEngine) -> tuple[dict[str, Any], str]:
        service, op = _service(engine)
        return await service.rotate(op, endpoint_id, grace=timedelta(seconds=seconds))

    endpoint, secret = _store(database_url, work)
    if as_json:
        _print_json({**endpoint, "secret": secret})
        return
    console.print(
        f"[bold green]✓[/] rotated the secret of {escape(endpoint_id)}; the old one "
        + (f"keeps signing for {escape(grace)}" if seconds else "stopped signing now")
    )
    _show_secret(secret)


@app.command()
def deliveries(
    endpoint_id: Annotated[
        str | None, typer.Argument(help="The endpoint (omitted: every endpoint).")
    ] = None,
    event_id: Annotated[
        int | None, typer.Option("--event-id", help="Only this event's deliveries.")
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="pending, delivered or failed.")
    ] = None,
    event_type: Annotated[str | None, typer.Option("--event-type")] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=500)] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor")] = None,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List deliveries, newest first, with every attempt (--json shows the excerpts)."""
    from portcullis.services.webhooks import MESSAGE_STATUSES, DeliveryFilter

    if status is not None and status not in MESSAGE_STATUSES:
        raise UserError(f"--status: {status!r} is not one of {', '.join(MESSAGE_STATUSES)}")
    where = DeliveryFilter(
        endpoint_id=endpoint_id,
        event_id=event_id,
        status=status,
        event_type=event_type,
        since=_time(since, "--since"),
        until=_time(until, "--until"),
    )

    async def work(engine: AsyncEngine) -> Any:
        service, op = _service(engine)
        return await service.deliveries(op, where, limit=limit, cursor=cursor)

    page = _store(database_url, work)
    if as_json:
        _print_json({"items": page.items, "next_cursor": page.next_cursor})
        return
    if not page.items:
        console.print("no deliveries match")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "event", "status", "attempts", "last answer", "queued"):
        table.add_column(column)
    for item in page.items:
        answer = item["last_status"] or item["last_error"] or ""
        table.add_row(
            escape(item["id"]),
            escape(f"{item['event_type']} #{item['event_id']}"),
            item["status"],
            str(len(item["attempts"])),
            escape(str(answer)),
            item["created_at"],
        )
    out.print(table)
    if page.next_cursor is not None:
        console.print(f"[dim]more: --cursor {page.next_cursor}[/]")


@app.command()
def replay(
    endpoint_id: EndpointId,
    message_id: Annotated[str, typer.Argument(help="The delivery (msg_…) to send again.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Send one finished (delivered or dead-lettered) delivery again, same webhook-id."""

    async def work(engine: AsyncEngine) -> dict[str, Any]:
        service, op = _service(engine)
        return await service.replay(op, endpoint_id, message_id)

    _store(database_url, work)
    console.print(f"[bold green]✓[/] queued {escape(message_id)} again")


@app.command("replay-failed")
def replay_failed(
    endpoint_id: EndpointId,
    since: Since = None,
    until: Until = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Send again every dead-lettered delivery of the endpoint in a time range."""
    start, end = _time(since, "--since"), _time(until, "--until")

    async def work(engine: AsyncEngine) -> int:
        service, op = _service(engine)
        return await service.replay_failed(op, endpoint_id, since=start, until=end)

    count: int = _store(database_url, work)
    out.print(f"{count}")
    console.print(f"[bold green]✓[/] queued {count} dead-lettered deliveries again")


@app.command("test")
def send_test(endpoint_id: EndpointId, database_url: DatabaseUrl = None) -> None:
    """Queue a `webhook.test` event for the endpoint; prints the delivery's id."""

    async def work(engine: AsyncEngine) -> str:
        service, op = _service(engine)
        return await service.send_test(op, endpoint_id)

    ident: str = _store(database_url, work)
    out.print(ident)
    console.print("[bold green]✓[/] test event queued (see `portcullis webhooks deliveries`)")


async def ensure_endpoint(engine: AsyncEngine, url: str, description: str) -> bool:
    """An endpoint for every event at `url` unless one exists (the demo's receiver);
    whether it was created. Its secret is not kept: rotate it to see one."""
    service, op = _service(engine)
    page = await service.list_endpoints(op, limit=1000)
    if any(item["url"] == url for item in page.items):
        return False
    from portcullis.services.webhooks import WebhookCreate

    await service.create(op, WebhookCreate(url=url, event_types=["*"], description=description))
    return True


def register_webhooks(root: typer.Typer) -> None:
    """Mount the `webhooks` command group on the root CLI."""
    root.add_typer(app, name="webhooks", help="Manage outgoing webhook endpoints.")
