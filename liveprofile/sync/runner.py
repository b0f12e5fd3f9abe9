"""The sync process: one :class:`~liveprofile.sync.worker.DestinationWorker` per destination.

All workers share one asyncio loop (uvloop) and one Redis connection pool but
nothing else: each has its own HTTP client, pacer, consumer group and lease,
so a destination that is down, slow or throttled never delays another.
``/metrics`` (Prometheus, the process's own registry) is served on
``LIVEPROFILE_SYNC_METRICS_PORT``; the queue-age gauge is refreshed every
second (with a Redis Cluster: the oldest over every group's feed).
SIGTERM/SIGINT stop the workers: a batch in flight is abandoned
unacknowledged and redelivered to the next holder (the watermark makes that
safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from liveprofile.settings import Settings
from liveprofile.store.connection import TROUBLE, connect_async
from liveprofile.store.keys import Keys
from liveprofile.sync.config import SyncConfig
from liveprofile.sync.metrics import SyncMetrics
from liveprofile.sync.model import SyncKeys
from liveprofile.sync.worker import DestinationWorker, queue_age

__all__ = ["Syncer", "run_sync"]

logger = logging.getLogger(__name__)


@dataclass
class Syncer:
    """Runs every configured destination until stopped."""

    settings: Settings
    config: SyncConfig
    metrics: SyncMetrics = field(default_factory=SyncMetrics)
    workers: list[DestinationWorker] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        client = connect_async(
            self.settings.redis_url, self.settings.redis_cluster, decode_responses=True, socket_timeout=10,
            socket_connect_timeout=5, max_connections=64,
        )  # fmt: skip
        keys = Keys.of(self.settings)
        self.workers = [
            DestinationWorker(
                client, keys, cfg, consumer=self.config.consumer, metrics=self.metrics,
                lease_ttl=self.config.lease_ttl, dead_letter_maxlen=self.config.dead_letter_maxlen,
                definitions=self.settings.definitions,
            )  # fmt: skip
            for cfg in self.config.destinations.values()
        ]
        tasks = [asyncio.create_task(w.run(stop)) for w in self.workers]
        tasks.append(asyncio.create_task(self._gauges(client, keys, stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            await client.aclose()

    async def _gauges(self, client: aioredis.Redis, keys: Keys, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for name in self.config.destinations:
                try:
                    group = SyncKeys(keys.prefix, name).group
                    age = max([await queue_age(client, keys.changes_in(g), group) for g in keys.groups])
                except TROUBLE:
                    continue
                self.metrics.queue_age.labels(name).set(age)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)


def run_sync(settings: Settings, config: SyncConfig) -> int:
    """Run the sync process until SIGTERM/SIGINT (blocking)."""
    import uvloop

    if not config.destinations:
        logger.error("sync: no destinations configured (LIVEPROFILE_SYNC_DESTINATIONS)")
        return 2
    syncer = Syncer(settings, config)
    if config.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(config.metrics_port, registry=syncer.metrics.registry)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        logger.info("sync: consumer %s, destinations %s", config.consumer, ", ".join(config.destinations))
        await syncer.run(stop)

    uvloop.run(main())
    return 0
