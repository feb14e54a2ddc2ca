"""RateLimit header fields and refusal heads shared by `rate-limit` and `plan-limits`.

Both plugins decide a list of limits at once and answer the same way
(draft-ietf-httpapi-ratelimit-headers, latest text): on success a `RateLimit`
item per counted limit; on refusal `Retry-After` (the longest wait among the
violated limits) and `RateLimit` items for the violated ones only. `labels` are
the limits' quoted Structured Field item names (`"api-1s"`), precomputed by the
plugin.

`t` means the same on every status: "the number of seconds until additional
quota associated with the quota policy is made available" (§4.2.2) — the window's
end, the next token — never the full refill, and never more than the policy's
`w` (a sliding window counted in quanta may free its first unit one quantum after
`w`; the draft lets a server alter `t`, and `Retry-After`, the exact wait for the
refused request, is never earlier than `t`).
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.limits.spec import MICROS, Decision, LimitSpec
from portcullis.plugins.base import Headers
from portcullis.problems import PROBLEM_CONTENT_TYPE

CONTENT_TYPE = (b"content-type", PROBLEM_CONTENT_TYPE.encode())


def reset_seconds(spec: LimitSpec, decision: Decision) -> int:
    """The `t` parameter: whole seconds until more quota, at most the policy's window."""
    return min(decision.reset_after_s, -(-spec.period_us // MICROS))


def ratelimit_field(
    labels: Sequence[str], specs: Sequence[LimitSpec], decisions: Sequence[Decision]
) -> bytes | None:
    """The `RateLimit` field of an admitted request (None when nothing was counted)."""
    items = [
        f"{label};r={d.remaining};t={reset_seconds(spec, d)}"
        for label, spec, d in zip(labels, specs, decisions, strict=True)
        if d.counted
    ]
    return ", ".join(items).encode() if items else None


def refusal(
    labels: Sequence[str],
    specs: Sequence[LimitSpec],
    decisions: Sequence[Decision],
    policy_header: tuple[bytes, bytes] | None,
) -> tuple[tuple[int, ...], bool, Headers]:
    """(violated indices, whether they were counted, response headers) of a refused request.

    Not counted means the shared backend could not decide (failure policy
    `closed`): the caller answers 503, not 429, and no `RateLimit` field is sent.
    """
    violated = tuple(i for i, d in enumerate(decisions) if not d.allowed)
    wait = max(1, max(decisions[i].retry_after_s for i in violated))
    headers: Headers = [CONTENT_TYPE, (b"retry-after", str(wait).encode())]
    counted = all(decisions[i].counted for i in violated)
    if policy_header is not None:
        headers.append(policy_header)
        if counted:
            items = ", ".join(
                f"{labels[i]};r={decisions[i].remaining};t={reset_seconds(specs[i], decisions[i])}"
                for i in violated
            )
            headers.append((b"ratelimit", items.encode()))
    return violated, counted, headers
