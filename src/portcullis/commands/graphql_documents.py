"""`portcullis graphql documents add|list|show|remove`: the trusted GraphQL documents.

A trusted document is one an operator registered: with
`PORTCULLIS_GRAPHQL_TRUSTED_DOCUMENTS_ONLY` only those run on the GraphQL admin API,
by their SHA-256 (`extensions.persistedQuery.sha256Hash`) or by their exact text. Like
`portcullis webhooks`, the commands work on the store directly (`--database-url` or
`PORTCULLIS_DATABASE_URL`) through the same service as the admin API
(`services/graphql_documents.py`), audited as `cli:<os user>`.

`add` takes one document per file, exactly as the client sends it (the hash is of the
file's text, trailing newline included), and prints `<sha256>  <file>` per file on
stdout; a file that is not UTF-8, does not parse, holds no operation or does not
validate against the schema stops the whole command before anything is stored.
Adding a document again changes nothing.
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

    from portcullis.services.context import Operation
    from portcullis.services.errors import ServiceError
    from portcullis.services.graphql_documents import SqlDocumentStore

app = typer.Typer(
    name="graphql",
    help="The GraphQL admin API's persisted documents.",
    no_args_is_help=True,
    add_completion=False,
)
documents_app = typer.Typer(
    name="documents",
    help="Add, list, show and remove trusted GraphQL documents.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(documents_app, name="documents")

DocumentHash = Annotated[
    str, typer.Argument(help="The document's SHA-256 (64 hex digits), as `list` shows it.")
]


def _store_and_operation(engine: AsyncEngine) -> tuple[SqlDocumentStore, Operation]:
    from portcullis.services.audit import AuditLog
    from portcullis.services.context import Operation
    from portcullis.services.graphql_documents import SqlDocumentStore
    from portcullis.settings import Settings

    store = SqlDocumentStore.from_settings(engine, Settings())
    return store, Operation.for_cli(AuditLog(engine))


def _refusal(exc: ServiceError) -> UserError:
    if exc.target == "sha256":
        return UserError(f"HASH: {exc}")
    return UserError("; ".join(e.detail for e in exc.errors) or str(exc))


def _store(database_url: str | None, work: Callable[[AsyncEngine], Any]) -> Any:
    return _with_store(_database_url(database_url), work, _refusal)


def _hash_argument(value: str) -> str:
    from portcullis.services.graphql_documents import is_document_hash

    sha256 = value.strip().lower()
    if not is_document_hash(sha256):
        raise UserError(f"HASH: {value!r} is not a SHA-256 (64 hex digits)")
    return sha256


def _schema_errors(text: str) -> list[str]:
    """Why the document would not validate against this version's GraphQL schema."""
    from graphql import parse, validate

    from portcullis.graph.schema import graphql_schema

    return [e.message for e in validate(graphql_schema(), parse(text), max_errors=5)]


def _read(path: Path, *, schema_check: bool) -> str:
    """A document file's text, checked as a trusted document must be (and, with
    `schema_check`, valid against the schema: a document that is not would never run)."""
    from portcullis.services.errors import ServiceError
    from portcullis.services.graphql_documents import check_document
    from portcullis.settings import Settings

    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    try:
        check_document(text, max_bytes=Settings().graphql_max_bytes)
    except ServiceError as exc:
        raise UserError(f"{path}: {'; '.join(e.detail for e in exc.errors)}") from None
    if schema_check and (errors := _schema_errors(text)):
        raise UserError(
            f"{path}: does not validate against the GraphQL schema: {'; '.join(errors)}"
            " (--no-schema-check adds it anyway, e.g. ahead of an upgrade)"
        )
    return text


@documents_app.command()
def add(
    files: Annotated[
        list[Path],
        typer.Argument(metavar="FILE", help="GraphQL files, one document each (.graphql)."),
    ],
    schema_check: Annotated[
        bool,
        typer.Option(
            "--schema-check/--no-schema-check",
            help="Refuse documents that do not validate against this version's schema.",
        ),
    ] = True,
    database_url: DatabaseUrl = None,
) -> None:
    """Register documents as trusted; prints `<sha256>  <file>` for each."""
    texts = [(path, _read(path, schema_check=schema_check)) for path in files]

    async def work(engine: AsyncEngine) -> list[tuple[str, bool]]:
        from portcullis.services.errors import ServiceError
        from portcullis.services.graphql_documents import add_trusted

        store, op = _store_and_operation(engine)
        added = []
        for path, text in texts:
            try:
                added.append(await add_trusted(store, text, op))
            except ServiceError as exc:
                raise UserError(f"{path}: {'; '.join(e.detail for e in exc.errors)}") from None
        return added

    results: list[tuple[str, bool]] = _store(database_url, work)
    for (path, _), (sha256, new) in zip(texts, results, strict=True):
        out.print(f"{sha256}  {escape(str(path))}")
        if not new:
            console.print(f"[dim]{escape(str(path))}: already trusted[/]")
    fresh = sum(new for _, new in results)
    console.print(f"[bold green]✓[/] {fresh} document(s) trusted, {len(results) - fresh} already")


@documents_app.command("list")
def list_documents(
    trusted: Annotated[
        bool | None,
        typer.Option(
            "--trusted/--apq", help="Only trusted ones, or only those clients registered."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=100_000)] = 1000,
    as_json: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """List persisted documents, newest first."""

    async def work(engine: AsyncEngine) -> list[Any]:
        store, _ = _store_and_operation(engine)
        return await store.list_documents(trusted=trusted, limit=limit)

    documents = _store(database_url, work)
    if as_json:
        _print_json({"items": [d.as_json() for d in documents]})
        return
    if not documents:
        console.print("no GraphQL documents match")
        return
    table = Table(box=None, pad_edge=False)
    # The hash is what the other commands take: never cut short.
    table.add_column("sha256", no_wrap=True, min_width=64)
    for column in ("trusted", "bytes", "created", "last used", "created by"):
        table.add_column(column)
    for d in documents:
        row = d.as_json()
        table.add_row(
            d.sha256,
            "yes" if d.trusted else "no (apq)",
            str(d.size),
            row["created_at"],
            row["last_used_at"],
            escape(d.created_by or ""),
        )
    out.print(table)


@documents_app.command()
def show(sha256: DocumentHash, database_url: DatabaseUrl = None) -> None:
    """Print a document's text."""
    wanted = _hash_argument(sha256)

    async def work(engine: AsyncEngine) -> str | None:
        store, _ = _store_and_operation(engine)
        return await store.get(wanted)

    text: str | None = _store(database_url, work)
    if text is None:
        raise UserError(f"HASH: no GraphQL document has the hash {wanted!r}")
    out.print(text, end="", markup=False)


@documents_app.command()
def remove(sha256: DocumentHash, database_url: DatabaseUrl = None) -> None:
    """Forget a document (trusted or not); clients must register it again."""
    wanted = _hash_argument(sha256)

    async def work(engine: AsyncEngine) -> None:
        store, op = _store_and_operation(engine)
        await store.remove(wanted, operation=op)

    _store(database_url, work)
    console.print(f"[bold green]✓[/] removed {wanted}")


def register_graphql(root: typer.Typer) -> None:
    """Mount the `graphql` command group on the root CLI."""
    root.add_typer(app, name="graphql", help="The GraphQL admin API's persisted documents.")
