"""Generated SDKs against a live gateway (issue 18, SDKs).

`portcullis sdk generate` makes the demo API's Python client (openapi-python-client) and
TypeScript client (@hey-api/openapi-ts), both installed by `./dev setup`; `mypy --strict`
and `tsc --strict` accept programs using them and refuse wrong uses; the programs call a
real `portcullis serve` (the example config: the demo API's v2 behind key-auth and a
rate limit of one DELETE per key) with an API key made through the admin API, get the
demo upstream's items back, and see the gateway's 429 as the generated Problem type. The
admin API's own Python SDK, generated from :8001/openapi.json, lists routes and creates a
consumer; `POST /admin/v1/apis/{api}/versions/{version}/sdk` returns a zipped SDK that
works the same way.

The document the CLI generates from: a fixture built from the demo upstream's own
/openapi.json (`published_demo`: the items operations, servers pointed at the gateway's
/v2, the key-auth apiKey scheme and the gateway's 401/429 problem responses), written
before the catalogue's published document existed; the admin endpoint generates from the
version's published document (the catalogue's: examples/openapi/demo-v2.yaml with the
gateway's servers, security and problem responses). Each SDK is generated once per module.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from support.admin_session import signed_in_owner
from support.servers import Gateway, gateway, granian_app

ROOT = Path(__file__).resolve().parents[3]
PROGRAMS = Path(__file__).resolve().parent / "programs"
TSC = ROOT / "tests" / "node" / "node_modules" / ".bin" / "tsc"
DEMO = "portcullis.demo.upstream:create_demo_app"
PACKAGE = "demo_v2_client"
ADMIN_PACKAGE = "portcullis_admin_client"
# Operation ids the published document gives the demo upstream's items operations.
OPERATIONS = {
    ("/items", "get"): "listItems",
    ("/items", "post"): "createItem",
    ("/items/{item_id}", "get"): "getItem",
    ("/items/{item_id}", "delete"): "deleteItem",
}
PROBLEM = {
    "type": "object",
    "description": "An RFC 9457 problem document",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status"],
}


def published_demo(upstream_openapi: dict[str, Any], gateway_url: str) -> dict[str, Any]:
    """The demo API v2's document as a client sees it through the gateway (a FIXTURE
    standing in for the catalogue's: see the module docstring)."""
    doc = copy.deepcopy(upstream_openapi)
    doc["info"]["title"] = "Demo API"
    doc["info"]["version"] = "v2"
    doc["servers"] = [{"url": f"{gateway_url}/v2"}]
    paths: dict[str, Any] = {}
    for (path, method), operation_id in OPERATIONS.items():
        operation = doc["paths"][path][method]
        operation["operationId"] = operation_id
        operation["tags"] = ["items"]
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        operation["responses"]["401"] = {"description": "No valid API key", "content": problem}
        operation["responses"]["429"] = {
            "description": "Rate limit exceeded",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": problem,
        }
        paths.setdefault(path, {})[method] = operation
    doc["paths"] = paths
    doc["components"]["schemas"]["Problem"] = PROBLEM
    doc["components"]["securitySchemes"] = {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    }
    doc["security"] = [{"apiKey": []}]
    return doc


def example_config(upstream: int) -> dict[str, Any]:
    """examples/gateway.yaml on the test's demo upstream, the demo API's v2 behind key-auth
    and a rate limit of one DELETE per key (reads and creates cost nothing)."""
    config: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "gateway.yaml").read_text())
    for upstream_entry in config["upstreams"]:
        for target in upstream_entry["targets"]:
            target["target"] = f"127.0.0.1:{upstream}"
    for api in config["apis"]:
        for version in api["versions"]:
            if "openapi_file" in version:  # relative to examples/gateway.yaml
                version["openapi_file"] = str(ROOT / "examples" / version["openapi_file"])
    config.setdefault("consumers", []).append({"username": "sdk-user"})
    # The example already puts key-auth on v2 (a request without a key is its guest).
    config["plugins"] += [
        {
            "name": "rate-limit",
            "route": "demo-v2",
            "config": {
                "limits": [{"limit": 1, "period": "1h", "key": "credential"}],
                "default_cost": 0,
                "method_costs": {"DELETE": 1},
            },
        },
    ]
    return config


