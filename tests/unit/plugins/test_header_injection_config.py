"""Plugin configs refuse text that would become a broken header (CR, LF, NUL...).

`re.match` with a `$`-anchored pattern accepts a trailing "\\n"; each case below
was accepted before the plugins used `fullmatch` (or the shared http_fields checks).
"""

from __future__ import annotations

from typing import Any

import pytest
from test_jwt_auth import NOW, SECRETS, bearer, build, hs256_raw, make_ctx

from portcullis.model.plugins.registry import validate_plugin

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("request-transformer", {"headers": {"set": {"x-a": "v\n"}}}, "headers.set"),
    ("request-transformer", {"headers": {"add": {"x-a": "a\r\nx-b: c"}}}, "headers.add"),
    ("request-transformer", {"headers": {"add": {"x-a\n": "v"}}}, "headers.add"),
    ("request-transformer", {"headers": {"rename": {"x-a": "x-b\n"}}}, "headers.rename"),
    ("request-transformer", {"headers": {"remove": ["x-a\r\n"]}}, "headers.remove"),
    ("response-transformer", {"headers": {"set": {"x-a": "v\n"}}}, "headers.set"),
    ("response-transformer", {"headers": {"add": {"x-a": "v\x00"}}}, "headers.add"),
    ("cors", {"origins": ["https://a.example"], "exposed_headers": ["x-a\n"]}, "exposed"),
    ("cors", {"origins": ["https://a.example"], "headers": ["x-a\n"]}, "headers"),
    ("cors", {"origins": ["https\n://a.example"]}, "origins"),
    ("key-auth", {"realm": "api\n"}, "realm"),
    ("jwt-auth", {"keys": [{"algorithm": "HS256", "secret": "a" * 32}], "realm": "a\x00"}, "realm"),
    (
        "jwt-auth",
        {"keys": [{"kid": "k\r\nx-b: 1", "algorithm": "HS256", "secret": "a" * 32}]},
        "kid",
    ),
    ("rate-limit", {"limits": [{"requests": 1, "per": "1s"}], "cost_header": "x-c\n"}, "cost"),
    ("response-cache", {"vary_headers": ["accept\n"]}, "vary_headers"),
]


@pytest.mark.parametrize(("plugin", "config", "where"), CASES)
def test_header_text_with_control_characters_is_a_config_error(
    plugin: str, config: dict[str, Any], where: str
) -> None:
    errors = validate_plugin(plugin, config)
    assert errors, f"{plugin} accepted {config}"
    assert any(where in e for e in errors), errors


async def test_a_token_whose_claims_would_break_a_header_is_refused() -> None:
    # The signature is good; the scopes ("scp" list items are not split on spaces)
    # would be copied into X-Consumer-Scopes.
    plugin = build({"keys": [{"kid": "hk", "algorithm": "HS256", "secret": SECRETS["HS256"]}]})
    payload = {"sub": "alice", "iat": NOW - 10, "exp": NOW + 300, "scp": ["a\r\nx-b: 1"]}
    ctx = make_ctx(bearer(hs256_raw({"alg": "HS256", "kid": "hk"}, payload)))
    reply = await plugin.access(ctx)
    assert reply is not None
    assert reply.status == 401
    assert all(b"\n" not in v for _, v in ctx.upstream_headers)
