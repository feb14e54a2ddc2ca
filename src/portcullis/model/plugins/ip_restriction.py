"""The `ip-restriction` plugin's config (its handler: plugins/ip_restriction.py)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from portcullis.model.plugins.base import PluginConfig


def _normalise(entries: list[str]) -> list[str]:
    """Each entry as its canonical network text; errors name the offending entry."""
    out: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        try:
            net = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IPv4/IPv6 address or CIDR network") from None
        text = str(net)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


class IpRestrictionConfig(PluginConfig):
    allow: list[str] = Field(
        default_factory=list,
        description="addresses or CIDR networks allowed (empty: everyone not denied)",
    )
    deny: list[str] = Field(
        default_factory=list,
        description="addresses or CIDR networks refused (wins over allow)",
    )

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return _normalise(v)

    @model_validator(mode="after")
    def _some_list(self) -> IpRestrictionConfig:
        if not self.allow and not self.deny:
            raise ValueError("set allow, deny or both")
        return self
