"""check_request_head: the transports' last check before a request goes on the wire."""

from __future__ import annotations

import pytest

from portcullis.upstream.http1 import build_request_head
from portcullis.upstream.transport import InvalidRequest, check_request_head

OK = [(b"host", b"up.example"), (b"user-agent", b"ua/1 (x; y)"), (b"x-name", b"caf\xc3\xa9\t!")]


def test_a_valid_head_passes() -> None:
    check_request_head("GET", b"/a/b%2F?q=1&r=%C3%A9", OK)
    check_request_head("PROPFIND", b"/", OK)


@pytest.mark.parametrize(
    "value",
    [
        b"crm-42\r\nx-smuggled: 1",
        b"x\r\n\r\nGET /admin HTTP/1.1\r\nhost: up\r\n\r\n",
        b"trailing-lf\n",
        b"bare\rcr",
        b"nul\x00",
        b"vertical\x0btab",
        b"del\x7f",
    ],
)
def test_values_with_control_characters_are_refused(value: bytes) -> None:
    with pytest.raises(InvalidRequest, match="x-consumer-custom-id") as info:
        check_request_head("GET", b"/", [*OK, (b"x-consumer-custom-id", value)])
    assert info.value.request_sent is False


@pytest.mark.parametrize(
    "name", [b"x-a\r\nx-b", b"x a", b"x-a:", b"", b"transfer-encoding ", b"x\x00", b"(x)"]
)
def test_names_that_are_not_tokens_are_refused(name: bytes) -> None:
    with pytest.raises(InvalidRequest, match="header name"):
        check_request_head("GET", b"/", [*OK, (name, b"v")])


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", b"/a b"),
        ("GET", b"/a\r\nx: y"),
        ("GET", b"/\x00"),
        ("GET", b""),
        ("GET /x HTTP/1.1\r\nhost: a\r\n\r\nGET", b"/"),
        ("GE T", b"/"),
    ],
)
def test_bad_request_lines_are_refused(method: str, target: bytes) -> None:
    with pytest.raises(InvalidRequest, match="request line"):
        check_request_head(method, target, OK)


def test_the_http1_serializer_checks_before_building() -> None:
    with pytest.raises(InvalidRequest):
        build_request_head("GET", b"/", [(b"x", b"a\r\nb: c")], None, False)
