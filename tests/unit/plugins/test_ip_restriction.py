"""ip-restriction: CIDR validation and normalisation, allow/deny semantics (deny wins),
IPv4-mapped IPv6 clients, unparsable addresses, range merging, and the 403 problem."""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any, cast

import pytest

from portcullis.model.plugins.ip_restriction import IpRestrictionConfig
from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.base import RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.ip_restriction import DECISION_MEMO, IpRestriction, RangeSet
from portcullis.plugins.registry import PLUGINS, build_plugin


def restriction(**config: Any) -> IpRestriction:
    plugin = build_plugin("ip-restriction", config, PluginEnv())
    assert isinstance(plugin, IpRestriction)
    return plugin


def context(ip: str) -> RequestContext:
    return RequestContext(
        {"type": "http", "headers": []}, cast(Any, None), "GET", "/", ip, "rid", None
    )


def test_registered_between_cors_and_auth() -> None:
    assert PLUGINS["ip-restriction"] is IpRestriction
    assert PLUGINS["cors"].priority > IpRestriction.priority > PLUGINS["jwt-auth"].priority


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({}, "set allow, deny or both"),
        ({"allow": [], "deny": []}, "set allow, deny or both"),
        ({"allow": ["10.0.0.0/33"]}, "not an IPv4/IPv6 address or CIDR"),
        ({"deny": ["example.com"]}, "not an IPv4/IPv6 address or CIDR"),
        ({"deny": ["2001:db8::/129"]}, "not an IPv4/IPv6 address or CIDR"),
        ({"allow": ["10.0.0.0/8"], "other": 1}, "Extra inputs"),
    ],
)
def test_config_errors(config: dict[str, Any], error: str) -> None:
    errors = validate_plugin("ip-restriction", config)
    assert len(errors) == 1, errors
    assert error in errors[0]


def test_entries_are_normalised() -> None:
    config = IpRestrictionConfig.model_validate(
        {"allow": ["10.1.2.3/8", " 192.0.2.7 ", "2001:DB8::1/32", "10.0.0.0/8"], "deny": ["::1"]}
    )
    assert config.allow == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    assert config.deny == ["::1/128"]


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.9.0.1", False),  # inside allow, but denied: deny wins
        ("192.0.2.1", False),  # outside allow
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("::ffff:10.1.2.3", True),  # IPv4-mapped IPv6 is the IPv4 address
        ("::ffff:10.9.0.1", False),
        ("not-an-ip", False),  # parses as nothing: outside every allow network
    ],
)
async def test_allow_list_with_deny(ip: str, allowed: bool) -> None:
    plugin = restriction(allow=["10.0.0.0/8", "2001:db8::/32"], deny=["10.9.0.0/16"])
    reply = await plugin.access(context(ip))
    if allowed:
        assert reply is None
    else:
        assert reply is not None
        assert reply.status == 403
        assert (b"content-type", b"application/problem+json") in reply.headers
        body = json.loads(reply.body)
        assert body["type"].endswith("/forbidden")
        assert body["status"] == 403
        assert ip in body["detail"]


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [("203.0.113.9", False), ("203.0.114.1", True), ("2001:db8::1", True), ("bogus", True)],
)
async def test_deny_only_lets_everyone_else_through(ip: str, allowed: bool) -> None:
    plugin = restriction(deny=["203.0.113.0/24"])
    assert ((await plugin.access(context(ip))) is None) is allowed


def test_decisions_are_memoised_and_bounded() -> None:
    plugin = restriction(allow=["10.0.0.0/8"])
    for i in range(DECISION_MEMO + 10):
        assert plugin.allows(f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}")
    assert len(plugin._decisions) <= DECISION_MEMO
    assert not plugin.allows("11.0.0.1")
    assert plugin._decisions["11.0.0.1"] is False


def test_ranges_merge_overlapping_and_adjacent_networks() -> None:
    nets = [
        ipaddress.ip_network(n)
        for n in ("10.0.0.0/25", "10.0.0.128/25", "10.0.0.0/24", "10.0.2.0/24", "::/127")
    ]
    ranges = RangeSet(nets)
    assert len(ranges) == 3  # 10.0.0.0/24, 10.0.2.0/24, ::/127
    assert ranges.contains(ipaddress.ip_address("10.0.0.255"))
    assert not ranges.contains(ipaddress.ip_address("10.0.1.0"))
    assert ranges.contains(ipaddress.ip_address("::1"))
    assert not ranges.contains(ipaddress.ip_address("::2"))
    assert not ranges.contains(ipaddress.ip_address("9.255.255.255"))
    assert not RangeSet([])


def test_range_lookup_agrees_with_a_linear_scan() -> None:
    rng = random.Random(7)
    nets = [
        ipaddress.IPv4Network((rng.getrandbits(32), rng.randint(8, 32)), strict=False)
        for _ in range(1000)
    ]
    ranges = RangeSet(nets)
    probes = [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(3000)]
    probes += [n.network_address for n in nets[:200]] + [n.broadcast_address for n in nets[:200]]
    for address in probes:
        assert ranges.contains(address) == any(address in n for n in nets), address
