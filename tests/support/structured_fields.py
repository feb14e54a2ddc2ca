"""A strict parser for HTTP Structured Field Lists (RFC 9651 §4.2.1), for checking headers.

Covers Lists of Items (no Inner Lists) whose bare items and parameter values are
Integers, Decimals, Strings, Tokens, Byte Sequences or Booleans — everything the
RateLimit fields may carry. Any deviation from the grammar raises ValueError, as a
conforming client would discard the field.
"""

from __future__ import annotations

import base64
import re
import string
from decimal import Decimal

BareItem = int | Decimal | str | bytes | bool
Item = tuple[BareItem, dict[str, BareItem]]

_TCHAR = set("!#$%&'*+-.^_`|~:/" + string.ascii_letters + string.digits)
_KEY_FIRST = set(string.ascii_lowercase + "*")
_KEY_REST = set(string.ascii_lowercase + string.digits + "_-.*")
_INTEGER = re.compile(r"-?\d{1,15}")
_DECIMAL = re.compile(r"-?\d{1,12}\.\d{1,3}")


class _Parser:
    def __init__(self, text: str) -> None:
        if any(not (" " <= c <= "~") for c in text):
            raise ValueError("non-ASCII or control character")
        self.s = text
        self.i = 0

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def parse_list(self) -> list[Item]:
        while self.peek() == " ":
            self.i += 1
        members: list[Item] = []
        while self.i < len(self.s):
            members.append(self.parse_item())
            while self.peek() in (" ", "\t") and self.peek():
                self.i += 1
            if self.i >= len(self.s):
                return members
            if self.peek() != ",":
                raise ValueError(f"expected ',' at {self.i}: {self.s!r}")
            self.i += 1
            while self.peek() in (" ", "\t") and self.peek():
                self.i += 1
            if self.i >= len(self.s):
                raise ValueError("trailing comma")
        return members

    def parse_item(self) -> Item:
        value = self.bare_item()
        params: dict[str, BareItem] = {}
        while self.peek() == ";":
            self.i += 1
            while self.peek() == " ":
                self.i += 1
            key = self.key()
            param: BareItem = True
            if self.peek() == "=":
                self.i += 1
                param = self.bare_item()
            params[key] = param
        return value, params

    def key(self) -> str:
        if self.peek() not in _KEY_FIRST or not self.peek():
            raise ValueError(f"invalid key at {self.i}: {self.s!r}")
        start = self.i
        while self.peek() and self.peek() in _KEY_REST:
            self.i += 1
        return self.s[start : self.i]

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == "-" or c.isdigit():
            return self.number()
        if c == '"':
            return self.string()
        if c == ":":
            end = self.s.index(":", self.i + 1)
            raw = self.s[self.i + 1 : end]
            self.i = end + 1
            return base64.b64decode(raw, validate=True)
        if c == "?":
            value = self.s[self.i + 1 : self.i + 2]
            if value not in ("0", "1"):
                raise ValueError("invalid boolean")
            self.i += 2
            return value == "1"
        if c and (c.isalpha() or c == "*"):
            start = self.i
            while self.peek() and self.peek() in _TCHAR:
                self.i += 1
            return self.s[start : self.i]
        raise ValueError(f"invalid bare item at {self.i}: {self.s!r}")

    def number(self) -> int | Decimal:
        for pattern, convert in ((_DECIMAL, Decimal), (_INTEGER, int)):
            match = pattern.match(self.s, self.i)
            if match is not None:
                following = self.s[match.end() : match.end() + 1]
                if following.isdigit() or (convert is int and following == "."):
                    continue
                self.i = match.end()
                return convert(match.group())
        raise ValueError(f"invalid number at {self.i}: {self.s!r}")

    def string(self) -> str:
        self.i += 1
        out = []
        while self.i < len(self.s):
            c = self.s[self.i]
            self.i += 1
            if c == "\\":
                nxt = self.peek()
                if nxt not in ('"', "\\") or not nxt:
                    raise ValueError("invalid escape")
                out.append(nxt)
                self.i += 1
            elif c == '"':
                return "".join(out)
            else:
                out.append(c)
        raise ValueError("unterminated string")


def parse_list(text: str) -> list[Item]:
    """Parse one field value as a Structured Field List of Items."""
    return _Parser(text).parse_list()
