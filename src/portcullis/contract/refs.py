"""Local `$ref`s of an OpenAPI document (`#/components/...`).

The imported description has its external references resolved already (the
catalogue does that on import), so only JSON pointers into the document itself
remain; anything else is a `ContractError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ContractError(ValueError):
    """The description cannot be compiled; the message names the place (a JSON pointer)."""


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class Resolver:
    """Follows `$ref` chains within one document (at most `limit` hops, so cycles end)."""

    __slots__ = ("document",)

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def pointer(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise ContractError(f"{ref}: only references within the description are supported")
        node: Any = self.document
        for token in ref[1:].split("/")[1:]:
            key = unescape(token)
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                raise ContractError(f"{ref}: the reference points at nothing")
        return node

    def deref(self, node: Any, limit: int = 32) -> Any:
        """`node` with any `$ref` chain followed (a Reference Object or a schema `$ref`)."""
        for _ in range(limit):
            if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
                node = self.pointer(node["$ref"])
            else:
                return node
        raise ContractError("a $ref chain does not end (a cycle?)")
