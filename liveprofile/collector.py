"""The HTTP collector: Segment tracking API in, Redis Streams buffer out.

A plain ASGI application (no framework: every request is the hot path), served
by uvicorn with httptools and uvloop. Endpoints (SPEC §2):

* ``POST /v1/track|identify|page|screen|group|alias`` — one event;
* ``POST /v1/batch`` — ``{"batch": [...], "sentAt": ..., "context": ...}``;
* ``GET /healthz`` — 200 when Redis answers, 503 otherwise;
* ``GET /metrics`` — Prometheus text format.

Request-level problems (bad auth 401, oversize 413, malformed or truncated
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
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from liveprofile.buffer import AsyncAppender, BacklogMonitor
from liveprofile.ingest import prepare
from liveprofile.keys import Keys
from liveprofile.settings import Settings
from operators.timeutil import iso

__all__ = ["CollectorApp", "serve", "SINGLE_TYPES"]

logger = logging.getLogger(__name__)

SINGLE_TYPES = ("track", "identify", "page", "screen", "group", "alias")
_RETRY_AFTER = b"5"
_JSON = [(b"content-type", b"application/json")]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class HTTPError(Exception):
    """A request-level refusal: status, error code, readable message."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


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


class CollectorApp:
    """ASGI app. Build with settings; Redis clients are created at startup."""

    def __init__(
        self,
        settings: Settings,
        *,
        allow_no_keys: bool = False,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.write_keys and not allow_no_keys:
            msg = "LIVEPROFILE_WRITE_KEYS is empty: the collector needs at least one write key"
            raise ValueError(msg)
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._write_keys = [k.encode() for k in settings.write_keys]
        self._clock = clock
        self.metrics = _Metrics(registry or CollectorRegistry())
        self._redis: aioredis.Redis | None = None
        self._appender: AsyncAppender | None = None
        self._backlog: BacklogMonitor | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def startup(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=2, max_connections=64
        )
        self._appender = AsyncAppender(self._redis)
        self._backlog = BacklogMonitor(self._redis, self.keys, self.settings.shards)

    async def shutdown(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    try:
                        await self.startup()
                    except Exception as exc:  # pragma: no cover - startup failure is reported by uvicorn
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

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
            if path.startswith("/v1/") and method == "POST":
                kind = path[4:]
                if kind != "batch" and kind not in SINGLE_TYPES:
                    raise HTTPError(404, "not_found", f"no endpoint {path}")
                status, body = await self._ingest(kind, scope, receive)
                await _respond(send, status, body)
            elif path == "/healthz" and method == "GET":
                status, body = await self._health()
                await _respond(send, status, body)
            elif path == "/metrics" and method == "GET":
                status = 200
                await _respond(send, 200, generate_latest(self.metrics.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
            else:
                raise HTTPError(404 if path not in _KNOWN_PATHS else 405, "not_found", f"no endpoint {method} {path}")
        except HTTPError as exc:
            status = exc.status
            if exc.code not in ("not_found",):
                self.metrics.rejected.labels(exc.code).inc()
            await _respond(send, status, _error_body(exc.code, exc.message), exc.headers)
        except Exception:
            logger.exception("collector: unexpected error on %s %s", method, path)
            status = 500
            await _respond(send, 500, _error_body("internal_error", "unexpected server error"))
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

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_request_bytes
        headers = dict(scope["headers"])
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
            raise HTTPError(415, "unsupported_encoding", f"Content-Encoding {enc.decode(errors='replace')!r} is not supported; use gzip")
        return body

    def _authenticate(self, scope: Scope, doc: dict[str, Any]) -> None:
        presented: bytes | None = None
        auth = dict(scope["headers"]).get(b"authorization")
        if auth and auth[:6].lower() == b"basic ":
            try:
                presented = base64.b64decode(auth[6:].strip(), validate=True).split(b":", 1)[0]
            except (ValueError, base64.binascii.Error):  # type: ignore[attr-defined]
                raise HTTPError(401, "unauthorized", "malformed Basic authorization header") from None
        if not presented:
            wk = doc.get("writeKey")
            if isinstance(wk, str):
                presented = wk.encode()
        if not presented:
            raise HTTPError(401, "unauthorized", "a write key is required (Basic auth user name, or writeKey in the body)")
        ok = False
        for key in self._write_keys:  # constant time per key, and every key is tried
            ok |= hmac.compare_digest(presented, key)
        if not ok and self._write_keys:
            raise HTTPError(401, "unauthorized", "unknown write key")

    async def _ingest(self, kind: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        body = await self._read_body(scope, receive)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise HTTPError(400, "not_object", "the body must be a JSON object")
        self._authenticate(scope, doc)
        assert self._backlog is not None and self._appender is not None
        try:
            if await self._backlog.current() > self.settings.max_backlog:
                raise HTTPError(503, "backlog_full", "the buffer backlog is over its bound; retry later", [(b"retry-after", _RETRY_AFTER)])
        except HTTPError:
            raise
        except Exception as exc:
            raise HTTPError(503, "buffer_unavailable", f"the buffer is unreachable: {type(exc).__name__}", [(b"retry-after", _RETRY_AFTER)]) from None

        received = iso(int(self._clock() * 1000))
        if kind == "batch":
            batch = doc.get("batch")
            if not isinstance(batch, list):
                raise HTTPError(400, "missing_batch", "/v1/batch needs a `batch` array")
            defaults = {k: doc[k] for k in ("sentAt", "context", "integrations") if k in doc}
            events = batch
        else:
            defaults = {}
            events = [doc]

        prep = prepare(
            events, keys=self.keys, shards=self.settings.shards, limits=self.settings.limits,
            received_at=received, source=f"http:{kind}", force_type=None if kind == "batch" else kind,
            defaults=defaults,
        )  # fmt: skip
        appends = prep.appends
        rejected = prep.rejected
        try:
            await self._appender.append(appends)
        except Exception as exc:
            logger.warning("collector: append failed (%s): answering 503", exc)
            raise HTTPError(503, "buffer_unavailable", "the buffer is unreachable; retry later", [(b"retry-after", _RETRY_AFTER)]) from None
        n_ok = prep.accepted
        if n_ok:
            self.metrics.accepted.inc(n_ok)
        for rej in rejected:
            self.metrics.rejected.labels(rej.reason).inc()
        if kind != "batch" and rejected:
            rej = rejected[0]
            status = 413 if rej.reason == "event_too_large" else 400
            return status, _error_body(rej.reason, rej.message)
        if rejected:
            return 200, orjson.dumps({
                "success": True,
                "accepted": n_ok,
                "rejected": [{"messageId": r.message_id, "reason": r.reason, "message": r.message} for r in rejected],
            })
        return 200, b'{"success":true}'


_KNOWN_PATHS = frozenset({f"/v1/{t}" for t in (*SINGLE_TYPES, "batch")} | {"/healthz", "/metrics"})


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


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    hdrs = list(headers) if headers else []
    if not any(h[0] == b"content-type" for h in hdrs):
        hdrs.extend(_JSON)
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def serve(settings: Settings, host: str, port: int, *, workers: int = 1, allow_no_keys: bool = False, log_level: str = "warning") -> None:
    """Run the collector under uvicorn (httptools + uvloop) until interrupted."""
    import os

    import uvicorn

    common: dict[str, Any] = {
        "host": host, "port": port, "http": "httptools", "loop": "uvloop", "lifespan": "on",
        "log_level": log_level, "access_log": False, "timeout_keep_alive": 30,
    }
    if workers > 1:
        # Each worker process builds its own app from the environment.
        os.environ["LIVEPROFILE_COLLECTOR_ALLOW_NO_KEYS"] = "1" if allow_no_keys else ""
        uvicorn.run("liveprofile.collector:create_app", factory=True, workers=workers, **common)
        return
    uvicorn.run(CollectorApp(settings, allow_no_keys=allow_no_keys), **common)


def create_app() -> CollectorApp:
    """App factory for multi-worker uvicorn: settings from the environment."""
    import os

    return CollectorApp(Settings.from_env(), allow_no_keys=bool(os.environ.get("LIVEPROFILE_COLLECTOR_ALLOW_NO_KEYS")))
