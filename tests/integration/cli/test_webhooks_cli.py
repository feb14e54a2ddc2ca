"""`portcullis webhooks …` in-process (typer's runner, the real store, the same service
as the admin API): the lifecycle, secrets on stdout only, errors naming the option."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from portcullis import cli as root_cli
from portcullis.commands.webhooks import app as webhooks_app
from portcullis.errors import UserError
from portcullis.model.loader import load_config_data
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head

HOOK_URL = "https://93.184.216.34/hooks"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'portcullis.db'}"

    async def prepare() -> None:
        await upgrade_to_head(url)
        engine = create_engine(url)
        try:
            await ConfigRepository(engine).apply(
                load_config_data({"consumers": [{"username": "acme"}]}), author="t", comment=None
            )
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    monkeypatch.setenv("PORTCULLIS_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    return url


def run(*args: str) -> Result:
    result = CliRunner().invoke(webhooks_app, list(args))
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result


def error_of(*args: str) -> str:
    result = CliRunner().invoke(webhooks_app, list(args))
    assert isinstance(result.exception, UserError), (args, result.output, result.exception)
    return result.exception.message


def audit(url: str) -> str:
    async def read() -> str:
        engine = create_engine(url)
        try:
            events = await AuditLog(engine).page(
                AuditFilter(resource_type="webhook_endpoint"), limit=100, before_id=None
            )
        finally:
            await engine.dispose()
        return json.dumps([e.as_json() for e in reversed(events)])

    return asyncio.run(read())


def test_lifecycle_from_the_command_line(store: str) -> None:
    created = run(
        "create", HOOK_URL, "--event", "key.*", "--header", "X-Token: sekrit-header",
        "--filter", "consumer=acme", "--consumer", "acme", "--max-concurrency", "2",
    )  # fmt: skip
    secret = created.stdout.strip()
    assert secret.startswith("whsec_")
    [endpoint] = json.loads(run("list", "--json").stdout)["items"]
    ident = endpoint["id"]
    assert endpoint["header_names"] == ["X-Token"]
    assert endpoint["consumer"] == "acme"
    shown = run("show", ident, "--json").stdout
    assert secret not in shown
    assert "sekrit-header" not in shown
    assert ident in run("show", ident).stdout  # the table

    updated = run("update", ident, "--event", "key.revoked", "--remove-header", "X-Token", "--json")
    assert json.loads(updated.stdout)["event_types"] == ["key.revoked"]
    assert json.loads(updated.stdout)["header_names"] == []
    run("disable", ident)
    assert json.loads(run("list", "--disabled", "--json").stdout)["items"][0]["id"] == ident
    assert "is disabled: enable it first" in error_of("test", ident)
    run("enable", ident)

    rotated = run("rotate-secret", ident, "--grace", "1h").stdout.strip()
    assert rotated.startswith("whsec_")
    assert rotated != secret
    message = run("test", ident).stdout.strip()
    assert message.startswith("msg_")
    [delivery] = json.loads(run("deliveries", ident, "--json").stdout)["items"]
    assert delivery["id"] == message
    assert delivery["status"] == "pending"
    assert message in run("deliveries", "--event-id", str(delivery["event_id"])).stdout
    assert "still pending" in error_of("replay", ident, message)
    assert run("replay-failed", ident, "--since", "2020-01-01").stdout.strip() == "0"

    v1a = run("create", HOOK_URL, "--event", "*", "--signature", "v1a").stdout.strip()
    assert v1a.startswith("whpk_")

    run("delete", ident)
    assert error_of("show", ident).startswith("ENDPOINT_ID: ")
    trail = audit(store)
    for action in ("create", "update", "disable", "enable", "rotate-secret", "test", "delete"):
        assert f'"action": "{action}"' in trail, action
    assert '"actor": "cli:' in trail
    for leaked in (secret, rotated, "sekrit-header"):
        assert leaked not in trail


def test_bad_input_names_the_option(store: str) -> None:
    cases = [
        ((HOOK_URL,), "--event: name at least one event kind"),
        (("ftp://x/", "-e", "*"), "URL: the scheme must be http or https"),
        ((HOOK_URL, "-e", "*", "-e", "nope.*"), "--event (1): no event kind matches 'nope.*'"),
        ((HOOK_URL, "-e", "*", "-H", "Connection: close"), "--header (Connection"),
        ((HOOK_URL, "-e", "*", "-H", "novalue"), "--header: 'novalue' is not 'Name: value'"),
        ((HOOK_URL, "-e", "*", "--filter", "plan=gold"), "--filter (plan"),
        ((HOOK_URL, "-e", "*", "--max-concurrency", "65"), "--max-concurrency:"),
        ((HOOK_URL, "-e", "*", "--signature", "v2"), "--signature:"),
        ((HOOK_URL, "-e", "*", "--consumer", "ghost"), "--consumer: unknown consumer 'ghost'"),
        ((HOOK_URL, "-e", "*", "--organization", "nowhere"), "--organization: unknown"),
        (("http://127.0.0.1:8001/", "-e", "*"), "PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS"),
    ]
    for args, message in cases:
        assert message in error_of("create", *args), args
    assert error_of("show", "ep_nope").startswith("ENDPOINT_ID: ")
    assert "--status: 'bogus' is not one of" in error_of("deliveries", "--status", "bogus")
    assert "--since: 'soon' is not a date" in error_of("deliveries", "--since", "soon")
    assert "--cursor:" in error_of("deliveries", "--cursor", "nonsense")
    assert "--grace:" in error_of("rotate-secret", "ep_x", "--grace", "forever")
    assert "nothing to change" in error_of("update", "ep_x")
    assert "MESSAGE_ID: " in error_of(
        "replay", json.loads(run("create", HOOK_URL, "-e", "*", "--json").stdout)["id"], "msg_x"
    )


def test_the_portcullis_command_exits_non_zero_with_the_message(
    store: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["portcullis", "webhooks", "show", "ep_missing"])
    with pytest.raises(SystemExit) as exited:
        root_cli.main()
    assert exited.value.code == 1
    assert "error: ENDPOINT_ID: webhook endpoint 'ep_missing' does not exist" in (
        capsys.readouterr().err
    )
