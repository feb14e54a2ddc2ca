"""jwt-auth end to end: a real gateway (`portcullis serve`), the demo upstream's /echo,
and a JWKS endpoint served from this process on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import get_default_algorithms

from support.servers import Gateway, free_port, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
ISSUER = "https://idp.test/"
HS_SECRET = "e2e-hmac-secret-0123456789abcdefghij"
PROBLEM = "application/problem+json"


@dataclass
class Signer:
    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> Signer:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> Signer:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        alg = get_default_algorithms()[self.algorithm]
        data = alg.to_jwk(self.private.public_key(), as_dict=True)
        return {**data, "kid": self.kid, "alg": self.algorithm, "use": "sig"}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def token(self, **claims: Any) -> str:
        return jwt.encode(
            standard_claims(**claims),
            self.private,
            algorithm=self.algorithm,
            headers={"kid": self.kid},
        )


def standard_claims(**claims: Any) -> dict[str, Any]:
    now = time.time()
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "orders",
        "sub": "alice",
        "iat": int(now),
        "exp": int(now) + 300,
        "jti": uuid.uuid4().hex,  # every token distinct: no verification-cache hits
        **claims,
    }
    return {k: v for k, v in body.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class JwksState:
    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: JwksState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with state.lock:
                state.hits += 1
                status, keys = state.status, list(state.keys)
            body = json.dumps({"keys": keys}).encode() if status == 200 else b"down"
            self.send_response(status)
            self.send_header("content-type", "application/jwk-set+json")
            self.send_header("content-length", str(len(body)))
            self.send_header("cache-control", "max-age=0")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@dataclass
class JwksEndpoint:
    state: JwksState
    url: str


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksEndpoint]:
    state = JwksState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield JwksEndpoint(state, f"http://127.0.0.1:{server.server_address[1]}/jwks.json")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {"rsa-1": Signer.rsa("rsa-1"), "ec-2": Signer.ec("ec-2")}


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


def gateway_config(upstream: int, jwks_url: str) -> dict[str, Any]:
    jwks_source = {
        "url": jwks_url,
        "algorithms": ["RS256", "ES256"],
        "min_ttl": 0,
        "refetch_interval": 0,
    }
    common = {
        "issuers": [ISSUER],
        "audiences": ["orders"],
        "leeway": 5,
    }
    return {
        "consumers": [
            {"username": "alice", "custom_id": "A-1", "groups": ["staff", "beta"]},
            {"username": "bob", "status": "suspended"},
        ],
        "services": [{"name": "demo", "url": f"http://127.0.0.1:{upstream}"}],
        "routes": [
            {"name": "jwt", "service": "demo", "paths": ["/jwt"]},
            {"name": "jwt-alt", "service": "demo", "paths": ["/jwt-alt"]},
            {"name": "jwt-dead", "service": "demo", "paths": ["/jwt-dead"]},
        ],
        "plugins": [
            {
                "name": "jwt-auth",
                "route": "jwt",
                "config": {
                    **common,
                    "realm": "orders-api",
                    "keys": [
                        {"kid": "hs-1", "algorithm": "HS256", "secret_env": "E2E_JWT_SECRET"},
                    ],
                    "jwks": [jwks_source],
                },
            },
            {
                "name": "jwt-auth",
                "route": "jwt-alt",
                "config": {
                    **common,
                    "header": "x-token",
                    "cookie": "session",
                    "query_param": "access_token",
                    "jwks": [jwks_source],
                },
            },
            {
                "name": "jwt-auth",
                "route": "jwt-dead",
                "config": {
                    **common,
                    "jwks": [
                        {
                            "url": f"http://127.0.0.1:{free_port()}/jwks.json",
                            "algorithms": ["RS256"],
                            "timeout": 2,
                        }
                    ],
                },
            },
        ],
    }


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: int,
    jwks: JwksEndpoint,
    signers: dict[str, Signer],
) -> Iterator[Gateway]:
    jwks.state.keys = [signers["rsa-1"].jwk()]
    tmp: Path = tmp_path_factory.mktemp("jwt-gw")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream, jwks.url)))
    with gateway(tmp, cfg, extra_env={"E2E_JWT_SECRET": HS_SECRET}) as g:
        yield g


@pytest.fixture
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        yield c


def echo(response: httpx.Response) -> tuple[list[tuple[str, str]], str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return [(k, v) for k, v in body["headers"]], body["query"]


def refused(response: httpx.Response, status: int = 401) -> str:
    """The RFC 6750 error_description of a refusal (checking status and problem body)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"] == "https://portcullis.dev/problems/unauthorized"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="orders-api", error="invalid_token", ')
    return challenge.split('error_description="', 1)[1].rstrip('"')


def auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_jwks_token_reaches_upstream_with_identity_headers(
    client: httpx.Client, signers: dict[str, Signer]
) -> None:
    token = signers["rsa-1"].token(scope="orders:write orders:read")
    headers, _ = echo(
        client.get(
            "/jwt/echo",
            headers={
                **auth(token),
                "x-consumer-id": "root",
                "x-consumer-groups": "admins",
                "x-credential-id": "forged",
                "x-consumer-scopes": "everything",
            },
        )
    )
    names = [k for k, _ in headers]
    assert "authorization" not in names
    got = dict(headers)
    assert names.count("x-consumer-id") == 1
    assert got["x-consumer-id"] == "alice"
    assert got["x-consumer-name"] == "alice"
    assert got["x-consumer-custom-id"] == "A-1"
    assert got["x-consumer-groups"] == "staff, beta"
    assert got["x-credential-id"] == "jwt:rsa-1"
    assert got["x-consumer-scopes"] == "orders:read orders:write"
    assert token not in json.dumps(headers)


