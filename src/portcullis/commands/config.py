"""`portcullis config validate|diff|apply|export|versions|rollback` and `portcullis migrate`.

Every command that touches the store takes its URL from `Settings().database_url`
(env `PORTCULLIS_DATABASE_URL`) unless `--database-url` is given. Problems the user
can fix (an invalid file, an unknown version, a store that needs migrating or
can't be reached) are raised as `UserError`, which the CLI prints without a
traceback and turns into a non-zero exit.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from portcullis.errors import UserError
from portcullis.model import GatewayConfig
from portcullis.model.diff import diff_configs
from portcullis.model.loader import ConfigError, dump_config, load_config_file
from portcullis.model.traffic import expired_on_arrival
from portcullis.settings import Settings
from portcullis.store.errors import NotFound, UnsupportedDatabase

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from portcullis.store.config_repository import ConfigVersion, ConfigVersionSummary
    from portcullis.store.migrations import MigrationStep

# SQLAlchemy and Alembic are imported by the commands that use the store, so that
# `validate` (and `--help`) start quickly.

T = TypeVar("T")

app = typer.Typer(
    name="config",
    help="Validate, diff, apply, export and roll back the gateway config.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True, highlight=False)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Store URL (default: PORTCULLIS_DATABASE_URL, else the SQLite file in ./var).",
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Path, typer.Argument(help="Config file: YAML, or JSON when the name ends in .json.")
]
Author = Annotated[
    str | None,
    typer.Option(
        "--author", help="Recorded with the version (default: PORTCULLIS_AUTHOR or $USER)."
    ),
]


# --------------------------------------------------------------------------- helpers


def _database_url(option: str | None) -> str:
    return option or Settings().database_url


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


def _author(option: str | None) -> str | None:
    if option:
        return option
    if env := os.environ.get("PORTCULLIS_AUTHOR"):
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return None


def _load(path: Path) -> GatewayConfig:
    """Load and validate `path`; print every issue and raise `UserError` if invalid."""
    try:
        return load_config_file(path)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ConfigError as exc:
        _print_issues(exc)
        n = len(exc.errors)
        raise UserError(
            f"{path} is not a valid config ({n} error{'s' if n != 1 else ''})"
        ) from None


def _print_issues(exc: ConfigError) -> None:
    for issue in exc.errors:
        where = escape(issue.location or "(document)")
        line = f" [dim](line {issue.line})[/dim]" if issue.line is not None else ""
        console.print(f"[bold red]✗[/] [cyan]{where}[/]{line}: {escape(issue.message)}")


def _run(url: str, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` with an engine for `url`, turning database failures into `UserError`."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from portcullis.store.engine import create_engine

    done: list[T] = []

    async def main() -> None:
        # The result is handed over outside the task: on Python 3.11, `asyncio.run`
        # restoring its SIGINT handler formats a repr of the main task, result included,
        # which for a whole config of 50,000 consumers took seconds.
        engine = create_engine(url)
        try:
            done.append(await work(engine))
        finally:
            await engine.dispose()

    try:
        asyncio.run(main())
        return done[0]
    except (ArgumentError, UnsupportedDatabase) as exc:
        raise UserError(f"invalid --database-url / PORTCULLIS_DATABASE_URL: {exc}") from None
    except (SQLAlchemyError, OSError) as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise UserError(f"database error at {_safe_url(url)}: {detail}") from None


def _store_exists(url: str) -> bool:
    """False for a SQLite file that does not exist yet: reading must not create it."""
    from sqlalchemy.exc import ArgumentError

    from portcullis.store.engine import sqlite_file

    try:
        path = sqlite_file(url)
    except (ArgumentError, UnsupportedDatabase):  # `_run` reports these, with their message
        return True
    return path is None or path.exists()


async def _require_schema(engine: AsyncEngine, *, migrate_if_empty: bool) -> bool:
    """Make sure the schema is at head; returns False when the database was never set up.

    An empty database is migrated when `migrate_if_empty`; a database at an older
    (or unknown) revision is left alone and reported, since other nodes may run it.
    """
    from portcullis.store.migrations import current_revisions, head_revisions, upgrade_to_head

    current = await current_revisions(engine)
    if current == head_revisions():
        return True
    if not current:
        if not migrate_if_empty:
            return False
        steps = await upgrade_to_head(engine)
        console.print(f"[dim]initialised the database schema ({len(steps)} migrations)[/]")
        return True
    raise UserError(
        f"the database schema is at revision {', '.join(sorted(current))}, this release needs "
        f"{', '.join(sorted(head_revisions()))}: run `portcullis migrate`"
    )


def _counts(config: GatewayConfig) -> str:
    parts = []
    for kind in ("services", "upstreams", "routes", "consumers", "plugins", "apis"):
        n = len(getattr(config, kind))
        parts.append(f"{n} {kind if n != 1 else kind[:-1]}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- commands


# `config apply` lists at most this many changed entities per kind (`config diff`: all).
APPLY_LISTS_AT_MOST = 100


@app.command()
def validate(file: ConfigFile) -> None:
    """Check a config file and report every problem with its location and line."""
    config = _load(file)
    console.print(f"[bold green]✓[/] {escape(str(file))} is valid: {_counts(config)}")


@app.command()
def diff(file: ConfigFile, database_url: DatabaseUrl = None) -> None:
    """Show what applying FILE would change in the store's current config."""
    config = _load(file)
    url = _database_url(database_url)

    async def work(engine: AsyncEngine) -> ConfigVersion | None:
        from portcullis.store.config_repository import ConfigRepository

        if not await _require_schema(engine, migrate_if_empty=False):
            return None
        return await ConfigRepository(engine).current()

    current = _run(url, work) if _store_exists(url) else None
    if current is None:
        console.print("[dim]the store has no config yet; comparing with an empty one[/]")
    old = current.config if current is not None else GatewayConfig()
    changes = diff_configs(old, _sealed(config))
    if not changes.is_empty:
        console.print(changes.render(markup=True))
    against = f"version {current.version}" if current is not None else "an empty store"
    console.print(f"[bold]{changes.summary()}[/] (against {against})")


