"""`portcullis apis list|show|import|openapi|diff`: the API catalogue from the command line.

Like `portcullis keys` and `webhooks`, the commands work on the store directly
(`--database-url` or `PORTCULLIS_DATABASE_URL`) through the same service as the admin
API (`services/catalogue.py`), acting unlimited as `cli:<os user>` in the audit log.
`import` reads a local file (its external `$ref`s to other files resolved relative to
it) or has the service fetch a URL (through the webhook SSRF guard). `diff` compares
two versions of an API, or two description files, and exits 1 when a change breaks
clients (0 otherwise; 2 for bad input), so CI can gate on it.
"""

from __future__ import annotations

from collections.abc import Callable
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

    from portcullis.catalogue.fetch import DescriptionFetcher
    from portcullis.services.catalogue import CatalogueService
    from portcullis.services.context import Operation
    from portcullis.services.errors import ServiceError

app = typer.Typer(
    name="apis",
    help="The API catalogue: list APIs, import and compare their OpenAPI descriptions.",
    no_args_is_help=True,
    add_completion=False,
)

ApiName = Annotated[str, typer.Argument(help="The API's name.")]
VersionArg = Annotated[str, typer.Argument(help="The version's name (e.g. v2).")]


def _refusal(exc: ServiceError) -> UserError:
    """A refusal of the catalogue service: every located error on its own line."""
    for error in exc.errors:
        console.print(f"[bold red]✗[/] [cyan]{escape(error.pointer)}[/]: {escape(error.detail)}")
    return UserError(str(exc))


def _store(database_url: str | None, work: Callable[[AsyncEngine], Any]) -> Any:
    return _with_store(_database_url(database_url), work, _refusal)


async def _session(engine: AsyncEngine, work: Callable[[CatalogueService, Operation], Any]) -> Any:
    from portcullis.catalogue.fetch import DescriptionFetcher
    from portcullis.identity.secrets import load_server_secret
    from portcullis.services.audit import AuditLog
    from portcullis.services.catalogue import CatalogueService
    from portcullis.services.config_editor import ConfigEditor
    from portcullis.services.context import Operation
    from portcullis.services.state import AdminState
    from portcullis.settings import Settings
    from portcullis.store.config_repository import ConfigRepository
    from portcullis.webhooks.runner import destination_policy

    settings = Settings()
    audit = AuditLog(engine)
    state = AdminState(
        settings=settings,
        engine=engine,
        editor=ConfigEditor(ConfigRepository(engine)),
        audit=audit,
        secret=load_server_secret(settings.secret_key, settings.secret_key_file),
    )
    fetcher: DescriptionFetcher = DescriptionFetcher(
        destination_policy(settings), timeout=settings.webhook_timeout
    )
    try:
        return await work(CatalogueService(state, fetcher), Operation.for_cli(audit))
    finally:
        await fetcher.close()


