"""Live data of the dashboard (traffic, upstreams, alerts, events): filled in by the
live view (see docs/web.md)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
