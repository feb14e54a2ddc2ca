"""The try-it console through a real gateway: a key-auth + rate-limit route answers 200
with RateLimit fields, a wrong key is the gateway's own 401 (shown, not an error), the
answer is cut at 64 KiB, and a redirect is shown, not followed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import yaml

from portcullis.services.config_editor import ConfigEditor
from portcullis.services.portal_catalogue import access_of
from portcullis.services.portal_tryit import MAX_RESPONSE_BODY, TryItIn, TryItService
from portcullis.settings import Settings
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from support.keys import create_keys
from support.raw_upstream import RawUpstream, ReceivedRequest, keep_alive_handler, response
from support.servers import Gateway, gateway
from support.threaded_upstream import threaded_upstream

BIG = b"x" * (MAX_RESPONSE_BODY + 1000)


def answer(request: ReceivedRequest) -> bytes:
    if request.target.endswith(b"/big"):
        return response(200, BIG, [(b"content-type", b"text/plain")])
    if request.target.endswith(b"/moved"):
        return response(302, b"", [(b"location", b"http://169.254.169.254/latest/meta-data")])
    return response(200, b'{"items":[]}', [(b"content-type", b"application/json")])


@pytest.fixture(scope="module")
def upstream() -> Iterator[RawUpstream]:
    with threaded_upstream(keep_alive_handler(answer)) as server:
        yield server


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: RawUpstream) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("tryit")
    config = {
        "services": [{"name": "shop", "url": f"http://127.0.0.1:{upstream.port}"}],
        "routes": [{"name": "shop-v1", "service": "shop", "paths": ["/v1"]}],
        "plugins": [
            {"name": "key-auth", "route": "shop-v1", "config": {}},
            {
                "name": "rate-limit",
                "route": "shop-v1",
                "config": {
                    "policy_name": "tryit",
                    "limits": [{"limit": 100, "period": "1h", "key": "consumer"}],
                },
            },
        ],
        "consumers": [{"username": "app-a"}],
        "apis": [{"name": "shop", "versions": [{"name": "v1", "routes": ["shop-v1"]}]}],
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    with gateway(tmp, path) as running:
        yield running


@pytest.fixture
async def editor(gw: Gateway) -> AsyncIterator[ConfigEditor]:
    engine = create_engine(gw.database_url)
    try:
        yield ConfigEditor(ConfigRepository(engine))
    finally:
        await engine.dispose()


@pytest.fixture
def service(gw: Gateway, editor: ConfigEditor) -> TryItService:
    return TryItService(editor, Settings(proxy_port=gw.proxy_port))


async def test_a_keyed_request_through_the_gateway_shows_its_rate_limit(
    gw: Gateway, editor: ConfigEditor, service: TryItService, upstream: RawUpstream
) -> None:
    key = (await create_keys(gw.database_url, {"app-a": None}))["app-a"]
    config = (await editor.state()).config
    access = access_of(config, ["app-a"])
    result = await service.send(
        access, TryItIn.parse({"api": "shop", "version": "v1", "path": "/v1/items", "key": key})
    )
    assert result.status == 200, result.body.text
    names = {k.lower() for k, _ in result.rate_limit}
    assert {"ratelimit", "ratelimit-policy"} <= names
    assert result.body.kind == "json"
    assert '"items": []' in result.body.text
    assert key not in str(result.as_json())
    # The upstream got the request through the gateway, the key hidden by key-auth.
    seen = upstream.requests[-1]
    assert seen.target == b"/items"
    assert seen.header(b"authorization") is None
    wrong = await service.send(
        access,
        TryItIn.parse({"api": "shop", "version": "v1", "path": "/v1/items", "key": "pc_live_nope"}),
    )
    assert wrong.status == 401
    assert wrong.body.kind == "json"
    big = await service.send(
        access, TryItIn.parse({"api": "shop", "version": "v1", "path": "/v1/big", "key": key})
    )
    assert big.status == 200
    assert big.body.truncated
    assert big.body.size == MAX_RESPONSE_BODY
    # A redirect is shown, never followed.
    seen = len(upstream.requests)
    moved = await service.send(
        access, TryItIn.parse({"api": "shop", "version": "v1", "path": "/v1/moved", "key": key})
    )
    assert moved.status == 302
    assert ("location", "http://169.254.169.254/latest/meta-data") in [
        (k.lower(), v) for k, v in moved.headers
    ]
    assert len(upstream.requests) == seen + 1
