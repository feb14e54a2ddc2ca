"""ip-restriction: allow or deny clients by IPv4/IPv6 address ranges (CIDR).

- `allow`: when not empty, only clients inside one of these networks pass;
- `deny`: clients inside one of these networks are refused, even when `allow`
  also covers them (deny wins).

An empty `allow` list means "everyone not denied". At least one list must be set.
Entries are single addresses (`203.0.113.7`, `2001:db8::1`) or networks
(`10.0.0.0/8`, `2001:db8::/32`); they are validated and normalised when the config
is loaded: host bits are cleared (`10.1.2.3/8` becomes `10.0.0.0/8`), a bare
address becomes a /32 or /128, so an export shows exactly what is enforced.

The client is `ctx.client_ip`: the peer address, or the original client behind
the gateway's trusted proxies (`PORTCULLIS_TRUSTED_PROXIES`, resolved by the proxy
from X-Forwarded-For before any plugin runs). An IPv4-mapped IPv6 peer
(`::ffff:192.0.2.1`, what a dual-stack socket reports) is matched as the IPv4
address. A client address that cannot be parsed is inside no network: it passes a
deny-only config and is refused by an allow list.

Refusals are 403 `forbidden` problems. Priority 1900: after cors (2000, so a
browser can read the refusal) and before every auth plugin (an address that may
not call the gateway never reaches the credential cache). A CORS preflight that
the cors plugin answers is therefore answered for any address: it carries no
credential and returns only the CORS policy, never upstream data.

Cost: the networks are merged into sorted, non-overlapping integer ranges per
address family at build time, so a decision is one address parse and one binary
search, whatever the list length; decisions are also remembered per address (a
bounded map), so a repeat client costs one dict lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Iterable
from typing import ClassVar

from portcullis.model.plugins.ip_restriction import (
    IpRestrictionConfig,
)
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import FORBIDDEN, PROBLEM_CONTENT_TYPE, problem_body

_CONTENT_TYPE = (b"content-type", PROBLEM_CONTENT_TYPE.encode())
# Distinct client addresses whose decision is remembered before the map is reset.
DECISION_MEMO = 4096
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RangeSet:
    """A set of IP networks as sorted, disjoint integer ranges per address family."""

    __slots__ = ("_v4", "_v6")

    def __init__(self, networks: Iterable[IpNetwork]) -> None:
        nets = list(networks)
        # collapse_addresses merges overlapping and adjacent networks and sorts them.
        v4 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network))
        v6 = ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))
        self._v4 = self._ranges((int(n.network_address), int(n.broadcast_address)) for n in v4)
        self._v6 = self._ranges((int(n.network_address), int(n.broadcast_address)) for n in v6)

    @staticmethod
    def _ranges(spans: Iterable[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """(starts, ends) of sorted spans, touching ones joined; `ends[i]` is inclusive."""
        starts: list[int] = []
        ends: list[int] = []
        for first, last in spans:
            if ends and first <= ends[-1] + 1:
                ends[-1] = max(ends[-1], last)
            else:
                starts.append(first)
                ends.append(last)
        return starts, ends

    def __bool__(self) -> bool:
        return bool(self._v4[0] or self._v6[0])

    def __len__(self) -> int:
        """How many disjoint ranges remain after merging."""
        return len(self._v4[0]) + len(self._v6[0])

    def contains(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return self.contains_value(address.version == 6, int(address))

    def contains_value(self, v6: bool, value: int) -> bool:
        """True when the address with this integer value (IPv6 when `v6`) is in the set."""
        starts, ends = self._v6 if v6 else self._v4
        i = bisect_right(starts, value) - 1
        return i >= 0 and value <= ends[i]


_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def parse_client(ip: str) -> tuple[bool, int] | None:
    """(is IPv6, integer value) of the client's address, or None when it is not one.

    An IPv4-mapped IPv6 address is returned as the IPv4 address. `inet_pton` is used
    rather than `ipaddress` because it is an order of magnitude faster.
    """
    try:
        if ":" not in ip:
            return False, int.from_bytes(socket.inet_pton(socket.AF_INET, ip))
        packed = socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, ValueError):
        return None
    if packed.startswith(_MAPPED_PREFIX):
        return False, int.from_bytes(packed[12:])
    return True, int.from_bytes(packed)


class IpRestriction(Plugin[IpRestrictionConfig]):
    """Allow/deny by client address ranges (see the module doc)."""

    name: ClassVar[str] = "ip-restriction"
    priority: ClassVar[int] = 1900
    config_model = IpRestrictionConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: IpRestrictionConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self._allow = RangeSet(ipaddress.ip_network(n) for n in config.allow)
        self._deny = RangeSet(ipaddress.ip_network(n) for n in config.deny)
        self._decisions: dict[str, bool] = {}

    def allows(self, ip: str) -> bool:
        """True when a client at `ip` may pass (memoised per address)."""
        verdict = self._decisions.get(ip)
        if verdict is None:
            address = parse_client(ip)
            if address is None:
                verdict = not self._allow
            else:
                v6, value = address
                verdict = not self._deny.contains_value(v6, value) and (
                    not self._allow or self._allow.contains_value(v6, value)
                )
            if len(self._decisions) >= DECISION_MEMO:
                self._decisions.clear()
            self._decisions[ip] = verdict
        return verdict

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        if self.allows(ctx.client_ip):
            return None
        body = problem_body(FORBIDDEN, f"Requests from {ctx.client_ip} are not allowed here.")
        return PluginResponse(403, body, [_CONTENT_TYPE])
