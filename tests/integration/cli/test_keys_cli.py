"""`portcullis keys …` each run as a real process against a temp SQLite store."""

from __future__ import annotations

import asyncio
import csv
import getpass
import io
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from typer.testing import CliRunner

from portcullis.commands.keys import app as keys_app
from portcullis.errors import UserError
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.keys import Environment, generate_key, parse_key
from portcullis.identity.secrets import load_server_secret
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.settings import Settings
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.engine import create_engine
from support.cli_process import CliProcesses

CONFIG = """\
services: [{name: orders, url: "http://127.0.0.1:9"}]
consumers:
  - {username: acme, organization: org-a}
  - {username: globex}
"""


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    cwd: Path
    db: Path
    processes: CliProcesses

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    def __call__(self, *args: str) -> Result:
        env = {**os.environ, "PORTCULLIS_DATABASE_URL": self.url, "COLUMNS": "200", "NO_COLOR": "1"}
        done = self.processes.run(args, cwd=self.cwd, env=env)
        return Result(done.code, done.out, done.err)

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.code == 0, (args, result.out, result.err)
        assert "Traceback" not in result.err
        return result

    def fails(self, *args: str, message: str) -> Result:
        result = self(*args)
        assert result.code == 1, (args, result.out, result.err)
        assert "Traceback" not in result.err
        assert message in result.err, result.err
        return result

    def run(self, work):  # type: ignore[no-untyped-def]
        async def main():  # type: ignore[no-untyped-def]
            engine = create_engine(self.url)
            try:
                return await work(engine)
            finally:
                await engine.dispose()

        return asyncio.run(main())

    def repo_lookup(self, key: str):  # type: ignore[no-untyped-def]
        settings = Settings()
        secret = load_server_secret(settings.secret_key, settings.secret_key_file)

        async def work(engine):  # type: ignore[no-untyped-def]
            return await KeyRepository(engine, secret).find_by_hash(secret.hash_credential(key))

        return self.run(work)

    def dump(self) -> str:
        async def work(engine):  # type: ignore[no-untyped-def]
            out = []
            async with engine.connect() as conn:
                names = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
                for name in names:
                    rows = (await conn.execute(text(f'SELECT * FROM "{name}"'))).all()
                    out.append(f"{name}: {rows!r}")
            return "\n".join(out)

        result: str = self.run(work)
        return result

    def add_organization(self, org_id: str, name: str) -> None:
        async def work(engine):  # type: ignore[no-untyped-def]
            now = datetime.now(UTC)
            async with engine.begin() as conn:
                await conn.execute(
                    insert(OrganizationRow).values(
                        id=org_id, name=name, created_at=now, updated_at=now
                    )
                )

        self.run(work)

    def audit(self) -> list[tuple[str, str | None, str]]:
        async def work(engine):  # type: ignore[no-untyped-def]
            events = await AuditLog(engine).page(
                AuditFilter(resource_type="api_key"), limit=100, before_id=None
            )
            return [(e.action, e.resource_id, e.actor) for e in reversed(events)]

        result: list[tuple[str, str | None, str]] = self.run(work)
        return result


@pytest.fixture
def cli(tmp_path: Path, portcullis_processes: CliProcesses) -> Cli:
    tool = Cli(
        cwd=tmp_path, db=tmp_path / "state" / "portcullis.db", processes=portcullis_processes
    )
    (tmp_path / "config.yaml").write_text(CONFIG)
    return tool


def test_needs_a_migrated_store_and_a_config(cli: Cli) -> None:
    cli.fails("keys", "list", message="the store is not initialised: run `portcullis migrate`")
    cli.ok("migrate")
    cli.fails("keys", "create", "acme", "--name", "x", message="the store has no config yet")
    cli.ok("config", "apply", "config.yaml")
    cli.fails("keys", "create", "ghost", "--name", "x", message="CONSUMER: unknown consumer")
    assert cli.ok("keys", "list").err.strip() == "no API keys match"


