"""`portcullis graphql documents …`, each run as a real process against a temp SQLite
store: trusted documents added from files (hash printed, idempotent, all or nothing),
listed, shown and removed, audited as the OS user; bad input named, non-zero exit."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from portcullis.commands.graphql_documents import documents_app
from portcullis.errors import UserError
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.services.graphql_documents import SqlDocumentStore
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.cli_process import CliProcesses, CliResult

SERVICES = "query Services {\n  services { nodes { name } }\n}\n"
ROUTES = "query Routes { routes(first: 5) { nodes { name } } }"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Cli:
    cwd: Path
    processes: CliProcesses

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.cwd / 'portcullis.db'}"

    def __call__(self, *args: str, **env: str) -> CliResult:
        environment = {**os.environ, "PORTCULLIS_DATABASE_URL": self.url, **env}
        return self.processes.run(["graphql", "documents", *args], cwd=self.cwd, env=environment)

    def ok(self, *args: str) -> CliResult:
        result = self(*args)
        assert result.code == 0, (args, result.out, result.err)
        return result

    def fails(self, *args: str, message: str, **env: str) -> CliResult:
        result = self(*args, **env)
        assert result.code == 1, (args, result.out, result.err)
        assert "Traceback" not in result.err
        assert message in " ".join(result.err.split()), result.err
        return result

    def file(self, name: str, text: str | bytes) -> str:
        path = self.cwd / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return name

    def run(self, work: Any) -> Any:
        async def main() -> Any:
            engine = create_engine(self.url)
            try:
                return await work(engine)
            finally:
                await engine.dispose()

        return asyncio.run(main())


@pytest.fixture
def cli(tmp_path: Path, portcullis_processes: CliProcesses) -> Cli:
    return Cli(cwd=tmp_path, processes=portcullis_processes)


@pytest.fixture
def migrated(cli: Cli) -> Cli:
    assert (
        cli.processes.run(
            ["migrate"], cwd=cli.cwd, env={**os.environ, "PORTCULLIS_DATABASE_URL": cli.url}
        ).code
        == 0
    )
    return cli


def test_needs_a_migrated_store(cli: Cli) -> None:
    cli.fails("list", message="the store is not initialised: run `portcullis migrate` first")


def test_trusted_documents_from_the_command_line(migrated: Cli) -> None:
    cli = migrated
    files = [cli.file("services.graphql", SERVICES), cli.file("routes.graphql", ROUTES)]
    added = cli.ok("add", *files)
    # The hash is of the file's exact text (its trailing newline too).
    assert added.out == f"{sha(SERVICES)}  services.graphql\n{sha(ROUTES)}  routes.graphql\n"
    assert "2 document(s) trusted, 0 already" in added.err
    again = cli.ok("add", "services.graphql")
    assert again.out == f"{sha(SERVICES)}  services.graphql\n"
    assert "services.graphql: already trusted" in again.err

    items = json.loads(cli.ok("list", "--json").out)["items"]
    assert {(i["sha256"], i["trusted"], i["size"]) for i in items} == {
        (sha(SERVICES), True, len(SERVICES)),
        (sha(ROUTES), True, len(ROUTES)),
    }
    assert {i["created_by"] for i in items} == {_actor(items)}
    assert _actor(items).startswith("cli:")
    table = cli.ok("list").out
    assert sha(SERVICES) in table  # whole, never cut short
    assert cli.ok("list", "--apq").err.strip() == "no GraphQL documents match"
    assert cli.ok("show", sha(SERVICES).upper()).out == SERVICES

    # A document a client registered (APQ) is listed apart and can be removed as well.
    apq = "{ __typename }"
    cli.run(lambda engine: SqlDocumentStore(engine).register(apq, trusted=False, operation=None))
    [listed] = json.loads(cli.ok("list", "--apq", "--json").out)["items"]
    assert (listed["sha256"], listed["trusted"], listed["created_by"]) == (sha(apq), False, None)
    cli.ok("remove", sha(apq))
    # Adding a client's document makes it trusted.
    cli.run(
        lambda engine: SqlDocumentStore(engine).register(
            ROUTES + " ", trusted=False, operation=None
        )
    )
    assert cli.ok("add", cli.file("r2.graphql", ROUTES + " ")).out.startswith(sha(ROUTES + " "))

    removed = cli.ok("remove", sha(SERVICES))
    assert f"removed {sha(SERVICES)}" in removed.err
    cli.fails(
        "remove", sha(SERVICES), message=f"HASH: no GraphQL document has the hash '{sha(SERVICES)}'"
    )
    cli.fails("show", sha(SERVICES), message="HASH: no GraphQL document has the hash")
    assert {i["sha256"] for i in json.loads(cli.ok("list", "--json").out)["items"]} == {
        sha(ROUTES),
        sha(ROUTES + " "),
    }

    trail = cli.run(_audit)
    assert trail == [
        ("create", sha(SERVICES)),
        ("create", sha(ROUTES)),
        ("delete", sha(apq)),
        ("trust", sha(ROUTES + " ")),
        ("delete", sha(SERVICES)),
    ]


def test_bad_input_is_named_and_nothing_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process (typer's runner): the refusals, each naming the file or argument."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'portcullis.db'}"
    asyncio.run(upgrade_to_head(url))
    monkeypatch.setenv("PORTCULLIS_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)

    def error_of(*args: str) -> str:
        result = CliRunner().invoke(documents_app, list(args))
        assert isinstance(result.exception, UserError), (args, result.output)
        return result.exception.message

    (tmp_path / "good.graphql").write_text(SERVICES)
    cases: dict[str, tuple[str | bytes | None, str]] = {
        "bad.graphql": ("query {\n", "not a GraphQL document at line 2, column 1: Syntax Error"),
        "frag.graphql": ("fragment F on Service { name }", "the document holds no operation"),
        "latin1.graphql": ("{ caf\xe9 }".encode("latin-1"), "not UTF-8 text"),
        "empty.graphql": ("\n", "the document is empty"),
        "missing.graphql": (None, "No such file or directory"),
        "nope.graphql": (
            "{ nope }",
            "does not validate against the GraphQL schema: Cannot query field 'nope' on"
            " type 'Query'. (--no-schema-check adds it anyway",
        ),
    }
    for name, (text, message) in cases.items():
        if isinstance(text, bytes):
            (tmp_path / name).write_bytes(text)
        elif text is not None:
            (tmp_path / name).write_text(text)
        # The good file comes first: a bad one stops the command before anything is stored.
        assert error_of("add", "good.graphql", name).startswith(f"{name}: {message}"), name
    assert "no GraphQL documents match" in CliRunner().invoke(documents_app, ["list"]).output
    added = CliRunner().invoke(documents_app, ["add", "--no-schema-check", "nope.graphql"])
    assert added.stdout == f"{sha('{ nope }')}  nope.graphql\n"
    (tmp_path / "big.graphql").write_text("{ " + "a " * 40 + "}")
    monkeypatch.setenv("PORTCULLIS_GRAPHQL_MAX_BYTES", "64")
    assert error_of("add", "big.graphql") == (
        "big.graphql: the document has 83 bytes, over the limit of 64"
    )
    for command in ("remove", "show"):
        assert error_of(command, "abc") == "HASH: 'abc' is not a SHA-256 (64 hex digits)"
        assert "is not a SHA-256" in error_of(command, "g" * 64)
    missing = CliRunner().invoke(documents_app, ["add"])
    assert missing.exit_code == 2
    assert "Missing argument" in missing.output


def _actor(items: list[dict[str, Any]]) -> str:
    return str(items[0]["created_by"])


async def _audit(engine: Any) -> list[tuple[str, str | None]]:
    events = await AuditLog(engine).page(
        AuditFilter(resource_type="graphql_document"), limit=100, before_id=None
    )
    return [(e.action, e.resource_id) for e in reversed(events)]
