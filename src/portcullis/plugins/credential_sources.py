"""Where an authentication plugin reads a credential, said the same way everywhere.

A 401 names what the plugin expected (issue: users learnt it from round trips):
the problem's `detail` in words, an `expected_credentials` member a program can
read (`{"in": "header"|"query"|"cookie", "name": ..., "scheme"?: "Bearer"}`,
the shape of an OpenAPI security scheme), and — RFC 9110 §11.6.1 — the
`WWW-Authenticate` challenge's scheme plus auth-params naming the header, query
parameter or cookie (`Key realm="portcullis", header="X-API-Key"`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Source:
    """One place a credential may come from."""

    where: str  # "header", "query" or "cookie"
    name: str
    scheme: str | None = None  # "Bearer" for `Authorization: Bearer <credential>`

    @classmethod
    def header(cls, name: str) -> Source:
        if name.lower() == "authorization":
            return cls("header", "Authorization", "Bearer")
        return cls("header", _canonical(name))

    def describe(self, noun: str) -> str:
        if self.scheme is not None:
            return f"`{self.name}: {self.scheme} <{noun}>`"
        if self.where == "header":
            return f"the `{self.name}` header"
        return f"the `{self.name}` {'query parameter' if self.where == 'query' else 'cookie'}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"in": self.where, "name": self.name}
        if self.scheme is not None:
            out["scheme"] = self.scheme
        return out


def _canonical(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def required_detail(what: str, noun: str, sources: list[Source]) -> str:
    """`"An API key is required: send it in the `X-API-Key` header or ..."`."""
    places = [s.describe(noun) for s in sources]
    joined = places[0] if len(places) == 1 else ", ".join(places[:-1]) + " or " + places[-1]
    return f"{what} is required: send it in {joined}."


def expected_member(sources: list[Source]) -> dict[str, Any]:
    """The problem extension member naming the accepted credential locations."""
    return {"expected_credentials": [s.as_json() for s in sources]}


def challenge_params(sources: list[Source]) -> str:
    """Auth-params naming the non-Authorization locations (`, header="X-API-Key"`)."""
    out = ""
    for where in ("header", "query", "cookie"):
        names = [s.name for s in sources if s.where == where and s.scheme is None]
        if names:
            out += f', {where}="{", ".join(names)}"'
    return out
