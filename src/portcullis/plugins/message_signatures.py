"""The parts of RFC 9421 (HTTP Message Signatures) and RFC 9530 (Content-Digest)
hmac-auth needs, on the gateway's own ASGI request: parsing `Signature-Input`,
`Signature` and `Content-Digest` (the RFC 8941 structured-field subset they use),
and building the signature base of a request from its derived components.

Supported derived components: `@method`, `@authority`, `@scheme`, `@target-uri`,
`@request-target`, `@path`, `@query`; and any header field by its lower-case name
(its field lines joined with ", "). Component parameters (`;sf`, `;key`, `;bs`,
`;req`, `;name`) are not supported: such a signature is refused as malformed.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from portcullis.plugins.base import Headers

_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_TOKEN = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*")
_INTEGER = re.compile(r"-?[0-9]{1,15}")
# An sf-string: printable ASCII, `"` and `\` only escaped.
_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
_ESCAPE = re.compile(r"\\(.)")
# One parameter: `;key` then `=` and a string, integer, token or boolean (a byte sequence
# value is read by `bare_item` after the key).
_PARAM = re.compile(
    r';[ ]*([a-z*][a-z0-9_.*-]*)(?:=(?:"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"'
    r"|(-?[0-9]{1,15})(?![0-9.])|([A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*)|\?([01])))?"
)
# An inner list of plain strings (no escapes, no item parameters), and its items.
_SIMPLE_INNER = re.compile(r'\(((?:"[\x20\x21\x23-\x5b\x5d-\x7e]*"(?: +(?=")|(?=\))))*)\)')
_QUOTED = re.compile(r'"([^"]*)"')
_DEFAULT_PORTS = {"http": "80", "https": "443"}

ParamValue = int | str | bool | bytes


class Malformed(ValueError):
    """A structured field that does not parse (RFC 8941)."""


@dataclass(frozen=True, slots=True)
class SignatureInput:
    """One member of `Signature-Input`: the covered components and the parameters."""

    label: str
    components: tuple[str, ...]
    params: tuple[tuple[str, ParamValue], ...]

    def param(self, name: str) -> ParamValue | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    def serialized(self) -> str:
        """The `@signature-params` value: the inner list and its parameters, canonical."""
        inner = " ".join(_serialize_string(c) for c in self.components)
        return f"({inner}){_serialize_params(self.params)}"


class _Parser:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_sp(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def skip_ows(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise Malformed(f"expected {char!r} at {self.pos}")
        self.pos += 1

    def match(self, pattern: re.Pattern[str]) -> str:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise Malformed(f"unexpected input at {self.pos}")
        self.pos = found.end()
        return found.group()

    def string(self) -> str:
        found = _STRING.match(self.text, self.pos)
        if found is None:
            raise Malformed(f"bad string at {self.pos}")
        self.pos = found.end()
        value = found.group(1)
        return _ESCAPE.sub(r"\1", value) if "\\" in value else value

    def byte_sequence(self) -> bytes:
        self.expect(":")
        end = self.text.find(":", self.pos)
        if end < 0:
            raise Malformed("unterminated byte sequence")
        chunk = self.text[self.pos : end]
        self.pos = end + 1
        try:
            return base64.b64decode(chunk, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Malformed("bad base64 in byte sequence") from exc

    def bare_item(self) -> ParamValue:
        char = self.peek()
        if char == '"':
            return self.string()
        if char == ":":
            return self.byte_sequence()
        if char == "?":
            self.pos += 1
            value = self.peek()
            if value not in ("0", "1"):
                raise Malformed("bad boolean")
            self.pos += 1
            return value == "1"
        if char == "-" or char.isdigit():
            return int(self.match(_INTEGER))
        return self.match(_TOKEN)

    def params(self) -> tuple[tuple[str, ParamValue], ...]:
        out: dict[str, ParamValue] = {}
        text = self.text
        while True:
            found = _PARAM.match(text, self.pos)
            if found is None:
                if text.startswith(";", self.pos):
                    raise Malformed(f"bad parameter at {self.pos}")
                return tuple(out.items())
            self.pos = found.end()
            key, string, integer, token, boolean = found.group(1, 2, 3, 4, 5)
            value: ParamValue
            if string is not None:
                value = _ESCAPE.sub(r"\1", string) if "\\" in string else string
            elif integer is not None:
                value = int(integer)
            elif token is not None:
                value = token
            elif boolean is not None:
                value = boolean == "1"
            elif text.startswith("=", self.pos):
                self.pos += 1
                value = self.bare_item()  # a byte sequence
            else:
                value = True
            out.pop(key, None)
            out[key] = value

    def member_value(self) -> tuple[Any, tuple[tuple[str, ParamValue], ...]]:
        simple = _SIMPLE_INNER.match(self.text, self.pos)
        if simple is not None:
            # The common case: plain strings without escapes or parameters, in one match.
            self.pos = simple.end()
            return tuple(_QUOTED.findall(simple.group(1))), self.params()
        if self.peek() == "(":
            self.pos += 1
            items: list[ParamValue] = []
            while True:
                self.skip_sp()
                if self.peek() == ")":
                    self.pos += 1
                    break
                item = self.bare_item()
                if self.params():
                    raise Malformed("component parameters are not supported")
                items.append(item)
                if self.peek() not in (" ", ")"):
                    raise Malformed("bad inner list")
            return tuple(items), self.params()
        return self.bare_item(), self.params()


def parse_dictionary(text: str) -> dict[str, tuple[Any, tuple[tuple[str, ParamValue], ...]]]:
    """An RFC 8941 dictionary: key -> (value or inner list, parameters)."""
    parser = _Parser(text)
    out: dict[str, tuple[Any, tuple[tuple[str, ParamValue], ...]]] = {}
    parser.skip_sp()
    while parser.pos < len(text):
        key = parser.match(_KEY)
        if parser.peek() == "=":
            parser.pos += 1
            out[key] = parser.member_value()
        else:
            out[key] = (True, parser.params())
        parser.skip_ows()
        if parser.pos >= len(text):
            break
        parser.expect(",")
        parser.skip_ows()
        if parser.pos >= len(text):
            raise Malformed("trailing comma")
    return out


def parse_signature_inputs(text: str) -> list[SignatureInput]:
    out: list[SignatureInput] = []
    for label, (value, params) in parse_dictionary(text).items():
        if not isinstance(value, tuple) or not all(isinstance(c, str) for c in value):
            raise Malformed(f"{label}: not an inner list of component names")
        out.append(SignatureInput(label, value, params))
    return out


def parse_signatures(text: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for label, (value, _) in parse_dictionary(text).items():
        if not isinstance(value, bytes):
            raise Malformed(f"{label}: not a byte sequence")
        out[label] = value
    return out


def _serialize_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serialize_params(params: tuple[tuple[str, ParamValue], ...]) -> str:
    out = ""
    for key, value in params:
        if value is True:
            out += f";{key}"
        elif value is False:
            out += f";{key}=?0"
        elif isinstance(value, int):
            out += f";{key}={value}"
        elif isinstance(value, bytes):
            out += f";{key}=:{base64.b64encode(value).decode()}:"
        else:
            out += f";{key}={_serialize_string(value)}"
    return out


def field_value(headers: Headers, name: bytes) -> str | None:
    """A header's field lines joined with ", " (RFC 9421 §2.1), None when absent."""
    lines = [v.strip() for n, v in headers if n == name]
    if not lines:
        return None
    return b", ".join(lines).decode("latin-1")


