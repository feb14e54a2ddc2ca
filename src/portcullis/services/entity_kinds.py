"""How each kind of gateway entity appears in the admin API.

A `Kind` names the config list an entity lives in, the field that identifies it,
the fields a client may sort and filter on, and which other entities depend on
one of its entries (so a DELETE can refuse with the dependents named instead of
leaving a dangling reference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from portcullis.model.apis import Api
from portcullis.model.certificates import Certificate
from portcullis.model.config import (
    Consumer,
    GatewayConfig,
    PluginInstance,
    Route,
    Service,
    Target,
    Upstream,
)
from portcullis.model.diff import plugin_key
from portcullis.model.plugins.registry import plugin_references
from portcullis.model.traffic import Boost, Override, Plan


@dataclass(frozen=True, slots=True)
class Dependent:
    """An entity that refers to another one."""

    kind: str
    id: str
    field: str


@dataclass(frozen=True, slots=True)
class Kind:
    """One entity collection under /admin/v1 (`services`, `routes`, ...).

    `identity_fields` can't change on PUT/PATCH: they make up the entity's id (a
    rename would leave references dangling; delete and re-create instead).
    """

    collection: str
    singular: str
    title: str
    model: type[BaseModel]
    identity_fields: tuple[str, ...]
    sort_fields: tuple[str, ...]
    filter_fields: tuple[str, ...]
    dependents: Callable[[GatewayConfig, str], list[Dependent]]
    example: dict[str, Any]
    # (field, collection) pairs: the entity names an entry of that collection in that field.
    references: tuple[tuple[str, str], ...] = ()
    # Entries carry an `organization` (targets belong to their upstream's instead).
    scoped: bool = True

    def ids_of(self, documents: list[dict[str, Any]]) -> list[str]:
        """The id of every entry (JSON documents), in config order."""
        if self.collection == "plugins":
            return plugin_ids([PluginInstance.model_construct(**d) for d in documents])
        return [self.base_id(d) for d in documents]

    def base_id(self, document: dict[str, Any]) -> str:
        """The id an entry has before de-duplication (only plugin ids can repeat)."""
        if self.collection == "plugins":
            return plugin_key(PluginInstance.model_construct(**document))
        return str(document[self.identity_fields[0]])


def plugin_ids(plugins: list[PluginInstance]) -> list[str]:
    """`name[instance]@scope`, with `#2`, `#3`… for repeats (as the config diff names them)."""
    out: list[str] = []
    seen: set[str] = set()
    for p in plugins:
        base = key = plugin_key(p)
        n = 1
        while key in seen:
            n += 1
            key = f"{base}#{n}"
        seen.add(key)
        out.append(key)
    return out


def _service_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    deps = [Dependent("routes", r.name, "service") for r in config.routes if r.service == name]
    deps += [
        Dependent("plugins", pid, "service")
        for pid, p in zip(plugin_ids(config.plugins), config.plugins, strict=True)
        if p.service == name
    ]
    return deps + [
        Dependent("apis", a.name, f"versions[{k}].{field}")
        for a in config.apis
        for k, v in enumerate(a.versions)
        for field, svc in (("service", v.service), ("sandbox.service", _sandbox_service(v)))
        if svc == name
    ]


def _sandbox_service(version: Any) -> str | None:
    return None if version.sandbox is None else version.sandbox.service


def _api_route_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    deps = [Dependent("apis", a.name, "routes") for a in config.apis if name in a.routes]
    return deps + [
        Dependent("apis", a.name, f"versions[{k}].routes")
        for a in config.apis
        for k, v in enumerate(a.versions)
        if name in v.routes
    ]


def _api_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    return [
        Dependent("consumers", c.username, f"api_versions.{name}")
        for c in config.consumers
        if name in c.api_versions
    ]


def _upstream_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    return [
        Dependent("services", s.name, "upstream") for s in config.services if s.upstream == name
    ]


def _route_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    return (
        [
            Dependent("plugins", pid, "route")
            for pid, p in zip(plugin_ids(config.plugins), config.plugins, strict=True)
            if p.route == name
        ]
        + _traffic_route_dependents(config, name)
        + _api_route_dependents(config, name)
    )


def _traffic_route_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    deps = [
        Dependent("plans", p.name, f"route_overrides.{name}")
        for p in config.plans
        if name in p.route_overrides
    ]
    return deps + [
        Dependent("boosts", b.name, "target.route") for b in config.boosts if b.target.route == name
    ]


def _plugin_config_dependents(config: GatewayConfig, kind: str, name: str) -> list[Dependent]:
    """Plugin instances whose config names the entity (key-auth `anonymous`, ...)."""
    return [
        Dependent("plugins", pid, f"config.{field}")
        for pid, p in zip(plugin_ids(config.plugins), config.plugins, strict=True)
        for field, named_kind, value in plugin_references(p.name, p.config)
        if named_kind == kind and value == name
    ]


def _consumer_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    deps = [
        Dependent("boosts", b.name, "target.consumer")
        for b in config.boosts
        if b.target.consumer == name
    ]
    deps += [
        Dependent("overrides", o.name, "consumer") for o in config.overrides if o.consumer == name
    ]
    return deps + _plugin_config_dependents(config, "consumers", name)


def _plan_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    deps = [Dependent("consumers", c.username, "plan") for c in config.consumers if c.plan == name]
    return deps + _plugin_config_dependents(config, "plans", name)


def _no_dependents(config: GatewayConfig, name: str) -> list[Dependent]:
    return []


SERVICES = Kind(
    "services",
    "service",
    "Services",
    Service,
    ("name",),
    ("name", "protocol", "url", "upstream", "path", "organization"),
    ("protocol", "upstream", "url", "organization"),
    _service_dependents,
    {"name": "orders", "url": "http://orders.internal:8080", "tags": ["team-a"]},
    references=(("upstream", "upstreams"),),
)
UPSTREAMS = Kind(
    "upstreams",
    "upstream",
    "Upstreams",
    Upstream,
    ("name",),
    ("name", "algorithm", "hash_on", "organization"),
    ("algorithm", "hash_on", "organization"),
    _upstream_dependents,
    {"name": "orders-pool", "algorithm": "round-robin", "targets": [{"target": "10.0.0.1:8080"}]},
)
ROUTES = Kind(
    "routes",
    "route",
    "Routes",
    Route,
    ("name",),
    ("name", "service", "priority", "strip_path", "preserve_host", "organization"),
    ("service", "strip_path", "preserve_host", "organization"),
    _route_dependents,
    {"name": "orders", "service": "orders", "paths": ["/orders"], "methods": ["GET", "POST"]},
    references=(("service", "services"),),
)
CONSUMERS = Kind(
    "consumers",
    "consumer",
    "Consumers",
    Consumer,
    ("username",),
    ("username", "custom_id", "organization"),
    ("custom_id", "organization"),
    _consumer_dependents,
    {"username": "acme", "custom_id": "crm-42"},
)
PLUGINS = Kind(
    "plugins",
    "plugin",
    "Plugin instances",
    PluginInstance,
    ("name", "instance_name", "service", "route"),
    ("name", "instance_name", "service", "route", "enabled", "organization"),
    ("name", "service", "route", "enabled", "organization"),
    _no_dependents,
    {"name": "request-size-limit", "route": "orders", "config": {"max_bytes": 1048576}},
    references=(("service", "services"), ("route", "routes")),
)
TARGETS = Kind(
    "targets",
    "target",
    "Targets",
    Target,
    ("target",),
    ("target", "weight"),
    ("weight",),
    _no_dependents,
    {"target": "10.0.0.2:8080", "weight": 50},
    scoped=False,
)
PLANS = Kind(
    "plans",
    "plan",
    "Plans",
    Plan,
    ("name",),
    ("name", "organization"),
    ("organization",),
    _plan_dependents,
    {
        "name": "starter",
        "description": "10 requests a second, 10,000 a month",
        "limits": [{"limit": 10, "period": "1s", "algorithm": "gcra", "burst": 20}],
        "quotas": [
            {"name": "monthly", "limit": 10000, "period": "month", "timezone": "Europe/Berlin"}
        ],
    },
)
BOOSTS = Kind(
    "boosts",
    "boost",
    "Boosts",
    Boost,
    ("name",),
    ("name", "multiplier", "organization"),
    ("applies_to", "organization"),
    _no_dependents,
    {
        "name": "new-year-peak",
        "multiplier": 3,
        "local": {
            "date": "2026-12-31",
            "start": "10:00",
            "end": "23:00",
            "timezone": "Europe/London",
        },
        "target": {"tag": "peak"},
    },
)
OVERRIDES = Kind(
    "overrides",
    "override",
    "Overrides",
    Override,
    ("name",),
    ("name", "consumer", "credential", "organization"),
    ("consumer", "credential", "organization"),
    _no_dependents,
    {
        "name": "acme-launch",
        "consumer": "acme",
        "multiplier": 5,
        "expires_at": "2026-12-01T00:00:00Z",
        "reason": "product launch, ticket OPS-42",
    },
    references=(("consumer", "consumers"),),
)
APIS = Kind(
    "apis",
    "api",
    "APIs",
    Api,
    ("name",),
    ("name", "organization"),
    ("organization",),
    _api_dependents,
    {
        "name": "orders",
        "title": "Orders API",
        "owners": ["orders-team@example.com"],
        "default_version": "v2",
        "versions": [
            {
                "name": "v1",
                "status": "deprecated",
                "routes": ["orders-v1"],
                "deprecated_at": "2026-06-01T00:00:00Z",
                "sunset_at": "2027-06-01T00:00:00Z",
                "successor": "v2",
            },
            {"name": "v2", "routes": ["orders-v2"]},
        ],
    },
)
CERTIFICATES = Kind(
    "certificates",
    "certificate",
    "Certificates",
    Certificate,
    ("name",),
    ("name", "organization"),
    ("organization",),
    _no_dependents,
    {
        "name": "api-example-com",
        "cert": "-----BEGIN CERTIFICATE-----\n...leaf...\n-----END CERTIFICATE-----\n"
        "-----BEGIN CERTIFICATE-----\n...intermediate...\n-----END CERTIFICATE-----\n",
        "key": "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n",
        "snis": ["api.example.com", "*.api.example.com"],
    },
)
KINDS: tuple[Kind, ...] = (
    SERVICES,
    UPSTREAMS,
    ROUTES,
    CONSUMERS,
    PLUGINS,
    PLANS,
    BOOSTS,
    OVERRIDES,
    APIS,
    CERTIFICATES,
)
KIND_BY_COLLECTION = {k.collection: k for k in KINDS}


def entry_of(document: dict[str, Any], collection: str, entity_id: str) -> dict[str, Any] | None:
    """The entry of a top-level collection of a config document with that id, if any."""
    docs: list[dict[str, Any]] = document.get(collection, [])
    ids = KIND_BY_COLLECTION[collection].ids_of(docs)
    return docs[ids.index(entity_id)] if entity_id in ids else None