def test_lifecycle_from_the_command_line(cli: Cli) -> None:
    cli.ok("config", "apply", "config.yaml")
    cli.add_organization("id-org-a", "org-a")  # keys store the id of the consumer's
    created = cli.ok(
        "keys", "create", "acme", "--name", "ci", "--scope", "orders:read", "--scope", "b",
        "--allow-ip", "10.0.0.0/8", "--allow-ip", "2001:db8::/32", "--origin",
        "https://app.example.com", "--expires-in", "30d", "--meta", "team=pay", "--meta", "n=2",
        "--environment", "staging",
    )  # fmt: skip
    key = created.out.strip()
    parsed = parse_key(key)
    assert parsed is not None
    assert parsed.environment is Environment.staging
    assert created.out == key + "\n"  # only the key on stdout
    assert "only time the key is shown" in created.err
    record = cli.repo_lookup(key)
    assert record is not None
    assert record.scopes == frozenset({"orders:read", "b"})
    assert len(record.ip_allowlist) == 2

    shown = json.loads(cli.ok("keys", "show", parsed.id, "--json").out)
    assert (shown["organization"], shown["organization_id"]) == ("org-a", "id-org-a")
    assert shown["metadata"] == {"team": "pay", "n": 2}
    assert shown["created_by"] == f"cli:{getpass.getuser()}"
    assert key not in cli.ok("keys", "show", parsed.id).out
    listed = cli.ok("keys", "list").out
    # The id column shows what the other commands take; they take the prefix too.
    (row,) = listed.splitlines()[1:]
    assert row.split()[0] == parsed.id
    assert key not in listed
    by_prefix = json.loads(cli.ok("keys", "show", f"pc_stg_{parsed.id}", "--json").out)
    assert by_prefix["id"] == parsed.id
    # A whole key is refused (a secret does not belong in argv), naming the id to use.
    cli.fails(
        "keys",
        "show",
        key,
        message=f"KEY_ID: that is a whole secret key; name it by its id '{parsed.id}'",
    )

    rotated = cli.ok("keys", "rotate", parsed.id, "--grace", "2h")
    new_key = rotated.out.strip()
    new = parse_key(new_key)
    assert new is not None
    assert new.id != parsed.id
    assert "works until" in rotated.err
    old = json.loads(cli.ok("keys", "show", parsed.id, "--json").out)
    assert (old["replaced_by"], old["state"]) == (new.id, "grace")
    grace = json.loads(cli.ok("keys", "list", "--status", "grace", "--json").out)["items"]
    assert [k["id"] for k in grace] == [parsed.id]
    cli.fails("keys", "rotate", parsed.id, message="already rotated")

    cli.ok("keys", "suspend", new.id, "--reason", "unpaid")
    record = cli.repo_lookup(new_key)
    assert record is not None
    assert record.status == "suspended"
    cli.fails("keys", "suspend", new.id, "--reason", "again", message="is suspended")
    cli.ok("keys", "resume", new.id)
    cli.ok("keys", "suspend", f"pc_stg_{new.id}")
    cli.ok("keys", "resume", f"pc_stg_{new.id}")
    # The id exactly as `keys list` printed it, and no --reason needed.
    listed_ids = [line.split()[0] for line in cli.ok("keys", "list").out.splitlines()[1:]]
    assert new.id in listed_ids
    revoked = cli.ok("keys", "revoke", new.id)
    assert f"revoked {new.id}" in revoked.err
    record = cli.repo_lookup(new_key)
    assert record is not None
    assert (record.status, record.status_reason) == ("revoked", "revoked")
    cli.fails("keys", "resume", new.id, message="is revoked")
    cli.fails("keys", "revoke", "nope", "--reason", "x", message="KEY_ID: API key 'nope'")

    actor = f"cli:{getpass.getuser()}"
    assert cli.audit() == [
        ("create", parsed.id, actor),
        ("rotate", parsed.id, actor),
        ("create", new.id, actor),
        ("suspend", new.id, actor),
        ("resume", new.id, actor),
        ("suspend", new.id, actor),
        ("resume", new.id, actor),
        ("revoke", new.id, actor),
    ]
    # No key material anywhere in the store (audit log included).
    dump = cli.dump()
    for full in (key, new_key):
        assert full not in dump
        assert full.rsplit("_", 1)[1] not in dump