def _sealed(config: GatewayConfig) -> GatewayConfig:
    """`config` as the store holds it (certificate keys sealed), for diffs."""
    if not config.certificates:
        return config
    from portcullis.store.sealing import sealed_config

    return sealed_config(config)


@app.command()
def apply(
    file: ConfigFile,
    comment: Annotated[
        str | None, typer.Option("--comment", "-m", help="Why: recorded with the version.")
    ] = None,
    author: Author = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Validate FILE and store it as the new current config version (atomically).

    An invalid file changes nothing. Applying a config identical to the current one
    stores nothing either. An empty database is initialised (migrated) first.
    """
    config = _load(file)
    url = _database_url(database_url)

    async def work(engine: AsyncEngine) -> tuple[ConfigVersion, str]:
        from portcullis.store.config_repository import ConfigRepository

        await _require_schema(engine, migrate_if_empty=True)
        repo = ConfigRepository(engine, keep_versions=Settings().config_history_keep)
        current = await repo.current()
        before = current.config if current else GatewayConfig()
        changes = diff_configs(before, _sealed(config))
        now = datetime.now(UTC)
        for i in expired_on_arrival(before.overrides, config.overrides, now):
            # A file is declarative: warn (the admin API refuses such an override).
            o = config.overrides[i]
            console.print(
                f"[bold yellow]warning:[/] override {escape(o.name)!r} expired at "
                f"{o.expires_at.isoformat()}: it will never apply"
            )
        result = await repo.apply(config, author=_author(author), comment=comment)
        if result.created and not changes.is_empty:
            console.print(changes.render(markup=True, limit=APPLY_LISTS_AT_MOST))
        return result, changes.summary()

    result, summary = _run(url, work)
    if result.created:
        console.print(f"[bold green]✓[/] applied version {result.version} ({summary})")
    else:
        console.print(
            f"[bold]no changes:[/] {escape(str(file))} equals the current version {result.version}"
        )


@app.command()
def export(
    version: Annotated[
        int | None, typer.Option("--version", "-v", help="Export this version, not the current.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="yaml or json (default: json for an --output ending in .json, else yaml).",
        ),
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Write every field, including default values.")
    ] = False,
    include_secrets: Annotated[
        bool,
        typer.Option(
            "--include-secrets",
            help="Certificate private keys in clear PEM (default: sealed with the "
            "deployment secret, usable only by this deployment).",
        ),
    ] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Print a stored config as YAML or JSON; export → apply → export is byte-identical."""
    chosen = fmt or ("json" if output is not None and output.suffix.lower() == ".json" else "yaml")
    if chosen not in ("yaml", "json"):
        raise UserError(f"--format must be 'yaml' or 'json', not {chosen!r}")
    out_format: Literal["yaml", "json"] = "json" if chosen == "json" else "yaml"
    url = _database_url(database_url)

    async def work(engine: AsyncEngine) -> ConfigVersion | None:
        from portcullis.store.config_repository import ConfigRepository

        if not await _require_schema(engine, migrate_if_empty=False):
            return None
        repo = ConfigRepository(engine)
        return await repo.current() if version is None else await repo.get(version)

    try:
        stored = _run(url, work) if _store_exists(url) else None
    except NotFound as exc:
        raise UserError(f"--version: {exc}") from None
    except ConfigError as exc:
        _print_issues(exc)
        raise UserError(f"{exc.source} does not validate with this release's schema") from None
    if stored is None:
        raise UserError(
            "the store has no config yet; apply one with `portcullis config apply FILE`"
        )
    config = stored.config
    if include_secrets and config.certificates:
        from portcullis.store.sealing import UnsealError, unseal_key

        try:
            unsealed = [
                c.model_copy(update={"key": unseal_key(c.key)}) for c in config.certificates
            ]
        except UnsealError as exc:
            raise UserError(f"--include-secrets: {exc}") from None
        config = config.model_copy(update={"certificates": unsealed})
    text = dump_config(config, format=out_format, include_defaults=full)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--output {output}: cannot write: {exc.strerror or exc}") from None
    console.print(f"[bold green]✓[/] wrote version {stored.version} to {escape(str(output))}")


@app.command()
def versions(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many to list.")] = 20,
    before: Annotated[
        int | None, typer.Option("--before", help="Only versions older than this one.")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List stored config versions, newest first (the current one is marked with *)."""
    url = _database_url(database_url)

    async def work(engine: AsyncEngine) -> tuple[int, list[ConfigVersionSummary]] | None:
        from portcullis.store.config_repository import ConfigRepository

        if not await _require_schema(engine, migrate_if_empty=False):
            return None
        repo = ConfigRepository(engine)
        return await repo.current_version(), await repo.list_versions(limit, before)

    result = _run(url, work) if _store_exists(url) else None
    if result is None or not result[1]:
        console.print("no config versions stored yet")
        return
    current, rows = result
    table = Table(box=None, pad_edge=False)
    for column in ("", "version", "created (UTC)", "author", "comment", "checksum"):
        table.add_column(column)
    for row in rows:
        note = row.comment or ""
        if row.source_version is not None and not note:
            note = f"rollback to version {row.source_version}"
        table.add_row(
            "*" if row.version == current else "",
            str(row.version),
            row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(row.author or ""),
            escape(note),
            row.checksum[:12],
        )
    console.print(table)


@app.command()
def rollback(
    version: Annotated[int, typer.Argument(help="The version whose config to restore.")],
    comment: Annotated[
        str | None, typer.Option("--comment", "-m", help="Why (default: 'rollback to version N').")
    ] = None,
    author: Author = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Make an old version's config current again, as a new version (history stays linear)."""
    url = _database_url(database_url)

    async def work(engine: AsyncEngine) -> ConfigVersion:
        from portcullis.store.config_repository import ConfigRepository

        if not await _require_schema(engine, migrate_if_empty=False):
            raise UserError("the store has no config versions yet")
        repo = ConfigRepository(engine, keep_versions=Settings().config_history_keep)
        return await repo.rollback(version, author=_author(author), comment=comment)

    if not _store_exists(url):
        raise UserError("the store has no config versions yet")
    try:
        result = _run(url, work)
    except NotFound as exc:
        raise UserError(f"VERSION: {exc}") from None
    except ConfigError as exc:
        _print_issues(exc)
        raise UserError(
            f"version {version} does not validate with this release's schema; nothing changed"
        ) from None
    if result.created:
        console.print(
            f"[bold green]✓[/] version {result.version} restores the config of version {version}"
        )
    else:
        console.print(
            f"[bold]no changes:[/] version {version}'s config is already current "
            f"(version {result.version})"
        )


def register_migrate(root: typer.Typer) -> None:
    """Add `portcullis migrate` (upgrade the database schema to the newest revision)."""

    @root.command("migrate")
    def migrate(database_url: DatabaseUrl = None) -> None:
        """Create or upgrade the database schema to the newest revision."""
        url = _database_url(database_url)

        async def work(engine: AsyncEngine) -> list[MigrationStep]:
            from portcullis.store.migrations import pending_migrations, upgrade_to_head

            pending = await pending_migrations(engine)
            if not pending:
                return []
            with Progress(
                TextColumn("[bold]migrating[/]"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} {task.description}"),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("", total=len(pending))

                def step_done(step: MigrationStep) -> None:
                    progress.update(task, advance=1, description=escape(step.revision))
                    console.print(f"[green]✓[/] {escape(step.revision)} {escape(step.description)}")

                return await upgrade_to_head(engine, on_step=step_done)

        applied = _run(url, work)
        from portcullis.store.migrations import head_revisions

        heads = ", ".join(sorted(head_revisions()))
        if applied:
            console.print(f"[bold green]✓[/] {_safe_url(url)} is at revision {heads}")
        else:
            console.print(f"already at revision {heads}: nothing to do")
