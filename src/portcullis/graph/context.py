"""What one GraphQL request carries to its resolvers: the authenticated caller, the
request facts the audit log records, the control plane's shared state, and the
request's own DataLoaders.

A `GraphContext` lives for exactly one HTTP request: its loaders (and everything
they cache) are never shared between requests or callers, so one tenant's batch
can never answer another's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from strawberry.types import Info

from portcullis.services.config_editor import RequestConfig
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.errors import FORBIDDEN, ServiceError
from portcullis.services.rbac import Caller, Permission
from portcullis.services.scoping import UNLIMITED, OrgScope, resolve_scope
from portcullis.services.state import AdminState

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GraphDeps:
    """What the GraphQL face needs from the application that mounts it."""

    state: Callable[[], AdminState]
    authenticate: Callable[[str], Awaitable[Caller | None]]
    # Application-wide objects a service needs beside the state (e.g. the OAuth
    # server), by name; the mounting application supplies them.
    extras: Callable[[str], Any] = field(default=lambda name: None)
    # Caches that live as long as the mounted face (e.g. an entity collection's sorted
    # views per config version): one per application, never per process, since two
    # applications in one process may serve two stores.
    caches: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class GraphContext:
    caller: Caller
    facts: RequestFacts
    deps: GraphDeps
    _scope: OrgScope | None = None
    # Per-request DataLoaders and memoised lookups, by name.
    loaders: dict[str, Any] = field(default_factory=dict)
    _editor: RequestConfig | None = None

    @property
    def state(self) -> AdminState:
        return self.deps.state()

    @property
    def editor(self) -> RequestConfig:
        """The config as this request sees it: read once, one version for every field
        (changes go through the shared editor). Services get this, not `state.editor`."""
        if self._editor is None:
            self._editor = RequestConfig(self.state.editor)
        return self._editor

    async def scope(self) -> OrgScope:
        if self._scope is None:
            organization = self.caller.organization_id
            self._scope = (
                UNLIMITED
                if organization is None
                else await resolve_scope(self.state.engine, organization)
            )
        return self._scope

    async def operation(self, permission: Permission) -> Operation:
        """The operation this request stands for, once the caller holds `permission`
        (a `forbidden` refusal otherwise, as REST's 403)."""
        if not self.caller.can(permission):
            raise ServiceError(
                FORBIDDEN,
                f"this operation needs the {permission.value!r} permission",
                required_permission=permission.value,
            )
        return await self.own_operation()

    async def own_operation(self) -> Operation:
        """The operation of a change callers make to their own account, which needs no
        permission (the service decides who may: e.g. only a signed-in user changes their
        password)."""
        return Operation.for_caller(self.caller, self.facts, self.state.audit, await self.scope())

    def loader(self, name: str, make: Callable[[], T]) -> T:
        """The request's loader `name`, made on first use."""
        found = self.loaders.get(name)
        if found is None:
            found = self.loaders[name] = make()
        return found


def context_of(info: Info[Any, Any]) -> GraphContext:
    ctx = info.context
    assert isinstance(ctx, GraphContext)
    return ctx
