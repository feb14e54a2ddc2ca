"""The start-time port check: any listener on the address counts, SO_REUSEPORT or not."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from portcullis.errors import UserError
from portcullis.supervision.planes import Plane
from portcullis.supervision.ports import port_in_use, refuse_held_ports
from support.servers import free_port


def listener(host: str, *, reuse_port: bool) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # As granian binds: a second SO_REUSEPORT bind by the same user would succeed.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    sock.listen()
    return sock


@pytest.fixture(params=[True, False], ids=["reuseport", "plain"])
def held(request: pytest.FixtureRequest) -> Iterator[int]:
    with listener("127.0.0.1", reuse_port=request.param) as sock:
        yield sock.getsockname()[1]


def test_a_port_with_a_listener_is_in_use(held: int) -> None:
    assert port_in_use("127.0.0.1", held)


def test_a_wildcard_listener_holds_the_loopback_address() -> None:
    with listener("0.0.0.0", reuse_port=True) as sock:
        assert port_in_use("127.0.0.1", sock.getsockname()[1])


def test_a_free_port_is_not_in_use() -> None:
    assert not port_in_use("127.0.0.1", free_port())


def test_connections_left_in_time_wait_do_not_hold_the_port() -> None:
    with listener("127.0.0.1", reuse_port=False) as sock:
        port = sock.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = sock.accept()
        # The server side closes first, so its end of the connection is in TIME_WAIT.
        accepted.close()
        client.close()
    assert not port_in_use("127.0.0.1", port)


def plane(name: str, port: int, host: str = "127.0.0.1") -> Plane:
    return Plane(name, [], host, port)


def test_refusal_names_the_plane_and_the_address(held: int) -> None:
    with pytest.raises(UserError) as caught:
        refuse_held_ports([plane("data plane", free_port()), plane("control plane", held)])
    assert f"127.0.0.1:{held} (the control plane) is already in use" in caught.value.message


def test_two_planes_on_one_address_are_refused() -> None:
    port = free_port()
    with pytest.raises(UserError, match=r"both set to 127\.0\.0\.1:"):
        refuse_held_ports([plane("data plane", port), plane("control plane", port)])


def test_an_address_that_is_not_local_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"cannot listen on 192\.0\.2\.1"):
        refuse_held_ports([plane("data plane", free_port(), host="192.0.2.1")])


def test_free_ports_pass() -> None:
    refuse_held_ports([plane("data plane", free_port()), plane("control plane", free_port())])
