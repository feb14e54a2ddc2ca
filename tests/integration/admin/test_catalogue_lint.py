"""Every description the catalogue publishes is a valid OpenAPI document
(openapi-spec-validator) that lints clean with Redocly CLI (npm `@redocly/cli`, its
recommended rules, warnings included): the demo API's versions, and versions whose
routes carry every plugin that changes the published document."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from openapi_spec_validator import validate

from portcullis.model.loader import config_document, load_config_data, load_config_file
from portcullis.store.config_repository import ConfigRepository

ROOT = Path(__file__).resolve().parents[3]
REDOCLY = ROOT / "tests" / "node" / "node_modules" / ".bin" / "redocly"


def _config() -> Any:
    """The example config, plus a version behind every plugin the publisher reads."""
    document = config_document(load_config_file(ROOT / "examples" / "gateway.yaml"))
    demo = document["apis"][0]
    v2 = next(v for v in demo["versions"] if v["name"] == "v2")
    document["consumers"] += [{"username": "guest"}]
    demo["routes"] = ["demo-shared"]  # versions chosen by header or query parameter too
    demo["selection"] = {"header": "Api-Version", "query": "api-version"}
    document["routes"] += [
        {"name": "demo-shared", "service": "demo", "paths": ["/demo-api"]},
        {"name": "locked-v3", "service": "demo", "paths": ["/v3"]},
        {"name": "locked-v4", "service": "demo", "paths": ["/v4"], "strip_path": False},
    ]
    document["plugins"] += [
        {"name": "key-auth", "route": "locked-v3", "config": {"query_param": "api_key"}},
        {
            "name": "rate-limit",
            "route": "locked-v3",
            "config": {"limits": [{"limit": 5, "period": "1m"}]},
        },
        {"name": "jwt-auth", "route": "locked-v4", "config": {"cookie": "session"}},
        {"name": "acl", "route": "locked-v4", "config": {"required_scopes": ["items:read"]}},
        {"name": "plan-limits", "route": "locked-v4", "config": {}},
        {"name": "key-auth", "route": "demo-v1", "config": {"anonymous": "guest"}},
    ]
    demo["versions"] += [
        {"name": "v3", "status": "beta", "routes": ["locked-v3"], "openapi": v2["openapi"]},
        {
            "name": "v4",
            "status": "deprecated",
            "deprecated_at": "2026-01-01T00:00:00Z",
            "sunset_at": "2030-01-01T00:00:00Z",
            "successor": "v2",
            "routes": ["locked-v4"],
            "openapi": {
                **v2["openapi"],
                "paths": {f"/v4{p}": i for p, i in v2["openapi"]["paths"].items()},
            },
        },
    ]
    return load_config_data(document)


async def test_every_published_description_validates_and_lints_clean(
    app: FastAPI, anonymous: httpx.AsyncClient, tmp_path: Path
) -> None:
    await ConfigRepository(app.state.admin.engine).apply(_config(), author="test", comment="lint")
    listing = (await anonymous.get("/apis")).json()
    files: list[str] = []
    for api in listing["apis"]:
        for version in api["versions"]:
            published = await anonymous.get(version["links"]["openapi_json"])
            assert published.status_code == 200, published.text
            document = published.json()
            validate(document)
            path = tmp_path / f"{api['name']}-{version['name']}.json"
            path.write_text(json.dumps(document))
            files.append(str(path))
    assert len(files) == 4
    linted = subprocess.run(
        [str(REDOCLY), "lint", "--format=json", *files],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    reports = _documents(linted.stdout)
    assert len(reports) == len(files)
    problems = [
        f"{p['severity']} {p['ruleId']}: {p['message']} at {p['location'][0]['pointer']}"
        for report in reports
        for p in report["problems"]
    ]
    assert problems == [], "\n".join(problems)
    assert linted.returncode == 0, linted.stderr


def _documents(text: str) -> list[Any]:
    """Redocly prints one JSON report per file, one after the other."""
    decoder = json.JSONDecoder()
    out, at = [], 0
    while (at := _skip_space(text, at)) < len(text):
        value, at = decoder.raw_decode(text, at)
        out.append(value)
    return out


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at
