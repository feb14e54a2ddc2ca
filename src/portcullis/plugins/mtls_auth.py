"""mtls-auth: authenticate requests by a TLS client certificate.

The TLS listener puts the client's certificate chain in the ASGI TLS extension,
`scope["extensions"]["tls"]["client_cert_chain"]` (PEM strings, leaf first). The
plugin does not trust that the listener verified it: it verifies the chain itself
against `ca_certificates` with cryptography's X.509 path validation (RFC 5280,
Web PKI profile: the leaf must allow clientAuth; a SAN is optional), at the time of the
injected clock, then maps the leaf to a consumer: its names, in `match` order
(`san`: each DNS, URI, email and IP SAN as `dns:…`, `uri:…`, `email:…`, `ip:…`;
`subject`: `subject:<RFC 4514 DN>`), are looked up among the consumers' mtls-auth
credentials (identity/credential_store.py; managed under
`/consumers/{username}/mtls-auth`), and the first that names a consumer the route
accepts (its organization's) wins.

A verified chain is remembered per plugin instance (bounded) with its validity
window, so a warm request costs a dict lookup and a clock comparison; the name ->
credential mapping stays in the worker's credential cache, which credential events
invalidate.

401s carry `WWW-Authenticate: MutualTLS realm="..."` (no HTTP authentication
scheme is registered for TLS client certificates; this one names what is
expected) and a problem saying a client certificate issued by the configured CA is
required. An unreachable store is a 503.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from portcullis.analytics.record import Flag
from portcullis.identity.credential_cache import Rejection
from portcullis.identity.credential_store import CredentialKind
from portcullis.model.plugins.mtls_auth import MtlsAuthConfig
from portcullis.plugins.auth_replies import (
    CONTENT_TYPE,
    DropNames,
    Reply,
    anonymous_consumer,
    anonymous_headers,
    credential_cache,
    set_identity,
)
from portcullis.plugins.base import Phase, Plugin, PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.problems import CREDENTIALS_UNAVAILABLE, UNAUTHORIZED, problem_body

_VERIFIED_CAPACITY = 10_000
# Web PKI end-entity rules, except that a client certificate may name its holder by
# subject alone (the Web PKI default requires a SAN).
# Private CAs issue client certificates the Web PKI profile would refuse: without a SAN
# (a subject DN only) or without an Authority Key Identifier. The TLS listener (OpenSSL)
# accepts both, so the plugin does too: it checks the chain, validity and usage.
_EE_POLICY = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.AuthorityKeyIdentifier, Criticality.NON_CRITICAL, None)
)


def _ca_key_usage(_policy: object, _cert: x509.Certificate, usage: x509.KeyUsage | None) -> None:
    # `openssl req -x509` makes CAs without a key usage (its default config leaves it out).
    if usage is not None and not usage.key_cert_sign:
        raise ValueError("the CA's key usage does not allow signing certificates")


_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.KeyUsage, Criticality.AGNOSTIC, _ca_key_usage
)
_EXPECTED: dict[str, Any] = {"expected_credentials": [{"in": "tls", "name": "client certificate"}]}


def certificate_names(cert: x509.Certificate, match: Sequence[str]) -> list[str]:
    """The identifiers an mtls credential may hold for `cert`, in `match` order."""
    names: list[str] = []
    for kind in match:
        if kind == "subject":
            names.append("subject:" + cert.subject.rfc4514_string())
            continue
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            continue
        names += ["dns:" + n.lower() for n in san.get_values_for_type(x509.DNSName)]
        names += ["uri:" + n for n in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names += ["email:" + n.lower() for n in san.get_values_for_type(x509.RFC822Name)]
        names += ["ip:" + str(n) for n in san.get_values_for_type(x509.IPAddress)]
    return names


def client_chain(scope: Any) -> list[str] | None:
    """The PEM chain of the ASGI TLS extension, leaf first; None without one."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, dict):
        return None
    chain = tls.get("client_cert_chain")
    if not chain or not isinstance(chain, list | tuple):
        return None
    return [str(pem) for pem in chain]


