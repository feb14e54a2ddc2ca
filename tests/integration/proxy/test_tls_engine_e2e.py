"""The TLS port's fast path end to end: `portcullis serve` with one SAN/wildcard
certificate and no client CA runs the port on granian's own TLS; a renewed certificate
is served without a restart while a client loop keeps going (0 failed requests); a
second certificate switches the port to hypercorn (SNI choice).

One gateway for the module (PORTCULLIS_PROXY_TLS_ENGINE=auto, the default).
"""

from __future__ import annotations

import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from support import tls_probe
from support.admin_session import signed_in_owner
from support.recording_upstream import RecordingUpstream, recording_upstream
from support.servers import Gateway, free_port, gateway, wait_for_port
from support.tls import CertificateAuthority
from support.tls_probe import leaf_der

CA = CertificateAuthority()
NAME = "a.example.test"


@dataclass
class Tls:
    gw: Gateway
    port: int
    upstream: RecordingUpstream
    tmp: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    tmp = tmp_path_factory.mktemp("tls-engine")
    a = CA.issue(NAME, "*.example.test")
    port = free_port()
    with recording_upstream() as upstream:
        config = {
            "services": [{"name": "up", "url": f"http://127.0.0.1:{upstream.port}"}],
            "routes": [{"name": "all", "service": "up", "paths": ["/"]}],
            "certificates": [
                {"name": "a", "cert": a.cert, "key": a.key, "snis": [NAME, "*.example.test"]}
            ],
        }
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
        env = {
            "PORTCULLIS_SECRET_KEY": "tls-engine-e2e-deployment-secret-0123456789",
            "PORTCULLIS_PROXY_TLS": "on",
            "PORTCULLIS_PROXY_TLS_PORT": str(port),
        }
        with gateway(tmp, tmp / "gateway.yaml", extra_env=env) as gw:
            wait_for_port(port, gw.process, timeout=60)
            yield Tls(gw, port, upstream, tmp)


def client_context() -> ssl.SSLContext:
    return ssl.create_default_context(cadata=CA.pem)


def served_der(port: int, server_name: str) -> bytes | None:
    return tls_probe.served_der(port, server_name, CA.pem)


def tls_servers(port: int) -> list[str]:
    """Command lines of the processes serving the TLS port (granian's forked workers
    share their main process's)."""
    out = subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True, text=True).stdout
    return sorted({line for line in out.splitlines() if f"--port {port} " in line + " "})


def wait_until(what: str, done: object) -> None:
    deadline = time.monotonic() + 30
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@dataclass
class ClientLoop:
    """Requests one after another until stopped, each with its own target, over a new TLS
    connection each (`kind` "fresh") or over one kept-alive HTTP/1.1 connection
    ("h1"); counts the answered ones and keeps the failed ones.

    A GET whose connection closes before its response is sent again once, as HTTP
    clients may do for idempotent requests (RFC 9110, 9.2.2): the old granian can close
    a connection it accepted just as it stops (docs/decisions/028, addendum, which
    gives the counts without this retry). `retried` keeps those."""

    port: int
    kind: str
    ok: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # target -> error
    retried: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        kept = httpx.Client(verify=client_context(), timeout=30)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                target = f"/loop/{self.kind}/{n}/end"
                url = f"https://127.0.0.1:{self.port}{target}"
                try:
                    try:
                        r = self.get(kept, url)
                    except (httpx.RemoteProtocolError, httpx.ConnectError) as exc:
                        self.retried[target] = repr(exc)
                        r = self.get(kept, url)
                    if r.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures[target] = f"status {r.status_code}"
                except httpx.HTTPError as exc:
                    self.failures[target] = repr(exc)
        finally:
            kept.close()

    def get(self, kept: httpx.Client, url: str) -> httpx.Response:
        if self.kind == "fresh":
            with httpx.Client(verify=client_context(), timeout=30) as fresh:
                return fresh.get(url, headers=HOST, extensions=SNI)
        return kept.get(url, headers=HOST, extensions=SNI)


