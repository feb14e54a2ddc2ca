"""The side-by-side view of two config versions: entities matched by id across every
kind, lines aligned, unchanged runs folded, secrets redacted on both sides."""

from __future__ import annotations

from typing import Any

from portcullis.model.config import GatewayConfig
from portcullis.web.dashboard.version_diff import DiffRow, side_by_side, version_diff

OLD: dict[str, Any] = {
    "services": [
        {"name": "orders", "url": "http://orders:8080"},
        {"name": "billing", "url": "http://billing:8080"},
    ],
    "routes": [
        {"name": "orders", "service": "orders", "paths": ["/orders"]},
        {"name": "legacy", "service": "billing", "paths": ["/old"]},
    ],
    "plans": [{"name": "gold", "limits": [{"limit": 10, "period": "1s"}]}],
    "plugins": [
        {
            "name": "jwt-auth",
            "route": "orders",
            "config": {"keys": [{"algorithm": "HS256", "secret": "a" * 40}]},
        }
    ],
}
NEW: dict[str, Any] = {
    "services": [
        {"name": "billing", "url": "http://billing:8080"},
        {"name": "orders", "url": "http://orders:9090"},
        {"name": "search", "url": "http://search:8080"},
    ],
    "routes": [{"name": "orders", "service": "orders", "paths": ["/orders"]}],
    "plans": [{"name": "gold", "limits": [{"limit": 20, "period": "1s"}]}],
    "plugins": [
        {
            "name": "jwt-auth",
            "route": "orders",
            "config": {"keys": [{"algorithm": "HS256", "secret": "b" * 40}]},
        }
    ],
}


def canonical(document: dict[str, Any]) -> dict[str, Any]:
    """The document as a stored version holds it (defaults filled in)."""
    return GatewayConfig.model_validate(document).canonical()


def test_entities_are_matched_by_id_in_every_kind() -> None:
    view = version_diff(canonical(OLD), canonical(NEW), old_version=4, new_version=5)
    sections = {s.collection: s for s in view.sections}
    assert list(sections) == ["services", "routes", "plugins", "plans"]
    services = sections["services"]
    assert [(e.id, e.status) for e in services.entities] == [
        ("orders", "changed"),
        ("search", "added"),
    ]
    assert services.reordered
    assert [(e.id, e.status) for e in sections["routes"].entities] == [("legacy", "removed")]
    assert [(e.id, e.status) for e in sections["plans"].entities] == [("gold", "changed")]
    assert view.summary == "1 added, 1 removed, 3 changed; order changed in services"


def test_a_changed_line_sits_beside_its_old_self() -> None:
    view = version_diff(canonical(OLD), canonical(NEW), old_version=4, new_version=5)
    orders = view.sections[0].entities[0]
    changed = [r for r in orders.rows if r.kind == "changed"]
    assert [(r.left, r.right) for r in changed] == [
        ('  "url": "http://orders:8080",', '  "url": "http://orders:9090",')
    ]


def test_secrets_are_redacted_and_a_secret_only_change_is_named() -> None:
    view = version_diff(canonical(OLD), canonical(NEW), old_version=4, new_version=5)
    plugin = next(s for s in view.sections if s.collection == "plugins").entities[0]
    assert plugin.id == "jwt-auth@route:orders"
    assert plugin.secret_only
    text = repr(view)
    assert "a" * 40 not in text
    assert "b" * 40 not in text


def test_long_unchanged_runs_fold_and_changes_keep_their_context() -> None:
    old = [f"line {i}" for i in range(20)]
    new = [*old[:10], "changed", *old[11:]]
    rows = side_by_side(old, new, context=2)
    assert rows[0] == DiffRow("fold", folded=8)
    assert [r.kind for r in rows[1:6]] == ["same", "same", "changed", "same", "same"]
    assert rows[6] == DiffRow("fold", folded=7)
    assert rows[3].left_no == rows[3].right_no == 11


def test_unequal_blocks_pair_lines_then_add() -> None:
    rows = side_by_side(["a", "x"], ["a", "y", "z"])
    assert [(r.kind, r.left, r.right) for r in rows] == [
        ("same", "a", "a"),
        ("changed", "x", "y"),
        ("added", None, "z"),
    ]


def test_equal_versions_have_no_sections() -> None:
    view = version_diff(canonical(OLD), canonical(OLD), old_version=1, new_version=1)
    assert view.empty
    assert view.summary == "no changes"
