"""When `portcullis serve` runs the TLS port: PORTCULLIS_PROXY_TLS auto / on / off."""

from __future__ import annotations

import socket

import pytest

from portcullis.commands.serve import with_tls
from portcullis.errors import UserError
from portcullis.model.certificates import Certificate
from portcullis.settings import Settings
from portcullis.supervision.planes import gateway_planes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("mode", "serves_certificates", "tls"),
    [("auto", False, False), ("auto", True, True), ("on", False, True), ("off", True, False)],
)
def test_the_tls_port_runs_when_asked_or_when_the_config_serves_a_certificate(
    mode: str, serves_certificates: bool, tls: bool
) -> None:
    settings = Settings(proxy_tls=mode, proxy_tls_port=free_port())  # type: ignore[arg-type]
    planes = gateway_planes(settings)
    served = [Certificate.model_construct(name="a", cert="C", key="K", snis=["a.example"])]
    control = with_tls(planes, settings, served if serves_certificates else [])
    assert (control is not None) is tls
    if control is not None:
        assert control.planes[0].name.startswith("TLS")
        control.stop()


def test_a_tls_port_equal_to_the_plain_port_is_refused() -> None:
    port = free_port()
    settings = Settings(proxy_tls="on", proxy_port=port, proxy_tls_port=port)
    with pytest.raises(UserError, match="both set to"):
        with_tls(gateway_planes(settings), settings, [])
