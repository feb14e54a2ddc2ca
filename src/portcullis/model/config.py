"""Pydantic models for the gateway's declarative configuration.

These models are the single schema behind YAML files, the admin API and the
store. They validate eagerly and reject unknown fields so that a typo in a
config file is an error with a path, not a silently ignored setting.
"""

from __future__ import annotations

import re
import ssl
from enum import StrEnum
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    field_validator,
    model_validator,
)

from portcullis.http_fields import HeaderText
from portcullis.model.apis import Api, VersionName, api_reference_errors
from portcullis.model.bulk import gc_paused
from portcullis.model.certificates import Certificate, sni_errors
from portcullis.model.openapi import api_description_errors
from portcullis.model.plugins.registry import gateway_errors, references_of, validate_plugin
from portcullis.model.secrets import SCHEMA_OF
from portcullis.model.tenancy import reference_errors
from portcullis.model.traffic import Boost, Override, Plan, traffic_reference_errors
from portcullis.model.types import (
    MetadataValue,
    Method,
    Name,
    PriorityClass,
    StrictModel,
    Tag,
)

_HOST_LABEL = re.compile(
    r"^(\*\.)?([A-Za-z0-9-]+\.)*[A-Za-z0-9-]+(:\d{1,5})?$|^[A-Za-z0-9.-]+\.\*$"
)
# RFC 3986 path-abempty: what a service's base path may hold, as it goes on the wire.
_BASE_PATH = re.compile(r"(/([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*")
# A target host: a name or IPv4 address without spaces, controls or URI delimiters, or a
# bracketed IPv6 literal.
_TARGET_HOST = re.compile(r"[^\x00-\x20\x7f-\x9f/?#@\[\]:\\]+|\[[0-9A-Fa-f:.]+\]")
# A name sent as SNI and checked against an origin's certificate: a DNS name (no wildcard).
_TLS_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_PEM_CERT = "-----BEGIN CERTIFICATE-----"
_MAX_CA_PEM = 256 * 1024


def _check_ca_bundle(value: str) -> str:
    if _PEM_CERT not in value:
        raise ValueError("expected PEM CA certificates ('-----BEGIN CERTIFICATE-----')")
    if "PRIVATE KEY-----" in value:
        # A key pasted by mistake would be stored and exported in clear: refused.
        raise ValueError("a CA bundle holds certificates only, not a private key")
    try:
        # The standard library's own parser: what the data plane will load it with.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=value)
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise ValueError(f"not a valid PEM certificate bundle ({reason})") from None
    return value


def _check_tls_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if len(name) > 253 or not _TLS_NAME.fullmatch(name):
        raise ValueError(f"{value!r} is not a DNS name (no wildcard, no port)")
    return name


CaBundle = Annotated[
    str, Field(min_length=1, max_length=_MAX_CA_PEM), AfterValidator(_check_ca_bundle)
]
TlsName = Annotated[str, AfterValidator(_check_tls_name)]


class Timeouts(StrictModel):
    """Upstream timeouts in seconds. `total` bounds the whole exchange including retries."""

    connect: float = Field(default=5.0, gt=0, le=600)
    read: float = Field(default=60.0, gt=0, le=3600)
    write: float = Field(default=60.0, gt=0, le=3600)
    total: float | None = Field(default=None, gt=0, le=86400)


class Retries(StrictModel):
    """Retry policy.

    Retries are attempted only for idempotent methods, or for any method when the
    failure happened before any byte of the request was sent; with
    `idempotency_key` also for a request that carries an `Idempotency-Key`
    header (for upstreams that deduplicate by it). A retry goes to another
    target. `budget_ratio` caps retries to a fraction of the last 10 s of
    requests so a struggling upstream is not hammered, plus `min_per_second`
    retries per second for quiet services (shared by the data-plane workers).
    """

    attempts: int = Field(default=1, ge=0, le=10)
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    min_per_second: float = Field(default=10.0, ge=0)
    idempotency_key: bool = Field(
        default=False,
        description="also retry requests with an Idempotency-Key header, whatever the method",
    )
    on_statuses: list[int] = Field(default_factory=lambda: [502, 503, 504])

    @field_validator("on_statuses")
    @classmethod
    def _statuses(cls, v: list[int]) -> list[int]:
        for s in v:
            if not 500 <= s <= 599:
                raise ValueError(f"retry status {s} is not a 5xx status")
        return v


