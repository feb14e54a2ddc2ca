"""Where webhooks may go: not into the gateway's own network.

A webhook URL is chosen by whoever creates the endpoint, so without a guard the control
plane would POST wherever it is told: its own admin API on loopback, a database on the
private network, the cloud's metadata service. Every address a destination resolves to is
checked, and the connection is made to a checked address (the resolver below is the
connector's only source of addresses, so a second DNS answer cannot swap in another:
no rebinding). Only globally routable addresses pass, unless an operator names networks
in `PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterable, Sequence
from typing import Any, Final

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_NETWORKS_VARIABLE: Final = "PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS"

# RFC 6052's NAT64 prefix embeds an IPv4 address that the NAT64 gateway will reach.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class DestinationRefused(OSError):
    """No address of the destination may be reached."""


def parse_allowed_networks(text: str | None) -> tuple[IPNetwork, ...]:
    """The operator's allowlist from its JSON form (a list of CIDR strings); `ValueError`
    naming the variable and the bad entry otherwise."""
    if text is None or not text.strip():
        return ()
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ALLOWED_NETWORKS_VARIABLE} is not JSON: {exc.msg}") from None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise ValueError(
            f'{ALLOWED_NETWORKS_VARIABLE} must be a JSON list of CIDRs, e.g. ["10.0.0.0/8"]'
        )
    networks: list[IPNetwork] = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{ALLOWED_NETWORKS_VARIABLE}: {entry!r} is not a network") from None
    return tuple(networks)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class DestinationPolicy:
    """Which addresses deliveries may reach."""

    def __init__(self, allowed: Sequence[IPNetwork] = ()) -> None:
        self.allowed = tuple(allowed)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached, or None when it may."""
        for candidate in (address, _embedded_ipv4(address)):
            if candidate is None:
                continue
            if any(candidate.version == n.version and candidate in n for n in self.allowed):
                return None
        embedded = _embedded_ipv4(address)
        checked = embedded if embedded is not None else address
        # `is_global` is False for loopback, private, link-local (the 169.254.169.254
        # metadata service), shared (100.64/10), reserved and documentation ranges.
        if checked.is_global and not checked.is_multicast:
            return None
        return f"{address} is not a public address"

    def check(self, host: str, addresses: Iterable[str]) -> list[str]:
        """The addresses of `host` that may be reached; `DestinationRefused` when none."""
        admitted: list[str] = []
        reasons: list[str] = []
        for text in addresses:
            reason = self.refusal(ipaddress.ip_address(text.split("%", 1)[0]))
            if reason is None:
                admitted.append(text)
            else:
                reasons.append(reason)
        if not admitted:
            why = "; ".join(reasons) or "it has no address"
            raise DestinationRefused(
                f"webhook destination {host!r} refused: {why} "
                f"(allow it with {ALLOWED_NETWORKS_VARIABLE})"
            )
        return admitted

    def check_literal(self, host: str) -> None:
        """`DestinationRefused` when `host` is an IP the policy refuses: a client connects
        to an IP written in a URL without asking the resolver, so the guard never sees it."""
        address = self.literal(host)
        if address is not None:
            self.check(host, [str(address)])

    def literal(self, host: str) -> IPAddress | None:
        """`host` as an address when it is one (URLs may name an IP directly)."""
        try:
            return ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return None


class GuardedResolver(AbstractResolver):
    """Resolves with the system resolver, then drops every address the policy refuses."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        admitted = set(self.policy.check(host, (r["host"] for r in results)))
        return [r for r in results if r["host"] in admitted]

    async def close(self) -> None:
        await self._inner.close()


def refusal_in(exc: BaseException) -> DestinationRefused | None:
    """The guard's refusal behind `exc` (aiohttp wraps the resolver's error), if any."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DestinationRefused):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def guarded_session(
    policy: DestinationPolicy, *, timeout: float, user_agent: str, **options: Any
) -> aiohttp.ClientSession:
    """A client session whose every connection passes `policy` (the resolver is its only
    source of addresses); `options` go to the session (e.g. `auto_decompress`)."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(policy), limit=100, ttl_dns_cache=10)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": user_agent},
        **options,
    )
