from __future__ import annotations

from portcullis.model import GatewayConfig
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.request_size_limit import RequestSizeLimit
from portcullis.runtime.snapshot import build_snapshot, implicit_upstream_name


def _config(**extra: object) -> GatewayConfig:
    base: dict[str, object] = {
        "upstreams": [{"name": "u", "targets": [{"target": "10.0.0.1:80"}]}],
        "services": [
            {"name": "by-upstream", "upstream": "u", "path": "/base/"},
            {"name": "by-url", "url": "https://api.example.com/v1", "timeouts": {"total": 9}},
        ],
        "routes": [
            {"name": "a", "service": "by-upstream", "paths": ["/a"]},
            {"name": "b", "service": "by-url", "paths": ["/b"]},
        ],
    }
    base.update(extra)
    return GatewayConfig.model_validate(base)


def test_services_compile_with_pools_and_timeouts() -> None:
    snap = build_snapshot(_config(), 7)
    assert snap.version == 7
    a = snap.router.match("GET", "", "/a/x", [])
    b = snap.router.match("GET", "", "/b", [])
    assert a is not None
    assert b is not None
    assert a.payload.service.base_path == "/base"
    assert a.payload.service.pool is snap.pools["u"]
    svc = b.payload.service
    assert svc.scheme == "https"
    assert svc.base_path == "/v1"
    assert svc.total_timeout == 9
    assert svc.pool is snap.pools[implicit_upstream_name(_config().services[1])]
    target = svc.pool.pick(client_ip="1.1.1.1")
    assert target is not None
    assert target.origin("https").authority == "api.example.com"


def test_plugin_scopes_route_beats_service_beats_global() -> None:
    """Route "a" has only the global plugin, "c" its service's, "b" its own over both."""
    cfg = _config(
        routes=[
            {"name": "a", "service": "by-upstream", "paths": ["/a"]},
            {"name": "b", "service": "by-url", "paths": ["/b"]},
            {"name": "c", "service": "by-url", "paths": ["/c"]},
        ],
        plugins=[
            {"name": "request-size-limit", "config": {"max_bytes": 1}},
            {"name": "request-size-limit", "service": "by-url", "config": {"max_bytes": 2}},
            {"name": "request-size-limit", "route": "b", "config": {"max_bytes": 3}},
        ],
    )
    snap = build_snapshot(cfg, 1)

    def limit(path: str) -> int:
        m = snap.router.match("GET", "", path, [])
        assert m is not None
        (plugin,) = m.payload.chain.access
        assert isinstance(plugin, RequestSizeLimit)
        return plugin.max_bytes

    assert limit("/a") == 1
    assert limit("/c") == 2
    assert limit("/b") == 3


def test_disabled_plugins_are_left_out() -> None:
    cfg = _config(
        plugins=[{"name": "request-size-limit", "enabled": False, "config": {"max_bytes": 1}}]
    )
    m = build_snapshot(cfg, 1).router.match("GET", "", "/a", [])
    assert m is not None
    assert m.payload.chain.access == ()


def test_target_state_survives_a_rebuild() -> None:
    first = build_snapshot(_config(), 1)
    state = first.pools["u"].targets[0]
    second = build_snapshot(_config(), 2, first)
    assert second.pools["u"].targets[0] is state


def test_retry_budget_survives_a_rebuild_while_its_policy_is_unchanged() -> None:
    first = build_snapshot(_config(), 1)
    budget = first.budgets["by-upstream"]
    budget.record_request()
    again = build_snapshot(_config(), 2, first)
    assert again.budgets["by-upstream"] is budget
    changed = _config(
        services=[
            {"name": "by-upstream", "upstream": "u", "retries": {"budget_ratio": 0.5}},
            {"name": "by-url", "url": "https://api.example.com/v1"},
        ]
    )
    rebuilt = build_snapshot(changed, 3, again)
    assert rebuilt.budgets["by-upstream"] is not budget
    assert rebuilt.budgets["by-upstream"].ratio == 0.5
    assert rebuilt.budgets["by-url"] is again.budgets["by-url"]


def test_retry_reserve_is_split_between_workers() -> None:
    snap = build_snapshot(_config(), 1, env=PluginEnv(workers=4))
    budget = snap.budgets["by-upstream"]
    assert (budget.ratio, budget.min_per_second) == (0.2, 2.5)
    route = snap.router.match("GET", "", "/a/x", [])
    assert route is not None
    assert route.payload.service.retry_budget is budget
