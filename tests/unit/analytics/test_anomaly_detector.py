"""Baseline math and the detector's judgement: z-scores, absolute minima, warm-up,
cooldown, credential stuffing per client IP, forgetting idle subjects."""

from __future__ import annotations

import math
import random

import pytest

from portcullis.analytics.anomalies import (
    Baseline,
    Detector,
    DetectorConfig,
    IpMinute,
    KeyMinute,
    Signal,
    key_observations,
)

M = 60
CONFIG = DetectorConfig(history_minutes=30, warmup_minutes=5)


def test_ewma_matches_the_closed_form() -> None:
    alpha = 0.2
    baseline = Baseline()
    xs = [10.0, 12.0, 9.0, 30.0, 11.0]
    for x in xs:
        baseline.update(x, alpha)
    # Mean: the first value, then m <- m + a (x - m); variance by West's recurrence.
    mean, variance = xs[0], 0.0
    for x in xs[1:]:
        diff = x - mean
        mean += alpha * diff
        variance = (1 - alpha) * (variance + alpha * diff * diff)
    assert baseline.mean == pytest.approx(mean)
    assert baseline.variance == pytest.approx(variance)
    assert baseline.n == 5


def test_ewma_of_a_stationary_series_estimates_its_mean_and_sd() -> None:
    rng = random.Random(7)
    baseline = Baseline()
    for _ in range(5000):
        baseline.update(rng.gauss(100, 10), 0.02)
    assert baseline.mean == pytest.approx(100, abs=3)
    assert math.sqrt(baseline.variance) == pytest.approx(10, rel=0.25)


def test_scores_use_a_noise_floor() -> None:
    steady = Baseline()
    for _ in range(20):
        steady.update(100, 0.1)
    assert steady.variance == 0
    # Counts: the sd is at least sqrt(mean) (Poisson noise), so +20 % is a z of 2, not infinity.
    assert steady.score(120, Signal.REQUEST_RATE) == pytest.approx(2.0)
    zero = Baseline()
    assert zero.score(3, Signal.AUTH_FAILURES) == 3.0  # floor of 1
    rates = Baseline()
    rates.update(0.01, 0.1)
    assert rates.score(0.51, Signal.ERROR_RATE) == pytest.approx(10.0)  # floor 0.05


def quiet(requests: int = 10, **fields: int) -> KeyMinute:
    return KeyMinute(
        requests,
        fields.get("errors", 0),
        fields.get("auth_failures", 0),
        fields.get("distinct_ips", 1),
        "acme",
    )


def feed(detector: Detector, minutes: int, minute: KeyMinute, start: int = 0) -> None:
    for n in range(minutes):
        assert detector.step(start + n * M, {"k1": minute}, {}) == []


def test_a_burst_on_one_key_is_a_request_rate_anomaly() -> None:
    detector = Detector(CONFIG)
    feed(detector, 20, quiet(10))
    findings = detector.step(20 * M, {"k1": quiet(600), "k2": quiet(10)}, {})
    assert [(f.subject, f.signal) for f in findings] == [("k1", Signal.REQUEST_RATE)]
    finding = findings[0]
    assert finding.observed == 600
    assert finding.baseline == pytest.approx(10)
    assert finding.score == pytest.approx((600 - 10) / math.sqrt(10))
    assert finding.consumer == "acme"
    assert finding.credential_id == "k1"
    assert finding.client_ip is None
    assert finding.details["requests"] == 600


def test_a_quiet_key_going_from_1_to_3_requests_is_not_an_anomaly() -> None:
    detector = Detector(CONFIG)
    feed(detector, 20, quiet(1))
    # z = (3 - 1) / 1 = 2 ... and even with a huge z, 3 is far below the absolute minimum.
    assert detector.step(20 * M, {"k1": quiet(3)}, {}) == []
    zero = Detector(CONFIG)
    feed(zero, 20, quiet(0))
    assert zero.step(20 * M, {"k1": quiet(50)}, {}) == []  # z = 50, but under 100 a minute


def test_request_rate_waits_for_the_warm_up() -> None:
    detector = Detector(CONFIG)
    feed(detector, 3, quiet(10))
    assert detector.step(3 * M, {"k1": quiet(600)}, {}) == []  # 3 minutes of history < 5


