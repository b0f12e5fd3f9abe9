"""The HTTP collector: Segment tracking API in, Redis Streams buffer out.

A plain ASGI application (no framework: every request is the hot path), served
by uvicorn with httptools and uvloop. Endpoints (SPEC §2):

* ``POST /v1/track|identify|page|screen|group|alias`` — one event;
* ``POST /v1/batch`` — ``{"batch": [...], "sentAt": ..., "context": ...}``;
* ``POST /v1/t|i|p|s|g|a|b`` — analytics.js's short paths, the same endpoints; bodies may be
  ``application/json`` or ``text/plain`` (the content type is not read: the body is JSON);
* ``GET /v1/projects/{writeKey}/settings`` and ``GET /sourceConfig`` — the settings analytics.js
  and RudderStack's JS SDK fetch at load; ``GET /v1/pixel/{type}?data=`` — Segment's Pixel API
  (:mod:`.browser`, which also holds the CORS policy of these browser routes: preflight
  ``OPTIONS`` and the grant on every answer to an origin in ``LIVEPROFILE_CORS_ORIGINS``);
* ``GET /v1/pixel.gif?user=&campaign=&email_id=&ts=&sig=`` — email-open pixel;
* ``POST /v1/webhooks/{source}`` — signed server-to-server events;
* ``GET /healthz`` — 200 when Redis answers, 503 otherwise;
* ``GET /metrics`` — Prometheus text format;
* ``GET /openapi.json`` — the OpenAPI 3.1 document of all of these
  (:mod:`liveprofile.collector.openapi`; public, like Segment's API reference: no write key).

The server runs under the HTTP limits of :mod:`liveprofile.asgi` (``LIVEPROFILE_HTTP_*``: header
size 431, header and body read timeouts 408, a connection limit 503).

This module holds the ASGI entry, the routing table (:data:`ROUTES`, which the router matches and
a test holds the OpenAPI document to), the lifecycle and :func:`serve`/:func:`create_app`. The
endpoints live in their own modules, each docstring its contract: :mod:`.ingest` (the Segment
API), :mod:`.pixel`, :mod:`.webhooks`; what they share in :mod:`.bodies` (request and answer
bodies), :mod:`.writekeys`, :mod:`.gate` (the way into the buffer) and :mod:`.metrics`.
A path that is not routed is 404 ``not_found``; an exact routed path asked with another method
is 405 (code ``not_found`` as well), except a POST under ``/v1/`` (404, an unknown Segment call).

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

The email-open pixel (:mod:`.pixel`) always answers the GIF and records an open only for a
valid signature; webhooks (:mod:`.webhooks`) need a configured source, a valid, fresh signature
and a delivery not received before (a replay cache shared by every collector process).

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
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from liveprofile.asgi import (
    HTTPError,
    Receive,
    Scope,
    Send,
    limits_of,
    respond,
    run_lifespan,
    server_options,
    tune_gc,
)
from liveprofile.buffer.streams import BacklogMonitor
from liveprofile.buffer.writers import appender_for
from liveprofile.collector import openapi
from liveprofile.collector.bodies import error_body
from liveprofile.collector.browser import (
    PIXEL_API_PREFIX,
    SEGMENT_SETTINGS_PREFIX,
    SEGMENT_SETTINGS_SUFFIX,
    SOURCE_CONFIG_PATHS,
    CorsPolicy,
    PixelApi,
    SdkSettings,
)
from liveprofile.collector.config import CollectorConfig
from liveprofile.collector.gate import BufferGate
from liveprofile.collector.ingest import INGEST_KINDS, SHORT_KINDS, SINGLE_TYPES, SegmentIngest
from liveprofile.collector.metrics import CollectorMetrics
from liveprofile.collector.pixel import PIXEL_GIF, EmailPixel
from liveprofile.collector.ratelimit import TokenBuckets
from liveprofile.collector.signing import PIXEL_PATH
from liveprofile.collector.webhooks import WEBHOOK_PREFIX, Webhooks
from liveprofile.collector.writekeys import WriteKeys
from liveprofile.settings import ConfigError, Settings, load_env
from liveprofile.store.connection import connect_async
from liveprofile.store.keys import Keys

__all__ = ["CollectorApp", "serve", "create_app", "SINGLE_TYPES", "PIXEL_GIF", "ROUTES", "Route"]

logger = logging.getLogger(__name__)

Handler = Callable[[Scope, Receive, Send], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Route:
    """One routed path: its OpenAPI path template, the methods it answers and which handler.

    A template with one ``{parameter}`` matches every path that starts with the literal part
    before it and ends with the literal part after it (the parameter is what is between, possibly
    empty); any other template matches exactly. The template is also the ``endpoint`` label of the
    request metrics. ``cors``: a browser route (:class:`~liveprofile.collector.browser.CorsPolicy`
    answers its ``OPTIONS`` and adds the grant to its answers).
    """

    path: str
    methods: frozenset[str]
    handler: str  # "ingest", "pixel", "webhook", "health", "metrics", "openapi", "segment_settings", ...
    cors: bool = False

    @property
    def prefix(self) -> str | None:
        """The literal part of a parametrized template, ``None`` for an exact one.

        >>> Route("/v1/webhooks/{source}", frozenset({"POST"}), "webhook").prefix
        '/v1/webhooks/'
        """
        return self.path[: self.path.index("{")] if "{" in self.path else None

    @property
    def suffix(self) -> str:
        """The literal part after a template's parameter (``""`` for none or an exact template).

        >>> Route("/v1/projects/{writeKey}/settings", frozenset({"GET"}), "segment_settings").suffix
        '/settings'
        """
        return self.path[self.path.index("}") + 1 :] if "{" in self.path else ""

    def matches(self, path: str) -> bool:
        """Whether ``path`` is this (parametrized) template's."""
        prefix, suffix = self.prefix, self.suffix
        if prefix is None:
            return path == self.path
        return path.startswith(prefix) and path.endswith(suffix) and len(path) >= len(prefix) + len(suffix)


