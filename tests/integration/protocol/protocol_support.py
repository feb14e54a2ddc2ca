"""Shared by the protocol suites: the gateway's config, credentials, and the checks
on what the recording upstream received."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from support.recording_upstream import RecordingUpstream
from support.servers import Gateway

JWT_SECRET = "protocol-suite-hmac-secret-0123456789abcdef"
ALLOWED_ORIGIN = "https://app.example.com"
MAX_REQUEST_BODY = 100_000
# What the plugin matrix's request-size-limit route accepts.
SIZE_LIMIT = 1000


def gateway_config(upstream: int, request_log: Path) -> dict[str, Any]:
    def route(name: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "service": "rec", "paths": [f"/{name}"], "strip_path": False, **extra}

    return {
        "consumers": [
            {"username": "alice", "groups": ["staff"]},
            {"username": "bob", "groups": ["partners"]},
        ],
        "plans": [
            {
                "name": "tight",
                "limits": [
                    {
                        "limit": 1,
                        "period": "1h",
                        "algorithm": "fixed_window",
                        "key": ["consumer", "header:x-bucket"],
                    }
                ],
            }
        ],
        "services": [{"name": "rec", "url": f"http://127.0.0.1:{upstream}"}],
        "routes": [
            # HTTP/1.1 and HTTP/2 suites.
            route("rec"),
            # Host routing; the upstream sees the Host (as with virtual hosts behind).
            route("public-host", paths=["/hosted"], hosts=["public.example"], preserve_host=True),
            route("admin-host", paths=["/hosted"], hosts=["admin.example"], preserve_host=True),
            # Plugin matrix: one route per plugin, and an open one.
            route("open"),
            route("key-auth"),
            route("jwt-auth"),
            route("acl"),
            route("ip-restriction"),
            route("rate-limit"),
            route("plan-limits"),
            route("request-size-limit"),
            route("cors"),
            route("request-transformer"),
            route("request-validator"),
            route("file-log"),
            route("basic-auth"),
            route("hmac-auth"),
        ],
        "plugins": [
            {"name": "basic-auth", "route": "basic-auth", "config": {}},
            # The attempts' paths are random: the matrix signs method and authority.
            {
                "name": "hmac-auth",
                "route": "hmac-auth",
                "config": {"required_components": ["@method", "@authority"]},
            },
            {"name": "key-auth", "route": "admin-host", "config": {}},
            {"name": "key-auth", "route": "key-auth", "config": {}},
            {
                "name": "jwt-auth",
                "route": "jwt-auth",
                "config": {
                    "keys": [{"kid": "hs-1", "algorithm": "HS256", "secret_env": "E2E_JWT_SECRET"}]
                },
            },
            {"name": "key-auth", "route": "acl", "config": {}},
            {"name": "acl", "route": "acl", "config": {"allow": ["staff"]}},
            {
                "name": "ip-restriction",
                "route": "ip-restriction",
                "config": {"allow": ["127.0.0.1/32"]},
            },
            {
                "name": "rate-limit",
                "route": "rate-limit",
                "config": {
                    "limits": [
                        {
                            "limit": 1,
                            "period": "1h",
                            "algorithm": "fixed_window",
                            "key": "header:x-bucket",
                        }
                    ]
                },
            },
            # A plan counts per subscriber: plan-limits needs an identity.
            {"name": "key-auth", "route": "plan-limits", "config": {}},
            {"name": "plan-limits", "route": "plan-limits", "config": {"default_plan": "tight"}},
            {
                "name": "request-size-limit",
                "route": "request-size-limit",
                "config": {"max_bytes": SIZE_LIMIT},
            },
            {"name": "cors", "route": "cors", "config": {"origins": [ALLOWED_ORIGIN]}},
            {
                "name": "request-transformer",
                "route": "request-transformer",
                "config": {"headers": {"remove": ["x-remove-me"], "add": {"x-added": "yes"}}},
            },
            {"name": "request-validator", "route": "request-validator", "config": {}},
            # Log shipping: every protocol's requests logged, refusals included.
            {"name": "key-auth", "route": "file-log", "config": {}},
            {
                "name": "file-log",
                "route": "file-log",
                "config": {"path": str(request_log), "flush_interval": 0.05},
            },
        ],
        # request-validator checks against the description of the API version of its route.
        "apis": [
            {
                "name": "checked",
                "versions": [
                    {"name": "v1", "routes": ["request-validator"], "openapi": CHECKED_API}
                ],
            }
        ],
    }


# /request-validator/{token}: GET needs an `x-check: ok` header, POST a JSON {"name": ...}.
CHECKED_API: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "checked", "version": "1"},
    "paths": {
        "/request-validator/{token}": {
            "parameters": [
                {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "parameters": [
                    {
                        "name": "x-check",
                        "in": "header",
                        "required": True,
                        "schema": {"const": "ok"},
                    }
                ],
                "responses": {"200": {"description": "ok"}},
            },
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "ok"}},
            },
        }
    },
}


@dataclass
class Credentials:
    """API keys (alice is in group staff, bob in partners) and a JWT signer."""

    alice_key: str
    bob_key: str
    # alice's basic-auth password and hmac-auth key id and secret; the gateway's port.
    basic_password: str = ""
    hmac_key: str = ""
    hmac_secret: str = ""
    port: int = 0

    def basic(self, password: str | None = None) -> dict[str, str]:
        pair = f"alice:{self.basic_password if password is None else password}"
        return {"authorization": "Basic " + base64.b64encode(pair.encode()).decode()}

    def signed(self, secret: str | None = None) -> dict[str, str]:
        """Signature headers over GET and the gateway's authority, a fresh nonce each."""
        from support.auth_credentials import sign_request

        return sign_request(
            "GET",
            f"http://127.0.0.1:{self.port}/",
            self.hmac_key,
            (self.hmac_secret if secret is None else secret).encode(),
            created=time.time(),
            nonce=uuid.uuid4().hex,
            components=("@method", "@authority"),
        )

    @staticmethod
    def token(sub: str = "alice") -> str:
        now = int(time.time())
        claims = {"sub": sub, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"kid": "hs-1"})


def settle(gw: Gateway, up: RecordingUpstream) -> None:
    """Wait until a fresh request went through the gateway and reached the upstream.

    The probe before it was already answered, so anything the gateway would have
    forwarded for it was written before this marker was.
    """
    marker = uuid.uuid4().hex
    assert httpx.get(f"{gw.url}/rec/settle-{marker}", timeout=10).status_code == 200
    assert up.wait_for(marker.encode())


def assert_nothing_complete_reached(up: RecordingUpstream, token: bytes) -> None:
    """The upstream got no complete request for `token` (a cut-off head or body is allowed:
    the gateway may have started streaming before the framing error showed)."""
    complete = [r.raw_head for r in up.seen(token) if r.complete]
    assert complete == [], f"the upstream received {complete}"
    assert up.errors == [], up.errors
