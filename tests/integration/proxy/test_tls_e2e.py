"""The proxy's TLS port end to end: `portcullis serve` with two certificates (one from
`cert_file`/`key_file`, one inline) and real TLS clients (httpx over HTTP/2, curl
--http2, openssl s_client), against certificates from a test CA.

One gateway for the module (PORTCULLIS_PROXY_TLS=on, a client CA bundle so a client
certificate is requested).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from support import tls_probe
from support.admin_session import signed_in_owner
from support.recording_upstream import RecordingUpstream, recording_upstream
from support.servers import Gateway, free_port, gateway, wait_for_port
from support.tls import CertificateAuthority

CA = CertificateAuthority()


@dataclass
class Tls:
    gw: Gateway
    port: int
    upstream: RecordingUpstream
    ca_file: Path
    tmp: Path


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    tmp = tmp_path_factory.mktemp("tls")
    a = CA.issue("a.example.test")
    b = CA.issue("*.b.example.test")
    (tmp / "a.pem").write_text(a.cert)
    (tmp / "a.key").write_text(a.key)
    ca_file = tmp / "ca.pem"
    ca_file.write_text(CA.pem)
    port = free_port()
    with recording_upstream() as upstream:
        config = {
            "services": [{"name": "up", "url": f"http://127.0.0.1:{upstream.port}"}],
            "routes": [
                {"name": "all", "service": "up", "paths": ["/"]},
                {"name": "mtls-only", "service": "up", "paths": ["/mtls-auth"]},
            ],
            "consumers": [{"username": "alice"}],
            "plugins": [
                {"name": "mtls-auth", "route": "mtls-only",
                 "config": {"ca_certificates": CA.pem}},
            ],
            "certificates": [
                {"name": "a", "cert_file": "a.pem", "key_file": "a.key",
                 "snis": ["a.example.test"]},
                {"name": "b", "cert": b.cert, "key": b.key, "snis": ["*.b.example.test"]},
            ],
        }  # fmt: skip
        (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
        env = {
            # The CLI (another working directory) seals keys with the same secret.
            "PORTCULLIS_SECRET_KEY": "tls-e2e-deployment-secret-0123456789abcdef",
            "PORTCULLIS_PROXY_TLS": "on",
            "PORTCULLIS_PROXY_TLS_PORT": str(port),
            "PORTCULLIS_PROXY_TLS_CLIENT_CA_FILE": str(ca_file),
        }
        with gateway(tmp, tmp / "gateway.yaml", extra_env=env) as gw:
            wait_for_port(port, gw.process, timeout=60)
            yield Tls(gw, port, upstream, ca_file, tmp)


def client_context() -> ssl.SSLContext:
    return ssl.create_default_context(cadata=CA.pem)


def served_subject(port: int, server_name: str | None) -> str:
    """The subject CN of the certificate served for `server_name` (Python's client)."""
    der = served_der(port, server_name)
    assert der is not None
    name = x509.load_der_x509_certificate(der).subject
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input="",
        capture_output=True,
        text=True,
        errors="replace",
        timeout=20,
    )


def test_httpx_gets_http2_with_the_certificate_of_the_server_name(tls: Tls) -> None:
    with httpx.Client(verify=client_context(), http2=True, timeout=10) as client:
        for host in ("a.example.test", "api.b.example.test"):
            r = client.get(
                f"https://127.0.0.1:{tls.port}/hello",
                headers={"host": host},
                extensions={"sni_hostname": host},  # verified against this name too
            )
            assert (r.status_code, r.http_version) == (200, "HTTP/2"), r.text
    forwarded = dict(tls.upstream.seen(b"/hello")[-1].headers)
    assert forwarded[b"x-forwarded-proto"] == b"https"


