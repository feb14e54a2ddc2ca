"""Which compiled contract serves a request: per route, per API version (one per snapshot).

A route in a version's `routes` serves that version only; a route in an API's own
`routes` is shared, and the request's version (`ctx.api_version`, set by the
version step after auth) picks the contract, else the API's `default_version`,
else its first version. A description that does not compile is kept as its error,
so the request-validator can refuse (fail closed) and say why in the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import structlog

from portcullis.contract.operations import Contract, compile_contract
from portcullis.contract.refs import ContractError
from portcullis.model.apis import Api, ApiVersion
from portcullis.model.config import GatewayConfig, Service

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class VersionContract:
    """One API version as a route serves it."""

    api: str
    version: str
    contract: Contract | None
    # Why `contract` is None although the version has a description.
    error: str | None
    # The path of the service the route sends this version to (what the upstream sees
    # before the client path), without a trailing slash.
    base_path: str
    mock: bool

    def upstream_path(self, path: str, matched_length: int, strip_path: bool) -> str:
        """The path the upstream receives for the client path `path` (proxy/paths.py)."""
        rest = path[matched_length:] if strip_path and matched_length else path
        if rest and not rest.startswith("/"):
            rest = "/" + rest
        return (self.base_path + rest) or "/"


@dataclass(frozen=True, slots=True)
class RouteContracts:
    """The versions one route serves."""

    strip_path: bool
    fixed: VersionContract | None = None
    shared: Mapping[str, VersionContract] = field(default_factory=dict)
    default: str | None = None

    def select(self, version: str | None) -> VersionContract | None:
        if self.fixed is not None:
            return self.fixed
        name = version or self.default
        return self.shared.get(name) if name is not None else None

    @property
    def has_mock(self) -> bool:
        if self.fixed is not None:
            return self.fixed.mock
        return any(v.mock for v in self.shared.values())


@dataclass(frozen=True, slots=True)
class ContractIndex:
    routes: Mapping[str, RouteContracts] = field(default_factory=dict)

    @classmethod
    def of(cls, config: GatewayConfig) -> ContractIndex:
        services = {s.name: s for s in config.services}
        routes = {r.name: r for r in config.routes}
        out: dict[str, RouteContracts] = {}
        for api in config.apis:
            for version in api.versions:
                for name in version.routes:
                    route = routes.get(name)
                    if route is not None:
                        vc = _version(api, version, services.get(route.service))
                        out[name] = RouteContracts(route.strip_path, fixed=vc)
            for name in api.routes:
                route = routes.get(name)
                if route is None:
                    continue
                shared = {
                    v.name: _version(api, v, services.get(v.service or route.service))
                    for v in api.versions
                }
                default = api.default_version or api.versions[0].name
                out[name] = RouteContracts(route.strip_path, shared=shared, default=default)
        return cls(out)


def _base_path(service: Service | None) -> str:
    if service is None:
        return ""
    path = urlsplit(service.url).path if service.url is not None else service.path
    return (path or "/").rstrip("/")


def _version(api: Api, version: ApiVersion, service: Service | None) -> VersionContract:
    contract: Contract | None = None
    error: str | None = None
    if version.openapi is not None:
        try:
            contract = compile_contract(version.openapi)
        except (ContractError, RecursionError) as exc:
            error = str(exc) or type(exc).__name__
            log.error("contract.compile_failed", api=api.name, version=version.name, error=error)
    mock = version.sandbox is not None and version.sandbox.mock
    return VersionContract(api.name, version.name, contract, error, _base_path(service), mock)


EMPTY_CONTRACTS = ContractIndex()