def test_an_anomaly_is_reported_once_per_cooldown_and_then_learnt() -> None:
    config = DetectorConfig(history_minutes=30, warmup_minutes=5, cooldown_seconds=300)
    detector = Detector(config)
    feed(detector, 10, quiet(10))
    assert len(detector.step(10 * M, {"k1": quiet(600)}, {})) == 1
    assert detector.step(11 * M, {"k1": quiet(1200)}, {}) == []  # in the cooldown
    feed(detector, 30, quiet(600), start=12 * M)  # the new level is learnt meanwhile
    assert detector.step(42 * M, {"k1": quiet(650)}, {}) == []


def test_error_rate_needs_enough_requests_and_a_real_rate() -> None:
    detector = Detector(CONFIG)
    feed(detector, 20, quiet(100, errors=1))
    assert detector.step(20 * M, {"k1": quiet(10, errors=10)}, {}) == []  # < 20 requests
    findings = detector.step(21 * M, {"k1": quiet(100, errors=60)}, {})
    assert [(f.signal, f.observed) for f in findings] == [(Signal.ERROR_RATE, 0.6)]


def test_auth_failures_and_distinct_ips_need_no_warm_up() -> None:
    detector = Detector(CONFIG)
    findings = detector.step(0, {"k1": quiet(80, auth_failures=70, distinct_ips=40)}, {})
    assert sorted(f.signal for f in findings) == [Signal.AUTH_FAILURES, Signal.DISTINCT_IPS]


def test_credential_stuffing_from_one_address_is_an_ip_anomaly() -> None:
    detector = Detector(CONFIG)
    background = {f"198.51.100.{n}": IpMinute(1) for n in range(5)}  # the odd typo
    for n in range(10):
        assert detector.step(n * M, {}, background) == []
    attack = {**background, "203.0.113.9": IpMinute(250, failing_keys=3, consumers=2)}
    findings = detector.step(10 * M, {}, attack)
    assert len(findings) == 1
    finding = findings[0]
    assert (finding.signal, finding.client_ip, finding.credential_id) == (
        Signal.IP_AUTH_FAILURES,
        "203.0.113.9",
        None,
    )
    assert finding.event_subject == "ip:203.0.113.9"
    assert finding.details == {"failing_keys": 3, "consumers": 2}
    # A few failures from an address are below the minimum, whatever the z-score.
    assert detector.step(11 * M, {}, {"192.0.2.1": IpMinute(15)}) == []


def test_untracked_addresses_beyond_the_cap_are_still_judged() -> None:
    detector = Detector(DetectorConfig(max_tracked_ips=2))
    detector.step(0, {}, {"a": IpMinute(1), "b": IpMinute(1), "c": IpMinute(1)})
    assert len(detector.ips) == 2
    findings = detector.step(M, {}, {"d": IpMinute(100)})
    assert [f.subject for f in findings] == ["d"]
    assert "d" not in detector.ips


def test_idle_quiet_subjects_are_forgotten_after_the_history() -> None:
    detector = Detector(CONFIG)
    detector.step(0, {"k1": quiet(1)}, {"192.0.2.1": IpMinute(1)})
    for n in range(1, 31):
        detector.step(n * M, {}, {})
    assert "k1" in detector.keys  # seen 30 minutes ago: still within the history
    assert "192.0.2.1" in detector.ips
    detector.step(31 * M, {}, {})
    assert detector.keys == {}
    assert detector.ips == {}


def test_a_key_without_traffic_is_observed_as_zero() -> None:
    observed = key_observations(None, CONFIG)
    assert observed[Signal.REQUEST_RATE] == 0.0
    assert observed[Signal.ERROR_RATE] is None


def test_config_from_settings_rejects_signals_that_cannot_suspend() -> None:
    from portcullis.settings import Settings

    settings = Settings(anomaly_auto_suspend=True, anomaly_auto_suspend_signals=["request_rate"])
    config = DetectorConfig.from_settings(settings)
    assert config.suspends(Signal.REQUEST_RATE)
    assert not config.suspends(Signal.DISTINCT_IPS)
    with pytest.raises(ValueError, match="can't suspend"):
        DetectorConfig.from_settings(Settings(anomaly_auto_suspend_signals=["ip_auth_failures"]))
    assert not DetectorConfig.from_settings(Settings()).suspends(Signal.REQUEST_RATE)
