"""The HTTP collector: Segment tracking API in, Redis Streams buffer out.

A plain ASGI application (no framework: every request is the hot path), served
by uvicorn with httptools and uvloop. Endpoints (SPEC §2):

* ``POST /v1/track|identify|page|screen|group|alias`` — one event;
* ``POST /v1/batch`` — ``{"batch": [...], "sentAt": ..., "context": ...}``;
* ``GET /v1/pixel.gif?user=&campaign=&email_id=&ts=&sig=`` — email-open pixel;
* ``POST /v1/webhooks/{source}`` — signed server-to-server events;
* ``GET /healthz`` — 200 when Redis answers, 503 otherwise;
* ``GET /metrics`` — Prometheus text format.

Request-level problems (bad auth 401, oversize 413 — over
``LIVEPROFILE_MAX_REQUEST_BYTES`` or ``LIVEPROFILE_MAX_BATCH_EVENTS`` —, malformed or truncated
JSON, bad gzip, a body that is not an object, a batch without a ``batch``
array: 400) are refused whole, with a JSON body ``{"success": false, "error":
<code>, "message": <text>}``, and nothing of the request is kept.

Event-level problems never fail a batch: the event is dead-lettered (stage
``collector``) with its reason and the rest are accepted; the 200 response
lists the rejected ``messageId``s. On single-event endpoints the event is
dead-lettered and the answer is 400 with the reason (413 when too large).

``200 {"success": true}`` is sent only after Redis acknowledged every append.
When Redis is unreachable the answer is 503 with ``Retry-After``; when the
buffer backlog passes ``LIVEPROFILE_MAX_BACKLOG`` it is 503 with
``Retry-After`` too. Nothing is acknowledged and then dropped.

Rate limits (``LIVEPROFILE_RATE_LIMIT``/``LIVEPROFILE_RATE_BURST``, see
:mod:`liveprofile.collector.ratelimit`): a token bucket per write key, counted in events,
**per collector process**. Over it: 429 ``rate_limited`` with ``Retry-After``
(whole seconds until enough tokens), nothing kept.

Email-open pixel (:mod:`liveprofile.collector.signing` has the parameters and the signed
message): every request gets the 1x1 transparent GIF (200, ``Cache-Control:
no-store``). Only a valid, unexpired signature produces an ``Email Opened``
track event (``userId``; ``properties.campaign_id``/``email_id``; ``messageId``
from the signed parameters and a ``LIVEPROFILE_PIXEL_OPEN_WINDOW`` time bucket;
``context.userAgent``/``ip`` from the request — the peer address, or
``X-Forwarded-For`` from proxies uvicorn trusts, ``FORWARDED_ALLOW_IPS``),
appended like any other event. Results are counted in
``liveprofile_collector_pixel_requests_total{result}``. HEAD gets the headers only.

Webhooks: ``{source}`` must be configured in ``LIVEPROFILE_WEBHOOK_SECRETS``
(else 404 ``unknown_source``); ``X-Liveprofile-Signature: t=<unix>,v1=<hex>``
must authenticate the body (401 ``missing_signature`` / ``invalid_signature``),
be within ``LIVEPROFILE_WEBHOOK_TOLERANCE`` (401 ``stale_signature``) and not be
a delivery already received (401 ``replayed_signature``: a replay cache in Redis,
``{p}:webhook-seen:{source}:{digest}``, ``SET NX`` with a TTL covering the window,
claimed in the same Lua script that appends the events, so every collector
process shares it and a failed append never burns a delivery; with a Redis
Cluster, whose buffer shards are in other slots than the claim, and with Kafka,
the claim is taken first and released if the append fails — a collector crash
between the two burns that delivery). The body is one
Segment event or ``{"batch": [...]}``; events go through the same
:func:`liveprofile.buffer.ingest.prepare` (source ``webhook:{source}``); event-level
problems never fail a delivery (200 with the rejected list, as ``/v1/batch``).
Results: ``liveprofile_collector_webhook_requests_total{source, result}``.

``LIVEPROFILE_TRUNCATE_IP=on`` truncates ``context.ip`` of every ingested event
(and the pixel's request address) before anything is stored.

Secrets (write keys, pixel and webhook secrets) and presented signatures are
never logged, put in a metric label or echoed in a response. Refused requests
are counted by reason in ``liveprofile_collector_events_rejected_total`` (the
error code), with details in ``liveprofile_collector_auth_failures_total`` and
``liveprofile_collector_rate_limited_events_total``.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import math
import sys
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from liveprofile.asgi import HTTPError, Receive, Scope, Send, respond, run_lifespan
from liveprofile.buffer.ingest import Prepared, prepare
from liveprofile.buffer.streams import Append, BacklogMonitor
from liveprofile.buffer.writers import Appender, appender_for
from liveprofile.collector.config import CollectorConfig
from liveprofile.collector.ratelimit import TokenBuckets, retry_after_header
from liveprofile.collector.signing import (
    PIXEL_PATH,
    PixelError,
    WebhookAuthError,
    parse_pixel_query,
    pixel_message_id,
    replay_digest,
    verify_pixel,
    verify_webhook,
)
from liveprofile.settings import ConfigError, Settings, load_env
from liveprofile.store.connection import connect_async
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import lua_source
from operators.names import EventName
from operators.timeutil import iso

__all__ = ["CollectorApp", "serve", "SINGLE_TYPES"]

logger = logging.getLogger(__name__)

SINGLE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
_INGEST_KINDS = frozenset((*SINGLE_TYPES, "batch"))
_RETRY_AFTER = b"5"
_WEBHOOK_ENDPOINT = "/v1/webhooks/{source}"
_WEBHOOK_PREFIX = "webhooks/"

#: 1x1 transparent GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(PIXEL_GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
_PIXEL_RESULTS = (
    "ok", "duplicate", "disabled", "missing_parameter", "malformed", "invalid_signature", "expired",
    "not_yet_valid", "invalid_event", "backlog_full", "buffer_unavailable", "head", "internal_error",
)  # fmt: skip
_WEBHOOK_RESULTS = (
    "accepted", "missing_signature", "invalid_signature", "stale_signature", "replayed_signature",
    "malformed_json", "not_object", "missing_batch", "request_too_large", "too_many_events", "backlog_full",
    "buffer_unavailable",
)  # fmt: skip
_AUTH_REASONS = ("missing_write_key", "unknown_write_key", "malformed_authorization")
_RECENT_OPENS = 10_000

#: a signed delivery appended at most once (see the script's header)
_WEBHOOK_LUA = lua_source("webhook_replay_guard")

class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "liveprofile_collector_requests_total", "HTTP requests by endpoint and status",
            ["endpoint", "status"], registry=registry,
        )
        self.accepted = Counter(
            "liveprofile_collector_events_accepted_total", "Events appended to the buffer", registry=registry
        )
        self.rejected = Counter(
            "liveprofile_collector_events_rejected_total", "Events refused or dead-lettered, by reason",
            ["reason"], registry=registry,
        )
        self.latency = Histogram(
            "liveprofile_collector_request_seconds", "Request handling time", ["endpoint"], registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.auth_failures = Counter(
            "liveprofile_collector_auth_failures_total",
            "Requests refused 401 for their write key: missing_write_key, unknown_write_key, malformed_authorization",
            ["reason"], registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "liveprofile_collector_rate_limited_events_total",
            "Events refused (429) because their write key was over its rate limit in this process", registry=registry,
        )
        self.pixel = Counter(
            "liveprofile_collector_pixel_requests_total", "Email-open pixel requests by result (ok: an event was appended)",
            ["result"], registry=registry,
        )
        self.webhooks = Counter(
            "liveprofile_collector_webhook_requests_total",
            "Webhook deliveries by source (configured name, or unknown) and result (accepted or the error code)",
            ["source", "result"], registry=registry,
        )  # fmt: skip
        for reason in _AUTH_REASONS:
            self.auth_failures.labels(reason)
        for result in _PIXEL_RESULTS:
            self.pixel.labels(result)


class CollectorApp:
    """ASGI app. Build with settings (and the edge config); Redis clients are created at startup."""

    def __init__(
        self,
        settings: Settings,
        *,
        config: CollectorConfig | None = None,
        allow_no_keys: bool = False,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.write_keys and not allow_no_keys:
            msg = "LIVEPROFILE_WRITE_KEYS is empty: the collector needs at least one write key"
            raise ValueError(msg)
        self.settings = settings
        self.config = config if config is not None else CollectorConfig()
        self.keys = Keys.of(settings)
        self._write_keys = [k.encode() for k in settings.write_keys]
        self._clock = clock
        self.metrics = _Metrics(registry or CollectorRegistry())
        for source in self.config.webhook_secrets:
            for result in _WEBHOOK_RESULTS:
                self.metrics.webhooks.labels(source, result)
        cfg = self.config
        self._limiter = TokenBuckets(cfg.rate_limit, cfg.rate_burst, clock=monotonic) if cfg.rate_limit > 0 else None
        self._recent_opens: OrderedDict[str, None] = OrderedDict()
        self._redis: aioredis.Redis | None = None
        self._appender: Appender | None = None
        self._backlog: BacklogMonitor | None = None
        self._webhook_script: Any = None

    # -- lifecycle -----------------------------------------------------------------
    async def startup(self) -> None:
        self._redis = connect_async(
            self.settings.redis_url, self.settings.redis_cluster, socket_timeout=5, socket_connect_timeout=2, max_connections=64
        )
        self._appender = appender_for(self.settings, self._redis)
        self._backlog = BacklogMonitor(self._redis, self.keys, self.settings.shards)
        self._webhook_script = self._redis.register_script(_WEBHOOK_LUA)

    async def shutdown(self) -> None:
        if self._appender is not None:
            await self._appender.close()
        if self._redis is not None:
            await self._redis.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await run_lifespan(receive, send, self.startup, self.shutdown)

    # -- HTTP ----------------------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        endpoint = path if path in _KNOWN_PATHS else "other"
        status = 500
        try:
            if self._redis is None:
                await self.startup()
            if method == "POST" and path.startswith("/v1/"):
                kind = path[4:]
                if kind in _INGEST_KINDS:
                    status, body = await self._ingest(kind, scope, receive)
                elif kind.startswith(_WEBHOOK_PREFIX):
                    endpoint = _WEBHOOK_ENDPOINT
                    status, body = await self._webhook(kind[len(_WEBHOOK_PREFIX) :], scope, receive)
                else:
                    raise HTTPError(404, "not_found", f"no endpoint {path[:200]}")
                await respond(send, status, body)
            elif path == PIXEL_PATH and method in ("GET", "HEAD"):
                status = 200
                await self._pixel(scope, send)
            elif path == "/healthz" and method == "GET":
                status, body = await self._health()
                await respond(send, status, body)
            elif path == "/metrics" and method == "GET":
                status = 200
                await respond(send, 200, generate_latest(self.metrics.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
            else:
                raise HTTPError(404 if path not in _KNOWN_PATHS else 405, "not_found", f"no endpoint {method} {path[:200]}")
        except HTTPError as exc:
            status = exc.status
            if exc.code not in ("not_found",):
                self.metrics.rejected.labels(exc.code).inc()
            await respond(send, status, _error_body(exc.code, exc.message), exc.headers)
        except Exception:
            logger.exception("collector: unexpected error on %s %s", method, path[:200])
            status = 500
            await respond(send, 500, _error_body("internal_error", "unexpected server error"))
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _health(self) -> tuple[int, bytes]:
        try:
            assert self._redis is not None
            await asyncio.wait_for(self._redis.ping(), timeout=2)
        except Exception as exc:
            return 503, orjson.dumps({"status": "unavailable", "redis": str(exc)[:200]})
        return 200, b'{"status":"ok"}'

    async def _read_body(self, headers: dict[bytes, bytes], receive: Receive) -> bytes:
        limit = self.settings.max_request_bytes
        clen = headers.get(b"content-length")
        if clen is not None and clen.isdigit() and int(clen) > limit:
            raise HTTPError(413, "request_too_large", f"request body is {int(clen)} bytes, the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise HTTPError(400, "client_disconnected", "the client went away before the body was complete")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, "request_too_large", f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        enc = headers.get(b"content-encoding", b"").strip().lower()
        if enc == b"gzip":
            body = _gunzip(body, limit)
        elif enc not in (b"", b"identity"):
            raise HTTPError(415, "unsupported_encoding", f"Content-Encoding {enc[:40].decode(errors='replace')!r} is not supported; use gzip")
        return body

    def _authenticate(self, headers: dict[bytes, bytes], doc: dict[str, Any]) -> bytes:
        """The presented write key if it is a configured one (constant time); 401 otherwise."""
        presented: bytes | None = None
        auth = headers.get(b"authorization")
        if auth and auth[:6].lower() == b"basic ":
            try:
                presented = base64.b64decode(auth[6:].strip(), validate=True).split(b":", 1)[0]
            except (ValueError, base64.binascii.Error):  # type: ignore[attr-defined]
                self.metrics.auth_failures.labels("malformed_authorization").inc()
                raise HTTPError(401, "unauthorized", "malformed Basic authorization header") from None
        if not presented:
            wk = doc.get("writeKey")
            if isinstance(wk, str):
                presented = wk.encode("utf-8", "surrogatepass")
        if not presented:
            self.metrics.auth_failures.labels("missing_write_key").inc()
            raise HTTPError(401, "unauthorized", "a write key is required (Basic auth user name, or writeKey in the body)")
        ok = False
        for key in self._write_keys:  # constant time per key, and every key is tried
            ok |= hmac.compare_digest(presented, key)
        if not ok and self._write_keys:
            self.metrics.auth_failures.labels("unknown_write_key").inc()
            raise HTTPError(401, "unauthorized", "unknown write key")
        return presented if self._write_keys else b""  # no keys (demo): one shared bucket

    async def _check_backlog(self) -> None:
        assert self._backlog is not None
        try:
            if await self._backlog.current() > self.settings.max_backlog:
                raise HTTPError(503, "backlog_full", "the buffer backlog is over its bound; retry later", [(b"retry-after", _RETRY_AFTER)])
        except HTTPError:
            raise
        except Exception as exc:
            raise HTTPError(503, "buffer_unavailable", f"the buffer is unreachable: {type(exc).__name__}", [(b"retry-after", _RETRY_AFTER)]) from None

    def _decode(self, body: bytes) -> dict[str, Any]:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise HTTPError(400, "not_object", "the body must be a JSON object")
        return doc

    def _events_of(self, doc: dict[str, Any], batch_shape: bool) -> tuple[list[Any], dict[str, Any]]:
        """(events, batch defaults) of a body: ``{"batch": [...], ...}`` or one event."""
        if batch_shape:
            batch = doc.get("batch")
            if not isinstance(batch, list):
                raise HTTPError(400, "missing_batch", "a batch body needs a `batch` array")
            if len(batch) > self.config.max_batch_events:
                raise HTTPError(
                    413, "too_many_events",
                    f"the batch has {len(batch)} events, the limit is {self.config.max_batch_events} per request",
                )  # fmt: skip
            return batch, {k: doc[k] for k in ("sentAt", "context", "integrations") if k in doc}
        return [doc], {}

    def _count(self, prep: Prepared) -> None:
        if prep.accepted:
            self.metrics.accepted.inc(prep.accepted)
        for rej in prep.rejected:
            self.metrics.rejected.labels(rej.reason).inc()

    async def _ingest(self, kind: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        headers = dict(scope["headers"])
        body = await self._read_body(headers, receive)
        doc = self._decode(body)
        bucket = self._authenticate(headers, doc)
        events, defaults = self._events_of(doc, kind == "batch")
        assert self._backlog is not None and self._appender is not None
        try:  # inline rather than self._check_backlog(): one coroutine less per request on the hot path
            if await self._backlog.current() > self.settings.max_backlog:
                raise HTTPError(503, "backlog_full", "the buffer backlog is over its bound; retry later", [(b"retry-after", _RETRY_AFTER)])
        except HTTPError:
            raise
        except Exception as exc:
            raise HTTPError(503, "buffer_unavailable", f"the buffer is unreachable: {type(exc).__name__}", [(b"retry-after", _RETRY_AFTER)]) from None
        limiter = self._limiter
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
        received = iso(int(self._clock() * 1000))
        prep = prepare(
            events, keys=self.keys, shards=self.settings.shards, limits=self.settings.limits,
            received_at=received, source=f"http:{kind}", force_type=None if kind == "batch" else kind,
            defaults=defaults, mask_ip=self.config.truncate_ip,
        )  # fmt: skip
        try:
            await self._appender.append(prep.appends)
        except Exception as exc:
            logger.warning("collector: append failed (%s: %.200s): answering 503", type(exc).__name__, exc)
            if limiter is not None:
                limiter.refund(bucket, len(events))
            raise HTTPError(503, "buffer_unavailable", "the buffer is unreachable; retry later", [(b"retry-after", _RETRY_AFTER)]) from None
        self._count(prep)
        rejected = prep.rejected
        if kind != "batch" and rejected:
            rej = rejected[0]
            status = 413 if rej.reason == "event_too_large" else 400
            return status, _error_body(rej.reason, rej.message)
        return 200, _ok_body(prep)

    # -- email-open pixel ----------------------------------------------------------
    async def _pixel(self, scope: Scope, send: Send) -> None:
        """Always the GIF; an ``Email Opened`` event only for a valid signature."""
        try:
            result = await self._record_open(scope)
        except Exception:
            logger.exception("collector: pixel handling failed")
            result = "internal_error"
        self.metrics.pixel.labels(result).inc()
        if result not in ("ok", "duplicate", "head", "invalid_event"):
            self.metrics.rejected.labels(result if result in ("backlog_full", "buffer_unavailable") else f"pixel_{result}").inc()
        await send({"type": "http.response.start", "status": 200, "headers": _PIXEL_HEADERS})
        await send({"type": "http.response.body", "body": PIXEL_GIF})

    async def _record_open(self, scope: Scope) -> str:
        cfg = self.config
        if scope["method"] == "HEAD":
            return "head"
        if not cfg.pixel_secrets:
            return "disabled"
        now = self._clock()
        try:
            opened = verify_pixel(parse_pixel_query(scope.get("query_string", b"")), cfg.pixel_secrets, now=now, max_age_s=cfg.pixel_max_age_s)
        except PixelError as exc:
            return exc.reason
        mid = pixel_message_id(opened, now, cfg.pixel_open_window_s)
        if mid in self._recent_opens:
            return "duplicate"  # a reload in the same window: the dataflow would drop it anyway
        ctx: dict[str, str] = {}
        ua = dict(scope["headers"]).get(b"user-agent")
        if ua:
            ctx["userAgent"] = ua.decode("latin-1")[:512]
        client = scope.get("client")
        if client and client[0]:
            ctx["ip"] = str(client[0])
        event = {
            "type": "track", "event": EventName.EMAIL_OPENED, "userId": opened.user_id, "messageId": mid,
            "properties": {"campaign_id": opened.campaign_id, "email_id": opened.email_id}, "context": ctx,
        }  # fmt: skip
        try:
            await self._check_backlog()
        except HTTPError as exc:
            return exc.code
        assert self._appender is not None
        prep = prepare(
            [event], keys=self.keys, shards=self.settings.shards, limits=self.settings.limits,
            received_at=iso(int(now * 1000)), source="pixel", mask_ip=cfg.truncate_ip,
        )  # fmt: skip
        try:
            await self._appender.append(prep.appends)
        except Exception as exc:
            logger.warning("collector: pixel append failed (%s: %.200s)", type(exc).__name__, exc)
            return "buffer_unavailable"
        self._count(prep)
        if prep.rejected:
            return "invalid_event"
        self._recent_opens[mid] = None
        if len(self._recent_opens) > _RECENT_OPENS:
            self._recent_opens.popitem(last=False)
        return "ok"

    # -- webhooks ------------------------------------------------------------------
    async def _webhook(self, source: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        secrets = self.config.webhook_secrets.get(source)
        label = source if secrets is not None else "unknown"
        result = "internal_error"
        try:
            if secrets is None:
                raise HTTPError(404, "unknown_source", f"no webhook source {source[:64]!r} is configured")
            status, body = await self._webhook_deliver(source, secrets, scope, receive)
            result = "accepted"
            return status, body
        except HTTPError as exc:
            result = exc.code
            raise
        finally:
            self.metrics.webhooks.labels(label, result).inc()

    async def _webhook_deliver(self, source: str, secrets: tuple[bytes, ...], scope: Scope, receive: Receive) -> tuple[int, bytes]:
        headers = dict(scope["headers"])
        body = await self._read_body(headers, receive)
        now = self._clock()
        tol = self.config.webhook_tolerance_s
        try:
            ts = verify_webhook(headers.get(b"x-liveprofile-signature"), body, secrets, now=now, tolerance_s=tol)
        except WebhookAuthError as exc:
            raise HTTPError(401, exc.code, exc.message) from None
        doc = self._decode(body)
        events, defaults = self._events_of(doc, "batch" in doc)
        await self._check_backlog()
        prep = prepare(
            events, keys=self.keys, shards=self.settings.shards, limits=self.settings.limits,
            received_at=iso(int(now * 1000)), source=f"webhook:{source}", defaults=defaults,
            mask_ip=self.config.truncate_ip,
        )  # fmt: skip
        seen = self.keys.webhook_seen(source, replay_digest(source, ts, body))
        ttl = max(1, math.ceil(ts + tol - now)) + 60  # + 60 s: other collectors' clocks may lag
        try:
            if not self._appender.in_redis or self.keys.cluster:
                # claim in Redis, append to Kafka (or to a Redis Cluster's shards, which one
                # script cannot reach: they are in other slots), release the claim if the append fails
                assert self._redis is not None and self._appender is not None
                fresh = await self._redis.set(seen, "1", nx=True, ex=ttl)
                if fresh:
                    try:
                        await self._appender.append(prep.appends)
                    except Exception:
                        await self._redis.delete(seen)
                        raise
            else:
                fresh = await self._webhook_script(keys=[seen, *(a[0] for a in prep.appends)], args=[ttl, *_script_args(prep.appends)])
        except Exception as exc:
            logger.warning("collector: webhook append failed (%s: %.200s): answering 503", type(exc).__name__, exc)
            raise HTTPError(503, "buffer_unavailable", "the buffer is unreachable; retry later", [(b"retry-after", _RETRY_AFTER)]) from None
        if not fresh:
            raise HTTPError(401, "replayed_signature", "this signed delivery was already received (replay)")
        self._count(prep)
        return 200, _ok_body(prep)


def _script_args(appends: list[Append]) -> list[bytes | str | int]:
    out: list[bytes | str | int] = []
    for _, fields in appends:
        out.append(len(fields))
        for k, v in fields.items():
            out.append(k)
            out.append(v)
    return out


def _ok_body(prep: Prepared) -> bytes:
    if not prep.rejected:
        return b'{"success":true}'
    return orjson.dumps({
        "success": True,
        "accepted": prep.accepted,
        "rejected": [{"messageId": r.message_id, "reason": r.reason, "message": r.message} for r in prep.rejected],
    })


_KNOWN_PATHS = frozenset({f"/v1/{t}" for t in _INGEST_KINDS} | {PIXEL_PATH, "/healthz", "/metrics"})


def _error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"success": False, "error": code, "message": message})


def _gunzip(body: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, "malformed_gzip", f"the gzip body cannot be inflated: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HTTPError(413, "request_too_large", f"the inflated body is over the limit of {limit} bytes")
    if not d.eof:
        raise HTTPError(400, "malformed_gzip", "the gzip body is truncated")
    return out


def _config_from_env() -> CollectorConfig:
    try:
        return CollectorConfig.from_values(load_env())
    except ConfigError as exc:
        print(f"liveprofile collector: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    workers: int = 1,
    allow_no_keys: bool = False,
    log_level: str = "warning",
    config: CollectorConfig | None = None,
) -> None:
    """Run the collector under uvicorn (httptools + uvloop) until interrupted.

    ``config`` defaults to the edge settings of the environment
    (:meth:`CollectorConfig.from_values`); a bad one exits with status 2. Rate
    limits are per process: with ``workers`` > 1 each worker has its own buckets.
    """
    import os

    import uvicorn

    if config is None:
        config = _config_from_env()
    if config.rate_limit > 0:
        logger.info("collector: rate limit %g events/s per write key in each of %d worker process(es)", config.rate_limit, workers)
    common: dict[str, Any] = {
        "host": host, "port": port, "http": "httptools", "loop": "uvloop", "lifespan": "on",
        "log_level": log_level, "access_log": False, "timeout_keep_alive": 30,
    }  # fmt: skip
    # access_log stays off: access lines would carry the pixel's query string (its signature).
    if workers > 1:
        # Each worker process builds its own app from the environment.
        os.environ["LIVEPROFILE_COLLECTOR_ALLOW_NO_KEYS"] = "1" if allow_no_keys else ""
        uvicorn.run("liveprofile.collector.app:create_app", factory=True, workers=workers, **common)
        return
    uvicorn.run(CollectorApp(settings, config=config, allow_no_keys=allow_no_keys), **common)


def create_app() -> CollectorApp:
    """App factory for multi-worker uvicorn: settings and edge config from the environment."""
    import os

    return CollectorApp(
        Settings.from_env(), config=_config_from_env(), allow_no_keys=bool(os.environ.get("LIVEPROFILE_COLLECTOR_ALLOW_NO_KEYS"))
    )
