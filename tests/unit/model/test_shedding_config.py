"""Config for priority classes and adaptive concurrency: defaults and validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.model.config import AdaptiveConcurrency, ClassShares, GatewayConfig


def _doc(**service: Any) -> dict[str, Any]:
    return {
        "upstreams": [{"name": "u", "targets": [{"target": "10.0.0.1:80"}]}],
        "services": [{"name": "s", "upstream": "u", **service}],
        "routes": [{"name": "r", "service": "s", "priority_class": "critical"}],
        "consumers": [{"username": "c", "priority_class": "low"}],
    }


def test_defaults_are_off_with_generous_limits() -> None:
    block = AdaptiveConcurrency()
    assert block.enabled is False
    assert block.algorithm == "gradient"
    assert (block.min_limit, block.initial_limit, block.max_limit) == (10, 100, 1000)
    assert block.shares == ClassShares(critical=1.0, high=0.9, normal=0.7, low=0.5)
    assert block.queue_size == 0
    config = GatewayConfig.model_validate(_doc())
    assert config.upstreams[0].adaptive_concurrency == block
    assert config.routes[0].priority_class == "critical"
    assert config.consumers[0].priority_class == "low"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"min_limit": 50, "initial_limit": 20}, "min_limit <= initial_limit"),
        ({"initial_limit": 2000}, "initial_limit <= max_limit"),
        ({"shares": {"low": 0.8, "normal": 0.7}}, "must not grow"),
        ({"shares": {"critical": 0}}, "greater than 0"),
        ({"algorithm": "vegas"}, "'gradient' or 'aimd'"),
        ({"backoff": 1.0}, "less than 1"),
    ],
)
def test_invalid_blocks_are_rejected(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AdaptiveConcurrency.model_validate(block)


def test_priority_class_is_one_of_four() -> None:
    doc = _doc()
    doc["routes"][0]["priority_class"] = "urgent"
    with pytest.raises(ValidationError, match="critical"):
        GatewayConfig.model_validate(doc)


def test_a_service_of_a_named_upstream_cannot_carry_the_block() -> None:
    with pytest.raises(ValidationError, match="on the upstream"):
        GatewayConfig.model_validate(_doc(adaptive_concurrency={"enabled": True}))


def test_a_url_service_carries_the_block_of_its_implicit_upstream() -> None:
    doc = _doc()
    doc["services"].append(
        {"name": "direct", "url": "http://10.0.0.2", "adaptive_concurrency": {"enabled": True}}
    )
    config = GatewayConfig.model_validate(doc)
    assert config.services[1].adaptive_concurrency.enabled


def test_the_canonical_form_round_trips() -> None:
    doc = _doc()
    doc["upstreams"][0]["adaptive_concurrency"] = {
        "enabled": True,
        "algorithm": "aimd",
        "latency_target": 0.25,
        "shares": {"low": 0.3},
        "queue_size": 8,
    }
    config = GatewayConfig.model_validate(doc)
    assert GatewayConfig.model_validate(config.canonical()) == config
