"""The control-plane jobs' one policy: first round at once, 10 % jitter, backoff to 4 intervals."""

from __future__ import annotations

from portcullis.analytics.jobs import control_job


async def nothing() -> None:
    return None


def test_a_job_runs_at_once_with_jitter_and_backs_off_to_four_intervals() -> None:
    job = control_job("rollups", nothing, 60.0)
    assert job.immediate
    assert job.failure_event == "rollups.failed"
    assert job.jitter == 6.0
    assert job.max_backoff == 240.0
    assert all(60.0 <= job.next_delay() <= 66.0 for _ in range(100))
    job.consecutive_failures = 5
    assert all(240.0 <= job.next_delay() <= 246.0 for _ in range(100))
