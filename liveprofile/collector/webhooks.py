"""Signed server-to-server events: ``POST /v1/webhooks/{source}``.

Contract, in the order the checks run:

* ``{source}`` must be configured in ``LIVEPROFILE_WEBHOOK_SECRETS`` — else 404 ``unknown_source``;
* the body (:func:`liveprofile.collector.bodies.read_body`: size, gzip) — 413/415/400;
* ``X-Liveprofile-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with one of the
  source's secrets (:func:`liveprofile.collector.signing.verify_webhook`) — 401
  ``missing_signature`` / ``invalid_signature``, and within ``LIVEPROFILE_WEBHOOK_TOLERANCE`` —
  401 ``stale_signature``;
* the body is one Segment event or ``{"batch": [...]}`` (400/413 as ``/v1/batch``), the backlog
  under its bound (503);
* the delivery was not received before — 401 ``replayed_signature``. The replay key
  ``{p}:webhook-seen:{source}:{digest}`` is claimed (``SET NX``, a TTL covering the tolerance
  window plus 60 s for other collectors' clocks) in the same Lua script that appends the events
  (``webhook_replay_guard``, answering a :class:`~liveprofile.store.scripts.ReplayGuardResult`),
  so every collector process shares it and a failed append never burns a delivery. With a Redis
  Cluster (the buffer shards are in other slots than the claim) and with Kafka the claim is taken
  first and released if the append fails; a collector crash between the two burns that delivery.

Events go through :func:`liveprofile.buffer.ingest.prepare` (source ``webhook:{source}``);
event-level problems never fail a delivery (200 with the rejected list, as ``/v1/batch``).
Every delivery is counted in ``liveprofile_collector_webhook_requests_total{source, result}``
(``unknown`` for a source that is not configured, so no request picks a label).

May import: :mod:`liveprofile.store`, :mod:`liveprofile.asgi` and the collector's own modules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from liveprofile.asgi import HTTPError, Receive, Scope, Send, respond
from liveprofile.collector.bodies import decode_object, events_of, ok_body, read_body
from liveprofile.collector.config import CollectorConfig
from liveprofile.collector.gate import BufferGate, refusal
from liveprofile.collector.metrics import CollectorMetrics
from liveprofile.collector.signing import WebhookAuthError, replay_digest, verify_webhook
from liveprofile.store.scripts import ReplayGuardResult, lua_source, webhook_replay_guard_argv
from operators.timeutil import iso

__all__ = ["Webhooks", "WEBHOOK_PREFIX", "WEBHOOK_LUA"]

logger = logging.getLogger(__name__)

#: the path prefix; the rest of the path is the source name
WEBHOOK_PREFIX = "/v1/webhooks/"
#: a signed delivery appended at most once (see the script's header)
WEBHOOK_LUA = lua_source("webhook_replay_guard")


class Webhooks:
    """The handler of the webhook endpoint (see the module doc)."""

    def __init__(self, gate: BufferGate, config: CollectorConfig, metrics: CollectorMetrics,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.gate = gate
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._script: Any = None

    def bind(self, redis: aioredis.Redis) -> None:
        """Register the replay-guard script with the client made at startup."""
        self._script = redis.register_script(WEBHOOK_LUA)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one delivery to ``/v1/webhooks/{source}``; returns the status sent."""
        status, body = await self.webhook(scope["path"][len(WEBHOOK_PREFIX) :], scope, receive)
        await respond(send, status, body)
        return status

    async def webhook(self, source: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """(status, body) of one delivery, counted by source and result."""
        secrets = self.config.webhook_secrets.get(source)
        label = source if secrets is not None else "unknown"
        result = "internal_error"
        try:
            if secrets is None:
                raise HTTPError(404, "unknown_source", f"no webhook source {source[:64]!r} is configured")
            status, body = await self.deliver(source, secrets, scope, receive)
            result = "accepted"
            return status, body
        except HTTPError as exc:
            result = exc.code
            raise
        finally:
            self.metrics.webhooks.labels(label, result).inc()

    async def deliver(self, source: str, secrets: tuple[bytes, ...], scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """Verify, prepare and append one delivery of a configured source."""
        gate = self.gate
        headers = dict(scope["headers"])
        body = await read_body(headers, receive, gate.settings.max_request_bytes)
        now = self.clock()
        tol = self.config.webhook_tolerance_s
        try:
            ts = verify_webhook(headers.get(b"x-liveprofile-signature"), body, secrets, now=now, tolerance_s=tol)
        except WebhookAuthError as exc:
            raise HTTPError(401, exc.code, exc.message) from None
        doc = decode_object(body)
        events, defaults = events_of(doc, "batch" in doc, self.config.max_batch_events)
        await gate.check_backlog(cached=True)  # the replay-guard script below does not bound it
        prep = gate.prepare(events, received_at=iso(int(now * 1000)), source=f"webhook:{source}", defaults=defaults)
        prep = await gate.without_suppressed(prep, force=True)  # the replay-guard script appends: check first
        seen = gate.keys.webhook_seen(source, replay_digest(source, ts, body))
        ttl = max(1, math.ceil(ts + tol - now)) + 60  # + 60 s: other collectors' clocks may lag
        assert gate.redis is not None and gate.appender is not None
        try:
            if not gate.appender.in_redis or gate.keys.cluster:
                # claim in Redis, append to Kafka (or to a Redis Cluster's shards, which one
                # script cannot reach: they are in other slots), release the claim if the append fails
                fresh = await gate.redis.set(seen, "1", nx=True, ex=ttl)
                if fresh:
                    try:
                        await gate.appender.append(prep.appends)
                    except Exception:
                        await gate.redis.delete(seen)
                        raise
                outcome = ReplayGuardResult.APPENDED if fresh else ReplayGuardResult.REPLAY
            else:
                outcome = ReplayGuardResult(await self._script(
                    keys=[seen, *(a[0] for a in prep.appends)], args=webhook_replay_guard_argv(ttl, prep.appends)
                ))  # fmt: skip
        except Exception as exc:
            logger.warning("collector: webhook append failed (%s: %.200s): answering 503", type(exc).__name__, exc)
            raise refusal(exc) from None
        if outcome is ReplayGuardResult.REPLAY:
            raise HTTPError(401, "replayed_signature", "this signed delivery was already received (replay)")
        self.metrics.count(prep)
        return 200, ok_body(prep)
