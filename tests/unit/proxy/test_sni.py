"""SNI selection, the TLS policy of the contexts and the ASGI TLS extension, by in-memory
handshakes (ssl.MemoryBIO) against certificates from a test CA."""

from __future__ import annotations

import ssl
import warnings
from dataclasses import replace
from typing import Any

import pytest

from portcullis.model.config import GatewayConfig
from portcullis.proxy.sni import SniTable, tls_extension
from portcullis.proxy.tls_server import SniSelector
from portcullis.runtime.holder import SnapshotHolder
from support.tls import CertificateAuthority

CA = CertificateAuthority()
EXACT = CA.issue("api.example.com")
WILD = CA.issue("*.example.com")
OTHER = CA.issue("other.test")


def certificates(*entries: tuple[str, Any, list[str]]) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "certificates": [
                {"name": n, "cert": i.cert, "key": i.key, "snis": snis} for n, i, snis in entries
            ]
        }
    )


CONFIG = certificates(
    ("wild", WILD, ["*.example.com"]),
    ("exact", EXACT, ["api.example.com"]),
    ("other", OTHER, ["other.test"]),
)


class Holder(SnapshotHolder):
    def use(self, config: GatewayConfig) -> None:
        self.current = replace(self.current, config=config)


def handshake(
    server_ctx: ssl.SSLContext,
    server_name: str | None,
    *,
    client_cert: tuple[str, str] | None = None,
    tmp: Any = None,
    maximum: ssl.TLSVersion | None = None,
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    client_ctx = ssl.create_default_context(cadata=CA.pem)
    client_ctx.check_hostname = False
    client_ctx.set_alpn_protocols(["h2", "http/1.1"])
    if maximum is not None:
        with warnings.catch_warnings():  # setting an old version is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            client_ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            client_ctx.maximum_version = maximum
            client_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if client_cert is not None:
        path = tmp / "client.pem"
        path.write_text(client_cert[1] + client_cert[0])
        client_ctx.load_cert_chain(path)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj, out, peer_in in (
            ("client", client, c_out, s_in),
            ("server", server, s_out, c_in),
        ):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return client, server
    raise AssertionError("handshake did not finish")


def served(client: ssl.SSLObject) -> str:
    der = client.getpeercert(binary_form=True)
    assert der is not None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


@pytest.fixture
def selector() -> SniSelector:
    holder = Holder()
    holder.use(CONFIG)
    return SniSelector(holder)


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("api.example.com", "CN=api.example.com"),  # exact beats the wildcard
        ("www.example.com", "CN=*.example.com"),
        ("other.test", "CN=other.test"),
        ("a.b.example.com", "CN=*.example.com"),  # no match: the default (first) certificate
        (None, "CN=*.example.com"),  # no SNI: the default
    ],
)
def test_the_certificate_is_chosen_by_server_name(
    selector: SniSelector, name: str | None, subject: str
) -> None:
    client, server = handshake(selector.listener_context(), name)
    assert served(client) == subject
    assert selector.server_names.pop(server, None) == name
    assert client.selected_alpn_protocol() == "h2"
    assert client.version() in ("TLSv1.2", "TLSv1.3")


def test_a_new_snapshot_with_other_certificates_is_served_to_the_next_handshake(
    selector: SniSelector,
) -> None:
    ctx = selector.listener_context()
    first = selector.table()
    assert selector.table() is first  # built once per set of certificates
    renewed = CA.issue("api.example.com")
    assert isinstance(selector.holder, Holder)
    selector.holder.use(certificates(("exact", renewed, ["api.example.com"])))
    client, _ = handshake(ctx, "api.example.com")
    assert client.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(
        renewed.cert.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )
    client, _ = handshake(ctx, "www.example.com")  # the wildcard is gone: the new default
    assert served(client) == "CN=api.example.com"


def test_no_certificate_refuses_the_handshake() -> None:
    ctx = SniSelector(Holder()).listener_context()
    with pytest.raises(ssl.SSLError):
        handshake(ctx, "api.example.com")


def test_tls_below_1_2_is_refused(selector: SniSelector) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(selector.listener_context(), "api.example.com", maximum=ssl.TLSVersion.TLSv1_1)


def test_the_tls_1_2_suites_are_ecdhe_with_aead_only() -> None:
    ctx = SniTable.build(CONFIG.certificates).exact["api.example.com"]
    tls12 = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12
    assert all(c["kea"] == "kx-ecdhe" and c["aead"] for c in tls12)


def test_the_tls_extension_carries_the_client_certificate(
    selector: SniSelector, tmp_path: Any
) -> None:
    selector.client_ca = CA.pem
    selector._last = None  # rebuild with the client CA
    selector._material = None
    client_issued = CA.issue("client-1", client=True)
    _, server = handshake(
        selector.listener_context(),
        "api.example.com",
        client_cert=(client_issued.cert, client_issued.key),
        tmp=tmp_path,
    )
    tls = tls_extension(server, "api.example.com")
    assert tls["server_name"] == "api.example.com"
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int)
    assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert ssl.PEM_cert_to_DER_cert(tls["client_cert_chain"][0]) == ssl.PEM_cert_to_DER_cert(
        client_issued.cert.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    )
    # Without a client certificate the chain is empty (the certificate is optional).
    _, server = handshake(selector.listener_context(), "api.example.com")
    assert tls_extension(server, None)["client_cert_chain"] == []


async def test_every_request_scope_of_a_connection_carries_its_tls_extension() -> None:
    from portcullis.proxy.tls_server import with_tls

    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    tls = {"server_name": "api.example.com", "client_cert_chain": []}
    wrapped = with_tls(app, tls)
    http = {"type": "http", "extensions": {"http.response.trailers": {}}}
    await wrapped(http, None, None)
    await wrapped({"type": "websocket"}, None, None)
    await wrapped({"type": "lifespan"}, None, None)
    assert seen[0]["extensions"] == {"http.response.trailers": {}, "tls": tls}
    assert seen[1]["extensions"] == {"tls": tls}
    assert "extensions" not in seen[2]