_POST = frozenset({"POST"})
_GET = frozenset({"GET"})
_BROWSER_POST = frozenset({"POST", "OPTIONS"})
_BROWSER_GET = frozenset({"GET", "OPTIONS"})

#: every path the collector routes (the router matches these and nothing else)
ROUTES: tuple[Route, ...] = (
    *(Route(f"/v1/{kind}", _BROWSER_POST, "ingest", cors=True) for kind in INGEST_KINDS),
    *(Route(f"/v1/{short}", _BROWSER_POST, "ingest", cors=True) for short in SHORT_KINDS),
    Route(SEGMENT_SETTINGS_PREFIX + "{writeKey}" + SEGMENT_SETTINGS_SUFFIX, _BROWSER_GET, "segment_settings", cors=True),
    *(Route(p, _BROWSER_GET, "rudderstack_config", cors=True) for p in SOURCE_CONFIG_PATHS),
    Route(PIXEL_API_PREFIX + "{type}", _BROWSER_GET, "pixel_api", cors=True),
    Route(PIXEL_PATH, frozenset({"GET", "HEAD"}), "pixel"),
    Route(WEBHOOK_PREFIX + "{source}", _POST, "webhook"),
    Route("/healthz", _GET, "health"),
    Route("/metrics", _GET, "metrics"),
    Route("/openapi.json", _GET, "openapi"),
)
assert all(r.prefix is None or r.path.count("{") == 1 and "{" not in r.suffix for r in ROUTES)


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
        if not (settings.write_keys or settings.public_write_keys) and not allow_no_keys:
            msg = "LIVEPROFILE_WRITE_KEYS is empty: the collector needs at least one write key"
            raise ValueError(msg)
        self.settings = settings
        self.config = cfg = config if config is not None else CollectorConfig()
        self.keys = Keys.of(settings)
        self.metrics = CollectorMetrics(registry or CollectorRegistry(), cfg.webhook_secrets)
        self._limiter = TokenBuckets(cfg.rate_limit, cfg.rate_burst, clock=monotonic) if cfg.rate_limit > 0 else None
        self.gate = BufferGate(settings, self.keys, truncate_ip=cfg.truncate_ip)
        write_keys = WriteKeys(settings.write_keys, self.metrics.auth_failures, settings.public_write_keys)
        self.ingest = SegmentIngest(self.gate, cfg, write_keys, self.metrics, self._limiter, clock)
        self.pixel = EmailPixel(self.gate, cfg, self.metrics, clock)
        self.webhooks = Webhooks(self.gate, cfg, self.metrics, clock)
        self.cors = CorsPolicy(cfg.cors_origins)
        self.sdk_settings = SdkSettings(write_keys)
        self.pixel_api = PixelApi(self.ingest)
        self._openapi = openapi.document_bytes()  # built once
        handlers: dict[str, Handler] = {
            "ingest": self.ingest.handle, "pixel": self.pixel.handle, "webhook": self.webhooks.handle,
            "health": self._health, "metrics": self._metrics, "openapi": self._openapi_json,
            "segment_settings": self.sdk_settings.segment, "rudderstack_config": self.sdk_settings.rudderstack,
            "pixel_api": self.pixel_api.handle,
        }  # fmt: skip
        self._exact = {r.path: (r, handlers[r.handler]) for r in ROUTES if r.prefix is None}
        self._prefixed = [(r, handlers[r.handler]) for r in ROUTES if r.prefix is not None]

    # -- lifecycle -----------------------------------------------------------------
    async def startup(self) -> None:
        redis = connect_async(
            self.settings.redis_url, self.settings.redis_cluster, socket_timeout=5, socket_connect_timeout=2, max_connections=64
        )
        self.gate.open(redis, appender_for(self.settings, redis, bound_backlog=True), BacklogMonitor(redis, self.keys, self.settings.shards))
        self.webhooks.bind(redis)

    async def shutdown(self) -> None:
        await self.gate.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await run_lifespan(receive, send, self.startup, self.shutdown)

    # -- routing -------------------------------------------------------------------
    def route(self, path: str) -> tuple[Route, Handler] | None:
        """The route of ``path`` (any method), ``None`` when no route matches."""
        hit = self._exact.get(path)
        if hit is not None:
            return hit
        for r, handler in self._prefixed:
            if r.matches(path):
                return r, handler
        return None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        hit = self.route(path)
        if hit is not None and method not in hit[0].methods:
            refused, hit = hit[0], None
        else:
            refused = None
        # the metrics label: the route's template; a wrong method on an exact path keeps the path
        if hit is not None:
            endpoint = hit[0].path
        elif refused is not None and refused.prefix is None:
            endpoint = refused.path
        else:
            endpoint = "other"
        status = 500
        route = hit[0] if hit is not None else refused
        raw_send = send
        if route is not None and route.cors and method != "OPTIONS":  # a browser route: Vary: Origin, and the grant to an allowed origin
            send = self.cors.wrap(send, dict(scope["headers"]).get(b"origin"))
        try:
            if self.gate.redis is None:
                await self.startup()
            if hit is None:
                raise _not_routed(method, path, refused)
            if method == "OPTIONS":
                status = await self.cors.preflight(scope, raw_send, hit[0].methods)
            else:
                status = await hit[1](scope, receive, send)
        except HTTPError as exc:
            status = exc.status
            if exc.code not in ("not_found",):
                self.metrics.rejected.labels(exc.code).inc()
            await respond(send, status, error_body(exc.code, exc.message), exc.headers)
        except Exception:
            logger.exception("collector: unexpected error on %s %s", method, path[:200])
            status = 500
            await respond(send, 500, error_body("internal_error", "unexpected server error"))
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    # -- small endpoints -----------------------------------------------------------
    async def _health(self, scope: Scope, receive: Receive, send: Send) -> int:
        try:
            assert self.gate.redis is not None
            await asyncio.wait_for(self.gate.redis.ping(), timeout=2)
        except Exception as exc:
            await respond(send, 503, orjson.dumps({"status": "unavailable", "redis": str(exc)[:200]}))
            return 503
        await respond(send, 200, b'{"status":"ok"}')
        return 200

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> int:
        await respond(send, 200, generate_latest(self.metrics.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())])
        return 200

    async def _openapi_json(self, scope: Scope, receive: Receive, send: Send) -> int:
        await respond(send, 200, self._openapi)
        return 200


