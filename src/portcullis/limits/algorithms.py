"""The four rate-limiting algorithms as pure functions over a small integer state.

Each function takes the stored state (None when there is none), `now` in integer
microseconds, the request's `cost` (weight, >= 0) and the `LimitSpec`, and returns
an `Outcome`: the `Decision` and, when the request is admitted with a cost, the new
state to store and for how long it matters (its TTL). A refused request changes
nothing. `lua/*.lua` implements exactly the same arithmetic for Redis; both are
checked against brute-force references in the unit tests.

- fixed window: windows aligned to the epoch; at most `limit` units per window.
  State `(window, count)`. A calendar window (`LimitSpec.calendar`, `ends_us` set)
  is one explicit window named by its key: state `(count,)`, reset at `ends_us`.
- sliding-window counter (Cloudflare's): the previous window's count, weighted by
  how much of it still overlaps the sliding period, plus the current window's.
  State `(window, current, previous)`; time counted in `spec.quantum_us` steps.
- token bucket: `capacity` (burst) tokens, refilled continuously at
  `limit / period`. State `(tokens x rate_num, last_refill_us)`: tokens are kept
  in units of 1/rate_num so that the refill per microsecond is the integer
  `rate_den` and nothing is ever rounded.
- GCRA (generic cell rate algorithm): one theoretical arrival time (TAT) per key,
  advanced by `cost x period / limit` per admitted request; a request passes when
  TAT - burst x period / limit <= now. State `(tat_us, tat_fraction)` with the
  fraction in units of 1/rate_den microseconds, again exact.

Token bucket and GCRA are two representations of the same meter: given the same
burst, they admit exactly the same requests (a unit test proves it). GCRA keeps one
number per key and is the cheaper of the two to store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from portcullis.limits.spec import CALENDAR_GRACE_US, Algorithm, Decision, LimitSpec

State = tuple[int, ...]


class Outcome(NamedTuple):
    decision: Decision
    state: State | None  # None: leave the stored state as it is
    ttl_us: int  # how long `state` matters; 0 when there is nothing to store


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def fixed_window(state: State | None, now: int, cost: int, spec: LimitSpec) -> Outcome:
    if spec.ends_us:
        return calendar_window(state, now, cost, spec)
    period, limit = spec.period_us, spec.limit
    window = now // period
    count = state[1] if state is not None and state[0] == window else 0
    end = (window + 1) * period - now
    if cost > limit:
        return Outcome(Decision(False, max(0, limit - count), end if count else 0, period), None, 0)
    if cost <= limit - count:
        count += cost
        reset = end if count else 0
        decision = Decision(True, limit - count, reset, 0)
        return Outcome(decision, (window, count) if cost else None, end if cost else 0)
    return Outcome(Decision(False, max(0, limit - count), end, end), None, 0)


def calendar_window(state: State | None, now: int, cost: int, spec: LimitSpec) -> Outcome:
    """One explicit window ending at `spec.ends_us` (the key names the window).

    A clock past the end (a node ahead of the one that chose the window) reads as
    "resets now": the next request picks the next window's key. The state is kept
    `CALENDAR_GRACE_US` past the end for nodes whose clock lags.
    """
    limit = spec.limit
    count = state[0] if state is not None else 0
    end = max(spec.ends_us - now, 0)
    if cost > limit:
        return Outcome(
            Decision(False, max(0, limit - count), end if count else 0, spec.period_us), None, 0
        )
    if cost <= limit - count:
        count += cost
        decision = Decision(True, limit - count, end if count else 0, 0)
        if not cost:
            return Outcome(decision, None, 0)
        return Outcome(decision, (count,), end + CALENDAR_GRACE_US)
    return Outcome(Decision(False, max(0, limit - count), end, max(end, 1)), None, 0)


def sliding_window(state: State | None, now: int, cost: int, spec: LimitSpec) -> Outcome:
    period, limit, quantum = spec.period_us, spec.limit, spec.quantum_us
    steps = period // quantum
    window = now // period
    start = window * period
    cur = prev = 0
    if state is not None:
        if state[0] == window:
            cur, prev = state[1], state[2]
        elif state[0] == window - 1:
            prev = state[1]
    weight = steps - (now - start) // quantum  # 1..steps: overlap of the previous window
    budget = limit * steps
    used = prev * weight + cur * steps
    if cost > limit:
        left = max(0, (budget - used) // steps)
        nxt = _sliding_next(start, spec, now, cur, prev, left)
        return Outcome(Decision(False, left, nxt, period), None, 0)
    if used + cost * steps <= budget:
        cur += cost
        used += cost * steps
        left = (budget - used) // steps
        decision = Decision(True, left, _sliding_next(start, spec, now, cur, prev, left), 0)
        if not cost:
            return Outcome(decision, None, 0)
        return Outcome(decision, (window, cur, prev), start + 2 * period - now)
    # Refused: the earliest time the same cost fits, in this window or the next two.
    at = start + 2 * period  # from there on both windows are empty
    slack = budget - (cur + cost) * steps
    found = False
    if slack >= 0 and prev > 0:
        step = steps - slack // prev
        if step < steps:
            at, found = start + step * quantum, True
    if not found:
        if cur == 0:
            at = start + period
        else:
            step = max(0, steps - ((limit - cost) * steps) // cur)
            if step < steps:
                at = start + period + step * quantum
    left = max(0, (budget - used) // steps)
    nxt = _sliding_next(start, spec, now, cur, prev, left)
    return Outcome(Decision(False, left, nxt, at - now), None, 0)


def _sliding_next(
    start: int, spec: LimitSpec, now: int, cur: int, prev: int, remaining: int
) -> int:
    """Microseconds until the sliding window allows one unit more than `remaining`
    (0 when nothing is spent). The previous window's weight drops one step per
    quantum; at the next window's start the current count becomes the previous one."""
    period, quantum, limit = spec.period_us, spec.quantum_us, spec.limit
    steps = period // quantum
    if remaining >= limit or not (cur or prev):
        return 0
    # The next unit is free once the weighted use is at most `target`.
    target = (limit - remaining - 1) * steps
    if prev and target >= cur * steps:
        step = max(steps - (target - cur * steps) // prev, (now - start) // quantum + 1)
        if step < steps:
            return start + step * quantum - now
    step = 0 if cur == 0 else max(0, steps - target // cur)
    return start + period + min(step, steps) * quantum - now


def token_bucket(state: State | None, now: int, cost: int, spec: LimitSpec) -> Outcome:
    unit, rate, capacity = spec.rate_num, spec.rate_den, spec.capacity
    full = capacity * unit
    if state is None:
        tokens = full
    else:
        tokens = min(state[0], full)
        elapsed = now - state[1]
        if elapsed > 0:
            missing = full - tokens
            tokens = full if elapsed >= _ceil_div(missing, rate) else tokens + elapsed * rate
    if cost > capacity:
        nxt = _next_unit(tokens, unit, rate, full)
        return Outcome(Decision(False, tokens // unit, nxt, spec.period_us), None, 0)
    need = cost * unit
    if tokens >= need:
        tokens -= need
        refill = _ceil_div(full - tokens, rate)
        decision = Decision(True, tokens // unit, _next_unit(tokens, unit, rate, full), 0)
        return Outcome(decision, (tokens, now) if cost else None, refill if cost else 0)
    retry = _ceil_div(need - tokens, rate)
    return Outcome(
        Decision(False, tokens // unit, _next_unit(tokens, unit, rate, full), retry), None, 0
    )


def _next_unit(level: int, unit: int, rate: int, full: int) -> int:
    """Microseconds until a meter at `level` (in 1/unit, refilled at `rate` per microsecond,
    capped at `full`) holds one more whole unit than now; 0 when it is full."""
    if level >= full:
        return 0
    return _ceil_div((max(level // unit, 0) + 1) * unit - level, rate)


def gcra(state: State | None, now: int, cost: int, spec: LimitSpec) -> Outcome:
    unit, rate, capacity = spec.rate_num, spec.rate_den, spec.capacity
    if state is None or state[0] < now:
        tat, frac = now, 0
    else:
        tat, frac = state[0], state[1]
    # Capacity in the TAT's terms: the tolerance burst x period / limit.
    span = capacity * unit
    # The meter's level in 1/unit: `span` when the TAT is not ahead of now.
    level = (now - tat) * rate - frac + span
    if cost > capacity:
        nxt = _next_unit(level, unit, rate, span)
        return Outcome(Decision(False, max(0, level // unit), nxt, spec.period_us), None, 0)
    total = frac + cost * unit
    new_tat, new_frac = tat + total // rate, total % rate
    # allow_at = new TAT - tolerance, as (microseconds, fraction).
    tol_us, tol_frac = divmod(span, rate)
    at_us, at_frac = new_tat - tol_us, new_frac - tol_frac
    if at_frac < 0:
        at_us, at_frac = at_us - 1, at_frac + rate
    if at_us < now or (at_us == now and at_frac == 0):
        level = (now - new_tat) * rate - new_frac + span
        refill = new_tat - now + (1 if new_frac else 0)
        decision = Decision(True, level // unit, _next_unit(level, unit, rate, span), 0)
        return Outcome(decision, (new_tat, new_frac) if cost else None, refill if cost else 0)
    retry = at_us - now + (1 if at_frac else 0)
    nxt = _next_unit(level, unit, rate, span)
    return Outcome(Decision(False, max(0, level // unit), nxt, retry), None, 0)


Evaluator = Callable[[State | None, int, int, LimitSpec], Outcome]

EVALUATORS: dict[Algorithm, Evaluator] = {
    Algorithm.fixed_window: fixed_window,
    Algorithm.sliding_window: sliding_window,
    Algorithm.token_bucket: token_bucket,
    Algorithm.gcra: gcra,
}


def evaluate(spec: LimitSpec, state: State | None, now: int, cost: int) -> Outcome:
    """Run the spec's algorithm."""
    return EVALUATORS[spec.algorithm](state, now, cost, spec)


def evaluate_all(
    items: Sequence[tuple[LimitSpec, int, State | None]], now: int
) -> tuple[list[Decision], list[Outcome] | None]:
    """Decide several limits together, all-or-nothing.

    `items` are (spec, cost, stored state). Returns the decisions and, when every
    limit admits the request, the outcomes to commit (None otherwise: nothing may
    be stored). When the request is refused, the limits that would have admitted
    it report their state without this request (remaining and reset as if it had
    not been made), so no header ever shows quota spent by a refused request.
    """
    outcomes = [EVALUATORS[spec.algorithm](state, now, cost, spec) for spec, cost, state in items]
    for outcome in outcomes:
        if not outcome.decision.allowed:
            break
    else:
        return [o.decision for o in outcomes], outcomes
    decisions = []
    for (spec, _cost, state), outcome in zip(items, outcomes, strict=True):
        if outcome.decision.allowed:
            decisions.append(EVALUATORS[spec.algorithm](state, now, 0, spec).decision)
        else:
            decisions.append(outcome.decision)
    return decisions, None
