"""mtls-auth: the client chain from the ASGI TLS extension verified against the configured
CA at the injected clock, mapped to a consumer by SAN or subject within the route's
organization; every refusal names what is expected."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from cryptography import x509

from portcullis.identity.credential_store import CredentialKind
from portcullis.plugins.mtls_auth import MtlsAuth, certificate_names
from support.auth_credentials import (
    NOW,
    Harness,
    TestCA,
    header,
    problem,
    record,
    tls_scope,
    upstream,
)
from support.tls import CertificateAuthority

CA = TestCA()
OTHER_CA = TestCA("Someone Else's CA")
ALICE = CA.issue("alice", dns=["alice.clients.example"], uris=["spiffe://acme/alice"])
BOB = CA.issue("bob", emails=["Bob@Example.com"])
CAROL = CA.issue("carol")  # subject only
MALLORY = CA.issue("mallory", dns=["mallory.example"])
STRANGER = OTHER_CA.issue("alice", dns=["alice.clients.example"])
EXPIRED = CA.issue("alice", dns=["alice.clients.example"], days=1)
ISSUED = dt.datetime(2026, 6, 1, tzinfo=dt.UTC).timestamp()


def harness(**config: Any) -> Harness:
    h = Harness("mtls-auth", {"ca_certificates": CA.pem, **config})
    h.store.add(record(CredentialKind.MTLS, "dns:alice.clients.example", "alice"))
    h.store.add(record(CredentialKind.MTLS, "email:bob@example.com", "bob"))
    h.store.add(record(CredentialKind.MTLS, "subject:O=Acme,CN=carol", "guest"))
    h.store.add(record(CredentialKind.MTLS, "dns:mallory.example", "mallory"))
    h.now = ISSUED + 30 * 86400
    return h


async def call(h: Harness, chain: list[str] | None) -> tuple[Any, Any]:
    return await h.call(scope=tls_scope(chain))


async def test_a_verified_certificate_maps_to_its_consumer_by_san() -> None:
    h = harness()
    assert isinstance(h.plugin, MtlsAuth)
    reply, ctx = await call(h, [ALICE, CA.pem])
    assert reply is None
    assert ctx.consumer.username == "alice"
    assert upstream(ctx)[b"x-credential-id"] == b"cc_alice_mtls"
    # Warm: the chain's verification is remembered, the record cached.
    finds = h.store.finds
    assert (await call(h, [ALICE, CA.pem]))[0] is None
    assert h.store.finds == finds


async def test_subject_match_and_match_order() -> None:
    h = harness()
    reply, ctx = await call(h, [CAROL])
    assert reply is None
    assert ctx.consumer.username == "guest"
    # SAN only: the subject is not looked at.
    assert "No consumer" in problem((await call(harness(match=["san"]), [CAROL]))[0])["detail"]


def test_certificate_names() -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(ALICE.encode())
    assert certificate_names(cert, ["san", "subject"]) == [
        "dns:alice.clients.example",
        "uri:spiffe://acme/alice",
        "subject:O=Acme,CN=alice",
    ]
    bob = x509.load_pem_x509_certificate(BOB.encode())
    assert certificate_names(bob, ["san"]) == ["email:bob@example.com"]


async def test_missing_certificate_names_what_is_expected() -> None:
    reply, _ = await call(harness(realm="edge"), None)
    body = problem(reply)
    assert header(reply, b"www-authenticate") == ['MutualTLS realm="edge"']
    assert "TLS client certificate" in body["detail"]
    assert body["expected_credentials"] == [{"in": "tls", "name": "client certificate"}]


@pytest.mark.parametrize(
    ("chain", "words"),
    [
        ([STRANGER], "not valid or not trusted"),
        (["-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"], "not valid"),
        ([MALLORY], "No consumer"),  # another organization's consumer
    ],
)
async def test_refusals(chain: list[str], words: str) -> None:
    reply, ctx = await call(harness(), chain)
    assert words in problem(reply)["detail"]
    assert ctx.consumer is None


async def test_validity_is_checked_at_the_injected_clock() -> None:
    h = harness()
    issued = ISSUED
    h.now = issued + 3600
    assert (await call(h, [EXPIRED]))[0] is None
    h.now = issued + 2 * 86400  # the same chain, remembered, has now expired
    assert "not valid" in problem((await call(h, [EXPIRED]))[0])["detail"]
    h2 = harness()
    h2.now = issued - 60
    assert "not valid" in problem((await call(h2, [ALICE]))[0])["detail"]
    assert issued > NOW  # the default clock of Harness predates these certificates


async def test_suspended_consumer_anonymous_and_outage() -> None:
    h = harness()
    assert "suspended" in problem((await call(h, [BOB]))[0])["detail"]
    anon = harness(anonymous="guest")
    reply, ctx = await call(anon, None)
    assert reply is None
    assert ctx.consumer.username == "guest"
    h.store.fail = True
    fresh = CA.issue("dave", dns=["dave.example"])
    assert problem((await call(h, [fresh]))[0], 503)


def test_a_bad_ca_bundle_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="PEM"):
        Harness("mtls-auth", {"ca_certificates": "not pem"})


def _usage(*, key_cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign,
        crl_sign=False, encipher_only=False, decipher_only=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("key_usage", "accepted"),
    [(None, True), (_usage(key_cert_sign=True), True), (_usage(key_cert_sign=False), False)],
)
async def test_a_private_ca_without_key_usage_is_trusted_one_that_may_not_sign_is_not(
    key_usage: x509.KeyUsage | None, accepted: bool
) -> None:
    """What `openssl req -x509` makes: a CA without key usage, leaves without an authority
    key identifier. The TLS port (OpenSSL) accepts them, so must the plugin."""
    ca = CertificateAuthority("Private CA", key_usage=key_usage)
    leaf = ca.issue("alice.clients.example", client=True)
    h = Harness("mtls-auth", {"ca_certificates": ca.pem})
    h.store.add(record(CredentialKind.MTLS, "dns:alice.clients.example", "alice"))
    h.now = time.time()
    reply, ctx = await call(h, [leaf.cert])
    if accepted:
        assert reply is None
        assert ctx.consumer.username == "alice"
    else:
        assert problem(reply)["status"] == 401
