"""`portcullis sdk generate`, each run as a real process: the published document fetched
from the catalogue URL on a real HTTP server (with an API key when it is key-gated) or read
from a file, the SDK written; every refusal a one-line error without a traceback."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from support.cli_process import CliProcesses, CliResult

KEY = "pc_live_catalogue_reader"
DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Demo API", "version": "v2"},
    "servers": [{"url": "http://127.0.0.1:8000/v2"}],
    "paths": {
        "/items": {
            "get": {
                "operationId": "listItems",
                "responses": {
                    "200": {
                        "description": "The items",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": {"type": "string"}}
                            }
                        },
                    }
                },
            }
        }
    },
}


class Catalogue(BaseHTTPRequestHandler):
    """Serves DOCUMENT at /apis/demo/v2/openapi.json to requests carrying KEY."""

    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        Catalogue.seen.append((self.path, self.headers.get("authorization")))
        if self.path != "/apis/demo/v2/openapi.json":
            self.send_error(404)
        elif self.headers.get("authorization") != f"Bearer {KEY}":
            self.send_error(401)
        else:
            body = json.dumps(DOCUMENT).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def catalogue() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Catalogue)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def sdk(processes: CliProcesses, cwd: Path, *args: str, **env: str) -> CliResult:
    result = processes.run(["sdk", "generate", *args], cwd=cwd, env={**os.environ, **env})
    assert "Traceback" not in result.err, result.err
    return result


DEMO = ("--api", "demo", "--version", "v2")


def test_generates_from_the_catalogue_url_with_an_api_key(
    portcullis_processes: CliProcesses, catalogue: str, tmp_path: Path
) -> None:
    Catalogue.seen.clear()
    made = sdk(
        portcullis_processes, tmp_path, *DEMO, "--lang", "python", "--out", "client",
        "--admin-url", catalogue, "--api-key", KEY,
    )  # fmt: skip
    assert made.code == 0, made.err
    assert Catalogue.seen == [("/apis/demo/v2/openapi.json", f"Bearer {KEY}")]
    assert (tmp_path / "client" / "pyproject.toml").is_file()
    assert (tmp_path / "client" / "demo_v2_client" / "api" / "default" / "list_items.py").is_file()
    assert "generated the python SDK of demo v2 in client" in made.err

    # The catalogue's refusal of a caller without the key is named, with what to do.
    refused = sdk(
        portcullis_processes, tmp_path, *DEMO, "--lang", "python", "--out", "other",
        "--admin-url", catalogue,
    )  # fmt: skip
    assert refused.code == 1
    assert f"GET {catalogue}/apis/demo/v2/openapi.json: 401" in refused.err
    assert "give --api-key?" in refused.err
    assert not (tmp_path / "other").exists()


def test_refusals_are_one_line_errors(portcullis_processes: CliProcesses, tmp_path: Path) -> None:
    saved = tmp_path / "demo.json"
    saved.write_text(json.dumps(DOCUMENT))
    swagger = tmp_path / "swagger.yaml"
    swagger.write_text("swagger: '2.0'\npaths: {}\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    cases = [
        (("--lang", "go", "--out", "x", "--from", str(saved)),
         "--lang must be python or typescript, not 'go'"),
        (("--lang", "python", "--out", "full", "--from", str(saved)),
         "--out: full is not empty (give --force to replace it)"),
        (("--lang", "python", "--out", "x", "--from", str(tmp_path / "missing.json")),
         "--from: cannot read"),
        (("--lang", "python", "--out", "x", "--from", str(swagger)),
         "openapi: expected an OpenAPI 3.0 or 3.1 document, got None"),
        (("--lang", "python", "--out", "x", "--package", "not-an-identifier",
          "--from", str(saved)),
         "--package: 'not-an-identifier' is not a valid package name"),
        (("--lang", "python", "--out", "x", "--admin-url", "http://127.0.0.1:9"),
         "(is the control plane running?)"),
    ]  # fmt: skip
    for args, message in cases:
        result = sdk(portcullis_processes, tmp_path, *DEMO, *args)
        assert result.code == 1, (args, result.err)
        assert message in " ".join(result.err.split()), (args, result.err)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists()


def test_a_missing_generator_says_how_to_install_it(
    portcullis_processes: CliProcesses, tmp_path: Path
) -> None:
    saved = tmp_path / "demo.json"
    saved.write_text(json.dumps(DOCUMENT))
    result = sdk(
        portcullis_processes, tmp_path, *DEMO, "--lang", "typescript", "--out", "ts",
        "--from", str(saved), PORTCULLIS_OPENAPI_TS=str(tmp_path / "no-such-openapi-ts"),
    )  # fmt: skip
    assert result.code == 1
    message = " ".join(result.err.split())
    assert "is not an executable file" in message
    assert "npm install @hey-api/openapi-ts@0.94.5 typescript@6.0.3" in message


def test_a_document_the_generator_refuses_is_reported_with_its_words(
    portcullis_processes: CliProcesses, tmp_path: Path
) -> None:
    broken = {**DOCUMENT, "paths": {"/items": {"get": {"responses": {"200": {
        "$ref": "#/components/responses/Missing"}}}}}}  # fmt: skip
    saved = tmp_path / "broken.json"
    saved.write_text(json.dumps(broken))
    result = sdk(
        portcullis_processes, tmp_path, *DEMO, "--lang", "typescript", "--out", "ts",
        "--from", str(saved),
    )  # fmt: skip
    assert result.code == 1
    assert "openapi-ts failed (exit 1)" in result.err
    assert not (tmp_path / "ts").exists()