class ClassShares(StrictModel):
    """The fraction of an upstream's concurrency limit each priority class may fill.

    A request is admitted while the upstream's requests in flight (all classes
    together) are below its class's share of the current limit. As load rises the
    lower classes hit their share first and are shed; the headroom above their
    share stays free for the classes above them.
    """

    critical: float = Field(default=1.0, gt=0, le=1)
    high: float = Field(default=0.9, gt=0, le=1)
    normal: float = Field(default=0.7, gt=0, le=1)
    low: float = Field(default=0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.critical >= self.high >= self.normal >= self.low:
            raise ValueError("shares must not grow from critical to high to normal to low")
        return self


class AdaptiveConcurrency(StrictModel):
    """Adaptive concurrency limit of one upstream, learned from latency, with load shedding.

    Opt-in (`enabled: false` by default), as in Envoy: a learned limit refuses
    traffic that is served today when an upstream's latency is naturally uneven
    (long polls, reports, large downloads), so it is turned on per upstream by
    someone who knows its latency profile. Each data-plane worker learns its own
    limit. `gradient` (default) calibrates itself: it compares the recent average
    latency with the upstream's no-load latency and shrinks the limit when
    queueing makes latency exceed `tolerance` times that. It measures the no-load
    latency at start and then every `probe_interval` seconds by holding the limit
    at `min_limit` for one `window` (as Envoy's gradient controller does), so pick
    a `min_limit` the upstream serves without queueing. `aimd` adds one to the
    limit per window of successful requests under `latency_target` and multiplies
    it by `backoff` on a slower response, a 5xx or a timeout.
    Requests over their class's share (see `ClassShares`) get a 503 problem with
    `Retry-After: retry_after`; critical requests may wait up to `queue_timeout`
    seconds for a slot in a queue of `queue_size` (0: no queue).
    """

    enabled: bool = False
    algorithm: Literal["gradient", "aimd"] = "gradient"
    initial_limit: int = Field(default=100, ge=1, le=100_000)
    min_limit: int = Field(default=10, ge=1, le=100_000)
    max_limit: int = Field(default=1000, ge=1, le=100_000)
    latency_target: float = Field(default=1.0, gt=0, le=600, description="aimd: seconds")
    backoff: float = Field(default=0.9, ge=0.5, lt=1)
    tolerance: float = Field(default=1.5, ge=1, le=10, description="gradient: latency ratio")
    smoothing: float = Field(default=0.2, gt=0, le=1, description="gradient: weight of a decrease")
    window: float = Field(default=1.0, gt=0, le=60, description="gradient: seconds per sample")
    probe_interval: float = Field(default=60.0, gt=0, le=86400, description="gradient: seconds")
    shares: ClassShares = Field(default_factory=ClassShares)
    queue_size: int = Field(default=0, ge=0, le=10_000)
    queue_timeout: float = Field(default=0.5, gt=0, le=60)
    retry_after: int = Field(default=1, ge=1, le=3600)

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError("limits must satisfy min_limit <= initial_limit <= max_limit")
        return self


class Service(StrictModel):
    """An upstream service: either a named upstream (load-balanced) or a single URL.

    TLS to an https origin (docs/upstream-tls.md), named as in Kong: `tls_verify`
    (default true: the origin's certificate must chain to a trusted CA and name the
    host), `ca_certificates` (PEM bundles trusted for this service instead of the
    system store), `client_certificate` (a `certificates` entry of the service's
    organization presented to the origin: mutual TLS) and `tls_server_name` (the name
    sent as SNI and verified; default: the target's host, also with `preserve_host`).
    """

    name: Name
    url: str | None = None
    upstream: Name | None = None
    path: str = "/"
    protocol: Literal["http", "https"] = "http"
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retries: Retries = Field(default_factory=Retries)
    # For a `url` service (its implicit upstream); a named upstream carries its own.
    adaptive_concurrency: AdaptiveConcurrency = Field(default_factory=AdaptiveConcurrency)
    tls_verify: bool = Field(
        default=True,
        description="https: verify the origin's certificate chain and host name",
    )
    ca_certificates: list[CaBundle] = Field(
        default_factory=list,
        max_length=16,
        description="https: PEM CA bundles trusted instead of the system store (empty: it)",
    )
    client_certificate: Name | None = Field(
        default=None, description="https: the `certificates` entry presented to the origin"
    )
    tls_server_name: TlsName | None = Field(
        default=None,
        description="https: the name sent as SNI and verified (default: the target's host)",
    )
    # The tenant that owns this entity; admins limited to an organization see only its entities.
    organization: Name | None = None
    tags: list[Tag] = Field(default_factory=list)

    @property
    def scheme(self) -> str:
        """How the gateway reaches the origin: the url's scheme, else `protocol`."""
        return urlsplit(self.url).scheme if self.url is not None else self.protocol

    @model_validator(mode="after")
    def _origin_tls(self) -> Self:
        if self.scheme != "https":
            for field in ("tls_server_name", "client_certificate", "ca_certificates"):
                if getattr(self, field):
                    raise ValueError(f"{field}: applies to https services only")
            if not self.tls_verify:
                raise ValueError("tls_verify: applies to https services only")
        elif not self.tls_verify and self.ca_certificates:
            raise ValueError("ca_certificates: has no effect with tls_verify false")
        return self

    @model_validator(mode="after")
    def _url_or_upstream(self) -> Self:
        if (self.url is None) == (self.upstream is None):
            raise ValueError("exactly one of 'url' or 'upstream' must be set")
        if self.upstream is not None and self.adaptive_concurrency != AdaptiveConcurrency():
            raise ValueError("set 'adaptive_concurrency' on the upstream, not on its service")
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url must be an absolute http(s) URL with a host")
            if parts.username is not None or parts.password is not None:
                # The proxy never sends them, and a URL is exported and audited in clear:
                # refused rather than kept as a secret that does nothing.
                raise ValueError(
                    "url must not carry credentials (user:password@); send upstream "
                    "credentials with the request-transformer plugin, whose values are redacted"
                )
            try:
                _ = parts.port
            except ValueError as exc:
                raise ValueError(f"url has an invalid port: {exc}") from None
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            if not _TARGET_HOST.fullmatch(host):
                raise ValueError(f"url has an invalid host {parts.hostname!r}")
        if not self.path.startswith("/"):
            raise ValueError("path must start with '/'")
        base = urlsplit(self.url).path if self.url is not None else self.path
        if not _BASE_PATH.fullmatch(base):
            # It is copied into every upstream request-target.
            raise ValueError(
                f"path {base!r} may only hold URI path characters (percent-encode others)"
            )
        return self


class Target(StrictModel):
    """One backend address of an upstream, `host:port`, with a relative weight."""

    target: str
    weight: int = Field(default=100, ge=0, le=65535)
    tags: list[Tag] = Field(default_factory=list)

    @field_validator("target")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("target must be 'host:port' with a port from 1 to 65535")
        if host.startswith("[") != host.endswith("]") or (":" in host and host[0] != "["):
            raise ValueError("IPv6 target hosts must be written in brackets, e.g. '[::1]:8080'")
        if not _TARGET_HOST.fullmatch(host):
            # It becomes the upstream's Host header.
            raise ValueError(f"invalid target host {host!r}")
        return v

    @property
    def host(self) -> str:
        return self.target.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.target.rpartition(":")[2])