class MtlsAuth(Plugin[MtlsAuthConfig]):
    """Maps a verified client certificate to a consumer (see the module doc)."""

    name: ClassVar[str] = "mtls-auth"
    priority: ClassVar[int] = 1250
    refusal_flag = Flag.AUTH_FAILED
    config_model = MtlsAuthConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})

    def __init__(self, config: MtlsAuthConfig, env: PluginEnv) -> None:
        super().__init__(config, env)
        self.credentials = credential_cache(env, self.name)
        self._consumer = env.consumers.by_username.get
        self._clock = env.clock
        self._match = list(config.match)
        try:
            cas = x509.load_pem_x509_certificates(config.ca_certificates.encode())
        except ValueError as exc:
            raise ValueError(f"mtls-auth: ca_certificates: {exc}") from exc
        self._store = Store(cas)
        self._anonymous = anonymous_consumer(config.anonymous, env, self.name)
        self._anonymous_headers = anonymous_headers(self._anonymous)
        self._drop = DropNames(frozenset())
        # chain -> (names, not_before, not_after) as POSIX seconds.
        self._verified: OrderedDict[tuple[str, ...], tuple[list[str], float, float]] = OrderedDict()
        challenge = (b"www-authenticate", f'MutualTLS realm="{config.realm}"'.encode())
        wanted = "present a TLS client certificate issued by the gateway's configured CA"

        def refusal(detail: str) -> Reply:
            return Reply(
                401,
                problem_body(UNAUTHORIZED, f"{detail}: {wanted}.", **_EXPECTED),
                [CONTENT_TYPE, challenge],
            )

        self._missing = refusal("A client certificate is required")
        self._untrusted = refusal("The client certificate is not valid or not trusted")
        self._unknown = refusal("No consumer is registered for this client certificate")
        self._suspended = refusal("The consumer of this client certificate is suspended")
        self._unavailable = Reply(
            503,
            problem_body(CREDENTIALS_UNAVAILABLE, "The certificate cannot be mapped right now."),
            [CONTENT_TYPE, (b"retry-after", b"1")],
        )

    def _names(self, chain: list[str]) -> list[str] | None:
        """The leaf's names when the chain verifies now; None when it does not."""
        now = self._clock()
        key = tuple(chain)
        hit = self._verified.get(key)
        if hit is not None:
            names, not_before, not_after = hit
            return names if not_before <= now <= not_after else None
        try:
            certs = [x509.load_pem_x509_certificate(pem.encode()) for pem in chain]
            verifier = (
                PolicyBuilder()
                .store(self._store)
                .time(datetime.fromtimestamp(now, UTC))
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
                .build_client_verifier()
            )
            verified = verifier.verify(certs[0], certs[1:])
        except (ValueError, VerificationError):
            return None
        path = verified.chain
        not_before = max(c.not_valid_before_utc.timestamp() for c in path)
        not_after = min(c.not_valid_after_utc.timestamp() for c in path)
        names = certificate_names(certs[0], self._match)
        self._verified[key] = (names, not_before, not_after)
        while len(self._verified) > _VERIFIED_CAPACITY:
            self._verified.popitem(last=False)
        return names

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        chain = client_chain(ctx.scope)
        if chain is None:
            if self._anonymous is None:
                return self._missing.response()
            set_identity(ctx, self._drop, self._anonymous_headers)
            ctx.consumer = self._anonymous
            return None
        names = self._names(chain)
        if names is None:
            return self._untrusted.response()
        for name in names:
            outcome = await self.credentials.accepted(CredentialKind.MTLS, name, self._consumer)
            if outcome is Rejection.UNAVAILABLE:
                return self._unavailable.response()
            if isinstance(outcome, Rejection):
                continue  # no credential, or only other organizations' consumers'
            record, consumer = outcome
            ctx.credential_id = record.id
            if consumer.suspended:
                return self._suspended.response()
            set_identity(
                ctx,
                self._drop,
                [*consumer.upstream_headers, (b"x-credential-id", record.id.encode())],
            )
            ctx.consumer = consumer
            return None
        return self._unknown.response()
