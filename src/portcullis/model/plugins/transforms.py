"""Config models shared by request-transformer and response-transformer.

Header, query and JSON edits; the editors that apply them live in plugins/transforms.py.
"""

from __future__ import annotations

import re

from pydantic import Field, JsonValue, field_validator

from portcullis.http_fields import check_field_value, check_header_name
from portcullis.model.plugins.base import PluginConfig
from portcullis.model.secrets import Secret

_PATH_KEY = re.compile(r"[^.]+")


def header_name(name: str, forbidden: frozenset[str]) -> str:
    lowered = check_header_name(name).lower()
    if lowered in forbidden:
        raise ValueError(f"header {name!r} is managed by the gateway and cannot be changed")
    return lowered


def header_value(value: str) -> str:
    return check_field_value(value)


class HeaderOps(PluginConfig):
    """Edits to a header list (names are case-insensitive)."""

    remove: list[str] = Field(default_factory=list, description="headers to delete")
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
    # Values are secret (model/secrets.py): a transformer is how credentials for the
    # upstream (Authorization, Cookie, X-Api-Key, a vendor's own token header...) get
    # injected, and no list of header names covers every vendor's. Names stay visible.
    set: dict[str, Secret[str]] = Field(default_factory=dict, description="replace or create")
    add: dict[str, Secret[str]] = Field(default_factory=dict, description="create when absent")

    # Syntax is checked per field so an error names `headers.set` etc.; which names
    # the gateway keeps for itself depends on the plugin (`validate_header_ops`).
    @field_validator("remove")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        return [check_header_name(n) for n in v]

    @field_validator("rename")
    @classmethod
    def _renames(cls, v: dict[str, str]) -> dict[str, str]:
        return {check_header_name(old): check_header_name(new) for old, new in v.items()}

    @field_validator("set", "add")
    @classmethod
    def _fields(cls, v: dict[str, str]) -> dict[str, str]:
        return {check_header_name(n): check_field_value(value) for n, value in v.items()}


class QueryOps(PluginConfig):
    """Edits to the query string's parameters (names compared after percent-decoding)."""

    remove: list[str] = Field(default_factory=list, description="parameters to delete")
    rename: dict[str, str] = Field(default_factory=dict, description="old name -> new name")
    # Secret for the same reason as header values (`?api_key=...`).
    set: dict[str, Secret[str]] = Field(default_factory=dict, description="replace or create")
    add: dict[str, Secret[str]] = Field(default_factory=dict, description="create when absent")

    @field_validator("remove")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        if any(not n for n in v):
            raise ValueError("a parameter name cannot be empty")
        return v

    @field_validator("rename", "set", "add")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        if any(not k for k in v):
            raise ValueError("a parameter name cannot be empty")
        return v


def _path(path: str) -> str:
    if not path or not all(_PATH_KEY.fullmatch(k) for k in path.split(".")):
        raise ValueError(f"invalid JSON path {path!r} (dot-separated, non-empty keys)")
    return path


class JsonOps(PluginConfig):
    """Edits to a JSON object body, addressed by dotted paths."""

    remove: list[str] = Field(default_factory=list, description="paths to delete")
    rename: dict[str, str] = Field(default_factory=dict, description="old path -> new path")
    # Secret for the same reason as header values (`{"client_secret": ...}`).
    set: dict[str, Secret[JsonValue]] = Field(default_factory=dict, description="replace or create")
    add: dict[str, Secret[JsonValue]] = Field(
        default_factory=dict, description="create when absent"
    )

    @field_validator("remove")
    @classmethod
    def _remove(cls, v: list[str]) -> list[str]:
        return [_path(p) for p in v]

    @field_validator("rename")
    @classmethod
    def _rename(cls, v: dict[str, str]) -> dict[str, str]:
        return {_path(k): _path(p) for k, p in v.items()}

    @field_validator("set", "add")
    @classmethod
    def _values(cls, v: dict[str, JsonValue]) -> dict[str, JsonValue]:
        return {_path(k): value for k, value in v.items()}

    def __bool__(self) -> bool:
        return bool(self.remove or self.rename or self.set or self.add)


def validate_header_ops(ops: HeaderOps, forbidden: frozenset[str]) -> None:
    """Raise ValueError for a name or value the editor would refuse (config-time check)."""
    for name in [*ops.remove, *ops.rename, *ops.rename.values(), *ops.set, *ops.add]:
        header_name(name, forbidden)
    for value in [*ops.set.values(), *ops.add.values()]:
        header_value(value).encode("latin-1")