class ActiveHealthCheck(StrictModel):
    """Periodic HTTP probes of every target."""

    enabled: bool = False
    path: str = "/"
    interval: float = Field(default=5.0, gt=0, le=3600)
    timeout: float = Field(default=2.0, gt=0, le=600)
    healthy_threshold: int = Field(default=2, ge=1, le=100)
    unhealthy_threshold: int = Field(default=3, ge=1, le=100)
    healthy_statuses: list[int] = Field(default_factory=lambda: [200, 201, 202, 204, 301, 302])


class PassiveHealthCheck(StrictModel):
    """Health inferred from proxied traffic: consecutive failures mark a target down."""

    enabled: bool = True
    unhealthy_failures: int = Field(default=5, ge=1, le=1000)
    unhealthy_timeouts: int = Field(default=3, ge=1, le=1000)
    failure_statuses: list[int] = Field(default_factory=lambda: [500, 502, 503, 504])
    # A passively-failed target without active checks is retried after this long.
    recovery_after: float = Field(default=10.0, gt=0, le=3600)


class HealthChecks(StrictModel):
    active: ActiveHealthCheck = Field(default_factory=ActiveHealthCheck)
    passive: PassiveHealthCheck = Field(default_factory=PassiveHealthCheck)


class CircuitBreaker(StrictModel):
    """Per-target breaker: opens on a failure rate over a window, probes after a cool-down."""

    enabled: bool = True
    window: float = Field(default=10.0, gt=0, le=3600, description="seconds of history")
    min_requests: int = Field(default=20, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    open_for: float = Field(default=5.0, gt=0, le=3600, description="seconds before half-open")
    half_open_probes: int = Field(default=1, ge=1, le=100)


class Algorithm(StrEnum):
    ROUND_ROBIN = "round-robin"
    WEIGHTED_ROUND_ROBIN = "weighted-round-robin"
    LEAST_CONNECTIONS = "least-connections"
    CONSISTENT_HASHING = "consistent-hashing"
    LATENCY_EWMA = "latency-ewma"


class Upstream(StrictModel):
    """A named, load-balanced set of targets."""

    name: Name
    algorithm: Algorithm = Algorithm.ROUND_ROBIN
    hash_on: Literal["ip", "header", "consumer"] = "ip"
    hash_on_header: str | None = None
    targets: list[Target] = Field(default_factory=list)
    healthchecks: HealthChecks = Field(default_factory=HealthChecks)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    adaptive_concurrency: AdaptiveConcurrency = Field(default_factory=AdaptiveConcurrency)
    # The tenant that owns this entity; admins limited to an organization see only its entities.
    organization: Name | None = None
    tags: list[Tag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _hash_header(self) -> Self:
        if self.hash_on == "header" and not self.hash_on_header:
            raise ValueError("hash_on 'header' needs 'hash_on_header'")
        seen: set[str] = set()
        for t in self.targets:
            if t.target in seen:
                raise ValueError(f"duplicate target {t.target!r}")
            seen.add(t.target)
        return self


class PathMatcher(StrictModel):
    """A parsed route path: `/p` prefix, `=/p` exact, `~regex` with named groups."""

    kind: Literal["prefix", "exact", "regex"]
    value: str

    @classmethod
    def parse(cls, raw: str) -> PathMatcher:
        if raw.startswith("~"):
            pattern = raw[1:]
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regex {pattern!r}: {exc}") from None
            return cls(kind="regex", value=pattern)
        if raw.startswith("="):
            value, kind = raw[1:], "exact"
        else:
            value, kind = raw, "prefix"
        if not value.startswith("/"):
            raise ValueError(f"path {raw!r} must start with '/' (or '=/' for exact, '~' for regex)")
        return cls(kind=kind, value=value)


def _check_host(h: str) -> str:
    if not _HOST_LABEL.fullmatch(h):
        raise ValueError(f"invalid host {h!r}")
    return h.lower()


def _check_path(p: str) -> str:
    PathMatcher.parse(p)
    return p


class Hsts(StrictModel):
    """`Strict-Transport-Security` on a route's responses to TLS requests (RFC 6797).

    Never sent on plain HTTP (§7.2: a UA ignores it there, and an attacker could strip
    or forge it). `preload` needs what browser preload lists require: a year or more
    and `include_subdomains`.
    """

    max_age: int = Field(default=31_536_000, ge=0, le=2**31 - 1, description="seconds")
    include_subdomains: bool = False
    preload: bool = False

    @model_validator(mode="after")
    def _preload(self) -> Self:
        if self.preload and not (self.include_subdomains and self.max_age >= 31_536_000):
            raise ValueError(
                "preload: needs include_subdomains and a max_age of 31536000 (a year) or more"
            )
        return self

    def header_value(self) -> bytes:
        value = f"max-age={self.max_age}"
        if self.include_subdomains:
            value += "; includeSubDomains"
        if self.preload:
            value += "; preload"
        return value.encode("ascii")


# Validated per item so that errors point at the entry, e.g. routes[3].paths[0].
HostPattern = Annotated[str, AfterValidator(_check_host)]
RoutePath = Annotated[str, AfterValidator(_check_path)]


class Route(StrictModel):
    """Matches requests and sends them to a service.

    paths: `/api` (prefix), `=/health` (exact), `~^/users/(?P<id>\\d+)$` (regex).
    hosts: `api.example.com` (exact), `*.example.com` (wildcard suffix), `api.*` (prefix).
    Within equal `priority`, more specific matches win (exact > longer prefix > regex).
    `priority_class` is the load-shedding class of the route's requests (see
    `Consumer.priority_class` for how the two combine).
    """

    name: Name
    service: Name
    hosts: list[HostPattern] = Field(default_factory=list)
    paths: list[RoutePath] = Field(default_factory=lambda: ["/"])
    methods: list[Method] = Field(default_factory=list)
    headers: dict[str, list[str]] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    strip_path: bool = True
    preserve_host: bool = False
    # A path with %2F, %5C or a backslash (see proxy/target.py): refused with a 400, forwarded
    # with them still encoded, or decoded to "/" and routed again.
    encoded_slashes: Literal["reject", "decode", "keep"] = "reject"
    priority_class: PriorityClass | None = None
    # A plain-HTTP request gets a redirect to https://host[:PORTCULLIS_PROXY_TLS_PORT]/path?q
    # before any plugin runs (docs/upstream-tls.md); 308 keeps the method and body.
    https_redirect: bool = False
    https_redirect_status_code: Literal[301, 302, 307, 308] = 308
    hsts: Hsts | None = Field(
        default=None, description="Strict-Transport-Security on responses to TLS requests"
    )
    # The tenant that owns this entity; admins limited to an organization see only its entities.
    # Its auth plugins accept credentials of this organization's consumers only (the
    # operator's routes: of consumers without one), see `ConsumerIndex.view`.
    organization: Name | None = None
    shared_consumers: bool = Field(
        default=False,
        description="also accept consumers the route's owner does not own: on an "
        "organization's route the operator's (no organization), on the operator's routes "
        "every organization's; they are in none of the route's acl groups",
    )
    tags: list[Tag] = Field(default_factory=list)

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one path is required (use '/' to match everything)")
        return v

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for k, vals in v.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", k):
                raise ValueError(f"invalid header name {k!r}")
            if k.lower() == "host":
                raise ValueError("match hosts with 'hosts', not a 'host' header matcher")
            if not vals:
                raise ValueError(f"header {k!r} needs at least one value")
            out[k.lower()] = vals
        return out

    @property
    def path_matchers(self) -> list[PathMatcher]:
        return [PathMatcher.parse(p) for p in self.paths]


class ConsumerStatus(StrEnum):
    active = "active"
    suspended = "suspended"


class Consumer(StrictModel):
    """An API consumer (application) of one organization.

    Credentials (API keys, OAuth clients) live in the store, not in this document:
    there can be many of them and their secrets must never be exported. `groups`
    feed the acl plugin; `plan` names the traffic plan (limits and quotas) that
    applies to the consumer's requests. A suspended consumer is refused by every
    auth plugin, whatever credential it presents.

    `priority_class` is the load-shedding class of the consumer's requests. A
    request's class is the consumer's when only it is set, the route's when only
    that is set, "normal" when neither is, and the less urgent of the two when both are:
    a consumer may lower a route's class but never raise it. Routes are classified
    by whoever owns the upstream, and consumers may be edited by another
    organization's admins; letting a consumer lift its traffic over a route's
    class would let it take the headroom kept for critical traffic.
    """

    username: Name
    # Sent upstream as X-Consumer-Custom-ID, so no control characters.
    custom_id: HeaderText | None = Field(default=None, max_length=256)
    organization: Name | None = None
    status: ConsumerStatus = ConsumerStatus.active
    groups: list[Name] = Field(default_factory=list)
    plan: Name | None = None
    priority_class: PriorityClass | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=64)
    tags: list[Tag] = Field(default_factory=list)
    api_versions: dict[Name, VersionName] = Field(
        default_factory=dict,
        max_length=64,
        description="api name -> the version this consumer gets when its request names none",
    )


class PluginInstance(StrictModel):
    """A configured plugin, global or scoped to one service or one route."""

    name: Name
    instance_name: Name | None = None
    service: Name | None = None
    route: Name | None = None
    # The tenant that owns this entity; admins limited to an organization see only its entities.
    organization: Name | None = None
    enabled: bool = True
    # Described by the plugin's own model (its secrets marked there, see model/secrets.py).
    config: dict[str, Any] = Field(default_factory=dict, json_schema_extra={SCHEMA_OF: "plugin"})

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if self.service is not None and self.route is not None:
            raise ValueError("a plugin is scoped to a service or a route, not both")
        return self

    @property
    def scope(self) -> tuple[str, str | None]:
        if self.route is not None:
            return ("route", self.route)
        if self.service is not None:
            return ("service", self.service)
        return ("global", None)


class GatewayConfig(StrictModel):
    """The whole declarative configuration of a gateway."""

    format_version: Literal["1"] = "1"
    services: list[Service] = Field(default_factory=list)
    upstreams: list[Upstream] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    consumers: list[Consumer] = Field(default_factory=list)
    plugins: list[PluginInstance] = Field(default_factory=list)
    # Traffic plans, boost windows and emergency overrides (model/traffic.py).
    plans: list[Plan] = Field(default_factory=list)
    boosts: list[Boost] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)
    # API products: versions, lifecycle and descriptions over routes (model/apis.py).
    apis: list[Api] = Field(default_factory=list)
    # TLS certificates served by server name or presented to origins (model/certificates.py).
    certificates: list[Certificate] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Self:
        """Cross-references are checked here so that errors carry a path like routes[3].service."""
        errors: list[str] = []

        def unique(kind: str, names: list[str]) -> set[str]:
            seen: set[str] = set()
            for i, n in enumerate(names):
                if n in seen:
                    errors.append(f"{kind}[{i}].name: duplicate name {n!r}")
                seen.add(n)
            return seen

        unique("upstreams", [u.name for u in self.upstreams])
        unique("services", [s.name for s in self.services])
        unique("routes", [r.name for r in self.routes])
        seen_users: set[str] = set()
        for i, c in enumerate(self.consumers):
            if c.username in seen_users:
                errors.append(f"consumers[{i}].username: duplicate username {c.username!r}")
            seen_users.add(c.username)
        for i, p in enumerate(self.plugins):
            invalid = validate_plugin(p.name, p.config)
            if not invalid:
                invalid = gateway_errors(p.name, p.config, p.scope, self)
            errors.extend(f"plugins[{i}].{e}" for e in invalid)
        errors.extend(traffic_reference_errors(self))
        unique("apis", [a.name for a in self.apis])
        errors.extend(api_reference_errors(self.apis, self.consumers))
        errors.extend(api_description_errors(self.apis))
        unique("certificates", [c.name for c in self.certificates])
        errors.extend(sni_errors(self.certificates))
        # Every name an entry writes resolves, and within its organization (model/tenancy.py).
        errors.extend(reference_errors(self, references_of(self)))
        if errors:
            raise ValueError(ReferenceErrors(errors))
        return self

    def canonical(self) -> dict[str, Any]:
        """The JSON-compatible form used for storage, export and diff (stable ordering)."""
        with gc_paused():
            return self.model_dump(mode="json", exclude_defaults=False)


class ReferenceErrors(list[str]):
    """Cross-reference errors, each already prefixed with its location."""

    def __str__(self) -> str:
        return "; ".join(self)
