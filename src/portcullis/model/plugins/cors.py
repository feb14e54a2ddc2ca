"""The `cors` plugin's config (its handler: plugins/cors.py)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from portcullis.model.plugins.base import PluginConfig
from portcullis.model.types import HTTP_METHODS

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


# One or more DNS labels in front of a wildcard pattern's fixed suffix.
_SUBDOMAINS = r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
_DEFAULT_METHODS = ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]


def _normalise_origin(raw: str) -> str:
    """A configured origin or pattern in the form browsers serialise origins."""
    value = raw.strip()
    if value == "*":
        return value
    if value.lower() == "null":
        raise ValueError(
            "'null' is refused: sandboxed frames, file: pages and redirects all send it, "
            "so it names no one"
        )
    scheme, sep, rest = value.partition("://")
    scheme = scheme.lower()
    if not sep or not _SCHEME.fullmatch(scheme):
        raise ValueError(f"{raw!r} is not an origin (scheme://host[:port])")
    rest = rest.removesuffix("/").lower()
    if any(c in rest for c in "/?#@\\") or not rest:
        raise ValueError(f"{raw!r}: an origin has no path, query, fragment or user info")
    if rest.startswith("["):
        host, bracket, port_part = rest.partition("]")
        if not bracket:
            raise ValueError(f"{raw!r}: unterminated IPv6 address")
        host += "]"
        if port_part and not port_part.startswith(":"):
            raise ValueError(f"{raw!r} is not an origin (scheme://host[:port])")
        port = port_part[1:] if port_part else ""
        has_port = bool(port_part)
    else:
        host, colon, port = rest.partition(":")
        has_port = bool(colon)
    if has_port and port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{raw!r}: invalid port {port!r}")
    if not host.startswith("["):
        labels = host.split(".")
        wildcard = labels[0] == "*"
        if wildcard:
            labels = labels[1:]
            if len(labels) < 2:
                raise ValueError(
                    f"{raw!r}: a wildcard needs a suffix of two labels or more (*.example.com)"
                )
        for label in labels:
            if not _LABEL.fullmatch(label):
                raise ValueError(
                    f"{raw!r}: invalid host label {label!r} ('*' is only allowed as the first "
                    "label or as the port)"
                )
    if has_port and port == _DEFAULT_PORTS.get(scheme):
        has_port = False
    return f"{scheme}://{host}" + (f":{port}" if has_port else "")


def _pattern(origin: str) -> str:
    """The regex (without anchors) for a normalised origin containing a wildcard."""
    scheme, _, rest = origin.partition("://")
    if rest.startswith("["):
        host, _, port_part = rest.partition("]")
        host += "]"
        port = port_part[1:] if port_part else None
    else:
        host, colon, port_text = rest.partition(":")
        port = port_text if colon else None
    out = re.escape(scheme) + "://"
    out += _SUBDOMAINS + re.escape(host[2:]) if host.startswith("*.") else re.escape(host)
    if port == "*":
        out += r"(?::[0-9]{1,5})?"
    elif port is not None:
        out += re.escape(":" + port)
    return out


def _check_header_names(names: list[str], what: str) -> list[str]:
    out: list[str] = []
    for name in names:
        if name != "*" and not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid {what} name {name!r}")
        if name.lower() not in out:
            out.append(name.lower())
    return out


class CorsConfig(PluginConfig):
    origins: list[str] = Field(
        min_length=1, description="allowed origins: exact, '*', or patterns like https://*.x.com"
    )
    methods: list[str] = Field(
        default_factory=lambda: list(_DEFAULT_METHODS),
        min_length=1,
        description="methods allowed for cross-origin requests ('*' for any)",
    )
    headers: list[str] | None = Field(
        default=None,
        description="request headers allowed (unset: whatever the preflight asks for)",
    )
    exposed_headers: list[str] = Field(
        default_factory=list, description="response headers the browser may read"
    )
    credentials: bool = Field(default=False, description="allow cookies and HTTP auth")
    max_age: int | None = Field(
        default=None, ge=0, le=86400, description="seconds browsers may cache a preflight"
    )
    preflight_continue: bool = Field(
        default=False, description="proxy allowed preflights upstream instead of answering"
    )

    @field_validator("origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for raw in v:
            origin = _normalise_origin(raw)
            if origin not in out:
                out.append(origin)
        if "*" in out and len(out) > 1:
            raise ValueError("'*' allows every origin: it must be the only entry")
        return out

    @field_validator("methods")
    @classmethod
    def _methods(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for m in v:
            up = m.strip().upper()
            if up != "*" and up not in HTTP_METHODS:
                raise ValueError(f"unknown HTTP method {m!r}")
            if up not in out:
                out.append(up)
        return out

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_header_names(v, "header")

    @field_validator("exposed_headers")
    @classmethod
    def _exposed(cls, v: list[str]) -> list[str]:
        return _check_header_names(v, "exposed header")

    @model_validator(mode="after")
    def _credentials(self) -> CorsConfig:
        if self.credentials:
            for field, values in (
                ("origins", self.origins),
                ("methods", self.methods),
                ("headers", self.headers or []),
                ("exposed_headers", self.exposed_headers),
            ):
                if "*" in values:
                    raise ValueError(
                        f"'*' in {field} cannot be used with credentials (browsers read it "
                        "literally and refuse the response); list the values"
                    )
        return self
