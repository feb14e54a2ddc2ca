"""Run every async test in this directory on both asyncio's own loop and uvloop.

The gateway runs on uvloop in production and on plain asyncio where uvloop is
missing; their transports differ in flow control and write paths, so the
upstream transports are checked on both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
