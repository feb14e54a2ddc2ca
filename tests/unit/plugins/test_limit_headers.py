"""RateLimit fields and refusal heads shared by the rate-limit and plan-limits plugins."""

from __future__ import annotations

from portcullis.limits.spec import MICROS, Decision, LimitSpec
from portcullis.plugins.limit_headers import CONTENT_TYPE, ratelimit_field, refusal

LABELS = ('"a"', '"b"')
POLICY = (b"ratelimit-policy", b'"a";q=10;w=1, "b";q=100;w=60')
SPECS = (LimitSpec.of("fixed_window", 10, "1s"), LimitSpec.of("sliding_window", 100, "1m"))


def test_field_lists_only_counted_limits() -> None:
    decisions = [
        Decision(True, 7, 1 * MICROS, 0),
        Decision(True, 0, 0, 0, counted=False),
    ]
    assert ratelimit_field(LABELS, SPECS, decisions) == b'"a";r=7;t=1'
    uncounted = [Decision(True, 0, 0, 0, counted=False)] * 2
    assert ratelimit_field(LABELS, SPECS, uncounted) is None


def test_t_never_exceeds_the_policy_window() -> None:
    # A sliding window may free its next unit a quantum after `w`: `t` stays within `w`.
    decisions = [Decision(True, 7, 2 * MICROS, 0), Decision(True, 0, 61 * MICROS, 0)]
    assert ratelimit_field(LABELS, SPECS, decisions) == b'"a";r=7;t=1, "b";r=0;t=60'


def test_refusal_waits_for_the_longest_violated_limit_and_names_only_those() -> None:
    decisions = [
        Decision(True, 3, 1 * MICROS, 0),
        Decision(False, 0, 20 * MICROS, 30 * MICROS),
    ]
    violated, counted, headers = refusal(LABELS, SPECS, decisions, POLICY)
    assert violated == (1,)
    assert counted
    assert headers == [
        CONTENT_TYPE,
        (b"retry-after", b"30"),
        POLICY,
        # `t`: more quota in 20 s; Retry-After: this request fits in 30 s.
        (b"ratelimit", b'"b";r=0;t=20'),
    ]


def test_uncounted_refusal_has_no_ratelimit_field_and_headers_can_be_off() -> None:
    decisions = [Decision(False, 0, 0, 0, counted=False), Decision(True, 1, 0, 0)]
    violated, counted, headers = refusal(LABELS, SPECS, decisions, POLICY)
    assert violated == (0,)
    assert not counted
    assert headers == [CONTENT_TYPE, (b"retry-after", b"1"), POLICY]
    _, _, bare = refusal(LABELS, SPECS, decisions, None)
    assert bare == [CONTENT_TYPE, (b"retry-after", b"1")]