def test_openssl_sees_sni_selection_alpn_and_no_tls_1_1(tls: Tls) -> None:
    out = s_client(tls.port, "-servername", "x.b.example.test", "-alpn", "h2,http/1.1").stdout
    assert "subject=CN = *.b.example.test" in out
    assert "ALPN protocol: h2" in out
    out = s_client(tls.port, "-servername", "a.example.test", "-alpn", "http/1.1").stdout
    assert "subject=CN = a.example.test" in out
    assert "ALPN protocol: http/1.1" in out
    # No SNI (or no match): the default certificate, the config's first.
    assert "subject=CN = a.example.test" in s_client(tls.port, "-noservername").stdout
    old = s_client(tls.port, "-servername", "a.example.test", "-tls1_1")
    assert old.returncode != 0
    assert "New, (NONE), Cipher is (NONE)" in old.stdout


def test_curl_over_http2(tls: Tls) -> None:
    host = "a.example.test"
    result = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", str(tls.ca_file),
         "--resolve", f"{host}:{tls.port}:127.0.0.1",
         "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
         f"https://{host}:{tls.port}/curl"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.stdout == "2 200", result.stderr


def test_a_client_certificate_is_optional_and_must_chain_to_the_bundle(tls: Tls) -> None:
    mine = CA.issue("client-1", client=True)
    (tls.tmp / "client.pem").write_text(mine.key + mine.cert)
    ctx = client_context()
    ctx.load_cert_chain(tls.tmp / "client.pem")
    with httpx.Client(verify=ctx, http2=True, timeout=10) as client:
        r = client.get(
            f"https://127.0.0.1:{tls.port}/mtls",
            headers={"host": "a.example.test"},
            extensions={"sni_hostname": "a.example.test"},
        )
    assert r.status_code == 200
    stranger = CertificateAuthority("Stranger CA").issue("client-2", client=True)
    (tls.tmp / "stranger.pem").write_text(stranger.key + stranger.cert)
    ctx = client_context()
    ctx.load_cert_chain(tls.tmp / "stranger.pem")
    with (
        pytest.raises(httpx.HTTPError),
        httpx.Client(verify=ctx, http2=True, timeout=10) as client,
    ):
        client.get(
            f"https://127.0.0.1:{tls.port}/mtls",
            extensions={"sni_hostname": "a.example.test"},
        )


def test_mtls_auth_maps_the_client_certificate_of_the_tls_port_to_its_consumer(
    tls: Tls,
) -> None:
    """The TLS port hands the client certificate to the route's mtls-auth plugin (the ASGI
    TLS extension), which maps its SAN to the consumer holding that mtls credential."""
    alice = CA.issue("alice.example", client=True)
    (tls.tmp / "alice.pem").write_text(alice.key + alice.cert)
    with signed_in_owner(tls.gw, "mtls-owner@example.com") as admin:
        r = admin.post("/admin/v1/consumers/alice/mtls-auth", json={"match": "dns:alice.example"})
        assert r.status_code == 201, r.text
    ctx = client_context()
    ctx.load_cert_chain(tls.tmp / "alice.pem")
    url = f"https://127.0.0.1:{tls.port}/mtls-auth/who"
    sni = {"sni_hostname": "a.example.test"}
    with httpx.Client(verify=ctx, http2=True, timeout=10) as client:
        deadline = time.monotonic() + 15
        while (r := client.get(url, extensions=sni)).status_code == 401:
            assert time.monotonic() < deadline, r.text  # the credential reaches the workers
            time.sleep(0.05)
    assert r.status_code == 200, r.text
    forwarded = dict(tls.upstream.seen(b"/who")[-1].headers)  # the prefix is stripped
    assert forwarded[b"x-consumer-name"] == b"alice"
    # Without a certificate: the 401 names the scheme it expected.
    with httpx.Client(verify=client_context(), http2=True, timeout=10) as client:
        refused = client.get(url, extensions=sni)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("MutualTLS")


