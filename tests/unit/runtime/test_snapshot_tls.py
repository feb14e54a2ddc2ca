"""What a snapshot compiles of origin TLS and of the https options of routes: contexts
once per setting, carried to the next snapshot while unchanged, none for defaults."""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.model.config import GatewayConfig
from portcullis.runtime.snapshot import CompiledService, Snapshot, build_snapshot
from support.tls_ca import Issued, TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def client(ca: TestCA) -> Issued:
    return ca.issue("gw", client=True)


def _snapshot(
    ca: TestCA, client: Issued, previous: Snapshot | None = None, **changes: Any
) -> Snapshot:
    bundle = [ca.cert_pem]
    doc: dict[str, Any] = {
        "services": [
            {"name": "plain", "url": "http://a.example"},
            {"name": "default", "url": "https://a.example"},
            {"name": "ca", "url": "https://a.example", "ca_certificates": bundle},
            {"name": "ca2", "url": "https://b.example", "ca_certificates": bundle},
            {
                "name": "mtls",
                "upstream": "up",
                "protocol": "https",
                "ca_certificates": bundle,
                "client_certificate": "gw",
                "tls_server_name": "origin.internal",
                **changes,
            },
        ],
        "upstreams": [{"name": "up", "targets": [{"target": "10.0.0.1:443"}]}],
        "routes": [
            {"name": "r", "service": "ca", "https_redirect": True},
            *(
                {"name": f"to-{name}", "service": name, "paths": [f"/{name}"]}
                for name in ("plain", "default", "ca2", "mtls")
            ),
            {
                "name": "h",
                "service": "ca",
                "paths": ["/h"],
                "https_redirect": True,
                "https_redirect_status_code": 301,
                "hsts": {"max_age": 10, "include_subdomains": True},
            },
        ],
        "certificates": [{"name": "gw", "cert": client.cert, "key": client.key}],
    }
    return build_snapshot(GatewayConfig.model_validate(doc), 1, previous)


def snapshot_services(snapshot: Snapshot) -> dict[str, CompiledService]:
    return {spec.payload.service.name: spec.payload.service for spec in snapshot.router.specs}


def test_contexts_are_built_once_per_setting_and_none_for_defaults(
    ca: TestCA, client: Issued
) -> None:
    snapshot = _snapshot(ca, client)
    compiled = snapshot_services(snapshot)
    assert compiled["plain"].tls is None
    assert compiled["default"].tls is None
    # One CA setting, two services: one origin TLS (and one context).
    assert compiled["ca"].tls is compiled["ca2"].tls
    mtls, ca_tls = compiled["mtls"].tls, compiled["ca"].tls
    assert mtls is not None
    assert ca_tls is not None
    assert mtls.server_name == "origin.internal"
    assert mtls.error is None
    assert mtls.context is not ca_tls.context
    # Health checks of each pool use its service's TLS.
    assert snapshot.origin_tls == {"up": mtls, "ca@url": ca_tls, "ca2@url": ca_tls}


def test_the_next_snapshot_reuses_unchanged_settings_and_rebuilds_changed_ones(
    ca: TestCA, client: Issued
) -> None:
    first = _snapshot(ca, client)
    second = _snapshot(ca, client, first)
    one, two = snapshot_services(first), snapshot_services(second)
    assert two["ca"].tls is one["ca"].tls
    assert two["mtls"].tls is one["mtls"].tls
    third = _snapshot(ca, client, second, tls_server_name="other.internal")
    renamed, kept = snapshot_services(third)["mtls"].tls, two["mtls"].tls
    assert renamed is not None
    assert kept is not None
    assert renamed is not kept
    assert renamed.context is kept.context
    fourth = _snapshot(ca, client, third, client_certificate=None)
    without = snapshot_services(fourth)["mtls"].tls
    assert without is not None
    assert without.context is not renamed.context


def test_routes_compile_their_redirect_status_and_hsts_value(ca: TestCA, client: Issued) -> None:
    routes = {spec.payload.name: spec.payload for spec in _snapshot(ca, client).router.specs}
    assert (routes["r"].https_redirect, routes["r"].hsts) == (308, None)
    assert routes["h"].https_redirect == 301
    assert routes["h"].hsts == b"max-age=10; includeSubDomains"