def _not_routed(method: str, path: str, refused: Route | None) -> HTTPError:
    """The answer to a request no route takes (``refused``: the route of its path, which does not
    answer its method): 405 for an exact path, else 404, both ``not_found``; a POST under ``/v1/``
    is always 404 (the Segment API's namespace: an unknown call, as it always was)."""
    if method == "POST" and path.startswith("/v1/"):
        return HTTPError(404, "not_found", f"no endpoint {path[:200]}")
    status = 405 if refused is not None and refused.prefix is None else 404
    return HTTPError(status, "not_found", f"no endpoint {method} {path[:200]}")


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
        "host": host, "port": port, "loop": "uvloop", "lifespan": "on",
        "log_level": log_level, "access_log": False, "timeout_keep_alive": 30, **server_options(limits_of(settings)),
    }  # fmt: skip
    # access_log stays off: access lines would carry the pixel's query string (its signature).
    if workers > 1:
        # Each worker process builds its own app from the environment (and tunes its GC: create_app).
        os.environ["LIVEPROFILE_COLLECTOR_ALLOW_NO_KEYS"] = "1" if allow_no_keys else ""
        uvicorn.run("liveprofile.collector.app:create_app", factory=True, workers=workers, **common)
        return
    app = CollectorApp(settings, config=config, allow_no_keys=allow_no_keys)
    tune_gc()
    uvicorn.run(app, **common)


def create_app() -> CollectorApp:
    """App factory for multi-worker uvicorn: settings and edge config from the environment."""
    import os

    settings = Settings.from_env()
    server_options(limits_of(settings))  # this worker process's HTTP limits
    app = CollectorApp(settings, config=_config_from_env(), allow_no_keys=bool(os.environ.get("LIVEPROFILE_COLLECTOR_ALLOW_NO_KEYS")))
    tune_gc()
    return app
