"""Pure parts of the supervisor: restart backoff, exit descriptions, granian's options."""

from __future__ import annotations

import signal

from portcullis.settings import Settings
from portcullis.supervision.planes import DATA_PLANE_TARGET, gateway_planes, granian_argv
from portcullis.supervision.supervisor import describe_exit, restart_delay


def test_restart_delay_doubles_up_to_ten_seconds() -> None:
    assert [restart_delay(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_exit_descriptions() -> None:
    assert describe_exit(1) == "exited with status 1"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_granian_gets_the_connection_settings() -> None:
    settings = Settings(
        client_header_timeout=1.5,
        max_connections_per_worker=3000,
        listen_backlog=512,
        shutdown_grace=7,
    )
    argv = granian_argv(DATA_PLANE_TARGET, "127.0.0.1", 8000, 2, settings)
    assert argv[1:3] == ["-m", "portcullis.supervision.plane_process"]
    assert "--respawn-failed-workers" in argv
    assert option(argv, "--http1-header-read-timeout") == "1500"
    assert option(argv, "--backpressure") == "3000"
    assert option(argv, "--backlog") == "512"
    assert option(argv, "--workers-kill-timeout") == "7"
    assert option(argv, "--workers") == "2"
    assert option(argv, "--factory") == DATA_PLANE_TARGET


def test_the_gateway_has_a_data_plane_with_its_workers_and_one_control_plane() -> None:
    data, control = gateway_planes(Settings(workers=3, proxy_port=9100, admin_port=9101))
    assert (data.port, option(data.argv, "--workers")) == (9100, "3")
    assert (control.port, option(control.argv, "--workers")) == (9101, "1")


def test_the_control_plane_takes_every_stream_the_cap_allows_and_other_requests_too() -> None:
    # Each open live stream holds one of granian's request slots for as long as it lasts.
    data, control = gateway_planes(Settings(stream_max_clients=10_000))
    assert option(data.argv, "--backpressure") == "8192"
    assert int(option(control.argv, "--backpressure")) >= 10_000 + 1024
    _, small = gateway_planes(Settings(stream_max_clients=100, max_connections_per_worker=4096))
    assert option(small.argv, "--backpressure") == "4096"


def test_the_tls_port_gets_one_plane_per_worker_and_admin_tls_goes_to_granian() -> None:
    settings = Settings(
        workers=2,
        proxy_tls_port=9443,
        admin_tls_cert_file="/c.pem",  # type: ignore[arg-type]
        admin_tls_key_file="/k.pem",  # type: ignore[arg-type]
    )
    planes = gateway_planes(settings, tls=True)
    tls = [p for p in planes if p.name.startswith("TLS")]
    assert [(p.port, option(p.argv, "--port")) for p in tls] == [(9443, "9443")] * 2
    control = next(p for p in planes if p.name == "control plane")
    assert option(control.argv, "--ssl-certificate") == "/c.pem"
    assert option(control.argv, "--ssl-protocol-min") == "tls1.2"
    assert settings.admin_url.startswith("https://")
    assert len(gateway_planes(Settings())) == 2  # no TLS port unless asked
