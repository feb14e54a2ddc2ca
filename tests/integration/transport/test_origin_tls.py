"""Both transports honour an origin's TLS settings (`Origin.tls`): the service's trust
store and server name, its client certificate, TLS failures as `TlsError` naming the
cause, and no connection shared between two TLS settings of one host and port."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from portcullis.upstream.aiohttp_transport import AiohttpTransport
from portcullis.upstream.http1 import Http1Transport
from portcullis.upstream.tls import OriginTls, TlsCache, TlsSettings
from portcullis.upstream.transport import (
    Origin,
    TlsError,
    Transport,
    TransportTimeouts,
    UpstreamRequest,
)
from support.raw_upstream import RawUpstream, ReceivedRequest, keep_alive_handler, response
from support.tls_ca import Issued, ServerTls, TestCA

TRANSPORTS: dict[str, Callable[..., Transport]] = {
    "http1": Http1Transport,
    "aiohttp": AiohttpTransport,
}
TIMEOUTS = TransportTimeouts(connect=2.0, read=5.0, write=5.0)


@pytest.fixture(params=sorted(TRANSPORTS))
def transport_factory(request: pytest.FixtureRequest) -> Callable[..., Transport]:
    return TRANSPORTS[request.param]


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def leaf(ca: TestCA) -> Issued:
    return ca.issue("origin.test", "localhost")


def _echo(r: ReceivedRequest) -> bytes:
    return response(200, b"%s %s" % (r.method.encode(), r.target))


def _origin(up: RawUpstream, tls: OriginTls) -> Origin:
    return dataclasses.replace(up.origin, tls=tls)


async def _get(transport: Transport, origin: Origin) -> bytes:
    resp = await transport.send(
        origin, UpstreamRequest("GET", b"/t", [(b"host", b"origin.test")]), TIMEOUTS
    )
    try:
        return b"".join([c async for c in resp.body])
    finally:
        await resp.aclose()


async def test_the_service_ca_and_server_name_are_used(
    transport_factory: Callable[..., Transport], ca: TestCA, leaf: Issued
) -> None:
    server = ServerTls(leaf)
    cache = TlsCache()
    trusted = cache.get(TlsSettings(ca_certificates=(ca.cert_pem,), server_name="origin.test"))
    transport = transport_factory()
    try:
        async with RawUpstream(keep_alive_handler(_echo), tls=server.context()) as up:
            assert await _get(transport, _origin(up, trusted)) == b"GET /t"
            # A name the certificate does not hold: refused, the cause named.
            other = cache.get(TlsSettings(ca_certificates=(ca.cert_pem,), server_name="x.test"))
            with pytest.raises(TlsError, match="certificate was refused: Hostname mismatch"):
                await _get(transport, _origin(up, other))
            # Same host and port, another TLS setting: its own connection.
            unverified = cache.get(TlsSettings(verify=False))
            assert await _get(transport, _origin(up, unverified)) == b"GET /t"
            # (The refused handshake is never an accepted connection.)
            assert up.accepts == 2
        assert server.server_names == ["origin.test", "x.test", None]  # no SNI for an IP
    finally:
        await transport.aclose()


async def test_another_ca_is_refused_as_a_tls_error(
    transport_factory: Callable[..., Transport], leaf: Issued
) -> None:
    other = TlsCache().get(TlsSettings(ca_certificates=(TestCA("Other").cert_pem,)))
    transport = transport_factory()
    try:
        async with RawUpstream(keep_alive_handler(_echo), tls=ServerTls(leaf).context()) as up:
            with pytest.raises(TlsError, match="certificate was refused") as info:
                await _get(transport, _origin(up, other))
            assert info.value.request_sent is False
    finally:
        await transport.aclose()


async def test_the_client_certificate_is_presented(
    transport_factory: Callable[..., Transport], ca: TestCA, leaf: Issued
) -> None:
    client = ca.issue("gateway", client=True)
    tls = TlsCache().get(
        TlsSettings(
            ca_certificates=(ca.cert_pem,),
            client_cert=client.cert,
            client_key=client.key,
            server_name="origin.test",
        )
    )
    server = ServerTls(leaf, require_client_from=ca)
    transport = transport_factory()
    try:
        async with RawUpstream(keep_alive_handler(_echo), tls=server.context()) as up:
            assert await _get(transport, _origin(up, tls)) == b"GET /t"
    finally:
        await transport.aclose()


async def test_material_that_did_not_load_fails_the_connect(
    transport_factory: Callable[..., Transport], ca: TestCA, leaf: Issued
) -> None:
    one, two = ca.issue("one", client=True), ca.issue("two", client=True)
    broken = TlsCache().get(TlsSettings(client_cert=one.cert, client_key=two.key))
    transport = transport_factory()
    try:
        async with RawUpstream(keep_alive_handler(_echo), tls=ServerTls(leaf).context()) as up:
            with pytest.raises(TlsError, match="client_certificate: the certificate and key"):
                await _get(transport, _origin(up, broken))
            assert up.accepts == 0
    finally:
        await transport.aclose()