SNI = {"sni_hostname": NAME}
HOST = {"host": NAME}


def test_one_certificate_is_served_by_granian_over_http2(tls: Tls) -> None:
    (server,) = tls_servers(tls.port)
    assert "plane_process" in server
    assert "--ssl-certificate" in server
    with httpx.Client(verify=client_context(), http2=True, timeout=10) as client:
        r = client.get(
            f"https://127.0.0.1:{tls.port}/hello", headers={"host": NAME}, extensions=SNI
        )
    assert (r.status_code, r.http_version) == (200, "HTTP/2"), r.text
    forwarded = dict(tls.upstream.seen(b"/hello")[-1].headers)
    assert forwarded[b"x-forwarded-proto"] == b"https"


def test_a_renewed_certificate_is_served_without_restart_or_failed_requests(tls: Tls) -> None:
    renewed = CA.issue(NAME, "*.example.test")
    # Not HTTP/2: httpx's h2 fails a request whose response follows the old granian's
    # GOAWAY when a PING comes after it (python-hyper/h2 issue 1199).
    loops = [ClientLoop(tls.port, kind) for kind in ("fresh", "h1")]
    threads = [threading.Thread(target=loop.run) for loop in loops]
    for t in threads:
        t.start()
    try:
        with signed_in_owner(tls.gw, "tls-engine@example.com") as admin:
            r = admin.put(
                "/admin/v1/certificates/a",
                json={"name": "a", "cert": renewed.cert, "key": renewed.key,
                      "snis": [NAME, "*.example.test"]},
            )  # fmt: skip
            assert r.status_code == 200, r.text
        wait_until(
            "the renewed certificate was never served",
            lambda: served_der(tls.port, NAME) == leaf_der(renewed.cert),
        )
        # Requests go on past the respawn of granian's workers.
        counted = sum(loop.ok for loop in loops)
        wait_until(
            f"the client loops stalled: {[lo.failures for lo in loops]}",
            lambda: sum(lo.ok for lo in loops) > counted + 20,
        )
    finally:
        for loop in loops:
            loop.stop.set()
        for t in threads:
            t.join(timeout=60)
    assert [loop.failures for loop in loops] == [{}, {}]
    assert all(loop.ok > 0 for loop in loops)
    # A new granian (started before the old one stopped); the gateway was not restarted.
    wait_until("the old granian never stopped", lambda: len(tls_servers(tls.port)) == 1)
    assert tls.gw.process.poll() is None


def test_a_second_certificate_switches_the_port_to_hypercorn_with_sni(tls: Tls) -> None:
    b = CA.issue("b.other.test")
    with signed_in_owner(tls.gw, "tls-engine-2@example.com") as admin:
        r = admin.post(
            "/admin/v1/certificates",
            json={"name": "b", "cert": b.cert, "key": b.key, "snis": ["b.other.test"]},
        )
        assert r.status_code == 201, r.text
    wait_until(
        "the second certificate was never served",
        lambda: served_der(tls.port, "b.other.test") == leaf_der(b.cert),
    )
    wait_until(
        "granian never stopped",
        lambda: all("tls_plane" in s for s in tls_servers(tls.port)),
    )
    assert served_der(tls.port, NAME) != leaf_der(b.cert)
    with httpx.Client(verify=client_context(), http2=True, timeout=10) as client:
        r = client.get(
            f"https://127.0.0.1:{tls.port}/after",
            headers={"host": "b.other.test"},
            extensions={"sni_hostname": "b.other.test"},
        )
    assert (r.status_code, r.http_version) == (200, "HTTP/2")
    # Back to one certificate: back to granian.
    with signed_in_owner(tls.gw, "tls-engine-3@example.com") as admin:
        assert admin.delete("/admin/v1/certificates/b").status_code == 204
    wait_until(
        "granian never came back",
        lambda: (
            [s for s in tls_servers(tls.port) if "tls_plane" not in s] != []
            and len(tls_servers(tls.port)) == 1
        ),
    )