def _read_file(path: Path) -> Any:
    from portcullis.model.loader import read_description_file
    from portcullis.model.openapi import DescriptionError

    try:
        return read_description_file(path)
    except DescriptionError as exc:
        raise UserError(f"{path}: {exc}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- commands


@app.command("list")
def list_apis(json_output: JsonFlag = False, database_url: DatabaseUrl = None) -> None:
    """List the APIs with their versions and status."""

    async def work(engine: AsyncEngine) -> Any:
        from portcullis.services.catalogue import Viewer
        from portcullis.services.scoping import UNLIMITED

        return await _session(engine, lambda service, _op: service.listing(Viewer(admin=UNLIMITED)))

    listing = _store(database_url, work)
    if json_output:
        _print_json(listing)
        return
    table = Table("API", "Title", "Organization", "Public", "Versions")
    for api in listing["apis"]:
        versions = ", ".join(
            f"{v['name']} ({v['status']}{'' if v['links'] else ', no description'})"
            for v in api["versions"]
        )
        table.add_row(
            escape(api["name"]),
            escape(api["title"] or ""),
            escape(api["organization"] or ""),
            "yes" if api["public"] else "no",
            escape(versions),
        )
    out.print(table)


@app.command()
def show(
    api: ApiName,
    version: Annotated[
        str | None, typer.Argument(help="A version: print its imported description.")
    ] = None,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Show an API (its versions and descriptions' sources), or one version's description."""

    async def work(engine: AsyncEngine) -> Any:
        async def shown(service: CatalogueService, op: Operation) -> Any:
            if version is not None:
                return await service.description(op, api, version)
            entity = await service.api(op, api)
            return {
                **entity,
                "versions": [
                    {**v, "openapi": None if v.get("openapi") is None else "(imported)"}
                    for v in entity["versions"]
                ],
            }

        return await _session(engine, shown)

    shown = _store(database_url, work)
    if json_output or version is not None:
        _print_json(shown)
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for field in ("name", "title", "organization", "public", "default_version", "owners"):
        value = shown.get(field)
        table.add_row(field, escape(", ".join(value) if isinstance(value, list) else str(value)))
    out.print(table)
    versions = Table("Version", "Status", "Deprecated", "Sunset", "Description", "Source")
    for v in shown["versions"]:
        source = v.get("openapi_source") or {}
        versions.add_row(
            escape(v["name"]),
            v.get("status", "stable"),
            str(v.get("deprecated_at") or ""),
            str(v.get("sunset_at") or ""),
            "yes" if v.get("openapi") else "no",
            escape(str(source.get("url") or "")),
        )
    out.print(versions)


@app.command("import")
def import_description(
    api: ApiName,
    version: VersionArg,
    file: Annotated[
        Path | None, typer.Argument(help="A local OpenAPI file (JSON or YAML).")
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", help="Fetch the description from this URL instead.")
    ] = None,
    refresh: Annotated[
        int, typer.Option("--refresh", help="With --url: re-fetch every this many seconds.")
    ] = 3600,
    database_url: DatabaseUrl = None,
) -> None:
    """Import a version's OpenAPI description from a file or a URL (validated first)."""
    if (file is None) == (url is None):
        raise UserError("give a FILE or --url, not both", exit_code=2)
    body: Any
    if url is not None:
        body = {"url": url, "refresh_seconds": refresh}
    else:
        assert file is not None
        body = _read_file(file)

    async def work(engine: AsyncEngine) -> Any:
        return await _session(
            engine, lambda service, op: service.import_description(op, api, version, body)
        )

    done = _store(database_url, work)
    verb = "imported" if done["changed"] else "unchanged (already imported)"
    console.print(f"[green]✓[/] {escape(api)} {escape(version)}: description {verb}")
    console.print(f"  published at {escape(done['published'])} on the control plane")


@app.command()
def openapi(
    api: ApiName,
    version: VersionArg,
    yaml_output: Annotated[bool, typer.Option("--yaml", help="Print YAML.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a version's description as clients see it through the gateway."""

    async def work(engine: AsyncEngine) -> Any:
        from portcullis.services.catalogue import Viewer
        from portcullis.services.scoping import UNLIMITED

        return await _session(
            engine, lambda service, _op: service.published(Viewer(admin=UNLIMITED), api, version)
        )

    document, _public = _store(database_url, work)
    if yaml_output:
        import yaml

        out.file.write(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
        return
    _print_json(document)


@app.command()
def diff(
    base: Annotated[str, typer.Argument(help="The older version (or file, with --files).")],
    head: Annotated[str, typer.Argument(help="The newer version (or file, with --files).")],
    api: Annotated[
        str | None, typer.Option("--api", help="Compare two versions of this API.")
    ] = None,
    files: Annotated[
        bool, typer.Option("--files", help="BASE and HEAD are description files.")
    ] = False,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Changes from BASE to HEAD, breaking ones first; exit 1 when any change breaks
    clients."""
    from portcullis.catalogue.diff import breaking_changes
    from portcullis.services.catalogue import report

    if files == (api is not None):
        raise UserError("give --api NAME (two versions) or --files (two files)", exit_code=2)
    if files:
        result = report(
            "(files)",
            base,
            head,
            breaking_changes(_read_file(Path(base)), _read_file(Path(head))),
        )
    else:
        assert api is not None

        async def work(engine: AsyncEngine) -> Any:
            return await _session(engine, lambda service, op: service.diff(op, api, base, head))

        result = _store(database_url, work)
    if json_output:
        _print_json(result)
    else:
        _print_report(result)
    if result["breaking"]:
        raise typer.Exit(1)


def _print_report(result: dict[str, Any]) -> None:
    changes = result["changes"]
    title = f"{result['api']}: {result['base']} → {result['head']}"
    if not changes:
        out.print(f"{escape(title)}: no changes")
        return
    table = Table("", "Where", "Change", title=escape(title), title_justify="left")
    for change in changes:
        mark = "[bold red]breaking[/]" if change["breaking"] else "[green]ok[/]"
        table.add_row(mark, escape(change["location"]), escape(change["message"]))
    out.print(table)
    n = result["breaking"]
    summary = f"{n} breaking change{'s' if n != 1 else ''}" if n else "no breaking changes"
    out.print(("[bold red]" if n else "[green]") + summary + "[/]")


def register_apis(root: typer.Typer) -> None:
    """Mount the `apis` command group on the root CLI."""
    root.add_typer(app, name="apis", help="The API catalogue: APIs, OpenAPI descriptions, diffs.")
