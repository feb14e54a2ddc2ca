"""Clients generated from the SDL the control plane serves, by real generators (issue 16).

A typed Python client made by ariadne-codegen (in its own venv, `.venv-tools/codegen`:
it pins graphql-core below the 3.3 strawberry needs) runs the operations of
`codegen/operations.graphql` against the admin app and passes `mypy --strict`; TypeScript
types made by graphql-codegen (tests/node) from the same SDL pass `tsc --noEmit` with
correct uses. Wrong uses fail both checks, so each check can fail.

The admin app runs in process, as the admin tests run it (a real `portcullis serve` costs
15-40 s to start on the loaded suite machine): the generated client speaks HTTP to it
through httpx's ASGI transport, the SDL is the one GET /graphql/schema.graphql serves.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from portcullis.admin.app import create_admin_app
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.settings import Settings
from portcullis.store.migrations import upgrade_to_head

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent / "codegen"
ARIADNE_CODEGEN = ROOT / ".venv-tools" / "codegen" / "bin" / "ariadne-codegen"
NODE_BIN = ROOT / "tests" / "node" / "node_modules" / ".bin"
PACKAGE = "portcullis_admin_client"
PASSWORD = "codegen owner password"


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite store, copied by each test that writes."""
    path = tmp_path_factory.mktemp("codegen-store") / "admin.db"
    asyncio.run(upgrade_to_head(f"sqlite+aiosqlite:///{path}"))
    return path


def _store(migrated: Path, into: Path) -> str:
    shutil.copyfile(migrated, into / "admin.db")
    return f"sqlite+aiosqlite:///{into / 'admin.db'}"


@pytest.fixture(scope="module")
def served_sdl(migrated: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The SDL the control plane serves at GET /graphql/schema.graphql."""

    async def fetch() -> str:
        url = _store(migrated, tmp_path_factory.mktemp("sdl"))
        app = create_admin_app(Settings(database_url=url, log_json=False))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://admin"
            ) as client,
        ):
            response = await client.get("/graphql/schema.graphql")
            assert response.status_code == 200, response.text
            return response.text

    return asyncio.run(fetch())


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert Path(argv[0]).is_file(), f"{argv[0]} is missing: `./dev setup` installs it"
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def generated_client(served_sdl: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the package ariadne-codegen generates from the served SDL."""
    tmp_path = tmp_path_factory.mktemp("python-client")
    (tmp_path / "schema.graphql").write_text(served_sdl)
    shutil.copy(HERE / "operations.graphql", tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        "[tool.ariadne-codegen]\n"
        'schema_path = "schema.graphql"\n'
        'queries_path = "operations.graphql"\n'
        f'target_package_name = "{PACKAGE}"\n'
        'target_package_path = "out"\n'
        'client_name = "AdminClient"\n'
        "async_client = true\n"
    )
    generated = _run([ARIADNE_CODEGEN, "--config", "pyproject.toml"], tmp_path)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    return tmp_path / "out"


@pytest.fixture
def python_client(generated_client: Path) -> Iterator[ModuleType]:
    """The generated package, imported."""
    sys.path.insert(0, str(generated_client))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(generated_client))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture
async def admin_app(migrated: Path, tmp_path: Path) -> AsyncIterator[httpx.ASGITransport]:
    """The admin app on a store of its own, with the owner `codegen@example.com`."""
    app = create_admin_app(Settings(database_url=_store(migrated, tmp_path), log_json=False))
    async with app.router.lifespan_context(app):
        auth: AuthService = app.state.authenticator
        await auth.create_user("codegen@example.com", PASSWORD, Role.OWNER)
        yield httpx.ASGITransport(app=app, client=("198.51.100.10", 40000))


