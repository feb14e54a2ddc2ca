"""`portcullis config …` each run as a real process against a temp SQLite store."""

from __future__ import annotations

import asyncio
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from portcullis.commands.config import register_migrate
from portcullis.events.bus import read_events
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from portcullis.store.migrations import is_at_head
from support.cli_process import CliProcesses

GOOD = textwrap.dedent(
    """\
    services:
      - name: orders
        url: http://127.0.0.1:9000
        timeouts: {read: 5}
      - name: billing
        upstream: billing-pool
    upstreams:
      - name: billing-pool
        targets: [{target: "127.0.0.1:9001"}, {target: "127.0.0.1:9002", weight: 10}]
    routes:
      - name: orders
        service: orders
        paths: [/orders, "=/orders/health"]
        methods: [GET, post]
      - name: billing
        service: billing
        hosts: [billing.example.com]
        tags: ["yes", "2024-01-01"]
    consumers:
      - username: acme
        custom_id: "007"
    plugins:
      - name: request-size-limit
        route: orders
        config: {max_bytes: 1024}
    """
)

BAD = textwrap.dedent(
    """\
    services:
      - name: orders
        url: http://127.0.0.1:9000
    routes:
      - name: r0
        service: orders
      - name: r1
        service: orders
      - name: r2
        service: orders
      - name: r3
        service: ghost
        paths: [12]
        stip_path: false
    """
)


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cli:
    """Runs `python -m portcullis` with the store at `db`."""

    cwd: Path
    db: Path
    processes: CliProcesses

    @property
    def url(self) -> str:
        return f"sqlite+aiosqlite:///{self.db}"

    def __call__(self, *args: str, url: str | None = None) -> Result:
        env = {
            **os.environ,
            "PORTCULLIS_DATABASE_URL": url or self.url,
            "PORTCULLIS_AUTHOR": "tester",
            "COLUMNS": "200",
            "NO_COLOR": "1",
        }
        done = self.processes.run(args, cwd=self.cwd, env=env)
        return Result(done.code, done.out, done.err)

    def stored(self) -> list[tuple[int, str]]:
        """(version, checksum) of every stored version, newest first, read in-process."""

        async def read() -> list[tuple[int, str]]:
            engine = create_engine(self.url)
            try:
                return [
                    (v.version, v.checksum) for v in await ConfigRepository(engine).list_versions()
                ]
            finally:
                await engine.dispose()

        return asyncio.run(read())

    def events(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(kind, subject, data) of the config and consumer events stored, oldest first."""

        async def read() -> list[tuple[str, str, dict[str, Any]]]:
            engine = create_engine(self.url)
            try:
                found = await read_events(engine, kinds=["config.applied", "consumer.created"])
                return [(e.kind, e.subject, e.data) for e in found]
            finally:
                await engine.dispose()

        return asyncio.run(read())


@pytest.fixture
def cli(tmp_path: Path, portcullis_processes: CliProcesses) -> Cli:
    db = tmp_path / "state" / "portcullis.db"
    return Cli(cwd=tmp_path, db=db, processes=portcullis_processes)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_reports_every_error_with_lines_and_exits_1(cli: Cli, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", BAD)
    r = cli("config", "validate", str(bad))
    assert r.code == 1
    lines = r.out.splitlines()
    assert "✗ routes[3].service (line 12): unknown service 'ghost'" in lines
    assert "✗ routes[3].paths[0] (line 13): Input should be a valid string" in lines
    assert (
        "✗ routes[3].stip_path (line 14): unknown field 'stip_path' (did you mean 'strip_path'?)"
        in lines
    )
    assert len(lines) == 3
    assert f"{bad} is not a valid config (3 errors)" in r.err
    assert "Traceback" not in r.err

    good = write(tmp_path / "good.yaml", GOOD)
    r = cli("config", "validate", str(good))
    assert r.code == 0, r.err
    assert "is valid: 2 services, 1 upstream, 2 routes, 1 consumer, 1 plugin" in r.out
    # validate never touches the store.
    assert not cli.db.exists()


def test_yaml_syntax_error_and_missing_file(cli: Cli, tmp_path: Path) -> None:
    broken = write(tmp_path / "broken.yaml", "routes:\n  - name: [r\n")
    r = cli("config", "validate", str(broken))
    assert r.code == 1
    assert "✗ (document) (line 3): invalid YAML" in r.out
    r = cli("config", "validate", str(tmp_path / "absent.yaml"))
    assert r.code == 1
    assert "absent.yaml: no such file" in r.err


def test_invalid_apply_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    assert cli("config", "apply", str(good)).code == 0
    before = cli.stored()

    r = cli("config", "apply", str(write(tmp_path / "bad.yaml", BAD)))
    assert r.code == 1
    assert "routes[3].service (line 12)" in r.out
    assert "is not a valid config (3 errors)" in r.err
    assert cli.stored() == before


def test_apply_diff_versions(cli: Cli, tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    r = cli("config", "diff", str(good))
    assert r.code == 0, r.err
    assert "+ orders" in r.out
    assert "7 added, 0 removed, 0 changed (against an empty store)" in r.out

    r = cli("config", "apply", str(good), "--comment", "first")
    assert r.code == 0, r.err
    assert "applied version 1 (7 added, 0 removed, 0 changed)" in r.out
    assert [v for v, _ in cli.stored()] == [1]
    # The CLI's apply records the version's events like every other path.
    [(kind, subject, data), created] = cli.events()
    assert (kind, subject, data["author"], data["comment"]) == (
        "config.applied",
        "config:1",
        "tester",
        "first",
    )
    assert created[:2] == ("consumer.created", "consumer:acme")

    r = cli("config", "apply", str(good))
    assert r.code == 0
    assert "no changes" in r.out
    assert [v for v, _ in cli.stored()] == [1]

    changed = write(tmp_path / "changed.yaml", GOOD.replace("read: 5", "read: 7"))
    r = cli("config", "diff", str(changed))
    assert r.code == 0
    assert "~ orders" in r.out
    assert "timeouts.read: 5.0 → 7.0" in r.out
    assert "0 added, 0 removed, 1 changed (against version 1)" in r.out

    r = cli("config", "apply", str(changed), "--author", "alice")
    assert r.code == 0
    assert "applied version 2" in r.out

    r = cli("config", "versions")
    assert r.code == 0
    header, newest, oldest = r.out.splitlines()
    assert header.split() == ["version", "created", "(UTC)", "author", "comment", "checksum"]
    assert newest.split()[:2] == ["*", "2"]
    assert newest.split()[4] == "alice"
    assert oldest.split()[0] == "1"
    assert oldest.split()[3:5] == ["tester", "first"]


def test_export_apply_export_is_byte_identical(cli: Cli, tmp_path: Path) -> None:
    assert cli("config", "apply", str(write(tmp_path / "good.yaml", GOOD))).code == 0
    first = tmp_path / "export1.yaml"
    r = cli("config", "export", "--output", str(first))
    assert r.code == 0, r.err
    assert "wrote version 1" in r.out
    assert first.read_text().startswith("format_version: '1'\nservices:\n  - name: orders\n")

    # Into a brand-new store: the exported file must recreate the same config.
    other = Cli(cwd=tmp_path, db=tmp_path / "other.db", processes=cli.processes)
    assert other("config", "apply", str(first)).code == 0
    assert other("config", "export").out == first.read_text()
    assert other.stored()[0][1] == cli.stored()[0][1]  # same checksum

    as_json = tmp_path / "export.json"
    assert cli("config", "export", "-o", str(as_json)).code == 0
    assert as_json.read_text().startswith("{\n")
    r = other("config", "apply", str(as_json))
    assert "no changes" in r.out
    assert other("config", "export", "--format", "json").out == as_json.read_text()

    full = cli("config", "export", "--full").out
    assert "timeouts:" in full
    assert "healthchecks:" in full


def test_rollback(cli: Cli, tmp_path: Path) -> None:
    assert cli("config", "apply", str(write(tmp_path / "a.yaml", GOOD))).code == 0
    changed = GOOD.replace("max_bytes: 1024", "max_bytes: 2048")
    assert cli("config", "apply", str(write(tmp_path / "b.yaml", changed))).code == 0

    r = cli("config", "rollback", "1")
    assert r.code == 0, r.err
    assert "version 3 restores the config of version 1" in r.out
    stored = cli.stored()
    assert [v for v, _ in stored] == [3, 2, 1]
    assert stored[0][1] == stored[2][1]  # version 3 holds version 1's document

    r = cli("config", "rollback", "1")
    assert r.code == 0
    assert "already current" in r.out
    assert len(cli.stored()) == 3

    r = cli("config", "rollback", "9")
    assert r.code == 1
    assert "config version 9 does not exist" in r.err


def test_empty_store_and_database_url_option(cli: Cli, tmp_path: Path) -> None:
    r = cli("config", "export")
    assert r.code == 1
    assert "the store has no config yet" in r.err

    elsewhere = tmp_path / "explicit" / "db.sqlite"
    good = write(tmp_path / "good.yaml", GOOD)
    r = cli("config", "apply", str(good), "--database-url", f"sqlite+aiosqlite:///{elsewhere}")
    assert r.code == 0, r.err
    assert elsewhere.exists()
    assert not cli.db.exists()  # the store named by the environment was not touched


def test_unreachable_database_is_a_user_error(cli: Cli, tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", GOOD)
    # Nothing listens on port 1 of the loopback address.
    url = "postgresql+asyncpg://nobody@127.0.0.1:1/none"
    r = cli("config", "apply", str(good), url=url)
    assert r.code == 1
    assert "database error at postgresql+asyncpg://nobody@127.0.0.1:1/none" in r.err
    assert "Traceback" not in r.err


def test_migrate_command(tmp_path: Path) -> None:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """A stand-in for the portcullis root app."""

    register_migrate(root)
    url = f"sqlite+aiosqlite:///{tmp_path / 'm' / 'store.db'}"
    runner = CliRunner()
    first = runner.invoke(root, ["migrate", "--database-url", url])
    assert first.exit_code == 0, first.output
    assert "✓ 0001" in first.output
    assert "is at revision" in first.output
    assert asyncio.run(is_at_head(url))
    second = runner.invoke(root, ["migrate", "--database-url", url])
    assert second.exit_code == 0
    assert "nothing to do" in second.output


def test_apply_warns_about_an_override_that_has_already_expired(cli: Cli, tmp_path: Path) -> None:
    override = textwrap.dedent(
        """\
        overrides:
          - name: stop
            consumer: acme
            multiplier: 0.5
            expires_at: "{when}"
            reason: incident 7
        """
    )
    past = write(tmp_path / "past.yaml", GOOD + override.format(when="2020-01-01T00:00:00Z"))
    r = cli("config", "apply", str(past))
    assert r.code == 0, r.err
    assert "warning: override 'stop' expired at 2020-01-01T00:00:00+00:00" in r.out
    # Applying the same file again changes nothing about that override: no warning.
    tagged = write(tmp_path / "tagged.yaml", past.read_text().replace("read: 5", "read: 6"))
    r = cli("config", "apply", str(tagged))
    assert r.code == 0, r.err
    assert "warning" not in r.out
