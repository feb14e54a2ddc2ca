"""The quota.threshold_reached check both gateway quota modules run (memory and Redis
counters): a consumer of a `limit`-request daily quota is driven to 80 % and then 100 %,
and the control plane announces each threshold once."""

from __future__ import annotations

from typing import Any

import httpx

from support.processes import wait_for
from support.servers import Gateway


def announced(admin: httpx.Client, subject: str) -> list[dict[str, Any]]:
    response = admin.get("/admin/v1/events?kind=quota.threshold_reached&limit=200")
    assert response.status_code == 200, response.text
    return [e for e in response.json()["items"] if e["subject"] == subject]


def check_thresholds_announced(gw: Gateway, admin: httpx.Client, consumer: str, limit: int) -> None:
    """`consumer` (a fresh consumer of a daily quota of `limit`, a multiple of 5) reaches
    80 % and then 100 %; each is announced once, with the count and the limit."""
    created = admin.post(f"/admin/v1/consumers/{consumer}/keys", json={"name": "thresholds"})
    assert created.status_code == 201, created.text
    subject = f"consumer:{consumer}"
    with httpx.Client(
        base_url=gw.url, timeout=10, headers={"x-api-key": created.json()["key"]}
    ) as client:
        below = limit * 8 // 10
        assert [client.get("/api").status_code for _ in range(below)] == [200] * below
        first = wait_for(lambda: announced(admin, subject), "the 80 % event", timeout=20)
        assert [(e["data"]["threshold"], e["data"]["used"], e["data"]["limit"]) for e in first] == [
            (80, below, limit)
        ]
        rest = [client.get("/api").status_code for _ in range(limit - below + 2)]
        assert rest == [200] * (limit - below) + [429, 429]

    def both() -> list[dict[str, Any]] | None:
        found = announced(admin, subject)
        return found if len(found) >= 2 else None

    events = wait_for(both, "the 100 % event", timeout=20)
    assert [e["data"]["threshold"] for e in events] == [80, 100]
    assert events[1]["data"]["used"] >= limit
