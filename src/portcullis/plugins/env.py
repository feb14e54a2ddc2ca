"""What plugins may use besides their own config: the runtime services of a worker.

The one door from a handler to the runtime: a plugin reaches limits, caches,
credentials, keys, consumers, traffic rules and the clock through its `PluginEnv`,
never by importing a backend or a process-wide default itself.

A `PluginEnv` is handed to every plugin when a snapshot is compiled. Services that
outlive snapshots (the credential cache, JWKS caches, the gateway's own token
keys) are created once per worker and shared; `consumers` is rebuilt from each
config and narrowed to the view of the route being compiled. Fields are None when
the worker runs without that service (unit tests, tools), and plugins that need one
refuse to build without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from portcullis.cache.backend import CacheBackend
from portcullis.cache.memory import default_memory_cache
from portcullis.contract.index import EMPTY_CONTRACTS, ContractIndex
from portcullis.identity.consumers import EMPTY_CONSUMERS, ConsumerIndex
from portcullis.limits.backend import LimitBackend
from portcullis.limits.memory import default_memory_backend
from portcullis.model.traffic import EMPTY_TRAFFIC, TrafficRules

if TYPE_CHECKING:
    from jwt import PyJWK

    from portcullis.identity.credential_cache import CredentialCache
    from portcullis.identity.credential_lookup import ConsumerCredentialCache
    from portcullis.identity.jwks import JwksRegistry
    from portcullis.logship.shipper import ShipperRegistry
    from portcullis.redis_client import SharedRedis
    from portcullis.webhooks.destinations import DestinationPolicy


class IssuerKeys(Protocol):
    """The gateway's own OAuth2 issuer, as jwt-auth sees it (kept fresh by the worker)."""

    @property
    def issuer(self) -> str:
        """The `iss` of tokens the built-in authorization server signs."""
        ...

    def key_for(self, kid: str) -> PyJWK | None:
        """The public key with this `kid`, if it is currently published."""
        ...

    def is_revoked(self, jti: str) -> bool:
        """True when the token was revoked (RFC 7009) before its expiry."""
        ...

    def client_revoked(self, client_id: str) -> bool:
        """True when every token of the client was revoked (the client was deleted)."""
        ...


@dataclass(frozen=True, slots=True)
class PluginEnv:
    # The consumers whose credentials the route being compiled accepts (its organization's
    # view, `ConsumerIndex.view`): auth plugins find consumers only here.
    consumers: ConsumerIndex = EMPTY_CONSUMERS
    credentials: CredentialCache | None = None
    # basic-auth, hmac-auth and mtls-auth credentials (identity/credential_lookup.py).
    consumer_credentials: ConsumerCredentialCache | None = None
    # The worker's Redis (None without PORTCULLIS_REDIS_URL), for state a plugin shares
    # across workers and nodes (hmac-auth's seen nonces).
    redis: SharedRedis | None = None
    jwks: JwksRegistry | None = None
    issuer_keys: IssuerKeys | None = None
    limits: LimitBackend | None = None
    # The worker's response cache (memory or Redis), shared by response-cache instances.
    cache: CacheBackend | None = None
    # The id of the plugin instance being built (`name[instance]@scope`), for plugins
    # whose shared state must be kept apart per instance (rate-limit counters).
    instance: str = ""
    # The organization the plugin instance acts for (its own, else its route's or
    # service's; None: the operator's). Its counters live in this organization's namespace.
    organization: str | None = None
    clock: Callable[[], float] = field(default=time.time)
    # Plans, boosts and overrides of the config being compiled (like `consumers`).
    traffic: TrafficRules = EMPTY_TRAFFIC
    # The API versions' compiled OpenAPI descriptions by route (like `consumers`, per config).
    contracts: ContractIndex = EMPTY_CONTRACTS
    # Data-plane worker processes, each with its own copy of per-process state: a
    # gateway-wide allowance (the retry budget's reserve) is split between them.
    workers: int = 1
    # The worker's log shippers (portcullis/logship/), shared by log plugin instances and
    # kept across snapshots; None: the process-wide registry (tools, tests).
    shippers: ShipperRegistry | None = None
    # Where http-log may send (the webhook SSRF guard); None: only public addresses.
    destinations: DestinationPolicy | None = None

    def limit_backend(self) -> LimitBackend:
        """The worker's limit backend; without one, the process-wide memory backend (so
        counters survive snapshot swaps in tools and tests)."""
        return self.limits if self.limits is not None else default_memory_backend()

    def cache_backend(self) -> CacheBackend:
        """The worker's response cache; without one, the process-wide memory cache."""
        return self.cache if self.cache is not None else default_memory_cache()


DEFAULT_ENV = PluginEnv()