async def test_generated_python_client_creates_and_lists_services(
    admin_app: httpx.ASGITransport, python_client: ModuleType
) -> None:
    generated: Any = python_client
    async with httpx.AsyncClient(transport=admin_app, base_url="http://admin") as rest:
        login = await rest.post(
            "/admin/v1/auth/login", json={"email": "codegen@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        rest.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        http = httpx.AsyncClient(transport=admin_app, headers=dict(rest.headers))
        async with generated.AdminClient(url="http://admin/graphql", http_client=http) as client:
            created = (
                await client.create_service(
                    generated.ServiceInput(name="billing", url="http://127.0.0.1:9")
                )
            ).create_service
            assert created.typename__ == "ServicePayload"
            assert (created.service.name, created.service.url) == (
                "billing",
                "http://127.0.0.1:9",
            )
            # The same store as REST: a service made there is listed through the client too.
            made = await rest.post(
                "/admin/v1/services", json={"name": "audit", "url": "http://a:1"}
            )
            assert made.status_code == 201, made.text

            listed = (await client.list_services(first=10)).services
            assert [node.name for node in listed.nodes] == ["audit", "billing"]
            assert listed.page_info.has_next_page is False
            edges = (await client.service_edges()).services.edges
            assert {e.node.name: e.node.id for e in edges}["billing"] == created.service.id
            assert all(edge.cursor for edge in edges)

            # Errors as data arrive as the generated union's typed members.
            again = await client.create_service(
                generated.ServiceInput(name="billing", url="http://b:2")
            )
            assert again.create_service.typename__ == "AlreadyExistsProblem"
            assert again.create_service.status == 409
            bad = await client.create_service(generated.ServiceInput(name="bad", url="not a url"))
            problem = bad.create_service
            assert problem.typename__ == "ValidationProblem", problem
            assert problem.status == 422
            # The same validation as REST, field by field.
            rest_bad = await rest.post(
                "/admin/v1/services", json={"name": "bad", "url": "not a url"}
            )
            assert rest_bad.status_code == 422, rest_bad.text
            assert [(e.pointer, e.detail) for e in problem.errors] == [
                (e["pointer"], e["detail"]) for e in rest_bad.json()["errors"]
            ]
            assert "url" in problem.errors[0].detail


def test_generated_python_client_is_typed(generated_client: Path, tmp_path: Path) -> None:
    for name in ("usage_client.py", "wrong_usage_client.py"):
        shutil.copy(HERE / name, generated_client)
    # The base client is ariadne-codegen's fixed template, not made from the schema; its
    # fallback for a missing `websockets` package assigns to imported types (not --strict).
    config = tmp_path / "mypy.ini"
    config.write_text(
        "[mypy]\nstrict = True\nincremental = False\n"
        f"[mypy-{PACKAGE}.async_base_client]\nignore_errors = True\n"
    )
    checked = _run(
        [
            sys.executable, "-m", "mypy", "--config-file", config,
            "--cache-dir", tmp_path / ".mypy_cache", "usage_client.py", "wrong_usage_client.py",
        ],
        generated_client,
    )  # fmt: skip
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    # The generated models and client and the correct uses pass --strict; each wrong use is
    # refused.
    assert [e.split(":")[0:2] for e in errors] == [
        ["wrong_usage_client.py", "9"],
        ["wrong_usage_client.py", "14"],
        ["wrong_usage_client.py", "19"],
    ], checked.stdout
    assert '"str | None"; expected "Sized"' in errors[0]
    assert (
        'Argument "first" to "list_services" of "AdminClient" has incompatible type "str"'
        in (errors[1])
    )
    assert 'Missing named argument "name"' in errors[2]


def _codegen_config(tmp_path: Path) -> Path:
    config = {
        "overwrite": True,
        "silent": True,
        "schema": str(tmp_path / "schema.graphql"),
        "documents": str(tmp_path / "operations.graphql"),
        "config": {
            "strictScalars": True,
            "scalars": {"JSON": "unknown", "DateTime": "string"},
            "enumsAsTypes": True,
        },
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


def test_generated_typescript_types_type_check(served_sdl: str, tmp_path: Path) -> None:
    (tmp_path / "schema.graphql").write_text(served_sdl)
    for name in ("operations.graphql", "usage.ts", "wrong_usage.ts"):
        shutil.copy(HERE / name, tmp_path)
    generated = _run(
        # From tests/node, where the plugins resolve.
        [NODE_BIN / "graphql-codegen", "--config", _codegen_config(tmp_path)],
        NODE_BIN.parents[1],
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
