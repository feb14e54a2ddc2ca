"""Which server runs the TLS port (PORTCULLIS_PROXY_TLS_ENGINE) and granian's certificate file."""

from __future__ import annotations

import stat

import pytest

from portcullis.errors import UserError
from portcullis.model.certificates import Certificate
from portcullis.settings import Settings
from portcullis.supervision.tls_engine import TlsControl, choose_engine, write_pem


@pytest.mark.parametrize(
    ("setting", "served", "client_ca", "engine"),
    [
        ("auto", 1, False, "granian"),
        ("auto", 2, False, "hypercorn"),
        ("auto", 0, False, "hypercorn"),  # PORTCULLIS_PROXY_TLS=on before any certificate
        ("auto", 1, True, "hypercorn"),  # mtls-auth needs the ASGI tls extension
        ("granian", 1, False, "granian"),
        ("hypercorn", 1, False, "hypercorn"),
        ("hypercorn", 3, True, "hypercorn"),
    ],
)
def test_granian_serves_one_certificate_without_a_client_ca(
    setting: str, served: int, client_ca: bool, engine: str
) -> None:
    assert choose_engine(setting, served, client_ca) == engine


@pytest.mark.parametrize(
    ("served", "client_ca", "why"), [(2, False, "2 certificates"), (1, True, "CLIENT_CA")]
)
def test_forcing_granian_where_it_cannot_serve_names_the_setting(
    served: int, client_ca: bool, why: str
) -> None:
    with pytest.raises(UserError, match="PORTCULLIS_PROXY_TLS_ENGINE=granian") as caught:
        choose_engine("granian", served, client_ca)
    assert why in str(caught.value)


def cert(name: str, *snis: str) -> Certificate:
    return Certificate.model_construct(
        name=name, cert=f"CERT {name}\n", key=f"KEY {name}", snis=list(snis)
    )


def test_one_served_certificate_runs_granian_from_a_private_file_removed_on_stop() -> None:
    # A certificate without server names is presented to origins only: not served.
    control = TlsControl(Settings(), [cert("a", "*.example.com"), cert("origin")])
    try:
        assert control.engine == "granian"
        (plane,) = control.planes
        pem = control.directory / "served.pem"
        assert plane.argv[plane.argv.index("--ssl-certificate") + 1] == str(pem)
        assert plane.argv[plane.argv.index("--ssl-protocol-min") + 1] == "tls1.2"
        assert plane.argv[plane.argv.index("--http") + 1] == "auto"
        assert pem.read_text() == "KEY a\nCERT a\n"
        assert stat.S_IMODE(pem.stat().st_mode) == 0o600
        assert stat.S_IMODE(control.directory.stat().st_mode) == 0o700
        write_pem(control.directory, (("b", "CERT b\n", "KEY b\n", ("b.example",)),))
        assert pem.read_text() == "KEY b\nCERT b\n"
        assert [p.name for p in control.directory.iterdir()] == ["served.pem"]
    finally:
        control.stop()
    assert not control.directory.exists()


def test_two_certificates_run_hypercorn_per_worker() -> None:
    control = TlsControl(Settings(workers=2), [cert("a", "a.example"), cert("b", "b.example")])
    try:
        assert control.engine == "hypercorn"
        assert [p.name for p in control.planes] == ["TLS data plane 1", "TLS data plane 2"]
    finally:
        control.stop()


def test_a_config_that_forced_granian_cannot_serve_keeps_the_served_certificate() -> None:
    control = TlsControl(Settings(proxy_tls_engine="granian"), [cert("a", "a.example")])
    try:
        planes = control.planes
        control._latest = (("a", "C", "K", ("a.example",)), ("b", "C", "K", ("b.example",)))
        control.tick(None)  # type: ignore[arg-type]  # nothing to start: no supervisor needed
        assert (control.engine, control.planes) == ("granian", planes)
        assert (control.directory / "served.pem").read_text() == "KEY a\nCERT a\n"
    finally:
        control.stop()
