"""One destination's delivery loop: change feed in, vendor requests out, exactly once per (user, version).

:class:`DestinationWorker` composes three parts, each with its own contract:

==================================  ==========================================================
:mod:`liveprofile.sync.lease`       the destination lease: one holder per destination, hot
                                    standbys, renewal, loss
:mod:`liveprofile.sync.feed`        the change feed: consumer groups, pending entries first,
                                    batches, the watermark, suppression and consent filters,
                                    collapse to one item per user, acknowledging
:mod:`liveprofile.sync.delivery`    the vendor requests: pacing, retries, splitting refused
                                    requests, dead letters, the commit script
==================================  ==========================================================

**The loop.** Until told to stop, the worker makes sure its consumer groups
exist, loads where each audience's membership goes (once: the definitions file's targets, remembered
in HASH ``{p}:sync-audience-targets:{dest}`` so that an audience removed from the file still exits
where it entered, :mod:`liveprofile.sync.audiences`) and tries to take the lease; a standby retries every third of the lease
TTL. While it holds the lease it reads a batch, dead-letters the entries it
could not parse, selects the items worth pushing, delivers and commits them,
and only then acknowledges the batch's entries; between batches it polls the
vendor jobs accepted requests started (:meth:`~liveprofile.sync.delivery.Delivery.poll_jobs`). Losing the lease or being told
to stop ends the batch unacknowledged (:class:`~liveprofile.sync.lease.Stopped`);
Redis trouble is logged and retried with backoff (0.1 s doubling to 5 s). Either
way the pending entries are claimed again before anything new is read, and the
watermark makes redelivering them safe. :meth:`DestinationWorker.run` never
raises for Redis or vendor trouble; on the way out it gives the lease back.

:func:`queue_age` is the age of a group's oldest unacknowledged change (the
runner's ``liveprofile_sync_queue_age_seconds`` gauge).
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from liveprofile.store.connection import TROUBLE
from liveprofile.store.keys import Keys
from liveprofile.sync.audiences import AudienceTargets
from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.delivery import Delivery
from liveprofile.sync.destinations import Destination, make_destination
from liveprofile.sync.feed import BadEntry, FeedReader, GroupFeed
from liveprofile.sync.lease import Lease, Stopped
from liveprofile.sync.metrics import SyncMetrics
from liveprofile.sync.model import Change, SyncKeys
from operators.definitions import Definitions

__all__ = ["DestinationWorker", "queue_age"]

logger = logging.getLogger(__name__)


class DestinationWorker:
    """Serves one destination while holding its lease (see module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        cfg: DestinationConfig,
        *,
        consumer: str,
        metrics: SyncMetrics,
        lease_ttl: float = 15.0,
        dead_letter_maxlen: int = 1_000_000,
        destination: Destination | None = None,
        http: httpx.AsyncClient | None = None,
        definitions: Definitions | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.definitions = definitions
        self._targets_loaded = False
        self.sk = SyncKeys(keys.prefix, cfg.name, keys.cluster_groups)
        self.consumer = consumer
        self.metrics = metrics
        self.lease = Lease(client, self.sk.lease, name=cfg.name, consumer=consumer, ttl=lease_ttl,
                           gauge=metrics.lease.labels(cfg.name), on_taken=self._taken)  # fmt: skip
        self.feed = FeedReader(client, keys, cfg, consumer=consumer, lease=self.lease, metrics=metrics)
        self.delivery = Delivery(client, cfg, destination or make_destination(cfg), feed=self.feed, lease=self.lease,
                                 metrics=metrics, dead_letter_maxlen=dead_letter_maxlen, http=http)  # fmt: skip
        for m in (metrics.delivered, metrics.dead, metrics.queue_age, metrics.lease):
            m.labels(cfg.name)  # export every series from the start, at 0

    @property
    def feeds(self) -> list[GroupFeed]:
        """The group feeds read (one, or one per group of a Redis Cluster)."""
        return self.feed.feeds

    def _taken(self) -> None:
        self.feed.reclaim()

    async def load_targets(self) -> None:
        """Remember the file's audience targets and load them with the remembered ones (module docstring)."""
        key = self.sk.audience_targets
        fresh = AudienceTargets.load(self.definitions, self.cfg.type, {})
        if fresh.to_store():
            await self.client.hset(key, mapping=fresh.to_store())  # type: ignore[arg-type]
        stored = await self.client.hgetall(key)
        self.delivery.dest.audiences = AudienceTargets.load(self.definitions, self.cfg.type, stored)
        self._targets_loaded = True

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; never raises for Redis or vendor trouble."""
        lease = self.lease
        lease.stopping = stop
        self.delivery.open()
        delay = 0.1
        try:
            while not stop.is_set():
                try:
                    await self.feed.ensure_groups()
                    if not self._targets_loaded:
                        await self.load_targets()
                    if not await lease.acquire():
                        await lease.wait(lease.retry_s)
                        continue
                    await self._serve()
                    delay = 0.1
                except Stopped:
                    self.feed.reclaim()
                except TROUBLE as exc:
                    logger.warning("sync %s: Redis trouble (%s); retrying in %.1fs", self.cfg.name, exc, delay)
                    self.feed.reclaim()
                    await lease.wait(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            await lease.release()
            await self.delivery.close()

    async def _serve(self) -> None:
        renew = asyncio.create_task(self.lease.keep())
        try:
            while self.lease.serving:
                changes, bad = await self.feed.next_batch()
                if changes or bad:
                    await self._process(changes, bad)
                await self.delivery.poll_jobs()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.feed.reclaim()  # the stream or group was removed: recreate
        finally:
            renew.cancel()

    async def _process(self, changes: list[Change], bad: list[BadEntry]) -> None:
        """One batch: dead-letter the unreadable, deliver and commit the rest, then acknowledge all."""
        await self.delivery.dead_letter_malformed(bad)
        items = await self.feed.select(changes)
        if items:
            await self.delivery.deliver(items)
        await self.feed.ack(changes, bad)


async def queue_age(client: aioredis.Redis, stream: str, group: str, now_ms: int | None = None) -> float:
    """Seconds since the oldest change the group has not acknowledged was appended (0: none)."""
    pipe = client.pipeline(transaction=False)
    pipe.xpending(stream, group)
    pipe.xinfo_groups(stream)
    pending, groups = await pipe.execute()
    oldest: list[int] = []
    if pending and pending.get("pending"):
        oldest.append(int(str(pending["min"]).split("-")[0]))
    last = next((g["last-delivered-id"] for g in groups if g["name"] == group), None)
    if last is not None:
        nxt = await client.xrange(stream, min=f"({last}", count=1)
        if nxt:
            oldest.append(int(str(nxt[0][0]).split("-")[0]))
    if not oldest:
        return 0.0
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return max(0.0, (now_ms - min(oldest)) / 1000)
