"""The delivery settings an operator tunes: retry schedule, lease, breaker rest."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from portcullis.settings import Settings
from portcullis.webhooks.retry import SCHEDULE


def test_the_defaults_are_the_standard_schedule_and_a_lease_from_the_timeout() -> None:
    settings = Settings()
    assert tuple(settings.webhook_retry_schedule) == SCHEDULE
    assert settings.webhook_lease is None
    assert settings.webhook_breaker_rest == 30


def test_the_schedule_is_read_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORTCULLIS_WEBHOOK_RETRY_SCHEDULE", "[0, 0.2, 1.5]")
    assert Settings().webhook_retry_schedule == [0, 0.2, 1.5]


@pytest.mark.parametrize("schedule", [[], [0, -1], [0, 8 * 86400]])
def test_a_bad_schedule_is_refused_naming_the_setting(schedule: list[float]) -> None:
    with pytest.raises(ValidationError, match="webhook_retry_schedule"):
        Settings(webhook_retry_schedule=schedule)


def test_a_lease_shorter_than_an_attempt_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"webhook_lease \(2.0 s\) must exceed"):
        Settings(webhook_timeout=2, webhook_lease=2)
    assert Settings(webhook_timeout=0.5, webhook_lease=2).webhook_lease == 2
