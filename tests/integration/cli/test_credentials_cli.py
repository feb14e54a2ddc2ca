"""`portcullis credentials …` run as real processes (and, for stdin input, in process)
against a temp SQLite store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from portcullis.commands.credentials import app as credentials_app
from portcullis.errors import UserError
from support.cli_process import CliProcesses

CONFIG = """\
services: [{name: orders, url: "http://127.0.0.1:9"}]
consumers:
  - {username: acme}
"""


@pytest.fixture
def cli(tmp_path: Path, portcullis_processes: CliProcesses):  # type: ignore[no-untyped-def]
    db = tmp_path / "state" / "portcullis.db"
    env = {
        **os.environ,
        "PORTCULLIS_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }
    (tmp_path / "config.yaml").write_text(CONFIG)

    def run(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
        done = portcullis_processes.run(args, cwd=tmp_path, env=env)
        assert done.code == code, (args, done.out, done.err)
        assert "Traceback" not in done.err
        return done

    run("migrate")
    run("config", "apply", "config.yaml")
    run.env = env  # type: ignore[attr-defined]
    return run


def test_lifecycle_prints_secrets_alone_on_stdout(cli) -> None:  # type: ignore[no-untyped-def]
    created = cli("credentials", "create", "hmac-auth", "acme", "--json")
    body = json.loads(created.out)
    assert body["key_id"].startswith("pch_")
    secret = body["secret"]
    plain = cli("credentials", "create", "basic-auth", "acme")
    generated = plain.out.strip().splitlines()[-1]
    assert len(generated) >= 32
    assert "only time the secret is shown" in plain.err
    mtls = cli("credentials", "create", "mtls-auth", "acme", "--match", "subject:CN=acme", "--json")
    mtls_id = json.loads(mtls.out)["id"]
    assert "secret" not in json.loads(mtls.out)

    listed = json.loads(cli("credentials", "list", "hmac-auth", "acme", "--json").out)
    assert [c["key_id"] for c in listed] == [body["key_id"]]
    assert secret not in cli("credentials", "show", "hmac-auth", "acme", body["id"]).out
    rotated = cli("credentials", "rotate", "hmac-auth", "acme", body["id"])
    assert rotated.out.strip() != secret
    assert len(rotated.out.strip()) >= 32
    cli("credentials", "delete", "mtls-auth", "acme", mtls_id)
    assert json.loads(cli("credentials", "list", "mtls-auth", "acme", "--json").out) == []


def test_refusals_name_the_argument(cli) -> None:  # type: ignore[no-untyped-def]
    assert "KIND: 'oauth'" in cli("credentials", "list", "oauth", "acme", code=1).err
    assert "CONSUMER:" in cli("credentials", "create", "hmac-auth", "nobody", code=1).err
    assert (
        "--match:" in cli("credentials", "create", "mtls-auth", "acme", "--match", "x", code=1).err
    )
    assert (
        "CREDENTIAL_ID:" in cli("credentials", "delete", "hmac-auth", "acme", "cc_no", code=1).err
    )


def test_a_password_comes_from_stdin(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PORTCULLIS_DATABASE_URL", cli.env["PORTCULLIS_DATABASE_URL"])
    runner = CliRunner()
    done = runner.invoke(
        credentials_app,
        ["create", "basic-auth", "acme", "--username", "ci", "--password-stdin", "--json"],
        input="correct horse battery\n",
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["username"] == "ci"
    assert "correct horse" not in done.stdout
    short = runner.invoke(
        credentials_app, ["create", "basic-auth", "acme", "--password-stdin"], input="short\n"
    )
    assert isinstance(short.exception, UserError)
    assert short.exception.message.startswith("--password-stdin:")
