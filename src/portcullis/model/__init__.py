"""Declarative configuration schema: one source of truth for YAML, admin API and validation."""

from portcullis.model.config import (
    ActiveHealthCheck,
    CircuitBreaker,
    Consumer,
    GatewayConfig,
    HealthChecks,
    PassiveHealthCheck,
    PathMatcher,
    PluginInstance,
    Route,
    Service,
    Target,
    Timeouts,
    Upstream,
)

__all__ = [
    "ActiveHealthCheck",
    "CircuitBreaker",
    "Consumer",
    "GatewayConfig",
    "HealthChecks",
    "PassiveHealthCheck",
    "PathMatcher",
    "PluginInstance",
    "Route",
    "Service",
    "Target",
    "Timeouts",
    "Upstream",
]
