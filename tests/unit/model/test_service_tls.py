"""A service's origin TLS fields and a route's https_redirect / hsts: defaults, what is
refused (each error naming its field), and the tenancy rule for client certificates."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.model.config import GatewayConfig, Hsts, Route, Service
from portcullis.model.loader import ConfigError, load_config_data
from support.tls_ca import TestCA

CERT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
# The model parses certificate material: a reference needs a real certificate.
CLIENT = TestCA().issue("gateway.example", client=True)


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return TestCA().cert_pem


def test_https_origins_are_verified_by_default() -> None:
    service = Service(name="s", url="https://api.example")
    assert service.tls_verify is True
    assert service.ca_certificates == []
    assert service.client_certificate is None
    assert service.tls_server_name is None
    assert service.scheme == "https"
    assert Service(name="u", upstream="up", protocol="https").scheme == "https"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tls_verify", False),
        ("tls_server_name", "api.example"),
        ("client_certificate", "c"),
        ("ca_certificates", ["CA"]),
    ],
)
def test_tls_fields_on_a_plain_http_service_are_refused_naming_the_field(
    field: str, value: Any, ca_pem: str
) -> None:
    if field == "ca_certificates":
        value = [ca_pem]
    with pytest.raises(ValidationError, match=f"{field}: applies to https services only"):
        Service.model_validate({"name": "s", "url": "http://api.example", field: value})


def test_a_bundle_is_pointless_without_verification(ca_pem: str) -> None:
    with pytest.raises(ValidationError, match="ca_certificates: has no effect"):
        Service(name="s", url="https://a.example", tls_verify=False, ca_certificates=[ca_pem])


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ("no pem here", "expected PEM CA certificates"),
        (CERT, "not a valid PEM certificate bundle"),
        (CERT + KEY, "not a private key"),
    ],
)
def test_a_bundle_is_checked_where_it_stands(bundle: str, message: str, ca_pem: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        Service(name="s", url="https://a.example", ca_certificates=[ca_pem, bundle])
    assert info.value.errors()[0]["loc"] == ("ca_certificates", 1)


@pytest.mark.parametrize("name", ["*.example.com", "a b", "api.example:443", "-a.example"])
def test_tls_server_name_is_a_plain_dns_name(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Service(name="s", url="https://a.example", tls_server_name=name)
    assert info.value.errors()[0]["loc"] == ("tls_server_name",)


def test_tls_server_name_is_normalised() -> None:
    service = Service(name="s", url="https://a.example", tls_server_name="Origin.Internal.")
    assert service.tls_server_name == "origin.internal"


def _config(service_org: str | None, cert_org: str | None) -> dict[str, Any]:
    return {
        "services": [
            {
                "name": "s",
                "url": "https://a.example",
                "client_certificate": "client",
                "organization": service_org,
            }
        ],
        "certificates": [
            {"name": "client", "cert": CLIENT.cert, "key": CLIENT.key, "organization": cert_org}
        ],
    }


def test_a_client_certificate_resolves_in_the_services_organization() -> None:
    GatewayConfig.model_validate(_config("acme", "acme"))
    GatewayConfig.model_validate(_config(None, None))
    with pytest.raises(
        ValidationError,
        match=r"services\[0\]\.client_certificate: unknown certificate 'client' in "
        "organization 'acme'",
    ):
        GatewayConfig.model_validate(_config("acme", "globex"))
    with pytest.raises(ValidationError, match="belongs to organization 'globex'"):
        GatewayConfig.model_validate(_config(None, "globex"))
    # The operator's certificate is not shared with tenants either: it carries its identity.
    with pytest.raises(ValidationError, match="unknown certificate 'client' in organization"):
        GatewayConfig.model_validate(_config("acme", None))


def test_the_loader_reports_an_unknown_certificate_next_to_other_errors() -> None:
    doc = _config(None, None)
    doc["certificates"] = []
    doc["routes"] = [{"name": "r", "service": "s", "priority": "high"}]
    with pytest.raises(ConfigError) as info:
        load_config_data(doc, source="t")
    text = str(info.value)
    assert "services[0].client_certificate: unknown certificate 'client'" in text
    assert "routes[0].priority" in text


def test_hsts_values_and_preload_rules() -> None:
    assert Hsts().header_value() == b"max-age=31536000"
    assert Hsts(max_age=0).header_value() == b"max-age=0"
    full = Hsts(max_age=63072000, include_subdomains=True, preload=True)
    assert full.header_value() == b"max-age=63072000; includeSubDomains; preload"
    with pytest.raises(ValidationError, match="preload: needs include_subdomains"):
        Hsts(preload=True)
    with pytest.raises(ValidationError, match="preload: needs"):
        Hsts(max_age=600, include_subdomains=True, preload=True)


def test_route_redirect_options() -> None:
    route = Route(name="r", service="s")
    assert route.https_redirect is False
    assert route.https_redirect_status_code == 308
    assert route.hsts is None
    with pytest.raises(ValidationError) as info:
        Route(name="r", service="s", https_redirect=True, https_redirect_status_code=303)
    assert info.value.errors()[0]["loc"][0] == "https_redirect_status_code"