def run(
    argv: list[str | Path], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    assert Path(argv[0]).is_file(), f"{argv[0]} is missing: `./dev setup` installs it"
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def generate(gw: Gateway, *args: str) -> None:
    """`portcullis sdk generate ARGS` (what it took is on its last line: files, seconds);
    the generator left nothing of the document out."""
    result = gw.cli("sdk", "generate", *args)
    assert "generated the" in result.stderr, result.stderr
    assert "warning:" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("sdk-gateway")
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(example_config(upstream)))
    with gateway(tmp, tmp / "gateway.yaml") as g:
        yield g


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with signed_in_owner(gw, "sdk@example.com") as client:
        yield client


def new_key(admin: httpx.Client) -> str:
    created = admin.post("/admin/v1/consumers/sdk-user/keys", json={"name": "sdk"})
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


@pytest.fixture(scope="module")
def document(gw: Gateway, upstream: int, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo API v2's published document (the fixture), saved as JSON."""
    upstream_openapi = httpx.get(f"http://127.0.0.1:{upstream}/openapi.json").json()
    path = tmp_path_factory.mktemp("sdk-document") / "demo-v2.json"
    path.write_text(json.dumps(published_demo(upstream_openapi, gw.url)))
    return path


@pytest.fixture(scope="module")
def sdk_dir(gw: Gateway, document: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with both generated SDKs (python/, typescript/demo_v2_client/) and the
    usage programs beside them."""
    root = tmp_path_factory.mktemp("sdks")
    common = ["--api", "demo", "--version", "v2", "--from", str(document)]
    generate(gw, *common, "--lang", "python", "--out", str(root / "python"))
    generate(gw, *common, "--lang", "typescript", "--out", str(root / "typescript" / PACKAGE))
    for name in ("demo_usage.py", "wrong_demo_usage.py"):
        shutil.copy(PROGRAMS / name, root / "python")
    for name in ("demo_usage.ts", "wrong_demo_usage.ts"):
        shutil.copy(PROGRAMS / name, root / "typescript")
    return root


@contextmanager
def imported(folder: Path, *modules: str) -> Iterator[list[ModuleType]]:
    """Import `modules` from `folder`; forget them (and the generated packages) after."""
    sys.path.insert(0, str(folder))
    try:
        yield [importlib.import_module(m) for m in modules]
    finally:
        sys.path.remove(str(folder))
        for name in list(sys.modules):
            if name.split(".")[0] in (*modules, PACKAGE, ADMIN_PACKAGE):
                del sys.modules[name]


@pytest.fixture
def usage(sdk_dir: Path) -> Iterator[Any]:
    """programs/demo_usage.py, importing the generated Python SDK."""
    with imported(sdk_dir / "python", "demo_usage") as modules:
        yield modules[0]


# ----------------------------------------------------------------------------- Python


def test_python_sdk_calls_the_gateway_with_an_api_key(
    gw: Gateway, admin: httpx.Client, usage: Any
) -> None:
    with usage.connect(f"{gw.url}/v2", new_key(admin)) as client:
        assert usage.item_names(client)[:2] == ["portcullis", "drawbridge"]
        made = usage.add_item(client, "moat", 12.5)
        assert (made.name, made.price) == ("moat", 12.5)
        assert usage.item_price(client, made.id) == 12.5
    # Without a valid key the gateway's 401 problem arrives as the generated Problem.
    with (
        usage.connect(f"{gw.url}/v2", "pc_live_not_a_key") as client,
        pytest.raises(TypeError, match=r"expected items, got Problem\(.*status=401"),
    ):
        usage.item_names(client)


async def test_python_sdk_async_call(gw: Gateway, admin: httpx.Client, usage: Any) -> None:
    async with usage.connect(f"{gw.url}/v2", new_key(admin)) as client:
        assert (await usage.item_names_async(client))[:2] == ["portcullis", "drawbridge"]


def test_python_sdk_sees_the_gateways_429_as_a_typed_problem(
    gw: Gateway, admin: httpx.Client, usage: Any
) -> None:
    with usage.connect(f"{gw.url}/v2", new_key(admin)) as client:
        made = usage.add_item(client, "ladder", 3)
        assert usage.refusal_of_delete(client, made.id) == (204, None)
        status, problem = usage.refusal_of_delete(client, made.id)
    assert status == 429
    assert type(problem).__name__ == "Problem"
    assert problem.status == 429
    assert problem.type_ == "https://iana.org/assignments/http-problem-types#quota-exceeded"
    assert problem.title == "Quota Exceeded"


def test_python_sdk_type_checks_and_refuses_wrong_uses(sdk_dir: Path, tmp_path: Path) -> None:
    folder = sdk_dir / "python"
    checked = run(
        [
            sys.executable, "-m", "mypy", "--strict", "--no-incremental",
            "--cache-dir", tmp_path / ".mypy_cache", "demo_usage.py", "wrong_demo_usage.py",
        ],
        folder,
    )  # fmt: skip
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    # The generated package and the correct uses pass --strict; each wrong use is refused.
    assert [e.split(":")[0:2] for e in errors] == [
        ["wrong_demo_usage.py", "11"],
        ["wrong_demo_usage.py", "11"],
        ["wrong_demo_usage.py", "16"],
        ["wrong_demo_usage.py", "21"],
    ], checked.stdout
    assert (
        'Item "Problem" of "Problem | list[Item] | None" has no attribute "__iter__"' in (errors[0])
    )
    assert 'Item "None" of "Problem | list[Item] | None" has no attribute "__iter__"' in errors[1]
    assert 'Argument "item_id" to "sync" has incompatible type "str"; expected "int"' in errors[2]
    assert 'Missing positional argument "price" in call to "ItemIn"' in errors[3]


# -------------------------------------------------------------------------- TypeScript


def tsc(folder: Path, *files: str, emit: bool) -> subprocess.CompletedProcess[str]:
    options: dict[str, Any] = {
        "strict": True,
        "target": "ES2022",
        "module": "commonjs",
        "moduleResolution": "bundler",
        # fetch, Headers, Request and friends: the generated client's runtime (Node 18+).
        "lib": ["ES2022", "DOM"],
        "types": [],
        "skipLibCheck": False,
    }
    options |= {"outDir": "js"} if emit else {"noEmit": True}
    (folder / "tsconfig.json").write_text(json.dumps({"compilerOptions": options, "files": files}))
    return run([TSC, "-p", "tsconfig.json"], folder)


def test_typescript_sdk_type_checks_and_refuses_wrong_uses(sdk_dir: Path) -> None:
    folder = sdk_dir / "typescript"
    refused = tsc(folder, "wrong_demo_usage.ts", emit=False)
    errors = [line for line in refused.stdout.splitlines() if "error TS" in line]
    assert len(errors) == 3, refused.stdout
    assert errors[0].startswith(
        "wrong_demo_usage.ts(8,3): error TS2322: Type 'number' is not assignable to type 'string'"
    )
    assert "wrong_demo_usage.ts(8,10): error TS18048: 'data' is possibly 'undefined'" in errors[1]
    assert "wrong_demo_usage.ts(11,14): error TS2741: Property 'price' is missing" in errors[2]


def test_typescript_sdk_calls_the_gateway_and_gets_a_typed_429(
    gw: Gateway, admin: httpx.Client, sdk_dir: Path
) -> None:
    folder = sdk_dir / "typescript"
    compiled = tsc(folder, "demo_usage.ts", emit=True)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    ran = run(
        ["/usr/bin/node", folder / "js" / "demo_usage.js", f"{gw.url}/v2", new_key(admin)],
        folder,
        60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    out = json.loads(ran.stdout)
    assert out["names"][:2] == ["portcullis", "drawbridge"]
    assert (out["made"]["name"], out["made"]["price"]) == ("moat", 5)
    # The first DELETE spends the key's one unit; the second is the gateway's 429.
    assert out["statuses"] == [204, 429]
    assert out["problem"]["status"] == 429
    assert out["problem"]["title"] == "Quota Exceeded"
    assert out["thrown"] == "Authentication is required"


def test_cli_generates_from_the_catalogues_published_document(
    gw: Gateway, admin: httpx.Client, tmp_path: Path
) -> None:
    """No --from: the CLI fetches GET :8001/apis/demo/v2/openapi.json, the catalogue's."""
    out = tmp_path / "published"
    generate(gw, "--api", "demo", "--version", "v2", "--lang", "python", "--out", str(out),
             "--admin-url", gw.admin_url)  # fmt: skip
    with imported(out, PACKAGE) as (sdk,):
        from demo_v2_client.api.items import list_items

        client = sdk.AuthenticatedClient(
            base_url=f"{gw.url}/v2", token=new_key(admin), prefix="", auth_header_name="X-API-Key"
        )
        with client:
            items = list_items.sync(client=client)
            assert isinstance(items, list), items
            assert [item.name for item in items][:2] == ["portcullis", "drawbridge"]


# ------------------------------------------------------------------ admin API endpoint


def test_admin_api_returns_a_zipped_sdk_of_an_api_version(
    gw: Gateway, admin: httpx.Client, document: Path, tmp_path: Path
) -> None:
    url = "/admin/v1/apis/demo/versions/v2/sdk"
    # Generated from the version's published document: the gateway's own problem
    # responses (GatewayProblem) are not in the stored description, only in that.
    answered = admin.post(url, params={"lang": "python"}, timeout=120)
    assert answered.status_code == 200, answered.text
    assert answered.headers["content-type"] == "application/zip"
    assert answered.headers["content-disposition"] == (
        'attachment; filename="demo_v2_client-python.zip"'
    )
    assert answered.headers["sdk-generator-warnings"] == "0"
    with zipfile.ZipFile(io.BytesIO(answered.content)) as archive:
        names = archive.namelist()
        assert f"{PACKAGE}/pyproject.toml" in names
        assert f"{PACKAGE}/{PACKAGE}/api/items/list_items.py" in names
        assert f"{PACKAGE}/{PACKAGE}/models/gateway_problem.py" in names
        assert not [n for n in names if "/.ruff_cache/" in n]
        archive.extractall(tmp_path)
    with imported(tmp_path / PACKAGE, PACKAGE) as (zipped,):
        from demo_v2_client.api.items import list_items

        client = zipped.AuthenticatedClient(
            base_url=f"{gw.url}/v2", token=new_key(admin), prefix="", auth_header_name="X-API-Key"
        )
        with client:
            items = list_items.sync(client=client)
            assert [item.name for item in items][:2] == ["portcullis", "drawbridge"]

    for params in ({"lang": "cobol"}, {}):
        refused = admin.post(url, params=params)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["errors"]
        assert error["detail"].startswith("query parameter 'lang': "), error
    unknown = admin.post("/admin/v1/apis/demo/versions/v9/sdk", params={"lang": "python"})
    assert unknown.status_code == 404, unknown.text
    assert "no version 'v9'" in unknown.json()["detail"]
    assert (
        admin.post("/admin/v1/apis/nope/versions/v2/sdk", params={"lang": "python"}).status_code
        == 404
    )


# ------------------------------------------------------------------ the admin API's SDK


def test_admin_api_python_sdk_lists_routes_and_creates_a_consumer(
    gw: Gateway, admin: httpx.Client, tmp_path: Path
) -> None:
    """The control plane's own OpenAPI description (:8001/openapi.json) through
    openapi-python-client, used with an admin's access token."""
    saved = tmp_path / "admin-openapi.json"
    # The control plane builds its description on the first request: seconds on a busy machine.
    saved.write_text(httpx.get(f"{gw.admin_url}/openapi.json", timeout=60).text)
    out = tmp_path / "admin-sdk"
    generate(gw, "--api", "portcullis-admin", "--version", "v1", "--lang", "python",
             "--from", str(saved), "--out", str(out), "--package", ADMIN_PACKAGE)  # fmt: skip
    token = admin.headers["authorization"].removeprefix("Bearer ")
    with imported(out, ADMIN_PACKAGE) as (sdk,):
        from portcullis_admin_client.api.consumers import create_consumer, list_consumers
        from portcullis_admin_client.api.routes import list_routes
        from portcullis_admin_client.models import Consumer, ConsumerPage, RoutePage

        with sdk.AuthenticatedClient(base_url=gw.admin_url, token=token) as client:
            routes = list_routes.sync(client=client, limit=100)
            assert isinstance(routes, RoutePage), routes
            assert {"demo-v1", "demo-v2"} <= {route.name for route in routes.items}

            created = create_consumer.sync_detailed(
                client=client, body=Consumer(username="made-by-sdk", tags=["sdk"])
            )
            assert created.status_code == 201, created.content
            assert isinstance(created.parsed, Consumer)
            assert created.parsed.username == "made-by-sdk"

            consumers = list_consumers.sync(client=client, tags="sdk")
            assert isinstance(consumers, ConsumerPage), consumers
            assert [c.username for c in consumers.items] == ["made-by-sdk"]
    # Through the REST API as well: the same store.
    assert admin.get("/admin/v1/consumers/made-by-sdk").status_code == 200
