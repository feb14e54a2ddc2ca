"""Plans, quotas, boosts and overrides: validation, windows and reference errors with paths."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.limits.calendar import to_us
from portcullis.model.config import GatewayConfig
from portcullis.model.loader import ConfigError, load_config_data
from portcullis.model.traffic import Boost, Override, Plan

BASE: dict[str, Any] = {
    "services": [{"name": "shop", "url": "http://127.0.0.1:9"}],
    "routes": [{"name": "orders", "service": "shop"}],
    "consumers": [{"username": "acme", "plan": "free"}],
    "plans": [{"name": "free", "quotas": [{"name": "daily", "limit": 5, "period": "day"}]}],
}


def utc(*args: int) -> int:
    return to_us(datetime(*args, tzinfo=UTC))  # type: ignore[misc]


def test_the_new_year_peak_example_is_exact() -> None:
    boost = Boost.model_validate(
        {
            "name": "nye",
            "multiplier": 3,
            "local": {
                "date": "2026-12-31",
                "start": "10:00",
                "end": "23:00",
                "timezone": "Europe/London",
            },
            "target": {"tag": "peak"},
        }
    )
    assert boost.window_us() == (utc(2026, 12, 31, 10), utc(2026, 12, 31, 23))


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        # Summer time: London is UTC+1.
        ({"date": "2026-07-01", "start": "10:00", "end": "23:00"}, ((7, 1, 9), (7, 1, 22))),
        # 01:30 does not exist on 2026-03-29: the window starts at the jump (01:00 UTC).
        ({"date": "2026-03-29", "start": "01:30", "end": "03:00"}, ((3, 29, 1), (3, 29, 2))),
        # Crossing midnight, and 01:30 twice on 2026-10-25: the first one counts.
        ({"date": "2026-10-24", "start": "22:00", "end": "01:30"}, ((10, 24, 21), (10, 25, 0, 30))),
    ],
)
def test_local_windows_honour_daylight_saving(
    local: dict[str, str], expected: tuple[tuple[int, ...], tuple[int, ...]]
) -> None:
    boost = Boost.model_validate(
        {
            "name": "b",
            "multiplier": 2,
            "local": {**local, "timezone": "Europe/London"},
            "target": {"everyone": True},
        }
    )
    start, end = expected
    assert boost.window_us() == (utc(2026, *start), utc(2026, *end))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"multiplier": 1}, "greater than 1"),
        ({"multiplier": 101}, "less than or equal to 100"),
        ({"local": None, "starts_at": "2026-01-01T00:00:00Z"}, "starts_at and ends_at"),
        ({"starts_at": "2026-01-01T00:00:00Z", "ends_at": "2026-01-02T00:00:00Z"}, "not both"),
        ({"target": {"tag": "x", "route": "y"}}, "exactly one of consumer, tag, route"),
        ({"target": {}}, "exactly one of consumer, tag, route"),
        (
            {
                "local": {
                    "date": "2026-01-01",
                    "start": "10:00",
                    "end": "11:00",
                    "timezone": "Europe/Londn",
                }
            },
            "unknown time zone 'Europe/Londn'",
        ),
    ],
)
def test_boost_validation(data: dict[str, Any], message: str) -> None:
    base = {
        "name": "b",
        "multiplier": 2,
        "local": {"date": "2026-01-01", "start": "10:00", "end": "11:00", "timezone": "UTC"},
        "target": {"everyone": True},
    }
    with pytest.raises(ValidationError, match=message):
        Boost.model_validate({**base, **data})


def test_override_shape() -> None:
    ok = {
        "name": "o",
        "consumer": "acme",
        "multiplier": 2,
        "reason": "r",
        "expires_at": "2026-12-01T00:00:00+01:00",
    }
    assert Override.model_validate(ok).expires_us == utc(2026, 11, 30, 23)
    with pytest.raises(ValidationError, match="exactly one of consumer or credential"):
        Override.model_validate({**ok, "credential": "k1"})
    with pytest.raises(ValidationError, match="exactly one of limits or multiplier"):
        Override.model_validate({**ok, "limits": {"daily": 1}})
    with pytest.raises(ValidationError, match="timezone"):
        Override.model_validate({**ok, "expires_at": "2026-12-01T00:00:00"})
    with pytest.raises(ValidationError, match="expires_at"):
        Override.model_validate({k: v for k, v in ok.items() if k != "expires_at"})


def test_plan_validation() -> None:
    with pytest.raises(ValidationError, match="include 'consumer' or 'credential'"):
        Plan.model_validate({"name": "p", "limits": [{"limit": 1, "period": "1s", "key": "ip"}]})
    with pytest.raises(ValidationError, match="two limits or quotas are named 'p-1s'"):
        Plan.model_validate(
            {"name": "p", "limits": [{"limit": 1, "period": "1s"}, {"limit": 2, "period": 1}]}
        )
    plan = Plan.model_validate(
        {
            "name": "p",
            "limits": [{"limit": 10, "period": "1s", "key": ["consumer", "route"]}],
            "route_overrides": {"orders": {"quotas": [{"name": "d", "limit": 1, "period": "day"}]}},
        }
    )
    assert plan.item_names() == {"p-1s", "d"}


def test_reference_errors_carry_paths() -> None:
    data = {
        **BASE,
        "consumers": [{"username": "acme", "plan": "free"}, {"username": "b", "plan": "gold"}],
        "plans": [
            *BASE["plans"],
            {"name": "free"},
            {"name": "x", "route_overrides": {"no.such": {"limits": []}}},
        ],
        "boosts": [
            {
                "name": "b",
                "multiplier": 2,
                "starts_at": "2026-01-01T00:00:00Z",
                "ends_at": "2026-01-02T00:00:00Z",
                "target": {"consumer": "ghost"},
            },
        ],
        "overrides": [
            {
                "name": "o",
                "consumer": "acme",
                "limits": {"hourly": 1},
                "reason": "r",
                "expires_at": "2026-12-01T00:00:00Z",
            },
        ],
        "plugins": [{"name": "plan-limits", "config": {"default_plan": "nope"}}],
    }
    with pytest.raises(ConfigError) as info:
        load_config_data(data)
    found = {(i.location, i.message) for i in info.value.errors}
    assert found == {
        ("plans[1].name", "duplicate name 'free'"),
        ("consumers[1].plan", "unknown plan 'gold'"),
        ('plans[2].route_overrides["no.such"]', "unknown route 'no.such'"),
        ("boosts[0].target.consumer", "unknown consumer 'ghost'"),
        ("overrides[0].limits.hourly", "no limit or quota 'hourly' in plan 'free'"),
        ("plugins[0].config.default_plan", "unknown plan 'nope'"),
    }


def test_a_field_error_elsewhere_does_not_hide_or_invent_plan_references() -> None:
    data = {**BASE, "routes": [{"name": "orders", "service": "shop", "priority": "high"}]}
    with pytest.raises(ConfigError) as info:
        load_config_data(data)
    assert [i.location for i in info.value.errors] == ["routes[0].priority"]
    GatewayConfig.model_validate(BASE)
