"""`python -m portcullis.webhooks`: webhook delivery alone, without the admin API.

The same worker the control plane runs in its lifespan (`WebhookDelivery`), with the
same settings (`PORTCULLIS_*`: the store, the deployment secret, `webhook_*`, and
`redis_url` for the event bus), for a deployment that wants delivery in processes of its
own (start any number on PostgreSQL; one on SQLite, and then set
`PORTCULLIS_WEBHOOK_DELIVERY=false` on the control plane). It prints one line once it
delivers and stops cleanly on SIGTERM or SIGINT (a SIGKILL leaves leases that expire
after `webhook_lease` and are taken over: nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from portcullis.events.bus import create_event_bus
from portcullis.identity.secrets import load_server_secret
from portcullis.redis_client import SharedRedis
from portcullis.settings import Settings
from portcullis.store.engine import create_engine
from portcullis.webhooks.metrics import process_metrics
from portcullis.webhooks.runner import WebhookDelivery

READY = "portcullis webhook delivery started"


async def deliver(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    secret = load_server_secret(settings.secret_key, settings.secret_key_file)
    redis = SharedRedis.from_settings(settings)
    bus = create_event_bus(engine, settings, redis)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await bus.start()
    delivery = WebhookDelivery(engine, settings, secret, bus, process_metrics())
    delivery.start()
    print(f"{READY} (pid {os.getpid()})", flush=True)
    try:
        await stop.wait()
    finally:
        await delivery.stop()
        await bus.close()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(deliver(Settings()))


if __name__ == "__main__":
    main()
