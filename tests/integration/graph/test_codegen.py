"""Clients generated from the SDL the control plane serves, by real generators (issue 16).

A typed Python client made by ariadne-codegen (in its own venv, `.venv-tools/codegen`:
it pins graphql-core below the 3.3 strawberry needs) runs the operations of
`codegen/operations.graphql` against a running `portcullis serve`; TypeScript types made
by graphql-codegen (tests/node) from the same SDL pass `tsc --noEmit` with correct uses
and fail it with wrong ones.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from support.admin_session import signed_in_owner
from support.servers import gateway

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent / "codegen"
ARIADNE_CODEGEN = ROOT / ".venv-tools" / "codegen" / "bin" / "ariadne-codegen"
NODE_BIN = ROOT / "tests" / "node" / "node_modules" / ".bin"
PACKAGE = "portcullis_admin_client"


@dataclass
class Admin:
    url: str
    token: str
    rest: httpx.Client
    sdl: str


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    """A running gateway, an owner's REST client and token, and the SDL it serves."""
    with (
        gateway(tmp_path_factory.mktemp("codegen-gateway"), None) as gw,
        signed_in_owner(gw, "codegen@example.com") as rest,
    ):
        sdl = rest.get("/graphql/schema.graphql")
        assert sdl.status_code == 200, sdl.text
        token = rest.headers["authorization"].removeprefix("Bearer ")
        yield Admin(gw.admin_url, token, rest, sdl.text)


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert Path(argv[0]).is_file(), f"{argv[0]} is missing: `./dev setup` installs it"
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def python_client(admin: Admin, tmp_path: Path) -> Iterator[ModuleType]:
    """The package ariadne-codegen generates from the served SDL and the sample operations."""
    (tmp_path / "schema.graphql").write_text(admin.sdl)
    shutil.copy(HERE / "operations.graphql", tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        "[tool.ariadne-codegen]\n"
        'schema_path = "schema.graphql"\n'
        'queries_path = "operations.graphql"\n'
        f'target_package_name = "{PACKAGE}"\n'
        'target_package_path = "out"\n'
        'client_name = "AdminClient"\n'
        "async_client = false\n"
    )
    generated = _run([ARIADNE_CODEGEN, "--config", "pyproject.toml"], tmp_path)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    sys.path.insert(0, str(tmp_path / "out"))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path / "out"))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_generated_python_client_creates_and_lists_services(
    admin: Admin, python_client: ModuleType
) -> None:
    generated: Any = python_client
    client = generated.AdminClient(
        url=f"{admin.url}/graphql", headers={"authorization": f"Bearer {admin.token}"}
    )
    with client:
        created = client.create_service(
            generated.ServiceInput(name="billing", url="http://127.0.0.1:9")
        ).create_service
        assert created.typename__ == "ServicePayload"
        assert (created.service.name, created.service.url) == ("billing", "http://127.0.0.1:9")
        # The same store as REST: a service made there is listed through the client too.
        rest = admin.rest.post("/admin/v1/services", json={"name": "audit", "url": "http://a:1"})
        assert rest.status_code == 201, rest.text

        listed = client.list_services(first=10).services
        assert [node.name for node in listed.nodes] == ["audit", "billing"]
        assert listed.page_info.has_next_page is False
        edges = client.service_edges().services.edges
        assert {edge.node.name: edge.node.id for edge in edges}["billing"] == created.service.id
        assert all(edge.cursor for edge in edges)

        # Errors as data arrive as the generated union's typed members.
        again = client.create_service(generated.ServiceInput(name="billing", url="http://b:2"))
        assert again.create_service.typename__ == "AlreadyExistsProblem"
        assert again.create_service.status == 409
        bad = client.create_service(generated.ServiceInput(name="bad", url="not a url"))
        problem = bad.create_service
        assert problem.typename__ == "ValidationProblem", problem
        assert problem.status == 422
        # The same validation as REST, field by field.
        rest_bad = admin.rest.post("/admin/v1/services", json={"name": "bad", "url": "not a url"})
        assert rest_bad.status_code == 422, rest_bad.text
        assert [(e.pointer, e.detail) for e in problem.errors] == [
            (e["pointer"], e["detail"]) for e in rest_bad.json()["errors"]
        ]
        assert "url" in problem.errors[0].detail


def _codegen_config(tmp_path: Path) -> Path:
    config = {
        "overwrite": True,
        "silent": True,
        "schema": str(tmp_path / "schema.graphql"),
        "documents": str(tmp_path / "operations.graphql"),
        "config": {"strictScalars": True, "scalars": {"JSON": "unknown"}, "enumsAsTypes": True},
        # typescript-operations 6 writes the input types it uses itself: in the file of the
        # `typescript` plugin's schema types they would be declared twice.
        "generates": {
            str(tmp_path / "schema.ts"): {"plugins": ["typescript"]},
            str(tmp_path / "operations.ts"): {"plugins": ["typescript-operations"]},
        },
    }
    path = tmp_path / "codegen.json"
    path.write_text(json.dumps(config))
    return path


def _tsc(tmp_path: Path, *files: str) -> subprocess.CompletedProcess[str]:
    options = {
        "strict": True,
        "noEmit": True,
        "target": "ES2022",
        "module": "ESNext",
        "moduleResolution": "bundler",
        "lib": ["ES2022"],
        "types": [],
    }
    tsconfig = {"compilerOptions": options, "files": ["schema.ts", "operations.ts", *files]}
    (tmp_path / "tsconfig.json").write_text(json.dumps(tsconfig))
    return _run([NODE_BIN / "tsc", "-p", "tsconfig.json"], tmp_path)


def test_generated_typescript_types_type_check(admin: Admin, tmp_path: Path) -> None:
    (tmp_path / "schema.graphql").write_text(admin.sdl)
    for name in ("operations.graphql", "usage.ts", "wrong_usage.ts"):
        shutil.copy(HERE / name, tmp_path)
    generated = _run(
        [NODE_BIN / "graphql-codegen", "--config", _codegen_config(tmp_path)], NODE_BIN
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "export type ListServicesQuery" in (tmp_path / "operations.ts").read_text()

    checked = _tsc(tmp_path, "usage.ts")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    refused = _tsc(tmp_path, "wrong_usage.ts")
    assert refused.returncode != 0
    errors = refused.stdout
    assert "wrong_usage.ts(7,44): error TS18047: 'node.url' is possibly 'null'" in errors
    assert "wrong_usage.ts(11,59): error TS2741: Property 'name' is missing" in errors
    assert errors.count("error TS") == 2, errors
