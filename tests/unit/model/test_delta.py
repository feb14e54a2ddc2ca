"""Entity-level deltas between canonical documents, and revalidating only what changed."""

from __future__ import annotations

import copy
from typing import Any

from portcullis.model import GatewayConfig
from portcullis.model.delta import apply_delta, compute_delta, revalidate
from portcullis.model.loader import load_config_data


def document(consumers: int = 50) -> dict[str, Any]:
    return load_config_data(
        {
            "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
            "routes": [{"name": f"r{i}", "service": "svc", "paths": [f"/r{i}"]} for i in range(5)],
            "consumers": [{"username": f"u{i}", "metadata": {"n": i}} for i in range(consumers)],
            "plugins": [{"name": "cors", "route": "r1", "config": {"origins": ["https://a.b"]}}],
        }
    ).canonical()


def test_a_one_entity_edit_is_a_one_entry_splice() -> None:
    old = document()
    new = copy.deepcopy(old)
    new["consumers"][7]["metadata"] = {"n": "edited"}
    delta = compute_delta(old, new)
    assert delta == {"splice": {"consumers": [7, 8, [new["consumers"][7]]]}}
    assert apply_delta(old, delta) == new
    assert old == document()  # the base is left alone


def test_values_equal_in_python_but_not_in_json_are_changes() -> None:
    """`1 == True == 1.0`: a delta that missed such an edit would store the old value."""
    old = document()
    for i, value in ((1, True), (0, False), (2, 2.0)):
        new = copy.deepcopy(old)  # no entry shared by identity: compared as JSON
        new["consumers"][i]["metadata"] = {"n": value}
        delta = compute_delta(old, new)
        assert delta == {"splice": {"consumers": [i, i + 1, [new["consumers"][i]]]}}
        assert compute_delta(old, copy.deepcopy(old)) == {}
    last = copy.deepcopy(old)
    last["consumers"][-1]["metadata"] = {"n": 49.0}
    assert compute_delta(old, last) == {"splice": {"consumers": [49, 50, [last["consumers"][-1]]]}}


def test_inserts_deletes_and_scalars_round_trip() -> None:
    old = document()
    new = copy.deepcopy(old)
    del new["consumers"][3:6]
    new["consumers"].insert(10, {"username": "x"})
    new["routes"].append({"name": "extra"})
    new["format_version"] = "2"
    delta = compute_delta(old, new)
    assert delta is not None
    assert delta["set"] == {"format_version": "2"}
    assert apply_delta(old, delta) == new
    assert compute_delta(old, copy.deepcopy(old)) == {}
    assert compute_delta(old, {**old, "more": []}) is None


def test_revalidate_reuses_unchanged_models_and_equals_a_full_validation() -> None:
    base = document()
    config = load_config_data(base)
    changed = dict(base)
    changed["consumers"] = list(base["consumers"])
    changed["consumers"][7] = {"username": "u7", "metadata": {"n": "edited"}, "tags": ["t"]}
    done = revalidate(config, base, changed)
    assert done is not None
    result, canonical = done
    full = load_config_data(changed)
    assert result == full
    assert canonical == full.canonical()
    # Untouched lists and entries keep their models: nothing else was validated again.
    assert result.routes is config.routes
    assert result.consumers[6] is config.consumers[6]
    assert result.consumers[8] is config.consumers[8]
    assert result.consumers[7] is not config.consumers[7]


def test_revalidate_declines_what_it_cannot_vouch_for() -> None:
    base = document()
    config = load_config_data(base)

    def edited(**collections: list[dict[str, Any]]) -> dict[str, Any]:
        return {**base, **collections}

    bad_field = edited(consumers=[*base["consumers"], {"username": "x", "status": "gone"}])
    duplicate = edited(consumers=[*base["consumers"], {"username": "u1"}])
    dangling = edited(routes=[*base["routes"], {"name": "r9", "service": "nope", "paths": ["/"]}])
    plugin_config = edited(plugins=[{"name": "cors", "route": "r1", "config": {"origins": 3}}])
    scalar = {**base, "format_version": "2"}
    for changed in (bad_field, duplicate, dangling, plugin_config, scalar):
        assert revalidate(config, base, changed) is None


def test_revalidate_of_an_empty_config() -> None:
    empty = GatewayConfig()
    changed = {**empty.canonical(), "consumers": [{"username": "a"}]}
    done = revalidate(empty, empty.canonical(), changed)
    assert done is not None
    assert [c.username for c in done[0].consumers] == ["a"]
