"""The Segment tracking API: ``POST /v1/track|identify|page|screen|group|alias`` and ``/v1/batch``.

Contract (SPEC §2), in the order the checks run:

1. the body (:mod:`liveprofile.collector.bodies`): size, gzip, a JSON object — 400/413/415;
2. the write key (:mod:`liveprofile.collector.writekeys`) — 401;
3. the batch shape (``/v1/batch``: a ``batch`` array of at most ``LIVEPROFILE_MAX_BATCH_EVENTS``) — 400/413;
4. the buffer backlog, where it is a cached reading (a Redis Cluster, Kafka:
   :meth:`~liveprofile.collector.gate.BufferGate.check_backlog`) — 503 with ``Retry-After``;
5. the write key's rate limit (:mod:`liveprofile.collector.ratelimit`, counted in events) — 429
   with ``Retry-After``;
6. every event through :func:`liveprofile.buffer.ingest.prepare` (source ``http:{type}``; the
   single-event endpoints force the event's ``type``; the write key's trust level stamps it), then one append of the valid events and the
   dead letters (:meth:`~liveprofile.collector.gate.BufferGate.append`: on one Redis all or
   nothing, under the exact backlog bound) — 503 naming the condition when it fails
   (``backlog_full``, ``buffer_out_of_memory``, ``buffer_read_only``, ``buffer_unavailable``;
   the rate-limit tokens are given back). Events of a forgotten (suppressed) user are dropped
   first (:meth:`~liveprofile.collector.gate.BufferGate.without_suppressed`): answered as accepted,
   nothing of them kept.

7. with ``LIVEPROFILE_DEBUGGER=on``, the source debugger's redacted entries of what was appended
   (:meth:`~liveprofile.collector.gate.BufferGate.tap`, after the append, in the background; it never changes or delays the answer).

A refusal in 1-6 keeps nothing of the request. Then ``200 {"success": true}`` (with ``accepted``
and ``rejected`` when events were dead-lettered); on a single-event endpoint a dead-lettered
event is answered 400 with its reason (413 ``event_too_large``).

May import: :mod:`operators`, :mod:`liveprofile.buffer`, :mod:`liveprofile.asgi` and the collector's
own modules.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from liveprofile.asgi import HTTPError, Receive, Scope, Send, respond
from liveprofile.collector.bodies import decode_object, error_body, events_of, ok_body, read_body
from liveprofile.collector.config import CollectorConfig
from liveprofile.collector.gate import BufferGate
from liveprofile.collector.metrics import CollectorMetrics
from liveprofile.collector.ratelimit import TokenBuckets, retry_after_header
from liveprofile.collector.writekeys import WriteKeys
from operators.timeutil import iso

__all__ = ["SegmentIngest", "SINGLE_TYPES", "INGEST_KINDS", "SHORT_KINDS"]

logger = logging.getLogger(__name__)

#: the single-event endpoints ``/v1/{type}``
SINGLE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
#: every ingest endpoint ``/v1/{kind}``
INGEST_KINDS = (*SINGLE_TYPES, "batch")
#: analytics.js's short paths ``/v1/{letter}``: the same endpoints as the long ones
SHORT_KINDS = {"t": "track", "i": "identify", "p": "page", "s": "screen", "g": "group", "a": "alias", "b": "batch"}


class SegmentIngest:
    """The handler of the ingest endpoints (see the module doc)."""

    def __init__(self, gate: BufferGate, config: CollectorConfig, write_keys: WriteKeys, metrics: CollectorMetrics,
                 limiter: TokenBuckets | None, clock: Callable[[], float]) -> None:  # fmt: skip
        self.gate = gate
        self.config = config
        self.write_keys = write_keys
        self.metrics = metrics
        self.limiter = limiter
        self.clock = clock

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Answer one request to ``/v1/{kind}`` (or its short path); returns the status sent."""
        kind = scope["path"][4:]
        status, body = await self.ingest(SHORT_KINDS.get(kind, kind), scope, receive)
        await respond(send, status, body)
        return status

    async def ingest(self, kind: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        """(status, body) of one request to ``/v1/{kind}``; request-level refusals raise :class:`HTTPError`."""
        headers = dict(scope["headers"])
        body = await read_body(headers, receive, self.gate.settings.max_request_bytes)
        return await self.ingest_body(kind, headers, body)

    async def ingest_body(self, kind: str, headers: dict[bytes, bytes], body: bytes) -> tuple[int, bytes]:
        """(status, body) of a request to ``/v1/{kind}`` whose (inflated) body was read: checks 1-6 from
        the JSON decoding on (the Pixel API's way in, with ``headers`` empty: the key from the body)."""
        gate = self.gate
        doc = decode_object(body)
        bucket, trust = self.write_keys.check(headers, doc)
        events, defaults = events_of(doc, kind == "batch", self.config.max_batch_events)
        assert gate.backlog is not None and gate.appender is not None
        if not gate.appender.bounds_backlog:  # else the append itself is refused, exactly
            await gate.check_backlog()
        limiter = self.limiter
        if limiter is not None:
            wait = limiter.take(bucket, len(events))
            if wait:
                self.metrics.rate_limited.inc(len(events))
                raise HTTPError(
                    429, "rate_limited",
                    f"this write key is over its rate limit of {limiter.rate:g} events/s (burst {limiter.burst:g}); "
                    f"the request has {len(events)} events; retry in {math.ceil(wait)} s",
                    [(b"retry-after", retry_after_header(wait))],
                )  # fmt: skip
        received = iso(int(self.clock() * 1000))
        prep = gate.prepare(events, received_at=received, source=f"http:{kind}",
                            force_type=None if kind == "batch" else kind, defaults=defaults, trust=trust)  # fmt: skip
        try:
            prep = await gate.without_suppressed(prep)
            prep = await gate.append(prep)
        except HTTPError:
            if limiter is not None:
                limiter.refund(bucket, len(events))
            raise
        self.metrics.count(prep)
        await gate.tap(prep, received_at=received, source=f"http:{kind}", key=bucket, trust=trust)
        rejected = prep.rejected
        if kind != "batch" and rejected:
            rej = rejected[0]
            status = 413 if rej.reason == "event_too_large" else 400
            return status, error_body(rej.reason, rej.message)
        return 200, ok_body(prep)

