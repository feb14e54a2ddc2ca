"""Rate limiting: algorithms (fixed window, sliding window, token bucket, GCRA) x backends.

A limit is data (`LimitSpec`); a backend (`LimitBackend`: memory or Redis) decides
all the limits of one request atomically. The `rate-limit` plugin turns config and
request identity into `LimitRequest`s; plans, quotas and overrides supply specs the
same way.
"""

from portcullis.limits.backend import FailurePolicy, LimitBackend, LimitRequest
from portcullis.limits.spec import Algorithm, Decision, LimitSpec, parse_period

__all__ = [
    "Algorithm",
    "Decision",
    "FailurePolicy",
    "LimitBackend",
    "LimitRequest",
    "LimitSpec",
    "parse_period",
]
