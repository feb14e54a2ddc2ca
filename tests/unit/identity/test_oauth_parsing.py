"""The OAuth2 server's request parsing, scope rules, failure window and key thumbprints."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from unittest import mock

import pytest

from portcullis.identity.oauth_clients import (
    ClientStatus,
    OAuthClient,
    generate_client_id,
    generate_client_secret,
    looks_like_client_id,
)
from portcullis.identity.oauth_server import (
    FailureWindow,
    OAuthError,
    OAuthServer,
    client_credentials,
    parse_form,
)
from portcullis.identity.signing import generate_key, jwk_thumbprint

FORM = "application/x-www-form-urlencoded"


def basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


def client(*scopes: str) -> OAuthClient:
    now = datetime.now(UTC)
    return OAuthClient(
        client_id="pcc_" + "0" * 24,
        consumer="acme",
        organization=None,
        organization_id=None,
        name="svc",
        allowed_scopes=scopes,
        token_ttl=3600,
        status=ClientStatus.ACTIVE,
        created_by="test",
        created_at=now,
        updated_at=now,
    )


def test_parse_form_accepts_urlencoded_bodies_with_a_charset() -> None:
    body = b"grant_type=client_credentials&scope=a+b&empty="
    form = parse_form(f"{FORM}; charset=UTF-8", body)
    assert form == {"grant_type": "client_credentials", "scope": "a b", "empty": ""}


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("application/json", b'{"grant_type": "client_credentials"}', FORM),
        (None, b"grant_type=x", FORM),
        (FORM, b"a=1&a=2", "repeated"),
        (FORM, b"a=\xff", "not valid form data"),
        (FORM, b"a=" + b"x" * 20_000, "too large"),
    ],
)
def test_parse_form_refuses_what_rfc6749_forbids(
    content_type: str | None, body: bytes, reason: str
) -> None:
    with pytest.raises(OAuthError) as refused:
        parse_form(content_type, body)
    assert refused.value.error == "invalid_request"
    assert refused.value.status == 400
    assert reason in refused.value.description


def test_client_credentials_from_basic_are_form_decoded() -> None:
    creds = client_credentials(basic("pcc_1:se%3Acret+x"), {})
    assert (creds.client_id, creds.client_secret, creds.method) == (
        "pcc_1",
        "se:cret x",
        "client_secret_basic",
    )
    same_id = client_credentials(basic("pcc_1:s"), {"client_id": "pcc_1"})
    assert same_id.client_secret == "s"
    post = client_credentials(None, {"client_id": "pcc_2", "client_secret": "t"})
    assert (post.client_id, post.client_secret, post.method) == ("pcc_2", "t", "client_secret_post")


@pytest.mark.parametrize(
    ("authorization", "form", "error", "status"),
    [
        (None, {}, "invalid_client", 401),
        (None, {"client_id": "pcc_1"}, "invalid_client", 401),
        ("Bearer abc", {}, "invalid_client", 401),
        ("Basic !!!", {}, "invalid_client", 401),
        (basic("no-colon"), {}, "invalid_client", 401),
        (basic("pcc_1:s"), {"client_secret": "s"}, "invalid_request", 400),
        (basic("pcc_1:s"), {"client_id": "pcc_2"}, "invalid_request", 400),
    ],
)
def test_client_credentials_refusals(
    authorization: str | None, form: dict[str, str], error: str, status: int
) -> None:
    with pytest.raises(OAuthError) as refused:
        client_credentials(authorization, form)
    assert (refused.value.error, refused.value.status) == (error, status)
    if status == 401:
        assert refused.value.headers["WWW-Authenticate"].startswith("Basic ")


def test_scopes_default_to_all_allowed_and_refuse_any_other() -> None:
    c = client("read", "write")
    assert OAuthServer.grantable_scopes(c, None) == ["read", "write"]
    assert OAuthServer.grantable_scopes(c, "write read write") == ["write", "read"]
    assert OAuthServer.grantable_scopes(c, "") == []
    with pytest.raises(OAuthError) as refused:
        OAuthServer.grantable_scopes(c, "read admin root")
    assert refused.value.error == "invalid_scope"
    assert refused.value.description.endswith("admin root")
    assert refused.value.body() == {
        "error": "invalid_scope",
        "error_description": refused.value.description,
    }


def test_failure_window_locks_after_the_limit_and_forgets_after_the_window() -> None:
    window = FailureWindow(limit=2, window=60, max_entries=2)
    with mock.patch("portcullis.identity.oauth_server.time.monotonic", return_value=100.0):
        window.fail("a")
        assert window.retry_after("a") == 0
        window.fail("a")
        assert window.retry_after("a") == 61
        assert window.retry_after("b") == 0
    with mock.patch("portcullis.identity.oauth_server.time.monotonic", return_value=160.5):
        assert window.retry_after("a") == 0
    window.fail("x")
    window.succeed("x")
    assert window.retry_after("x") == 0


def test_failure_window_is_bounded() -> None:
    window = FailureWindow(limit=1, window=60, max_entries=2)
    for key in ("a", "b", "c"):
        window.fail(key)
    assert window.retry_after("a") == 0  # evicted, oldest first
    assert window.retry_after("b") > 0
    assert window.retry_after("c") > 0


def test_client_ids_and_secrets() -> None:
    client_id, secret = generate_client_id(), generate_client_secret()
    assert looks_like_client_id(client_id)
    assert not looks_like_client_id("pcc_../etc")
    assert secret.startswith("pcs_")
    assert len(base64.urlsafe_b64decode(secret[4:] + "=")) == 32
    assert generate_client_secret() != secret


def test_jwk_thumbprint_matches_rfc7638_example() -> None:
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1"
        "L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5"
        "v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08q"
        "NLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awap"
        "JzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_generated_keys_publish_public_members_only() -> None:
    _, ec_jwk = generate_key("ES256")
    assert set(ec_jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert ec_jwk["kid"] == jwk_thumbprint(ec_jwk)
    _, rsa_jwk = generate_key("RS256")
    assert set(rsa_jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    with pytest.raises(ValueError, match="unsupported"):
        generate_key("none")
