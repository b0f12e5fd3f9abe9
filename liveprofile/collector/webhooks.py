"""Signed server-to-server events: ``POST /v1/webhooks/{source}``.

Contract, in the order the checks run:

* ``{source}`` must be configured in ``LIVEPROFILE_WEBHOOK_SECRETS`` — else 404 ``unknown_source``;
* the body (:func:`liveprofile.collector.bodies.read_body`: size, gzip) — 413/415/400;
* the source's signature scheme (:func:`liveprofile.collector.signing.verify_platform`):
  ``liveprofile`` (``X-Liveprofile-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``),
  ``stripe`` (``Stripe-Signature``), ``shopify`` (``X-Shopify-Hmac-Sha256`` over the raw body,
  ``X-Shopify-Webhook-Id`` required) or ``standard`` (Standard Webhooks) with one of the
  source's secrets — 401 ``missing_signature`` / ``invalid_signature``, and a signed timestamp
  within ``LIVEPROFILE_WEBHOOK_TOLERANCE`` — 401 ``stale_signature``;
* without a mapping, the body is one Segment event or ``{"batch": [...]}`` (400/413 as
  ``/v1/batch``); with one (:mod:`liveprofile.collector.mapping`), a JSON object (400) that the
  mapping turns into events, erasure requests and records — a payload it cannot map is one dead
  letter (``webhook_unmapped`` / ``webhook_mapping_failed``, ``source`` = ``webhook:{source}``,
  ``raw`` = the body) and the delivery is answered 200, so the platform does not retry it
  forever; then the backlog under its bound (503);
* the delivery was not received before. Its id is the platform's delivery id (Shopify's
  ``X-Shopify-Webhook-Id``, Standard Webhooks' ``webhook-id``): a second delivery with that id is
  a *redelivery*, answered 200 ``{"success": true, "duplicate": true}`` with nothing kept (the
  key lives 72 h; the events' ``messageId`` derives from the same id, so a later one is dropped
  by the dataflow's de-duplication too); for the ``liveprofile`` and ``stripe`` schemes the id is
  the signed ``(t, body)`` and a second one is a replay — 401 ``replayed_signature``. The key
  ``{p}:webhook-seen:{source}:{digest}`` is claimed (``SET NX``, a TTL covering the tolerance
  window plus 60 s for other collectors' clocks) in the same Lua script that appends the events
  (``webhook_replay_guard``, answering a :class:`~liveprofile.store.scripts.ReplayGuardResult`),
  so every collector process shares it and a failed append never burns a delivery. With a Redis
  Cluster (the buffer shards are in other slots than the claim) and with Kafka the claim is taken
  first and released if the append fails; a collector crash between the two burns that delivery.

Events go through :func:`liveprofile.buffer.ingest.prepare` (source ``webhook:{source}``);
event-level problems never fail a delivery (200 with the rejected list, as ``/v1/batch``).
A mapping's ``forget`` action (Shopify's ``customers/redact``) appends, in the same script, a
:attr:`~liveprofile.store.envelope.EntryKind.FORGET` control entry to the user's buffer shard
(the dataflow drops the user's state and ignores their later events) and a ``forget`` entry to
``{p}:privacy-requests``, which ``liveprofile forget --pending`` turns into the full erasure
(the collector cannot run it: it is a tool of the admin layer); a ``record`` action
(``customers/data_request``, ``shop/redact``) appends only the privacy-request entry.
Every delivery is counted in ``liveprofile_collector_webhook_requests_total{source, result}``
(``unknown`` for a source that is not configured, so no request picks a label).

May import: :mod:`liveprofile.store`, :mod:`liveprofile.asgi` and the collector's own modules.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from liveprofile.asgi import HTTPError, Receive, Scope, Send, respond
from liveprofile.buffer.ingest import Prepared
from liveprofile.buffer.writers import dead_letter_caps
from liveprofile.collector.bodies import decode_object, events_of, ok_body, read_body
from liveprofile.collector.config import CollectorConfig, WebhookSource
from liveprofile.collector.gate import BufferGate, refusal
from liveprofile.collector.mapping import MappingFailure, apply_mapping, wanted_lookups
from liveprofile.collector.metrics import CollectorMetrics
from liveprofile.collector.signing import PlatformDelivery, WebhookAuthError, verify_platform
from liveprofile.store.deadletter import Stage, dead_letter_fields
from liveprofile.store.envelope import EntryKind, encode_control
from liveprofile.store.scripts import ReplayGuardResult, lua_source, webhook_replay_guard_argv
from operators.events import Rejected
from operators.routing import shard_of
from operators.timeutil import iso

__all__ = ["Webhooks", "WEBHOOK_PREFIX", "WEBHOOK_LUA"]

logger = logging.getLogger(__name__)

#: the path prefix; the rest of the path is the source name
WEBHOOK_PREFIX = "/v1/webhooks/"
#: a signed delivery appended at most once (see the script's header)
WEBHOOK_LUA = lua_source("webhook_replay_guard")
#: how long a platform delivery id is remembered (redeliveries within it are answered 200, unkept)
REDELIVERY_TTL_S = 72 * 3600
_DUPLICATE = b'{"success":true,"duplicate":true}'


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
        src = self.config.webhook_sources.get(source)
        label = source if src is not None else "unknown"
        result = "internal_error"
        try:
            if src is None:
                raise HTTPError(404, "unknown_source", f"no webhook source {source[:64]!r} is configured")
            status, body = await self.deliver(src, scope, receive)
            result = "duplicate" if body == _DUPLICATE else "accepted"
            return status, body
        except HTTPError as exc:
            result = exc.code
            raise
        finally:
            self.metrics.webhooks.labels(label, result).inc()

    async def _mapped(self, src: WebhookSource, d: PlatformDelivery, headers: dict[bytes, bytes], body: bytes,
                      received_at: str) -> Prepared:  # fmt: skip
        """The appends of a delivery of a source with a mapping (see the module doc)."""
        assert src.mapping is not None and self.gate.redis is not None
        gate = self.gate
        redis = gate.redis
        payload = decode_object(body)
        label = f"webhook:{src.name}"
        looked_up: dict[tuple[str, str], str] = {}
        try:
            for index, key in wanted_lookups(src.mapping, headers, payload):
                val = await redis.get(gate.keys.webhook_index(src.name, index, key[:256]))
                if val is not None:
                    looked_up[(index, key)] = val.decode() if isinstance(val, bytes) else str(val)
            res = apply_mapping(src.mapping, src.name, d.delivery_id, headers, payload, looked_up)
            if not isinstance(res, MappingFailure):
                ttl = max(1, int(self.config.webhook_index_ttl_s))
                for index, key, value in res.remember:  # before the append: rewriting one is harmless
                    await redis.set(gate.keys.webhook_index(src.name, index, key[:256]), value[:256], ex=ttl)
        except Exception as exc:
            logger.warning("collector: webhook index unavailable (%s: %.200s): answering 503", type(exc).__name__, exc)
            raise refusal(exc) from None
        if isinstance(res, MappingFailure):
            raw = body[: gate.settings.limits.max_event_bytes]
            prep = Prepared()
            rej = Rejected(res.reason, res.message, raw)
            prep.rejected.append(rej)
            prep.appends.append((gate.keys.dead_letter, dead_letter_fields(rej, Stage.COLLECTOR, label)))
            prep.owners.append((None, None))  # a payload, not a user's event: kept whoever it names
            return prep
        prep = gate.prepare(res.events, received_at=received_at, source=label)
        if res.recorded:
            shards = gate.settings.shards
            for uid in res.forget:
                prep.appends.append((gate.keys.events(shard_of(uid, shards)), {"e": encode_control(EntryKind.FORGET, uid, received_at)}))
                prep.owners.append((None, None))  # an erasure is kept even for a suppressed user
            kinds = [("forget", uid) for uid in res.forget] or [("record", "")]
            for kind, uid in kinds:
                prep.appends.append((gate.keys.privacy_requests, {
                    "kind": kind, "source": src.name, "user_id": uid, "topic": res.topic[:128],
                    "delivery": d.delivery_id[:300], "received_at": received_at,
                    "payload": body[: gate.settings.limits.max_event_bytes],
                }))  # fmt: skip
                prep.owners.append((None, None))
        return prep

    async def deliver(self, src: WebhookSource, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """Verify, map (or read Segment events), prepare and append one delivery of a configured source."""
        gate = self.gate
        source = src.name
        headers = dict(scope["headers"])
        body = await read_body(headers, receive, gate.settings.max_request_bytes)
        now = self.clock()
        tol = self.config.webhook_tolerance_s
        try:
            d = verify_platform(src.scheme, source, headers, body, src.secrets, now=now, tolerance_s=tol)
        except WebhookAuthError as exc:
            raise HTTPError(401, exc.code, exc.message) from None
        received_at = iso(int(now * 1000))
        if src.mapping is None:
            doc = decode_object(body)
            events, defaults = events_of(doc, "batch" in doc, self.config.max_batch_events)
            prep = gate.prepare(events, received_at=received_at, source=f"webhook:{source}", defaults=defaults)
        else:
            prep = await self._mapped(src, d, headers, body, received_at)
        await gate.check_backlog(cached=True)  # the replay-guard script below does not bound it
        prep = await gate.without_suppressed(prep, force=True)  # the replay-guard script appends: check first
        seen = gate.keys.webhook_seen(source, hashlib.sha256(d.delivery_id.encode("utf-8", "surrogatepass")).hexdigest())
        if d.redelivery_ok:
            ttl = REDELIVERY_TTL_S
        else:
            assert d.ts is not None
            ttl = max(1, math.ceil(d.ts + tol - now)) + 60  # + 60 s: other collectors' clocks may lag
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
                    keys=[seen, *(a[0] for a in prep.appends)], args=webhook_replay_guard_argv(ttl, prep.appends, dead_letter_caps(gate.settings, gate.keys))
                ))  # fmt: skip
        except Exception as exc:
            logger.warning("collector: webhook append failed (%s: %.200s): answering 503", type(exc).__name__, exc)
            raise refusal(exc) from None
        if outcome is ReplayGuardResult.REPLAY:
            if d.redelivery_ok:
                return 200, _DUPLICATE
            raise HTTPError(401, "replayed_signature", "this signed delivery was already received (replay)")
        self.metrics.count(prep)
        return 200, ok_body(prep)
