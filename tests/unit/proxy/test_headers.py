from __future__ import annotations

import os
import re

from portcullis.proxy.headers import (
    RandomHex,
    TrustedProxies,
    rewrite_request_headers,
    rewrite_response_headers,
    sample_threshold,
    valid_traceparent,
)


def rewrite(headers: list[tuple[bytes, bytes]], **kw: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = {
        "client_ip": "10.0.0.9",
        "scheme": "http",
        "server_port": 8000,
        "upstream_host": b"backend:9000",
        "preserve_host": False,
        "via": b"1.1 portcullis",
        "trusted": False,
    }
    args.update(kw)
    out, info = rewrite_request_headers(headers, **args)  # type: ignore[arg-type]
    return dict(out), out, info


def test_hop_by_hop_and_connection_named_fields_removed() -> None:
    d, _, _ = rewrite(
        [
            (b"host", b"gw"),
            (b"connection", b"keep-alive, X-Secret"),
            (b"x-secret", b"1"),
            (b"keep-alive", b"timeout=5"),
            (b"te", b"trailers"),
            (b"proxy-authorization", b"x"),
            (b"upgrade", b"h2c"),
            (b"x-ok", b"1"),
        ]
    )
    for gone in (
        b"connection",
        b"x-secret",
        b"keep-alive",
        b"te",
        b"proxy-authorization",
        b"upgrade",
    ):
        assert gone not in d
    assert d[b"x-ok"] == b"1"
    assert d[b"host"] == b"backend:9000"


def test_untrusted_peer_forwarding_headers_are_replaced() -> None:
    d, _, _ = rewrite(
        [
            (b"host", b"gw.example"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-forwarded-proto", b"https"),
            (b"forwarded", b"for=1.2.3.4"),
        ]
    )
    assert d[b"x-forwarded-for"] == b"10.0.0.9"
    assert d[b"x-forwarded-proto"] == b"http"
    assert d[b"x-forwarded-host"] == b"gw.example"
    assert d[b"x-forwarded-port"] == b"8000"
    assert d[b"forwarded"] == b'for=10.0.0.9;proto=http;host="gw.example"'


def test_trusted_peer_forwarding_headers_are_appended() -> None:
    d, _, _ = rewrite(
        [
            (b"host", b"gw"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-forwarded-proto", b"https"),
            (b"forwarded", b"for=1.2.3.4"),
        ],
        trusted=True,
    )
    assert d[b"x-forwarded-for"] == b"1.2.3.4, 10.0.0.9"
    assert d[b"x-forwarded-proto"] == b"https"
    assert d[b"forwarded"] == b'for=1.2.3.4, for=10.0.0.9;proto=http;host="gw"'


def test_ipv6_forwarded_node_is_quoted() -> None:
    d, _, _ = rewrite([(b"host", b"gw")], client_ip="2001:db8::1")
    assert d[b"forwarded"].startswith(b'for="[2001:db8::1]"')


def test_via_is_appended_and_host_preserved_when_asked() -> None:
    d, _, _ = rewrite([(b"host", b"public.example"), (b"via", b"1.0 edge")], preserve_host=True)
    assert d[b"via"] == b"1.0 edge, 1.1 portcullis"
    assert d[b"host"] == b"public.example"


def test_request_id_kept_when_valid_and_replaced_when_not() -> None:
    _, _, info = rewrite([(b"x-request-id", b"abc-123")])
    assert info.request_id == b"abc-123"
    _, _, info = rewrite([(b"x-request-id", b"bad id with spaces")])
    assert len(info.request_id) == 32


def test_traceparent_propagated_or_generated() -> None:
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    d, _, _ = rewrite([(b"traceparent", tp)])
    assert d[b"traceparent"] == tp
    d, _, info = rewrite([(b"traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")])
    assert d[b"traceparent"] != tp
    assert valid_traceparent(d[b"traceparent"])
    assert d[b"traceparent"].split(b"-")[1] == info.request_id


def test_valid_traceparent_rules() -> None:
    assert valid_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert not valid_traceparent(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert not valid_traceparent(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01")
    assert not valid_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01")


def test_body_framing_detection_and_smuggling() -> None:
    _, _, info = rewrite([(b"content-length", b"12")])
    assert (info.content_length, info.chunked, info.invalid) == (12, False, None)
    _, _, info = rewrite([(b"transfer-encoding", b"chunked")])
    assert info.chunked
    assert info.invalid is None
    _, _, info = rewrite([(b"content-length", b"3"), (b"transfer-encoding", b"chunked")])
    assert info.invalid is not None
    _, _, info = rewrite([(b"content-length", b"3"), (b"content-length", b"4")])
    assert info.invalid is not None
    _, _, info = rewrite([(b"transfer-encoding", b"chunked, gzip")])
    assert info.invalid is not None
    _, _, info = rewrite([(b"content-length", b"abc")])
    assert info.invalid is not None


def test_content_length_not_copied_but_reported() -> None:
    d, _, info = rewrite([(b"content-length", b"5")])
    assert b"content-length" not in d
    assert info.content_length == 5


def test_response_headers() -> None:
    out = rewrite_response_headers(
        [
            (b"Content-Type", b"text/plain"),
            (b"connection", b"close, x-internal"),
            (b"x-internal", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"keep-alive", b"timeout=5"),
            (b"via", b"1.1 upstream"),
        ],
        via=b"1.1 portcullis",
    )
    assert out == [(b"content-type", b"text/plain"), (b"via", b"1.1 upstream, 1.1 portcullis")]


def test_trusted_proxies() -> None:
    t = TrustedProxies(["10.0.0.0/8", "::1/128"])
    assert t.trusts("10.1.2.3")
    assert t.trusts("::1")
    assert not t.trusts("11.0.0.1")
    assert not t.trusts("not-an-ip")
    assert not TrustedProxies([])


def test_client_behind_trusted_proxies_is_the_rightmost_untrusted_hop() -> None:
    from portcullis.proxy.headers import TrustedProxies

    trusted = TrustedProxies(["10.0.0.0/8"])
    # A client-supplied first entry (6.6.6.6) is not believed: 1.2.3.4 was added by our proxy.
    assert trusted.client_of("10.0.0.1", [b"6.6.6.6, 1.2.3.4", b"10.0.0.2"]) == "1.2.3.4"
    assert trusted.client_of("10.0.0.1", [b"10.0.0.3"]) == "10.0.0.3"
    assert trusted.client_of("10.0.0.1", [b"not-an-ip"]) == "10.0.0.1"
    assert trusted.client_of("8.8.8.8", [b"1.2.3.4"]) == "8.8.8.8"


def test_tracing_gateway_sends_its_own_parent_id_keeping_trace_and_flags() -> None:
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    d, _, info = rewrite([(b"traceparent", tp)], sample_threshold=sample_threshold(1.0))
    sent = d[b"traceparent"]
    assert valid_traceparent(sent)
    assert sent[:36] == tp[:36]
    assert sent[52:] == tp[52:]
    assert sent[36:52] != tp[36:52]
    assert info.client_parent_id == b"00f067aa0ba902b7"


def test_a_trace_the_gateway_records_is_sent_upstream_sampled() -> None:
    # W3C Trace Context §3.2.2.5.1: the sampled flag says the caller may have recorded
    # the trace; an exported trace sent as `-00` loses the upstream's half of it.
    everything, nothing = sample_threshold(1.0), sample_threshold(0.0)
    d, _, _ = rewrite([], sample_threshold=everything)
    assert valid_traceparent(d[b"traceparent"])
    assert d[b"traceparent"].endswith(b"-01")
    # The client's unsampled trace becomes sampled once the gateway records it ...
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    d, _, _ = rewrite([(b"traceparent", tp)], sample_threshold=everything)
    assert d[b"traceparent"].endswith(b"-01")
    # ... and one the gateway drops says so, keeping the other flag bits.
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
    d, _, _ = rewrite([(b"traceparent", tp)], sample_threshold=nothing)
    assert d[b"traceparent"].endswith(b"-02")
    # The flag follows the exporter's own ratio rule, trace by trace.
    half = sample_threshold(0.5)
    low = b"00-" + b"f" * 16 + b"0" * 15 + b"1-00f067aa0ba902b7-00"
    high = b"00-" + b"0" * 16 + b"f" * 16 + b"-00f067aa0ba902b7-00"
    assert rewrite([(b"traceparent", low)], sample_threshold=half)[0][b"traceparent"][-2:] == b"01"
    assert rewrite([(b"traceparent", high)], sample_threshold=half)[0][b"traceparent"][-2:] == b"00"
    # Without tracing nothing is recorded and the client's header is passed through.
    d, _, _ = rewrite([])
    assert d[b"traceparent"].endswith(b"-00")


def test_without_tracing_the_client_parent_id_is_forwarded() -> None:
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    _, _, info = rewrite([(b"traceparent", tp)])
    assert info.client_parent_id == b""


def test_cookie_crumbs_are_joined_into_one_field_line() -> None:
    _, out, _ = rewrite([(b"host", b"gw"), (b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert [v for n, v in out if n == b"cookie"] == [b"a=1; b=2"]
    _, out, _ = rewrite([(b"host", b"gw"), (b"cookie", b"a=1")])
    assert [v for n, v in out if n == b"cookie"] == [b"a=1"]


def test_a_second_host_makes_the_request_invalid() -> None:
    # proxy.target refuses it before routing; this pass must not pick one silently.
    _, _, info = rewrite([(b"host", b"a.example"), (b"host", b"b.example")], preserve_host=True)
    assert info.invalid == "more than one Host header"
    _, _, info = rewrite([(b"host", b"a.example")], preserve_host=True)
    assert info.invalid is None


def test_method_overrides_never_reach_the_upstream() -> None:
    d, _, _ = rewrite(
        [
            (b"host", b"gw"),
            (b"x-http-method-override", b"DELETE"),
            (b"x-http-method", b"DELETE"),
            (b"x-method-override", b"DELETE"),
            (b"x-kept", b"1"),
        ]
    )
    assert not {b"x-http-method-override", b"x-http-method", b"x-method-override"} & d.keys()
    assert d[b"x-kept"] == b"1"


def test_random_hex_draws_fresh_lowercase_hex_and_refills() -> None:
    source = RandomHex(chunk=16)  # 32 digits per draw from the OS: refills often
    taken = [source.take(16) for _ in range(50)]
    assert all(len(t) == 16 and re.fullmatch(rb"[0-9a-f]{16}", t) for t in taken)
    assert len(set(taken)) == 50
    assert len(source.take(40)) == 40  # more than one chunk at once


def test_random_hex_of_a_forked_child_differs_from_its_parent() -> None:
    source = RandomHex()
    source.take(2)  # the parent has a buffer the child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, source.take(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != source.take(32)
