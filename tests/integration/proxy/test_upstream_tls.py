"""TLS to origins through a real gateway (granian): verification against a per-service CA,
hostname checks, SNI, client certificates, health checks and wss, plus a route's
https_redirect and HSTS. The origins are aiohttp servers with certificates from a test CA
made here (`support.tls_ca`); one gateway and one pair of origins for the module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yaml
from aiohttp import web

from support.servers import Gateway, gateway
from support.threaded_aiohttp import ThreadedAiohttpServer
from support.threaded_upstream import wait_until
from support.tls_ca import ServerTls, TestCA

TYPE_BASE = "https://portcullis.dev/problems/"


@dataclass
class Origin:
    """A TLS origin: what it answered and to whom."""

    tls: ServerTls
    server: ThreadedAiohttpServer | None = None
    probes: list[str | None] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def routes(self, app: web.Application) -> None:
        async def echo(request: web.Request) -> web.StreamResponse:
            transport = request.transport
            assert transport is not None
            sni = self.tls.sni_of(transport.get_extra_info("ssl_object"))
            if request.path == "/probe":
                self.probes.append(sni)
                return web.Response(text="ok")
            peer = transport.get_extra_info("peercert")
            client = None
            if peer:
                client = dict(x[0] for x in peer["subject"]).get("commonName")
            if request.headers.get("upgrade", "").lower() == "websocket":
                ws = web.WebSocketResponse()
                await ws.prepare(request)
                async for msg in ws:
                    await ws.send_str(f"{msg.data} via {sni}")
                return ws
            return web.json_response(
                {"path": request.path_qs, "sni": sni, "client": client, "host": request.host}
            )

        app.router.add_route("*", "/{tail:.*}", echo)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def origins(ca: TestCA) -> Iterator[tuple[Origin, Origin]]:
    plain = Origin(ServerTls(ca.issue("localhost", "origin.test")))
    mutual = Origin(ServerTls(ca.issue("localhost"), require_client_from=ca))
    for origin in (plain, mutual):
        origin.server = ThreadedAiohttpServer(
            origin.routes, name="tls-origin", ssl_context=origin.tls.context()
        )
        origin.server.start()
    yield plain, mutual
    for origin in (plain, mutual):
        assert origin.server is not None
        origin.server.stop()


def _config(ca: TestCA, plain: int, mutual: int) -> dict[str, Any]:
    other = TestCA("Some Other CA")
    client = ca.issue("gateway-client", client=True)
    trusted = [ca.cert_pem]

    def service(name: str, url: str, **tls: Any) -> dict[str, Any]:
        return {"name": name, "url": url, **tls}

    def route(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "service": name, "paths": [f"/{name}"], **extra}

    services = [
        service("ok", f"https://localhost:{plain}", ca_certificates=trusted),
        service("wrong-ca", f"https://localhost:{plain}", ca_certificates=[other.cert_pem]),
        # No TLS field: verified against the system store, which does not know the test CA.
        service("system-store", f"https://localhost:{plain}"),
        service("mismatch", f"https://127.0.0.1:{plain}", ca_certificates=trusted),
        service(
            "sni",
            f"https://127.0.0.1:{plain}",
            ca_certificates=trusted,
            tls_server_name="origin.test",
        ),
        service("no-verify", f"https://127.0.0.1:{plain}", tls_verify=False),
        service(
            "mtls",
            f"https://localhost:{mutual}",
            ca_certificates=trusted,
            client_certificate="gateway-client",
        ),
        service("mtls-missing", f"https://localhost:{mutual}", ca_certificates=trusted),
        {"name": "hc", "upstream": "hc", "protocol": "https", "ca_certificates": trusted},
        {
            "name": "hc-wrong-ca",
            "upstream": "hc-wrong-ca",
            "protocol": "https",
            "ca_certificates": [other.cert_pem],
        },
    ]
    checks = {
        "active": {
            "enabled": True,
            "path": "/probe",
            "interval": 0.2,
            "healthy_threshold": 1,
            "unhealthy_threshold": 1,
        }
    }
    upstreams = [
        {"name": name, "targets": [{"target": f"localhost:{plain}"}], "healthchecks": checks}
        for name in ("hc", "hc-wrong-ca")
    ]
    routes = [route(s["name"]) for s in services]
    routes += [
        {
            "name": "secure",
            "service": "ok",
            "paths": ["/secure"],
            "https_redirect": True,
            "hsts": {"max_age": 600, "include_subdomains": True},
        },
        {"name": "hsts-only", "service": "ok", "paths": ["/hsts-only"], "hsts": {}},
    ]
    return {
        "services": services,
        "upstreams": upstreams,
        "routes": routes,
        "certificates": [{"name": "gateway-client", "cert": client.cert, "key": client.key}],
    }


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, ca: TestCA, origins: tuple[Origin, Origin]
) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("upstream-tls")
    cfg = tmp / "gateway.yaml"
    plain, mutual = origins
    cfg.write_text(yaml.safe_dump(_config(ca, plain.port, mutual.port)))
    # The test client is a trusted proxy: its X-Forwarded-Proto says what TLS it ended
    # (so the gateway's own TLS port is off, and redirects go to the default https port).
    env = {"PORTCULLIS_TRUSTED_PROXIES": '["127.0.0.1"]', "PORTCULLIS_PROXY_TLS": "off"}
    with gateway(tmp, cfg, extra_env=env) as g:
        yield g


def _problem(r: httpx.Response) -> dict[str, Any]:
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    body: dict[str, Any] = r.json()
    return body


def test_origin_verified_against_the_service_ca_with_the_target_host_as_sni(
    gw: Gateway,
) -> None:
    r = httpx.get(f"{gw.url}/ok/x?q=1", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "path": "/x?q=1",
        "sni": "localhost",
        "client": None,
        "host": r.json()["host"],
    }


def test_an_origin_signed_by_another_ca_is_refused_with_a_502_naming_the_cause(
    gw: Gateway,
) -> None:
    r = httpx.get(f"{gw.url}/wrong-ca", timeout=10)
    assert r.status_code == 502
    problem = _problem(r)
    assert problem["type"] == f"{TYPE_BASE}upstream-tls-failed"
    assert "certificate was refused" in problem["detail"]
    assert "issuer" in problem["detail"]  # "unable to get local issuer certificate"


def test_by_default_an_origin_is_verified_against_the_system_store(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/system-store", timeout=10)
    assert r.status_code == 502
    assert "certificate was refused" in _problem(r)["detail"]


def test_a_certificate_for_another_name_is_refused(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/mismatch", timeout=10)
    assert r.status_code == 502
    problem = _problem(r)
    assert problem["type"] == f"{TYPE_BASE}upstream-tls-failed"
    assert "mismatch" in problem["detail"].lower()


def test_tls_server_name_is_sent_as_sni_and_verified(
    gw: Gateway, origins: tuple[Origin, Origin]
) -> None:
    r = httpx.get(f"{gw.url}/sni", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["sni"] == "origin.test"
    # The Host header stays the target's: SNI and Host are separate settings.
    assert r.json()["host"] == f"127.0.0.1:{origins[0].port}"


def test_tls_verify_false_accepts_a_certificate_it_cannot_verify(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/no-verify", timeout=10)
    assert r.status_code == 200, r.text


def test_client_certificate_presented_to_an_origin_that_requires_one(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/mtls", timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["client"] == "gateway-client"
    refused = httpx.get(f"{gw.url}/mtls-missing", timeout=10)
    assert refused.status_code == 502
    problem = _problem(refused)
    assert problem["type"] == f"{TYPE_BASE}upstream-tls-failed"
    assert "client certificate" in problem["detail"]


def test_health_checks_to_tls_targets_use_the_service_tls(
    gw: Gateway, origins: tuple[Origin, Origin]
) -> None:
    plain = origins[0]
    # Probes verified with the service's CA reach the origin (the system store would not).
    wait_until(lambda: "localhost" in plain.probes, 10)
    assert httpx.get(f"{gw.url}/hc/x", timeout=10).status_code == 200
    # The same target behind another CA's service fails its probes: no healthy target.
    wait_until(lambda: httpx.get(f"{gw.url}/hc-wrong-ca", timeout=10).status_code == 503, 10)
    assert _problem(httpx.get(f"{gw.url}/hc-wrong-ca", timeout=10))["type"] == (
        f"{TYPE_BASE}upstream-unavailable"
    )


def test_websocket_to_a_wss_origin_uses_the_service_tls(gw: Gateway) -> None:
    async def exchange() -> tuple[str, int]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{gw.proxy_port}/ok/ws") as ws:
                await ws.send_str("hello")
                echoed = await ws.receive_str(timeout=10)
            try:
                async with session.ws_connect(f"ws://127.0.0.1:{gw.proxy_port}/wrong-ca/ws"):
                    status = 101
            except aiohttp.WSServerHandshakeError as exc:
                status = exc.status
        return echoed, status

    echoed, refused = asyncio.run(exchange())
    assert echoed == "hello via localhost"
    assert refused == 502


@pytest.mark.parametrize("proto", ["http1", "h2c"])
def test_plain_http_is_redirected_to_https_and_gets_no_hsts(gw: Gateway, proto: str) -> None:
    transport = httpx.HTTPTransport(http1=proto == "http1", http2=proto == "h2c")
    with httpx.Client(transport=transport, timeout=10) as client:
        r = client.post(
            f"{gw.url}/secure/a%20b?x=1&y=2", headers={"host": "api.example"}, content=b"{}"
        )
        assert r.http_version == ("HTTP/2" if proto == "h2c" else "HTTP/1.1")
        assert r.status_code == 308
        assert r.headers["location"] == "https://api.example/secure/a%20b?x=1&y=2"
        assert "strict-transport-security" not in r.headers
        plain = client.get(f"{gw.url}/hsts-only")
        assert plain.status_code == 200
        assert "strict-transport-security" not in plain.headers


@pytest.mark.parametrize("proto", ["http1", "h2c"])
def test_tls_ended_by_a_trusted_proxy_is_served_with_hsts(gw: Gateway, proto: str) -> None:
    transport = httpx.HTTPTransport(http1=proto == "http1", http2=proto == "h2c")
    with httpx.Client(transport=transport, timeout=10) as client:
        r = client.get(f"{gw.url}/secure/x", headers={"x-forwarded-proto": "https"})
        assert r.status_code == 200, r.text
        assert r.headers["strict-transport-security"] == "max-age=600; includeSubDomains"
        other = client.get(f"{gw.url}/hsts-only", headers={"x-forwarded-proto": "https"})
        assert other.headers["strict-transport-security"] == "max-age=31536000"
    assert json.loads(r.text)["sni"] == "localhost"


def test_a_plain_websocket_handshake_is_redirected_to_wss(gw: Gateway) -> None:
    # httpx follows no redirect (WebSocket clients that do refuse an https:// one).
    handshake = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-version": "13",
    }
    r = httpx.get(f"{gw.url}/secure/ws?x=1", headers=handshake, timeout=10)
    assert r.status_code == 308
    # The client's Host without its port (the TLS port is the default one here).
    assert r.headers["location"] == "wss://127.0.0.1/secure/ws?x=1"
