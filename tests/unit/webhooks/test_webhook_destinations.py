from __future__ import annotations

import ipaddress
import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from portcullis.webhooks.destinations import (
    DestinationPolicy,
    DestinationRefused,
    GuardedResolver,
    parse_allowed_networks,
)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.100.100.200",  # shared address space (Alibaba's metadata service)
        "fd00:ec2::254",  # AWS's IPv6 metadata service
        "fe80::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "192.0.2.1",  # documentation range
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert DestinationPolicy().refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass(address: str) -> None:
    assert DestinationPolicy().refusal(ipaddress.ip_address(address)) is None


def test_an_allowlisted_network_passes_and_only_it() -> None:
    policy = DestinationPolicy(parse_allowed_networks('["127.0.0.0/8", "10.9.0.0/16"]'))
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert policy.refusal(ipaddress.ip_address("10.8.0.1")) is not None
    assert policy.refusal(ipaddress.ip_address("::1")) is not None


def test_check_keeps_the_allowed_addresses_and_refuses_when_none_remain() -> None:
    policy = DestinationPolicy()
    assert policy.check("mixed.example", ["10.0.0.1", "93.184.215.14"]) == ["93.184.215.14"]
    with pytest.raises(DestinationRefused, match=r"'internal\.example' refused: 10\.0\.0\.1"):
        policy.check("internal.example", ["10.0.0.1"])
    with pytest.raises(DestinationRefused, match="no address"):
        policy.check("nothing.example", [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ('"10.0.0.0/8"', "JSON list of CIDRs"),
        ("[8]", "JSON list of CIDRs"),
        ('["10.0.0.0/33"]', "'10.0.0.0/33' is not a network"),
    ],
)
def test_a_bad_allowlist_names_the_variable_and_the_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="PORTCULLIS_WEBHOOK_ALLOWED_NETWORKS") as caught:
        parse_allowed_networks(text)
    assert message in str(caught.value)


def test_an_empty_allowlist_allows_nothing_extra() -> None:
    assert parse_allowed_networks(None) == ()
    assert parse_allowed_networks("  ") == ()
    assert parse_allowed_networks("[]") == ()


class _Answers(AbstractResolver):
    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_resolver_hands_the_connector_only_admitted_addresses() -> None:
    resolver = GuardedResolver(DestinationPolicy(), _Answers(["127.0.0.1", "93.184.215.14"]))
    results = await resolver.resolve("rebind.example", 443)
    assert [r["host"] for r in results] == ["93.184.215.14"]
    with pytest.raises(DestinationRefused):
        await GuardedResolver(DestinationPolicy(), _Answers(["169.254.169.254"])).resolve("m", 80)
