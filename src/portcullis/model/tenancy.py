"""The tenancy rule: which organization a name written in the config resolves in.

Entities carry an optional `organization`. One without is the operator's. A name a
traffic rule or a plugin config writes (a consumer's plan, a plan's route overrides,
a boost's or an override's target, a plugin's `anonymous` consumer or
`default_plan`...) resolves only:

- to an entity of the *same* organization (the operator's entries: to the
  operator's), or
- to an operator-owned entity of a *shared* kind: plans, which the operator offers
  to every tenant (they only limit).

A service's `client_certificate` resolves in the service's organization only: the
certificate's key proves an identity to the origin, which only its owner may lend.

Consumers and routes are never shared by name: a name that picks a consumer or a
route changes that consumer's or route's traffic (a boost raises its limits, an
`anonymous` setting lends its identity), which only its own organization may do.

A plugin instance without an `organization` acts for its route's or service's (the
operator's when global). Names that do not resolve are reported like names that do
not exist, `unknown consumer 'x' in organization 'acme'`, so the answer never tells
a tenant what another tenant has.

How entities are wired (a route's service, a service's upstream, a plugin's scope)
need only exist, in any organization: the operator may wire one tenant's route to
another's service (the admin API keeps organization-limited admins inside theirs,
admin/scoping.py), and the data plane's boundary follows the route (see
`ConsumerIndex.view`). See docs/decisions/006-tenant-isolation.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

# Kinds the operator shares with every tenant by leaving `organization` empty.
SHARED_KINDS = frozenset({"plans"})
_SINGULAR = {
    "upstreams": "upstream",
    "services": "service",
    "routes": "route",
    "consumers": "consumer",
    "plans": "plan",
    "apis": "api",
    "certificates": "certificate",
}
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

# The names a plugin config refers to: (location under `config`, kind, name).
PluginReferences = Callable[[str, Mapping[str, Any]], list[tuple[str, str, str]]]
# The JSON Schema keyword marking a plugin config field that names an entity.
NAMES_KEYWORD = "x-names"


class Entries(Protocol):
    """What the rule reads of a config: its entity lists (a `GatewayConfig`, or the loader's
    placeholders of entries that failed validation, hence `object` and `getattr`)."""

    @property
    def upstreams(self) -> Sequence[object]: ...
    @property
    def services(self) -> Sequence[object]: ...
    @property
    def routes(self) -> Sequence[object]: ...
    @property
    def consumers(self) -> Sequence[object]: ...
    @property
    def plugins(self) -> Sequence[object]: ...
    @property
    def plans(self) -> Sequence[object]: ...
    @property
    def boosts(self) -> Sequence[object]: ...
    @property
    def overrides(self) -> Sequence[object]: ...
    @property
    def apis(self) -> Sequence[object]: ...
    @property
    def certificates(self) -> Sequence[object]: ...


def names(kind: str) -> dict[str, Any]:
    """`json_schema_extra` of a plugin config field holding the name of a `kind` entity
    (`consumers`, `plans`...): the rule above then applies to it, like to any reference."""
    return {NAMES_KEYWORD: kind}


def resolves(owner: str | None, target: str | None, kind: str) -> bool:
    """The rule (see the module doc): may an entry of `owner` name a `kind` entity of `target`?"""
    return target == owner or (target is None and kind in SHARED_KINDS)


def organization_of(entity: object) -> str | None:
    """An entity's organization (None: the operator's; read defensively, see below)."""
    org = getattr(entity, "organization", None)
    return org if isinstance(org, str) else None


def plugin_owner(
    plugin: object, routes: Mapping[str, str | None], services: Mapping[str, str | None]
) -> str | None:
    """The organization a plugin instance acts for: its own, else its route's or service's."""
    own = organization_of(plugin)
    if own is not None:
        return own
    route, service = getattr(plugin, "route", None), getattr(plugin, "service", None)
    if isinstance(route, str):
        return routes.get(route)
    if isinstance(service, str):
        return services.get(service)
    return None


def location_key(name: str) -> str:
    """A mapping key in a location (`.search`, or `["a.b"]` when it needs quoting)."""
    return f".{name}" if _PLAIN_KEY.match(name) else f"[{json.dumps(name)}]"


def _owners(entries: Iterable[object], field: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for entry in entries:
        name = getattr(entry, field, None)
        if isinstance(name, str) and name not in out:
            out[name] = organization_of(entry)
    return out


def _references(
    config: Entries,
    routes: Mapping[str, str | None],
    services: Mapping[str, str | None],
    plugin_references: PluginReferences,
) -> Iterator[tuple[str, str | None, str, str, bool]]:
    """Every name the config writes: (location, owner, kind, name, scoped); `scoped`
    False for the wiring of entities, which need only exist (see the module doc)."""
    for i, s in enumerate(config.services):
        if isinstance(up := getattr(s, "upstream", None), str):
            yield f"services[{i}].upstream", None, "upstreams", up, False
    # A certificate presented to an origin carries the service owner's identity (its key
    # signs the handshake): only the service's own organization's may be named.
    for i, s in enumerate(config.services):
        if isinstance(cert := getattr(s, "client_certificate", None), str):
            where = f"services[{i}].client_certificate"
            yield where, organization_of(s), "certificates", cert, True
    for i, r in enumerate(config.routes):
        if isinstance(svc := getattr(r, "service", None), str):
            yield f"routes[{i}].service", None, "services", svc, False
    for i, c in enumerate(config.consumers):
        if isinstance(plan := getattr(c, "plan", None), str):
            yield f"consumers[{i}].plan", organization_of(c), "plans", plan, True
    for i, plan in enumerate(config.plans):
        for route in getattr(plan, "route_overrides", None) or {}:
            where = f"plans[{i}].route_overrides{location_key(route)}"
            yield where, organization_of(plan), "routes", route, True
    for i, b in enumerate(config.boosts):
        target = getattr(b, "target", None)
        for field, kind in (("consumer", "consumers"), ("route", "routes")):
            if isinstance(name := getattr(target, field, None), str):
                yield f"boosts[{i}].target.{field}", organization_of(b), kind, name, True
    for i, o in enumerate(config.overrides):
        if isinstance(subject := getattr(o, "consumer", None), str):
            yield f"overrides[{i}].consumer", organization_of(o), "consumers", subject, True
    for i, c in enumerate(config.consumers):
        for api in getattr(c, "api_versions", None) or {}:
            where = f"consumers[{i}].api_versions{location_key(api)}"
            yield where, organization_of(c), "apis", api, True
    # An API's routes and services are scoped: its versions decide how their traffic is
    # answered (deprecation, 410s, sandboxes), which only their own organization may do.
    for i, a in enumerate(config.apis):
        owner = organization_of(a)
        for j, plan in enumerate(getattr(getattr(a, "access", None), "plans", None) or ()):
            yield f"apis[{i}].access.plans[{j}]", owner, "plans", plan, True
        for j, route in enumerate(getattr(a, "routes", None) or ()):
            yield f"apis[{i}].routes[{j}]", owner, "routes", route, True
        for k, v in enumerate(getattr(a, "versions", None) or ()):
            for j, route in enumerate(getattr(v, "routes", None) or ()):
                yield f"apis[{i}].versions[{k}].routes[{j}]", owner, "routes", route, True
            if isinstance(svc := getattr(v, "service", None), str):
                yield f"apis[{i}].versions[{k}].service", owner, "services", svc, True
            sandbox = getattr(v, "sandbox", None)
            if isinstance(svc := getattr(sandbox, "service", None), str):
                yield f"apis[{i}].versions[{k}].sandbox.service", owner, "services", svc, True
    for i, p in enumerate(config.plugins):
        for field, kind in (("route", "routes"), ("service", "services")):
            if isinstance(name := getattr(p, field, None), str):
                yield f"plugins[{i}].{field}", None, kind, name, False
        name_, settings = getattr(p, "name", None), getattr(p, "config", None)
        if isinstance(name_, str) and isinstance(settings, Mapping):
            owner = plugin_owner(p, routes, services)
            for where, kind, ref in plugin_references(name_, settings):
                yield f"plugins[{i}].config.{where}", owner, kind, ref, True


def reference_errors(config: Entries, plugin_references: PluginReferences) -> list[str]:
    """Every name that does not resolve under the rule, located like `routes[3].service`.

    Read defensively (`getattr`): the config loader runs this on placeholders of
    entries that failed field validation, which carry only some of their fields.
    """
    routes = _owners(config.routes, "name")
    services = _owners(config.services, "name")
    owners = {
        "upstreams": _owners(config.upstreams, "name"),
        "services": services,
        "routes": routes,
        "consumers": _owners(config.consumers, "username"),
        "plans": _owners(config.plans, "name"),
        "apis": _owners(config.apis, "name"),
        "certificates": _owners(getattr(config, "certificates", ()), "name"),
    }
    errors: list[str] = []
    for where, owner, kind, name, scoped in _references(
        config, routes, services, plugin_references
    ):
        known = owners[kind]
        if name in known and (not scoped or resolves(owner, known[name], kind)):
            continue
        singular = _SINGULAR[kind]
        if owner is not None:
            # Missing and another tenant's read alike: nothing to learn about other tenants.
            errors.append(f"{where}: unknown {singular} {name!r} in organization {owner!r}")
        elif name in known:
            errors.append(
                f"{where}: {singular} {name!r} belongs to organization {known[name]!r}; an "
                f"entity without an organization may only name the operator's"
            )
        else:
            errors.append(f"{where}: unknown {singular} {name!r}")
    return errors
