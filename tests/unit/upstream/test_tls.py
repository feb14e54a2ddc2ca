"""Origin TLS contexts: what each setting builds, client keys loaded without a named
file, the cache that carries contexts across snapshots, and failures named for a 502."""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

import pytest

from portcullis.upstream import tls as tls_module
from portcullis.upstream.tls import (
    TlsCache,
    TlsSettings,
    TlsSetupError,
    build_context,
    describe_tls_error,
)
from support.tls_ca import TestCA


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


def test_defaults_verify_hostnames_against_the_system_store_at_tls_1_2_or_later() -> None:
    context = build_context(TlsSettings())
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert TlsSettings().is_default


def test_a_service_bundle_replaces_the_system_store(ca: TestCA) -> None:
    other = TestCA("Second CA")
    context = build_context(TlsSettings(ca_certificates=(ca.cert_pem, other.cert_pem)))
    subjects = {dict(x[0] for x in c["subject"])["commonName"] for c in context.get_ca_certs()}
    assert subjects == {"Portcullis Test CA", "Second CA"}
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_tls_verify_false_checks_nothing() -> None:
    context = build_context(TlsSettings(verify=False))
    assert context.verify_mode is ssl.CERT_NONE
    assert not context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


def test_a_bundle_that_does_not_load_names_its_index(ca: TestCA) -> None:
    broken = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"
    with pytest.raises(TlsSetupError, match=r"^ca_certificates\[1\]: not a PEM"):
        build_context(TlsSettings(ca_certificates=(ca.cert_pem, broken)))


def test_client_certificate_loads_from_memory_without_a_named_file(
    ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: made.append("x") or real(**kw))
    leaf = ca.issue("client", client=True)
    build_context(TlsSettings(client_cert=leaf.cert, client_key=leaf.key))
    assert made == []  # Linux: memfd, nothing on a filesystem


def test_without_memfd_the_key_file_is_private_and_removed_right_after(
    ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "memfd_create")
    seen: list[tuple[str, int]] = []
    real = tempfile.mkstemp

    def mkstemp(**kw: str) -> tuple[int, str]:
        fd, path = real(**kw)
        seen.append((path, os.stat(path).st_mode & 0o777))
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    leaf = ca.issue("client", client=True)
    context = build_context(TlsSettings(client_cert=leaf.cert, client_key=leaf.key))
    assert isinstance(context, ssl.SSLContext)
    [(path, mode)] = seen
    assert mode == 0o600
    assert not Path(path).exists()


def test_a_key_that_is_not_the_certificates_is_refused(ca: TestCA) -> None:
    one, two = ca.issue("one", client=True), ca.issue("two", client=True)
    with pytest.raises(TlsSetupError, match=r"^client_certificate: the certificate and key"):
        build_context(TlsSettings(client_cert=one.cert, client_key=two.key))


def test_an_encrypted_key_is_refused_without_a_prompt(ca: TestCA) -> None:
    from cryptography.hazmat.primitives import serialization

    leaf = ca.issue("client", client=True)
    key = serialization.load_pem_private_key(leaf.key.encode(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    ).decode()
    with pytest.raises(TlsSetupError, match="encrypted private keys are not supported"):
        build_context(TlsSettings(client_cert=leaf.cert, client_key=encrypted))


def test_the_cache_hands_the_next_snapshot_the_same_object_while_unchanged(ca: TestCA) -> None:
    settings = TlsSettings(ca_certificates=(ca.cert_pem,))
    first = TlsCache()
    entry = first.get(settings)
    assert first.get(settings) is entry
    second = TlsCache(first)
    assert second.get(TlsSettings(ca_certificates=(ca.cert_pem,))) is entry
    # Another server name: another origin key, the same context.
    renamed = second.get(TlsSettings(ca_certificates=(ca.cert_pem,), server_name="a.test"))
    assert renamed is not entry
    assert renamed.context is entry.context
    assert renamed.name_for("127.0.0.1") == "a.test"
    assert entry.name_for("h") == "h"
    second.seal()
    third = TlsCache(second)
    changed = third.get(TlsSettings(ca_certificates=(TestCA("New").cert_pem,)))
    assert changed.context is not entry.context
    assert len(third) == 1


def test_material_that_does_not_load_becomes_an_error_on_the_entry(ca: TestCA) -> None:
    one, two = ca.issue("one", client=True), ca.issue("two", client=True)
    entry = TlsCache().get(TlsSettings(client_cert=one.cert, client_key=two.key))
    assert entry.error is not None
    assert entry.error.startswith("client_certificate:")
    assert "PRIVATE" not in entry.error


def test_the_settings_digest_holds_no_key_material(ca: TestCA) -> None:
    leaf = ca.issue("client", client=True)
    digest = TlsSettings(client_cert=leaf.cert, client_key=leaf.key).digest()
    assert len(digest) == 64
    assert digest != TlsSettings(client_cert=leaf.cert).digest()


def test_failures_are_described_without_secrets() -> None:
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_message = "Hostname mismatch, certificate is not valid for 'a.test'."
    assert describe_tls_error(verify) == (
        "the origin's certificate was refused: Hostname mismatch, certificate is not "
        "valid for 'a.test'."
    )
    alert = ssl.SSLError(1, "alert")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert describe_tls_error(alert) == "TLS handshake failed: tlsv13 alert certificate required"
    assert describe_tls_error(OSError()) == "TLS handshake failed: OSError"
    assert tls_module.default_context().minimum_version is ssl.TLSVersion.TLSv1_2


def test_a_target_keeps_one_origin_per_scheme_and_tls_setting(ca: TestCA) -> None:
    from portcullis.model.config import CircuitBreaker as BreakerConfig
    from portcullis.model.config import HealthChecks, Target
    from portcullis.upstream.balancer import TargetState

    state = TargetState("up", Target(target="a.example:443"), HealthChecks(), BreakerConfig())
    tls = TlsCache().get(TlsSettings(ca_certificates=(ca.cert_pem,)))
    plain = state.origin("https")
    with_tls = state.origin("https", tls)
    assert plain.tls is None
    assert with_tls.tls is tls
    assert state.origin("https", tls) is with_tls
    # Pools key connections by origin: another TLS setting never shares them.
    assert (with_tls != plain and hash(with_tls) != hash(plain)) or with_tls != plain