@dataclass(frozen=True, slots=True)
class RequestTarget:
    """What the derived components of a request are made of (from the ASGI scope)."""

    method: str
    scheme: str
    authority: str
    path: str
    query: str | None

    @classmethod
    def of(cls, scope: Any, method: str, headers: Headers) -> RequestTarget:
        scheme = str(scope.get("scheme") or "http").lower()
        if scheme in ("ws", "wss"):
            scheme = "https" if scheme == "wss" else "http"
        host = field_value(headers, b"host")
        if host is None:
            server = scope.get("server") or ("localhost", None)
            host = str(server[0]) if server[1] is None else f"{server[0]}:{server[1]}"
        authority = host.strip().lower()
        name, sep, port = authority.rpartition(":")
        if sep and not name.endswith("]") and ":" in name:
            name, port, sep = authority, "", ""  # a bare IPv6 literal
        if sep and port == _DEFAULT_PORTS.get(scheme):
            authority = name
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else str(scope.get("path") or "/")
        query_bytes: bytes = scope.get("query_string", b"")
        return cls(
            method=method,
            scheme=scheme,
            authority=authority,
            path=path or "/",
            query=query_bytes.decode("latin-1") if query_bytes else None,
        )

    def component(self, name: str, headers: Headers) -> str | None:
        query = "" if self.query is None else "?" + self.query
        if name == "@method":
            return self.method
        if name == "@authority":
            return self.authority
        if name == "@scheme":
            return self.scheme
        if name == "@path":
            return self.path
        if name == "@query":
            return query or "?"
        if name == "@target-uri":
            return f"{self.scheme}://{self.authority}{self.path}{query}"
        if name == "@request-target":
            return self.path + query
        if name.startswith("@"):
            return None
        return field_value(headers, name.encode("latin-1"))


def signature_base(signed: SignatureInput, target: RequestTarget, headers: Headers) -> str | None:
    """The RFC 9421 §2.5 signature base; None when a covered component is absent."""
    lines: list[str] = []
    for name in signed.components:
        value = target.component(name, headers)
        if value is None:
            return None
        lines.append(f"{_serialize_string(name)}: {value}")
    lines.append(f'"@signature-params": {signed.serialized()}')
    return "\n".join(lines)


def content_digests(text: str) -> dict[str, bytes]:
    """`Content-Digest` (RFC 9530): algorithm -> digest."""
    out: dict[str, bytes] = {}
    for algorithm, (value, _) in parse_dictionary(text).items():
        if not isinstance(value, bytes):
            raise Malformed(f"{algorithm}: not a byte sequence")
        out[algorithm] = value
    return out