def test_bad_input_names_the_option(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (typer's runner) for speed: each case raises the UserError the CLI prints."""
    cli.ok("config", "apply", "config.yaml")
    monkeypatch.setenv("PORTCULLIS_DATABASE_URL", cli.url)
    runner = CliRunner()

    def error_of(*args: str) -> str:
        result = runner.invoke(keys_app, list(args))
        assert isinstance(result.exception, UserError), (args, result.output, result.exception)
        return result.exception.message

    cases = [
        (("--allow-ip", "10.0.0.1/8"), "--allow-ip: '10.0.0.1/8' has host bits set"),
        (("--origin", "ftp://x"), "--origin:"),
        (("--scope", 'a"b'), "--scope:"),
        (("--expires-at", "soon"), "--expires-at: 'soon' is not a date"),
        (("--expires-at", "2001-01-01"), "--expires-at: must be in the future"),
        (("--expires-in", "3 fortnights"), "--expires-in: '3 fortnights' is not a duration"),
        (("--expires-at", "2100-01-01", "--expires-in", "1d"), "give one, not both"),
        (("--environment", "prod"), "--environment:"),
        (("--meta", "novalue"), "--meta: 'novalue' is not NAME=VALUE"),
    ]
    for extra, message in cases:
        assert message in error_of("create", "acme", "--name", "x", *extra), extra
    assert "--status: 'bogus' is not one of" in error_of("list", "--status", "bogus")
    assert "--sort: unknown field 'hash'" in error_of("list", "--sort", "hash")
    assert "--cursor:" in error_of("list", "--cursor", "nonsense")
    assert "--grace:" in error_of("rotate", "x", "--grace", "forever")
    assert "--no-expiry" in error_of("rotate", "x", "--no-expiry", "--expires-in", "1d")
    assert "--reason:" in error_of("revoke", "x", "--reason", " ")
    assert "--format must be 'csv' or 'jsonl'" in error_of("export", "--format", "xml")
    assert json.loads(cli.ok("keys", "list", "--json").out)["items"] == []


def test_import_and_export(cli: Cli, tmp_path: Path) -> None:
    cli.ok("config", "apply", "config.yaml")
    _, supplied = generate_key(Environment.production)
    (tmp_path / "keys.csv").write_text(
        "consumer,name,scopes,ip_allowlist,key\n"
        "acme,gen-1,a b,10.0.0.0/8,\n"
        "globex,gen-2,,,\n"
        f"acme,ported,x,,{supplied}\n"
    )
    cli.ok("keys", "import", "keys.csv", "--dry-run")
    assert json.loads(cli.ok("keys", "list", "--json").out)["items"] == []
    imported = cli.ok("keys", "import", "keys.csv", "--output", "generated.csv")
    assert "imported 3 keys (2 generated, 1 supplied)" in imported.err
    assert imported.out == ""
    generated_file = tmp_path / "generated.csv"
    assert stat.S_IMODE(generated_file.stat().st_mode) == 0o600
    generated = list(csv.DictReader(io.StringIO(generated_file.read_text())))
    assert [(g["row"], g["name"]) for g in generated] == [("1", "gen-1"), ("2", "gen-2")]
    for g in generated:
        assert cli.repo_lookup(g["key"]) is not None
    assert cli.repo_lookup(supplied) is not None

    (tmp_path / "bad.csv").write_text(
        "consumer,name,ip_allowlist,key\nacme,ok,,\nacme,,10.0.0.1/8,\nacme,dup,," + supplied + "\n"
    )
    bad = cli.fails("keys", "import", "bad.csv", message="nothing was imported: 2 problem(s)")
    assert "row 2: name: is required" in bad.err
    assert "row 2: ip_allowlist: " in bad.err
    (tmp_path / "dup.csv").write_text(f"consumer,name,key\nacme,ok,\nacme,dup,{supplied}\n")
    dup = cli.fails("keys", "import", "dup.csv", message="nothing was imported")
    assert "row 2: key: this key is already stored" in dup.err
    assert supplied not in dup.err + dup.out
    cli.fails("keys", "import", "missing.csv", message="missing.csv: no such file")
    assert len(json.loads(cli.ok("keys", "list", "--json").out)["items"]) == 3

    exported = cli.ok("keys", "export").out
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert sorted(r["name"] for r in rows) == ["gen-1", "gen-2", "ported"]
    jsonl = cli.ok("keys", "export", "--format", "jsonl", "--consumer", "acme").out
    assert sorted(json.loads(line)["name"] for line in jsonl.splitlines()) == ["gen-1", "ported"]
    to_file = cli.ok("keys", "export", "--output", "keys-out.csv")
    assert "exported 3 keys" in to_file.err
    assert (tmp_path / "keys-out.csv").read_text().replace("\r\n", "\n") == exported.replace(
        "\r\n", "\n"
    )
    dump = cli.dump()
    for secret in [supplied, *(g["key"] for g in generated)]:
        assert secret not in exported
        assert secret not in jsonl
        assert secret not in dump
    assert cli.audit()[-1][0] == "import"
