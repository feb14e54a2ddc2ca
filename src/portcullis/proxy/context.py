"""The proxy's request context: the plugins' `RequestContext` with `route` narrowed to
the runtime's compiled route, which the proxy reads (chain, timeouts, pool) and the
plugin layer below the runtime cannot name (`plugins.base.RouteView`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portcullis.plugins.base import RequestContext

if TYPE_CHECKING:
    from portcullis.runtime.snapshot import CompiledRoute


class ProxyContext(RequestContext):
    """A `RequestContext` built by the proxy for a route of its snapshot."""

    __slots__ = ()
    route: CompiledRoute
