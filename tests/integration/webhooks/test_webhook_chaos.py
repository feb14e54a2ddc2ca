"""Issue 15's chaos proof, at test size: 60 events to 10 endpoints (600 deliveries)
whose receivers answer 200, 500, hang past the timeout, or 429 with Retry-After at
random, while the delivering process is SIGKILLed three times (each time while it holds
leases) and restarted. Two delivering processes share the work on PostgreSQL, one
delivers on SQLite.

At the end every (event, endpoint) pair was answered 2xx at least once, each pair came
with one `webhook-id` however often it was sent, every request verified with the PyPI
`standardwebhooks` library, every message is `delivered`, and every message a killed
process held was attempted again after its lease expired (were leases never to expire,
those would stay pending and the run would fail).

The delivering processes are `python -m portcullis.webhooks` (the control plane's worker
alone, with the same settings: it starts in a fraction of the admin app's time); the
full-size run (2,000 events x 20 endpoints against the real control plane) is
`python -m benchmarks.webhook_chaos`. Fast only through real settings: the retry
schedule, a 0.5 s timeout, a 3 s lease. Cost: about 20-25 s per store on 2 busy cores.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.webhook_chaos import ChaosPlan, ChaosRun


async def test_no_delivery_is_lost_while_delivering_processes_are_killed(
    database_url: str, tmp_path: Path
) -> None:
    postgres = database_url.startswith("postgresql")
    plan = ChaosPlan(
        events=60,
        endpoints=10,
        processes=2 if postgres else 1,
        kills=3,
        entry="delivery",
        deadline=120,
    )
    result = await ChaosRun(plan, database_url, tmp_path).run()
    summary = result.summary()
    assert result.check() == [], json.dumps(summary, indent=2)
    assert summary["pairs_delivered_2xx"] == 600
    # The chaos was real: every kind of answer was given, and kills left leases behind.
    assert set(summary["answers"]) == {"ok", "error", "hang", "throttle"}
    assert all(n > 0 for n in summary["leases_orphaned_by_kills"])
