"""The delivery loop stops when cancelled, even when the store's driver turns the cancel
into another error (a suite run once hung 300 s in `WebhookDelivery.stop()`)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.webhooks.sender import Sender
from portcullis.webhooks.worker import Dispatcher

SERVER = ServerSecret.from_secret(b"webhook-stop-test-secret-0123456789abc")


async def test_a_cancel_the_driver_turns_into_an_error_still_ends_the_loop() -> None:
    sender = cast(Sender, SimpleNamespace(timeout=5.0))
    dispatcher = Dispatcher(cast(AsyncEngine, None), SERVER, sender, poll_interval=0.01)
    claiming = asyncio.Event()
    converted = 0

    async def claim() -> int:
        nonlocal converted
        claiming.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if converted:  # only the first: a failing run still ends at teardown
                raise
            converted += 1
            raise RuntimeError("connection closed (the driver's view of the cancel)") from None
        return 0

    dispatcher.claim_and_start = claim  # type: ignore[method-assign]
    task = asyncio.create_task(dispatcher.run())
    await claiming.wait()
    task.cancel()
    # Before: the loop logged the error and claimed again, for ever.
    done, _ = await asyncio.wait({task}, timeout=10)
    assert done == {task}, "the delivery loop survived its cancellation"
    assert task.cancelled()
