"""RateLimit header fields and refusal heads shared by `rate-limit` and `plan-limits`.

Both plugins decide a list of limits at once and answer the same way
(draft-ietf-httpapi-ratelimit-headers-11): on success a `RateLimit` item per
counted limit; on refusal `Retry-After` (the longest wait among the violated
limits) and `RateLimit` items for the violated ones only. `labels` are the
limits' quoted Structured Field item names (`"api-1s"`), precomputed by the
plugin.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.limits.spec import Decision
from portcullis.plugins.base import Headers
from portcullis.problems import PROBLEM_CONTENT_TYPE

CONTENT_TYPE = (b"content-type", PROBLEM_CONTENT_TYPE.encode())


def ratelimit_field(labels: Sequence[str], decisions: Sequence[Decision]) -> bytes | None:
    """The `RateLimit` field of an admitted request (None when nothing was counted)."""
    items = [
        f"{label};r={d.remaining};t={d.reset_after_s}"
        for label, d in zip(labels, decisions, strict=True)
        if d.counted
    ]
    return ", ".join(items).encode() if items else None


def refusal(
    labels: Sequence[str],
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
                f"{labels[i]};r={decisions[i].remaining};t={max(1, decisions[i].retry_after_s)}"
                for i in violated
            )
            headers.append((b"ratelimit", items.encode()))
    return violated, counted, headers