def test_a_certificate_added_through_the_admin_api_is_served_without_restart(tls: Tls) -> None:
    assert served_subject(tls.port, "c.example.test") == "a.example.test"  # the default
    c = CA.issue("c.example.test")
    with signed_in_owner(tls.gw, "tls-owner@example.com") as admin:
        r = admin.post(
            "/admin/v1/certificates",
            json={"name": "c", "cert": c.cert, "key": c.key, "snis": ["c.example.test"]},
        )
        assert r.status_code == 201, r.text
        # The key is stored sealed with the deployment secret and never shown in clear.
        assert r.json()["key"].startswith("enc:v1:")
        assert c.key not in admin.get("/admin/v1/config").text
        deadline = time.monotonic() + 15
        while served_subject(tls.port, "c.example.test") != "c.example.test":
            assert time.monotonic() < deadline, "the new certificate was never served"
            time.sleep(0.05)
        # A wrong key is refused, naming the field.
        other = CA.issue("d.example.test")
        r = admin.post(
            "/admin/v1/certificates",
            json={"name": "d", "cert": other.cert, "key": c.key, "snis": ["d.example.test"]},
        )
        assert r.status_code in (400, 422), r.text
        assert "/key" in r.text
        metrics = admin.get("/metrics").text
        assert 'portcullis_certificate_expiry_seconds{certificate="c"}' in metrics


def test_a_certificate_applied_with_the_cli_from_files_is_served_without_restart(
    tls: Tls,
) -> None:
    """`portcullis config apply` reads cert_file/key_file; a renewed certificate under the
    same name replaces the served one."""
    renewed = CA.issue("a.example.test")
    (tls.tmp / "a2.pem").write_text(renewed.cert)
    (tls.tmp / "a2.key").write_text(renewed.key)
    exported = yaml.safe_load(tls.gw.cli("config", "export", "--format", "yaml").stdout)
    for cert in exported["certificates"]:
        assert cert["key"].startswith("enc:v1:")  # never exported in clear, unless asked:
    clear = yaml.safe_load(tls.gw.cli("config", "export", "--include-secrets").stdout)
    assert all(c["key"].startswith("-----BEGIN") for c in clear["certificates"])
    for cert in exported["certificates"]:
        if cert["name"] == "a":
            del cert["cert"], cert["key"]
            cert |= {"cert_file": "a2.pem", "key_file": "a2.key"}
    (tls.tmp / "renewed.yaml").write_text(yaml.safe_dump(exported))
    tls.gw.cli("config", "apply", str(tls.tmp / "renewed.yaml"))
    want = ssl.PEM_cert_to_DER_cert(renewed.cert.split("-----END CERTIFICATE-----")[0] + END)
    deadline = time.monotonic() + 15
    while served_der(tls.port, "a.example.test") != want:
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.05)


END = "-----END CERTIFICATE-----\n"


def served_der(port: int, server_name: str | None) -> bytes | None:
    return tls_probe.served_der(port, server_name, CA.pem)


def test_a_websocket_over_tls_is_relayed(tls: Tls) -> None:
    from websockets.sync.client import connect

    with connect(
        f"wss://127.0.0.1:{tls.port}/ws",
        ssl=client_context(),
        server_hostname="a.example.test",
        open_timeout=10,
    ) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=10) == "over tls"


def test_the_certificates_cli_adds_lists_and_refuses_a_wrong_key(tls: Tls) -> None:
    e = CA.issue("e.example.test")
    (tls.tmp / "e.pem").write_text(e.cert)
    (tls.tmp / "e.key").write_text(e.key)
    (tls.tmp / "other.key").write_text(CA.issue("f.example.test").key)
    pem = ["--cert-file", str(tls.tmp / "e.pem")]
    refused = tls.gw.cli(
        "certificates", "add", "f", *pem, "--key-file", str(tls.tmp / "other.key"),
        "--sni", "f.example.test", check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "--key-file" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
    tls.gw.cli(
        "certificates", "add", "e", *pem, "--key-file", str(tls.tmp / "e.key"),
        "--sni", "e.example.test",
    )  # fmt: skip
    listed = json.loads(tls.gw.cli("certificates", "list", "--json").stdout)
    assert {"name": "e", "snis": ["e.example.test"]}.items() <= next(
        c for c in listed if c["name"] == "e"
    ).items()
    deadline = time.monotonic() + 15
    while served_subject(tls.port, "e.example.test") != "e.example.test":
        assert time.monotonic() < deadline, "the certificate added by the CLI was never served"
        time.sleep(0.05)
