"""The collector's way into the buffer, shared by every endpoint that appends events.

Contract: :meth:`BufferGate.prepare` runs :func:`liveprofile.buffer.ingest.prepare` with this
deployment's keys, shards, limits and IP truncation; :meth:`BufferGate.check_backlog` refuses with
503 ``backlog_full`` while the buffer backlog is over ``LIVEPROFILE_MAX_BACKLOG`` and 503
``buffer_unavailable`` when the buffer cannot be asked (both with ``Retry-After``,
:data:`RETRY_AFTER` seconds); :func:`unavailable` is the 503 of a failed append. Nothing is
acknowledged that the buffer did not acknowledge: the endpoints answer 200 only after
``appender.append`` returned.

The connections (``redis``, ``appender``, ``backlog``) are opened by the app's startup
(:meth:`liveprofile.collector.app.CollectorApp.startup`) with :meth:`BufferGate.open`.

May import: :mod:`liveprofile.settings`, :mod:`liveprofile.store`, :mod:`liveprofile.buffer`,
:mod:`liveprofile.asgi`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from liveprofile.asgi import HTTPError
from liveprofile.buffer.ingest import Prepared, prepare
from liveprofile.buffer.streams import BacklogMonitor
from liveprofile.buffer.writers import Appender
from liveprofile.settings import Settings
from liveprofile.store.keys import Keys

__all__ = ["BufferGate", "RETRY_AFTER", "unavailable"]

#: ``Retry-After`` of the 503 answers, in seconds
RETRY_AFTER = b"5"


def unavailable(message: str = "the buffer is unreachable; retry later") -> HTTPError:
    """The 503 ``buffer_unavailable`` refusal (with ``Retry-After``)."""
    return HTTPError(503, "buffer_unavailable", message, [(b"retry-after", RETRY_AFTER)])


class BufferGate:
    """Prepare, bound and append events for the collector's endpoints."""

    def __init__(self, settings: Settings, keys: Keys, *, truncate_ip: bool) -> None:
        self.settings = settings
        self.keys = keys
        self.truncate_ip = truncate_ip
        self.redis: aioredis.Redis | None = None
        self.appender: Appender | None = None
        self.backlog: BacklogMonitor | None = None

    def open(self, redis: aioredis.Redis, appender: Appender, backlog: BacklogMonitor) -> None:
        """Use these connections (made at startup)."""
        self.redis, self.appender, self.backlog = redis, appender, backlog

    async def close(self) -> None:
        """Close the appender, then the Redis client."""
        if self.appender is not None:
            await self.appender.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def check_backlog(self) -> None:
        """503 while the backlog is over its bound or cannot be read (see the module doc)."""
        assert self.backlog is not None
        try:
            if await self.backlog.current() > self.settings.max_backlog:
                raise HTTPError(503, "backlog_full", "the buffer backlog is over its bound; retry later", [(b"retry-after", RETRY_AFTER)])
        except HTTPError:
            raise
        except Exception as exc:
            raise unavailable(f"the buffer is unreachable: {type(exc).__name__}") from None

    def prepare(self, events: list[Any], *, received_at: str, source: str, force_type: str | None = None,
                defaults: Mapping[str, Any] | None = None) -> Prepared:  # fmt: skip
        """The appends of ``events`` (valid ones to their shards, the rest to the dead letters)."""
        s = self.settings
        return prepare(
            events, keys=self.keys, shards=s.shards, limits=s.limits, received_at=received_at, source=source,
            force_type=force_type, defaults=defaults, mask_ip=self.truncate_ip,
        )  # fmt: skip
