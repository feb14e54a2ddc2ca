"""`portcullis apis …` in-process (typer's runner, the real store, the same service as the
admin API): list, show, import from a file (bundled, validated), the published document,
and diff with its exit codes."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from portcullis.commands.apis import app as apis_app
from portcullis.errors import UserError
from portcullis.model.loader import load_config_file
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'portcullis.db'}"

    async def prepare() -> None:
        await upgrade_to_head(url)
        engine = create_engine(url)
        try:
            config = load_config_file(EXAMPLES / "gateway.yaml")
            await ConfigRepository(engine).apply(config, author="t", comment=None)
        finally:
            await engine.dispose()

    asyncio.run(prepare())
    monkeypatch.setenv("PORTCULLIS_DATABASE_URL", url)
    monkeypatch.setenv("PORTCULLIS_SECRET_KEY_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("COLUMNS", "200")
    return url


def run(*args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(apis_app, list(args))
    assert result.exit_code == code, (args, result.output, result.exception)
    return result


def test_list_show_and_the_published_document(store: str) -> None:
    listing = json.loads(run("list", "--json").stdout)
    assert [v["name"] for v in listing["apis"][0]["versions"]] == ["v1", "v2"]
    assert "v1 (deprecated)" in run("list").stdout
    shown = json.loads(run("show", "demo", "v2").stdout)
    assert shown["openapi"]["info"]["title"] == "Demo API"
    published = json.loads(run("openapi", "demo", "v1").stdout)
    assert published["servers"] == [
        {"url": "http://127.0.0.1:8000/v1", "description": "route demo-v1"}
    ]
    assert published["paths"]["/items"]["get"]["deprecated"] is True
    assert yaml.safe_load(run("openapi", "demo", "v1", "--yaml").stdout) == published


def test_import_bundles_a_file_and_reports_invalid_documents(store: str, tmp_path: Path) -> None:
    for name in ("demo-v1.yaml", "demo-schemas.yaml"):
        shutil.copy(EXAMPLES / "openapi" / name, tmp_path / name)
    # v1's description imported for v2: a change (one file referring to another).
    assert (
        "description imported" in run("import", "demo", "v2", str(tmp_path / "demo-v1.yaml")).stderr
    )
    assert "unchanged" in run("import", "demo", "v2", str(tmp_path / "demo-v1.yaml")).stderr
    stored = json.loads(run("show", "demo", "v2").stdout)["openapi"]
    assert set(stored["components"]["schemas"]) == {"Item", "NotFound"}

    broken = yaml.safe_load((tmp_path / "demo-v1.yaml").read_text())
    del broken["paths"]["/items"]["get"]["responses"]["200"]["description"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    result = CliRunner().invoke(apis_app, ["import", "demo", "v2", str(tmp_path / "broken.yaml")])
    assert isinstance(result.exception, UserError), result.output
    assert "#/paths/~1items/get/responses/200" in result.stderr
    assert "description" in result.stderr

    refused = CliRunner().invoke(
        apis_app, ["import", "demo", "v2", "--url", "http://10.0.0.1/x.json"]
    )
    assert isinstance(refused.exception, UserError)
    assert "10.0.0.1 is not a public address" in refused.stderr


def test_diff_exits_1_on_breaking_changes(store: str) -> None:
    forward = run("diff", "--api", "demo", "v1", "v2", "--json")
    assert json.loads(forward.stdout)["breaking"] == 0
    backward = run("diff", "--api", "demo", "v2", "v1", "--json", code=1)
    report = json.loads(backward.stdout)
    assert report["breaking"] == 2
    assert {c["location"] for c in report["changes"] if c["breaking"]} == {
        "POST /items",
        "DELETE /items/{item_id}",
    }
    assert "2 breaking changes" in run("diff", "--api", "demo", "v2", "v1", code=1).stdout
    files = run(
        "diff",
        "--files",
        str(EXAMPLES / "openapi" / "demo-v2.yaml"),
        str(EXAMPLES / "openapi" / "demo-v1.yaml"),
        code=1,
    )
    assert "operation removed" in files.stdout
    usage = CliRunner().invoke(apis_app, ["diff", "v1", "v2"])
    assert isinstance(usage.exception, UserError)
    assert usage.exception.exit_code == 2
