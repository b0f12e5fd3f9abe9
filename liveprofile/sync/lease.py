"""The destination lease: one sync process serves a destination at a time.

Per-user order needs one reader per consumer group at a time, so a process
serves a destination only while it holds the lease ``{p}:sync-lease:{dest}``
(:attr:`~liveprofile.sync.model.SyncKeys.lease`; a STRING holding the consumer
name with a ``PX`` TTL of ``LIVEPROFILE_SYNC_LEASE_TTL``). Several sync
processes may run: each destination is served by one of them and the others
are hot standbys that retry every third of the TTL (at least every 50 ms).

Contract of :class:`Lease`:

* :meth:`Lease.acquire` takes the lease when it is free or renews it when this
  consumer holds it (``sync_lease_acquire``, one atomic script; the answer is a
  :class:`~liveprofile.store.scripts.LeaseResult`), keeps :attr:`Lease.held`
  and the ``liveprofile_sync_lease_held`` gauge up to date, and calls
  ``on_taken`` each time the lease is newly taken (the worker then takes over
  the entries a previous holder left pending);
* :meth:`Lease.keep` renews every third of the TTL while held; it ends, with
  :attr:`Lease.held` false, when another consumer holds the lease or when Redis
  could not be reached for longer than the TTL (by then the lease may have
  expired and been taken);
* :meth:`Lease.release` gives the lease back only if this consumer still holds
  it (``sync_lease_release``) and never raises for Redis trouble;
* :attr:`Lease.serving` is what every loop of the worker checks: the lease is
  held and the process has not been told to stop (:attr:`Lease.stopping`).
  Work that finds it false raises :class:`Stopped`, leaving its batch pending
  for the next holder; :meth:`Lease.wait` is a sleep that ends early on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from prometheus_client import Gauge

from liveprofile.store.connection import TROUBLE
from liveprofile.store.scripts import (
    LeaseResult,
    lease_acquire_argv,
    lease_release_argv,
    lua_source,
)

__all__ = ["Lease", "Stopped", "ACQUIRE_LUA", "RELEASE_LUA"]

logger = logging.getLogger(__name__)

ACQUIRE_LUA = lua_source("sync_lease_acquire")

RELEASE_LUA = lua_source("sync_lease_release")


class Stopped(Exception):
    """The worker must stop now (shutdown or lease lost); the batch stays pending."""


class Lease:
    """The lease ``key`` of destination ``name``, held as ``consumer`` (see module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        key: str,
        *,
        name: str,
        consumer: str,
        ttl: float,
        gauge: Gauge,
        on_taken: Callable[[], None] = lambda: None,
    ) -> None:
        self.key = key
        self.name = name
        self.consumer = consumer
        self.ttl = ttl
        self.gauge = gauge
        self.on_taken = on_taken
        self.held = False
        #: the process's stop signal (the worker sets it from :meth:`DestinationWorker.run`)
        self.stopping = asyncio.Event()
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._release = client.register_script(RELEASE_LUA)

    @property
    def serving(self) -> bool:
        """Whether to go on serving: not told to stop, and the lease is held."""
        return not self.stopping.is_set() and self.held

    @property
    def retry_s(self) -> float:
        """How long a standby waits before trying to take the lease again."""
        return max(0.05, self.ttl / 3)

    async def wait(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if the process is told to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def acquire(self) -> bool:
        """Take or renew the lease; whether this consumer holds it now. Redis trouble raises."""
        res = await self._acquire(keys=[self.key], args=lease_acquire_argv(self.consumer, int(self.ttl * 1000)))
        ok = LeaseResult(int(res)) is LeaseResult.HELD
        if ok and not self.held:
            logger.info("sync %s: serving as %s", self.name, self.consumer)
            self.on_taken()
        self.held = ok
        self.gauge.set(1 if ok else 0)
        return ok

    async def keep(self) -> None:
        """Renew every third of the TTL until the lease is lost (run as a task while serving)."""
        last_ok = time.monotonic()
        while self.held:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.acquire():
                    logger.warning("sync %s: lease lost", self.name)
                    return
                last_ok = time.monotonic()
            except TROUBLE:
                if time.monotonic() - last_ok > self.ttl:
                    self.held = False
                    return

    async def release(self) -> None:
        """Give the lease back if this consumer holds it; the gauge goes to 0. Never raises for Redis trouble."""
        self.gauge.set(0)
        with contextlib.suppress(*TROUBLE):
            await self._release(keys=[self.key], args=lease_release_argv(self.consumer))