def test_static_hmac_key_from_the_environment(client: httpx.Client) -> None:
    token = jwt.encode(
        standard_claims(sub="A-1"), HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"}
    )
    r = client.get("/jwt/echo", headers=auth(token))
    # The route maps `sub` by username: A-1 is alice's custom id, not a username.
    assert refused(r) == "unknown consumer"
    token = jwt.encode(standard_claims(), HS_SECRET, algorithm="HS256", headers={"kid": "hs-1"})
    headers, _ = echo(client.get("/jwt/echo", headers=auth(token)))
    assert dict(headers)["x-credential-id"] == "jwt:hs-1"


def test_missing_token_gets_a_bare_challenge(client: httpx.Client) -> None:
    for headers in ({}, {"authorization": "Basic YWxpY2U6cHc="}):
        r = client.get("/jwt/echo", headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="orders-api"'
        assert r.headers["content-type"] == PROBLEM


def test_refusals_name_the_reason(client: httpx.Client, signers: dict[str, Signer]) -> None:
    rsa1 = signers["rsa-1"]
    now = int(time.time())
    cases = [
        (rsa1.token(exp=now - 60), "token expired"),
        (rsa1.token(nbf=now + 600), "token not yet valid"),
        (rsa1.token(iss="https://evil.test/"), "wrong issuer"),
        (rsa1.token(aud="billing"), "wrong audience"),
        (rsa1.token(exp=None), "missing claim: exp"),
        (rsa1.token(sub="mallory"), "unknown consumer"),
        (rsa1.token(sub="bob"), "consumer suspended"),
        (Signer.rsa("rsa-1").token(), "bad signature"),
        (Signer.rsa("nobody").token(), "unknown kid"),
        ("not.a.jwt", "malformed token"),
    ]
    for token, reason in cases:
        assert refused(client.get("/jwt/echo", headers=auth(token))) == reason, reason
    # Within the 5 s leeway an expired token still passes.
    echo(client.get("/jwt/echo", headers=auth(rsa1.token(exp=now - 2))))


def test_alg_none_and_key_confusion_are_refused(
    client: httpx.Client, signers: dict[str, Signer]
) -> None:
    payload = b64(json.dumps(standard_claims()).encode())
    for alg in ("none", "None"):
        header = b64(json.dumps({"alg": alg, "kid": "rsa-1"}).encode())
        r = client.get("/jwt/echo", headers=auth(f"{header}.{payload}."))
        assert refused(r) == "unsupported algorithm"
    # HS256 "signed" with the RSA public key (which anyone can fetch from the JWKS).
    pem = signers["rsa-1"].public_pem()
    # Under the RSA key's kid no HMAC key exists; under the HMAC key's kid the MAC is wrong.
    for kid, reason in (("rsa-1", "unknown kid"), ("hs-1", "bad signature")):
        header = b64(json.dumps({"alg": "HS256", "kid": kid}).encode())
        mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        r = client.get("/jwt/echo", headers=auth(f"{header}.{payload}.{b64(mac)}"))
        assert refused(r) == reason
    # The JWKS route has no HMAC key at all.
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    r = client.get("/jwt-alt/echo", headers={"x-token": f"{header}.{payload}.{b64(mac)}"})
    assert r.status_code == 401
    assert 'error_description="algorithm not allowed"' in r.headers["www-authenticate"]


def test_key_rotation_then_outage(
    client: httpx.Client, jwks: JwksEndpoint, signers: dict[str, Signer]
) -> None:
    ec2 = signers["ec-2"]
    # Before rotation the new kid is unknown...
    assert refused(client.get("/jwt/echo", headers=auth(ec2.token()))) == "unknown kid"
    # ...the provider publishes it (keeping the old key during the overlap)...
    jwks.state.keys = [signers["rsa-1"].jwk(), ec2.jwk()]
    hits = jwks.state.hits
    headers, _ = echo(client.get("/jwt/echo", headers=auth(ec2.token())))
    assert dict(headers)["x-credential-id"] == "jwt:ec-2"
    assert jwks.state.hits > hits
    # ...then the JWKS endpoint goes down: the last good keys keep working.
    jwks.state.status = 503
    hits = jwks.state.hits
    for _ in range(3):
        echo(client.get("/jwt/echo", headers=auth(ec2.token())))
        echo(client.get("/jwt/echo", headers=auth(signers["rsa-1"].token())))
        time.sleep(0.05)
    assert jwks.state.hits > hits, "the gateway never tried the endpoint during the outage"
    jwks.state.status = 200


def test_header_cookie_and_query_tokens_are_removed(
    client: httpx.Client, signers: dict[str, Signer]
) -> None:
    token = signers["rsa-1"].token()
    headers, _ = echo(client.get("/jwt-alt/echo", headers={"x-token": token}))
    assert "x-token" not in dict(headers)
    assert dict(headers)["x-consumer-id"] == "alice"
    headers, _ = echo(
        client.get("/jwt-alt/echo", headers={"cookie": f"theme=dark; session={token}"})
    )
    assert dict(headers)["cookie"] == "theme=dark"
    headers, query = echo(client.get(f"/jwt-alt/echo?x=1&access_token={token}&y=2"))
    assert query == "x=1&y=2"
    assert token not in json.dumps(headers)
    # The Authorization header is not this route's token source.
    r = client.get("/jwt-alt/echo", headers=auth(token))
    assert r.status_code == 401


def test_jwks_never_fetched_is_503(client: httpx.Client, signers: dict[str, Signer]) -> None:
    r = client.get("/jwt-dead/echo", headers=auth(signers["rsa-1"].token()))
    assert r.status_code == 503
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "https://portcullis.dev/problems/credentials-unavailable"
    assert "retry-after" in r.headers
