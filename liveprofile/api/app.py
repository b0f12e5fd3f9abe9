"""The profile and content API: a plain ASGI app (no framework on the hot path) under uvicorn.

Endpoints (all but ``/healthz`` and ``/metrics`` need ``Authorization: Bearer
TOKEN`` with a token of ``LIVEPROFILE_API_TOKENS``, compared in constant time;
missing or wrong: 401 with ``WWW-Authenticate: Bearer``):

* ``GET /v1/profiles/{user_id}[?expose=1]`` — the profile as JSON: every
  stored field as its stored string (SPEC §4: numbers are decimal strings),
  except the JSON fields (``interests``, ``consent``, ``cart``, ``traits``, ... : the
  ``Kind.JSON`` rows of :data:`operators.schema.FIELDS`), which are decoded; plus ``experiments`` ({name: variant}). A profile merged into
  another (``merged_into``) answers with the surviving profile. Unknown user:
  404. ``expose=1`` records the exposures (for callers that show the variant).
* ``GET /v1/segments/{name}?cursor=0&count=100`` — one ``SSCAN`` page:
  ``{"segment", "members", "next_cursor"}``; ``next_cursor`` ``"0"`` = done.
  ``count`` (1..1000) is a hint, as in Redis. The cursor is opaque: with a
  Redis Cluster the segment is one set per user group, and the cursor is
  ``{group}-{SSCAN cursor}`` (a page may span groups; every member present for
  the whole iteration is returned at least once, as with ``SSCAN``).
* ``GET /v1/audiences`` — the audiences of the definitions file (``LIVEPROFILE_DEFINITIONS``,
  read at start): ``{"audiences": [{"name", "description", "when", "size"}]}`` in the file's
  dependency order; ``when`` is the expression in canonical form, ``size`` the members now
  (``SCARD`` of ``{p}:audience:{name}``, summed over the user groups of a Redis Cluster). No
  file: an empty list.
* ``GET /v1/audiences/{name}/members?cursor=0&count=100`` — one page of the audience's members:
  ``{"audience", "members", "next_cursor"}`` (``SSCAN`` over the group sets, group after group;
  the cursor is opaque, ``"0"`` to start and when done; ``count`` a hint, capped at 1000). An
  audience the file does not name: 404 ``unknown_audience``.
* ``GET /v1/profiles/{user_id}/audiences`` — ``{"user_id", "audiences", "computed"}``: the
  profile's audiences (sorted) and computed traits, decoded (``[]`` / ``{}`` without
  definitions); a merged id answers for the surviving profile. Unknown user: 404.
* ``GET /v1/content/{user_id}/{slot}?format=html|json`` — open-time content
  (:mod:`liveprofile.api.content`); always records the user's exposures to
  every experiment (:mod:`liveprofile.api.experiments`). Unknown slot: 404;
  a template error: 500 ``template_error``; over the render limits (off the event loop,
  :mod:`liveprofile.api.render`): 500 ``template_timeout`` / ``template_output_too_large``.
* ``GET /c/{slot}?user=U&format=html|png|json&exp=E&sig=S`` — the same content through a signed,
  expiring URL (:mod:`liveprofile.api.signing`), no bearer token: what an email embeds. ``png`` is
  the slot drawn as an image (:mod:`liveprofile.api.image`). A missing, wrong or tampered
  signature, or one past ``exp``: 403 with the reason as the error code.
* ``GET /c/{slot}/click?user=U&exp=E&sig=S&i=N`` — 302 to the ``url`` of the N-th (0-based)
  product of the user's slot (the link under a product of the image); 404 ``no_product`` if
  there is none or it has no ``url``. Both signed routes, and the bearer content route, answer
  ``Cache-Control: private, no-store`` (an image proxy such as Gmail's must not serve one user's
  content to another) and ``Referrer-Policy: no-referrer`` (the signature stays out of the shop's logs).
* ``GET /v1/content-urls/{user_id}?slot=S&ttl=7d`` — mints the signed URLs of a user's slot:
  ``{"user_id", "slot", "exp", "html", "png", "json", "click": [...]}`` (``ttl`` at most
  ``LIVEPROFILE_CONTENT_URL_TTL``, its default); 409 ``signing_not_configured`` without a key.
* ``GET /debugger`` (the page, no token), ``GET /v1/debugger/ticket`` and ``GET /v1/debugger/events``
  (bearer token, or the ticket in the query: an ``EventSource`` sends no header) — the source
  debugger (:mod:`liveprofile.api.debugger`: server-sent events of the collector's tap and the
  change feed);
* ``GET /healthz``, ``GET /metrics``;
* ``GET /openapi.json`` — the OpenAPI 3.1 document of all of these (:mod:`liveprofile.api.openapi`;
  no token needed, like ``/healthz``).

The server runs under the HTTP limits of :mod:`liveprofile.asgi` (``LIVEPROFILE_HTTP_*``: header
size 431, header and body read timeouts 408, a connection limit 503).

Errors are ``{"error": code, "message": text}``: any method but GET is 405
``method_not_allowed``, a path no route takes 404 ``not_found``. :data:`ROUTES` is the routing
table: the router matches it (and nothing else), a test holds the OpenAPI document to it.

With a Redis Cluster (``LIVEPROFILE_REDIS_CLUSTER=on``) reads go through
redis-py's cluster client (the single-connection fast path,
:mod:`liveprofile.api.fastredis`, serves one server only) and every key comes
from :class:`~liveprofile.store.keys.Keys`: a profile in its user's group, the
exposures in the same slot as the profile they are recorded with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from liveprofile.api import debugger, fastredis, openapi
from liveprofile.api.config import ApiConfig
from liveprofile.api.content import Content, decode_profile
from liveprofile.api.experiments import EXPOSE_LUA, assign_all, exposure_event
from liveprofile.api.image import render_png
from liveprofile.api.render import RenderError
from liveprofile.api.signing import SignatureError, content_url, verify
from liveprofile.asgi import (
    JSON,
    HTTPError,
    Receive,
    Scope,
    Send,
    limits_of,
    query_params,
    respond,
    run_lifespan,
    server_options,
    tune_gc,
)
from liveprofile.buffer.ingest import prepare
from liveprofile.buffer.writers import Appender, appender_for
from liveprofile.settings import Settings
from liveprofile.store.connection import connect_async
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import expose_argv
from operators.definitions import Definitions
from operators.timeutil import iso, parse_duration_s

__all__ = ["ApiApp", "ApiError", "serve", "tune_gc", "ROUTES", "Route"]

logger = logging.getLogger(__name__)

_JSON = JSON
_HTML = (b"content-type", b"text/html; charset=utf-8")
_PNG = (b"content-type", b"image/png")
#: headers of every content answer: per user, never cached by a shared cache, no referrer
PRIVATE = [(b"cache-control", b"private, no-store, max-age=0"), (b"referrer-policy", b"no-referrer")]


#: the API's name for :class:`liveprofile.asgi.HTTPError`
ApiError = HTTPError

#: (status, body, content-type header[, extra headers]) of a handled request
Answer = tuple[int, bytes, tuple[bytes, bytes]] | tuple[int, bytes, tuple[bytes, bytes], list[tuple[bytes, bytes]]]


@dataclass(frozen=True)
class Route:
    """One routed path: its OpenAPI path template, its metrics label (``route``) and whether it
    needs a bearer token.

    A template without parameters matches that exact path. One with ``{parameters}`` matches the
    path's ``/``-separated parts (leading and trailing ``/`` ignored): literals equal, each
    parameter one non-empty part; with ``rest`` the last parameter takes all remaining parts,
    joined with ``/`` (a segment name may hold ``/``).

    >>> Route("/v1/content/{user_id}/{slot}", "content").match(["v1", "content", "u1", "cart"])
    ('u1', 'cart')
    >>> Route("/v1/segments/{name}", "segment", rest=True).match(["v1", "segments", "a", "b"])
    ('a/b',)
    >>> Route("/v1/profiles/{user_id}", "profile").match(["v1", "profiles", ""]) is None
    True
    """

    path: str
    name: str
    auth: bool = True
    rest: bool = False
    _parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_parts", tuple(self.path.strip("/").split("/")))

    @property
    def exact(self) -> bool:
        """A template without parameters."""
        return "{" not in self.path

    def match(self, parts: list[str]) -> tuple[str, ...] | None:
        """The parameter values of a path split into ``parts``, ``None`` if this route does not take it."""
        tpl = self._parts
        n = len(tpl)
        if (len(parts) < n) if self.rest else (len(parts) != n):
            return None
        args: list[str] = []
        for i, t in enumerate(tpl):
            if t[0] != "{":
                if parts[i] != t:
                    return None
            elif self.rest and i == n - 1:
                args.append("/".join(parts[i:]))
            elif not parts[i]:
                return None
            else:
                args.append(parts[i])
        return tuple(args)


#: every path the API routes (GET only)
ROUTES: tuple[Route, ...] = (
    Route("/healthz", "healthz", auth=False),
    Route("/metrics", "metrics", auth=False),
    Route("/openapi.json", "openapi", auth=False),
    Route("/v1/profiles/{user_id}", "profile"),
    Route("/v1/profiles/{user_id}/audiences", "profile_audiences"),
    Route("/v1/segments/{name}", "segment", rest=True),
    Route("/v1/audiences", "audiences"),
    Route("/v1/audiences/{name}/members", "audience_members"),
    Route("/v1/content/{user_id}/{slot}", "content"),
    Route("/v1/content-urls/{user_id}", "content_urls"),
    Route("/c/{slot}", "signed_content", auth=False),
    Route("/c/{slot}/click", "signed_click", auth=False),
    Route("/debugger", "debugger_page", auth=False),
    Route("/v1/debugger/ticket", "debugger_ticket"),
    Route("/v1/debugger/events", "debugger_events"),
)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("liveprofile_api_requests_total", "API requests by route and status",
                                ["route", "status"], registry=registry)  # fmt: skip
        self.latency = Histogram(
            "liveprofile_api_request_seconds", "API request handling time", ["route"], registry=registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )  # fmt: skip
        self.exposures = Counter("liveprofile_api_exposures_total", "First exposures recorded", ["experiment"], registry=registry)


class ApiApp:
    """ASGI app; Redis clients are created at startup (or on first request)."""

    def __init__(self, settings: Settings, config: ApiConfig, *, allow_no_tokens: bool = False,
                 registry: CollectorRegistry | None = None) -> None:  # fmt: skip
        if not config.tokens and not allow_no_tokens:
            msg = "LIVEPROFILE_API_TOKENS is empty: the API needs at least one bearer token"
            raise ValueError(msg)
        self.settings = settings
        self.config = config
        self.keys = Keys.of(settings)
        self._tokens = [t.encode() for t in config.tokens]
        self.metrics = _Metrics(registry or CollectorRegistry())
        self.redis: aioredis.Redis | None = None
        self.content: Content | None = None
        self._appender: Appender | None = None
        self._renderer_start: asyncio.Task[None] | None = None  # the render workers' start, in the background
        self._expose: Any = None
        self.fast: fastredis.PipelinedRedis | None = None
        self._openapi = openapi.document_bytes()  # built once
        self._audiences = audience_listing(settings.definitions)
        handlers: dict[str, Callable[[tuple[str, ...], Scope], Awaitable[Answer]]] = {
            "healthz": lambda _a, _s: self._health(),
            "metrics": self._metrics,
            "openapi": self._openapi_json,
            "profile": lambda a, scope: self.profile(a[0], query_params(scope)),
            "segment": lambda a, scope: self.segment(a[0], query_params(scope)),
            "profile_audiences": lambda a, _s: self.profile_audiences(a[0]),
            "audiences": lambda _a, _s: self.audiences(),
            "audience_members": lambda a, scope: self.audience_members(a[0], query_params(scope)),
            "content": lambda a, scope: self.render(a[0], a[1], query_params(scope)),
            "content_urls": lambda a, scope: self.content_urls(a[0], query_params(scope)),
            "signed_content": lambda a, scope: self.signed(a[0], query_params(scope)),
            "signed_click": lambda a, scope: self.click(a[0], query_params(scope)),
            "debugger_page": lambda _a, _s: self._debugger_page(),
            "debugger_ticket": lambda _a, scope: self._debugger_ticket(scope),
            "debugger_events": lambda _a, _s: self._debugger_backlog(),
        }  # fmt: skip
        self.debugger: debugger.Debugger | None = None
        self._streams = 0
        self._exact = {r.path: (r, handlers[r.name]) for r in ROUTES if r.exact}
        self._param = [(r, handlers[r.name]) for r in ROUTES if not r.exact]

    async def startup(self) -> None:
        if self.keys.cluster:
            self.redis = connect_async(self.settings.redis_url, True, decode_responses=True, socket_timeout=5,
                                       socket_connect_timeout=2, max_connections=256)  # per node  # fmt: skip
        else:
            pool = aioredis.BlockingConnectionPool.from_url(
                self.settings.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2, max_connections=64, timeout=5
            )  # waits for a free connection under bursts instead of failing
            self.redis = aioredis.Redis(connection_pool=pool)
        self.content = Content(self.redis, self.settings.key_prefix, self.config.templates_dir,
                               self.config.recommendations, self.config.bestsellers_ttl,
                               self.config.template_timeout_s, self.config.template_max_bytes)  # fmt: skip
        self._renderer_start = asyncio.get_running_loop().create_task(self.content.renderer.start())
        self._appender = appender_for(self.settings, self.redis)
        self._expose = self.redis.register_script(EXPOSE_LUA)
        self.fast = None if self.keys.cluster else fastredis.from_url(self.settings.redis_url)
        self.debugger = debugger.Debugger(self.redis, self.keys, show_values=self.settings.debugger_show_values)

    async def shutdown(self) -> None:
        if self.content is not None:
            self.content.renderer.close()
        if self._appender is not None:
            await self._appender.close()
        if self.fast is not None:
            await self.fast.aclose()
        if self.redis is not None:
            await self.redis.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, send, receive)
        elif scope["type"] == "lifespan":
            await run_lifespan(receive, send, self.startup, self.shutdown)

    # -- routing ---------------------------------------------------------------
    async def http(self, scope: Scope, send: Send, receive: Receive | None = None) -> None:
        """Handle one HTTP request (framework-agnostic core, also used by the bench's Starlette variant;
        ``receive`` is needed by the debugger's event stream only)."""
        t0 = time.perf_counter()
        path: str = scope["path"]
        route = "other"
        status = 500
        try:
            if self.redis is None:
                await self.startup()
            if scope["method"] != "GET":
                raise ApiError(405, "method_not_allowed", "only GET is supported")
            hit = self._exact.get(path)
            args: tuple[str, ...] = ()
            if hit is None:
                parts = path.strip("/").split("/")
                for r, h in self._param:
                    found = r.match(parts)
                    if found is not None:
                        hit, args = (r, h), found
                        break
                else:
                    raise ApiError(404, "not_found", f"no endpoint {path}")
            route = hit[0].name
            if hit[0].auth:
                self._auth(scope, ticket=route == "debugger_events")
            if route == "debugger_events" and receive is not None and debugger.wants_stream(scope["headers"]):
                status = await self._debugger_stream(send, receive)
                return
            answer = await hit[1](args, scope)
            status, body, ctype = answer[0], answer[1], answer[2]
            extra: list[tuple[bytes, bytes]] = answer[3] if len(answer) > 3 else []  # type: ignore[misc]
        except ApiError as exc:
            status, body, ctype = exc.status, _error(exc.code, exc.message), _JSON
            await respond(send, status, body, [ctype, *exc.headers])
            return
        except Exception:
            logger.exception("api: unexpected error on %s", path)
            status, body, ctype, extra = 500, _error("internal_error", "unexpected server error"), _JSON, []
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)
        await respond(send, status, body, [ctype, *extra])

    def _auth(self, scope: Scope, *, ticket: bool = False) -> None:
        """401 unless the request has one of the bearer tokens (or, with ``ticket``, a valid
        debugger ticket in the query: :func:`liveprofile.api.debugger.check_ticket`)."""
        if ticket:
            presented_ticket = query_params(scope).get("ticket")
            if presented_ticket is not None and debugger.check_ticket(presented_ticket, self._tokens, time.time()):
                return
        header = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                header = v
                break
        presented = header[7:].strip() if header[:7].lower() == b"bearer " else b""
        ok = False
        for token in self._tokens:  # constant time per token, and every token is tried
            ok |= hmac.compare_digest(presented, token)
        if not ok:
            msg = "a bearer token is required" if not presented else "unknown bearer token"
            raise ApiError(401, "unauthorized", msg, [(b"www-authenticate", b'Bearer realm="liveprofile"')])

    async def _health(self) -> tuple[int, bytes, tuple[bytes, bytes]]:
        try:
            assert self.redis is not None
            await self.redis.ping()
        except Exception as exc:
            return 503, orjson.dumps({"status": "unavailable", "redis": str(exc)[:200]}), _JSON
        return 200, b'{"status":"ok"}', _JSON

    async def _metrics(self, _args: tuple[str, ...], _scope: Scope) -> Answer:
        return 200, generate_latest(self.metrics.registry), (b"content-type", CONTENT_TYPE_LATEST.encode())

    async def _openapi_json(self, _args: tuple[str, ...], _scope: Scope) -> Answer:
        return 200, self._openapi, _JSON

    # -- the source debugger (liveprofile.api.debugger) ---------------------------
    async def _debugger_page(self) -> Answer:
        return 200, debugger.PAGE, _HTML, [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
                                          (b"content-security-policy", b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")]  # fmt: skip

    async def _debugger_ticket(self, scope: Scope) -> Answer:
        header = dict(scope["headers"]).get(b"authorization", b"")
        ticket, exp = debugger.mint_ticket(header[7:].strip(), time.time())  # _auth admitted this token
        return 200, orjson.dumps({"ticket": ticket, "exp": exp}), _JSON, [(b"cache-control", b"no-store")]

    async def _debugger_backlog(self) -> Answer:
        assert self.debugger is not None
        events, _ = await self.debugger.backlog()
        return 200, orjson.dumps({"events": events}), _JSON, [(b"cache-control", b"no-store")]

    async def _debugger_stream(self, send: Send, receive: Receive) -> int:
        if self._streams >= debugger.MAX_STREAMS:
            raise ApiError(503, "too_many_streams", f"at most {debugger.MAX_STREAMS} debugger streams at once", [(b"retry-after", b"5")])
        assert self.debugger is not None
        self._streams += 1
        try:
            await self.debugger.stream(send, receive)
        finally:
            self._streams -= 1
        return 200

    # -- handlers --------------------------------------------------------------
    async def _load(self, user_id: str) -> dict[str, str] | None:
        assert self.redis is not None
        get = self.fast.hgetall if self.fast is not None else self.redis.hgetall
        prof = await get(self.keys.profile(user_id))
        seen = {user_id}
        # a tombstone names the known user it merged into (merges of known users chain: follow
        # them, at most _MAX_HOPS); anonymous profiles are another key family, never looked up here
        for _ in range(_MAX_HOPS):
            target = prof.get("merged_into") if prof else None
            if not target or target in seen:
                break
            seen.add(target)
            merged = await get(self.keys.profile(target))
            if not merged:
                break
            prof = merged
        return prof or None

    async def profile(self, user_id: str, query: dict[str, str]) -> tuple[int, bytes, tuple[bytes, bytes]]:
        prof = await self._load(user_id)
        if prof is None:
            raise ApiError(404, "unknown_user", f"no profile for {user_id!r}")
        data = _decode_memberships(decode_profile(prof))
        data["experiments"] = assign_all(self.config.experiments.values(), user_id)
        if query.get("expose") in ("1", "true"):
            await self.expose(user_id, data["experiments"])
        return 200, orjson.dumps(data), _JSON

    async def segment(self, name: str, query: dict[str, str]) -> tuple[int, bytes, tuple[bytes, bytes]]:
        assert self.redis is not None
        if self.keys.cluster:
            return await self._segment_groups(name, query)
        try:
            cursor = int(query.get("cursor") or 0)
            count = int(query.get("count") or 100)
        except ValueError:
            raise ApiError(400, "bad_query", "cursor and count must be integers") from None
        if cursor < 0 or not 1 <= count <= 1000:
            raise ApiError(400, "bad_query", "cursor must be >= 0 and count within 1..1000")
        nxt, members = await self.redis.sscan(self.keys.segment(name), cursor, count=count)
        return 200, orjson.dumps({"segment": name, "members": members, "next_cursor": str(nxt)}), _JSON

    async def _segment_groups(self, name: str, query: dict[str, str]) -> tuple[int, bytes, tuple[bytes, bytes]]:
        """A segment page across the per-group sets of a cluster: cursor ``{group}-{SSCAN cursor}``
        (``0``: start); SSCANs group after group until ``count`` members or the last group ends."""
        assert self.redis is not None
        raw = query.get("cursor") or "0"
        g_s, _, c_s = raw.partition("-")
        try:
            g, cursor = (0, 0) if raw == "0" else (int(g_s), int(c_s))
            count = int(query.get("count") or 100)
        except ValueError:
            raise ApiError(400, "bad_query", "cursor must be a cursor this API returned and count an integer") from None
        if not 0 <= g < len(self.keys.groups) or cursor < 0 or not 1 <= count <= 1000:
            raise ApiError(400, "bad_query", "cursor must be a cursor this API returned and count within 1..1000")
        members: list[str] = []
        nxt = "0"
        while True:
            c, page = await self.redis.sscan(self.keys.segment_in(g, name), cursor, count=count)
            members.extend(page)
            cursor = int(c)
            if cursor == 0:
                g += 1
                if g == len(self.keys.groups):
                    break
            if len(members) >= count:
                nxt = f"{g}-{cursor}"
                break
        return 200, orjson.dumps({"segment": name, "members": members, "next_cursor": nxt}), _JSON

    # -- audiences ---------------------------------------------------------------
    def _audience_key(self, g: int, name: str) -> str:
        """``{p}:audience:{name}`` (cluster: ``{p}:{g}:audience:{name}``), the shared contract 3."""
        return self.keys.audience_in(g, name)

    async def audiences(self) -> Answer:
        assert self.redis is not None
        sizes: list[int] = []
        for a in self._audiences:  # one SCARD at a time: concurrent first commands race in redis-py's cluster client
            n = 0
            for g in self.keys.groups:
                n += int(await self.redis.scard(self._audience_key(g, a["name"])))
            sizes.append(n)
        out = [{**a, "size": n} for a, n in zip(self._audiences, sizes, strict=True)]
        return 200, orjson.dumps({"audiences": out}), _JSON

    async def audience_members(self, name: str, query: dict[str, str]) -> Answer:
        """One page over the audience's group sets: cursor ``{group}-{SSCAN cursor}`` (``0``: start)."""
        assert self.redis is not None
        if not any(a["name"] == name for a in self._audiences):
            raise ApiError(404, "unknown_audience", f"no audience {name!r} in the definitions file")
        raw = query.get("cursor") or "0"
        g_s, _, c_s = raw.partition("-")
        try:
            g, cursor = (0, 0) if raw == "0" else (int(g_s), int(c_s))
            count = min(int(query.get("count") or 100), 1000)
        except ValueError:
            raise ApiError(400, "bad_query", "cursor must be a cursor this API returned and count an integer") from None
        ngroups = len(self.keys.groups)
        if not 0 <= g < ngroups or cursor < 0 or count < 1 or (raw != "0" and g == 0 and cursor == 0):
            raise ApiError(400, "bad_query", "cursor must be a cursor this API returned and count >= 1")
        members: list[str] = []
        nxt = "0"
        while True:
            c, page = await self.redis.sscan(self._audience_key(g, name), cursor, count=count)
            members.extend(page)
            cursor = int(c)
            if cursor == 0:
                g += 1
                if g == ngroups:
                    break
            if len(members) >= count:
                nxt = f"{g}-{cursor}"
                break
        return 200, orjson.dumps({"audience": name, "members": members, "next_cursor": nxt}), _JSON

    async def profile_audiences(self, user_id: str) -> Answer:
        prof = await self._load(user_id)
        if prof is None:
            raise ApiError(404, "unknown_user", f"no profile for {user_id!r}")
        data = _decode_memberships(decode_profile(prof))
        aud, comp = data.get("audiences"), data.get("computed")
        return 200, orjson.dumps({"user_id": prof.get("user_id", user_id),
                                  "audiences": aud if isinstance(aud, list) else [],
                                  "computed": comp if isinstance(comp, dict) else {}}), _JSON  # fmt: skip

    async def render(self, user_id: str, slot: str, query: dict[str, str]) -> Answer:
        fmt = query.get("format", "html")
        if fmt not in ("html", "json", "png"):
            raise ApiError(400, "bad_query", "format must be html, json or png")
        return await self._slot(user_id, slot, fmt)

    async def _context(self, user_id: str, slot: str) -> dict[str, Any]:
        assert self.content is not None
        if not self.content.has_slot(slot):
            raise ApiError(404, "unknown_slot", f"no template for slot {slot!r}")
        raw = await self._load(user_id)
        experiments = assign_all(self.config.experiments.values(), user_id)
        ctx = await self.content.data(slot, user_id, decode_profile(raw) if raw else None, experiments)
        await self.expose(user_id, experiments)
        return ctx

    async def _slot(self, user_id: str, slot: str, fmt: str) -> Answer:
        """One user's slot as html, json or png, with the :data:`PRIVATE` headers."""
        assert self.content is not None
        ctx = await self._context(user_id, slot)
        if fmt == "json":
            return 200, orjson.dumps(ctx), _JSON, PRIVATE
        if fmt == "png":
            return 200, await asyncio.to_thread(render_png, ctx), _PNG, PRIVATE
        try:
            html = await self.content.render(slot, ctx)
        except RenderError as exc:  # a failed template, the sandbox's SecurityError, a limit
            logger.warning("api: template %s refused: %s %s", slot, exc.code, exc.message)
            raise ApiError(500, exc.code, f"template {slot!r}: {exc.message}") from None
        return 200, html.encode(), _HTML, PRIVATE

    def _grant(self, slot: str, query: dict[str, str], click: bool) -> str:
        """The user id a signed URL's query grants, or 403 with the reason."""
        try:
            return verify(self.config.signing_keys, slot, query, now=time.time(), click=click).user_id
        except SignatureError as exc:
            raise ApiError(403, exc.reason, exc.message, PRIVATE) from None

    async def signed(self, slot: str, query: dict[str, str]) -> Answer:
        """``/c/{slot}``: a signed URL's slot, no bearer token (see module docstring)."""
        user_id = self._grant(slot, query, click=False)
        return await self._slot(user_id, slot, query.get("format", "html"))

    async def click(self, slot: str, query: dict[str, str]) -> Answer:
        """``/c/{slot}/click``: 302 to the ``url`` of the ``i``-th product of the user's slot."""
        user_id = self._grant(slot, query, click=True)
        i_s = query.get("i", "0")
        if not i_s.isascii() or not i_s.isdigit() or len(i_s) > 3:
            raise ApiError(400, "bad_query", "i must be a product index (0, 1, ...)", PRIVATE)
        ctx = await self._context(user_id, slot)
        items = ctx["cart"] if slot == "cart" and not ctx["fallback"] else ctx["products"]
        i = int(i_s)
        url = items[i].get("url") if i < len(items) and isinstance(items[i], dict) else None
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ApiError(404, "no_product", f"slot {slot!r} has no product {i} with a url for this user", PRIVATE)
        if not self.config.redirect_allowed(url, trusted=items[i].get("url_trusted", "1") != "0"):
            # a url a browser (public) key sent: not an open redirect for whoever holds that key
            raise ApiError(404, "untrusted_url", f"product {i}'s url came from a browser write key and its host is not in LIVEPROFILE_CONTENT_REDIRECT_HOSTS", PRIVATE)
        return 302, orjson.dumps({"location": url}), _JSON, [(b"location", url.encode()), *PRIVATE]

    async def content_urls(self, user_id: str, query: dict[str, str]) -> Answer:
        """Mint the signed URLs of one user's slot (``slot``, ``ttl`` at most LIVEPROFILE_CONTENT_URL_TTL)."""
        assert self.content is not None
        cfg = self.config
        if not cfg.signing_keys:
            raise ApiError(409, "signing_not_configured", "set LIVEPROFILE_CONTENT_SIGNING_KEY to mint content URLs")
        slot = query.get("slot", "recommendations")
        if not self.content.has_slot(slot):
            raise ApiError(404, "unknown_slot", f"no template for slot {slot!r}")
        try:
            ttl = int(parse_duration_s(query["ttl"])) if query.get("ttl") else cfg.url_ttl_s
        except ValueError:
            raise ApiError(400, "bad_query", "ttl must be a duration like 3600, 12h or 7d") from None
        if not 0 < ttl <= cfg.url_ttl_s:
            raise ApiError(400, "bad_query", f"ttl must be within 1..{cfg.url_ttl_s} seconds (LIVEPROFILE_CONTENT_URL_TTL)")
        exp = int(time.time()) + ttl
        key = cfg.signing_keys[0]
        try:
            urls = {f: content_url(cfg.base_url, key, user_id, slot, f, exp) for f in ("html", "png", "json", "click")}
        except ValueError as exc:
            raise ApiError(400, "bad_query", str(exc)) from None
        click = urls.pop("click")
        doc = {"user_id": user_id, "slot": slot, "exp": exp, "expires_at": iso(exp * 1000), **urls,
               "click": [f"{click}&i={i}" for i in range(self.content.count)]}  # fmt: skip
        return 200, orjson.dumps(doc), _JSON, PRIVATE

    async def expose(self, user_id: str, experiments: dict[str, str]) -> None:
        """Record first exposures (Lua, one round trip) and append their ``Experiment Viewed`` events."""
        if not experiments:
            return
        assert self._expose is not None and self._appender is not None
        names = list(experiments)
        now = iso(int(time.time() * 1000))
        g = self.keys.group(user_id)
        keys = [self.keys.profile(user_id), self.keys.suppressed_for(user_id), *(self.keys.exposures_in(g, n) for n in names)]
        new = await self._expose(keys=keys, args=expose_argv(user_id, now, [experiments[n] for n in names]))
        if not new:
            return
        events = [exposure_event(names[int(i) - 1], experiments[names[int(i) - 1]], user_id, now) for i in new]
        s = self.settings
        prep = prepare(events, keys=self.keys, shards=s.shards, limits=s.limits, received_at=now,
                       source="api:experiments", stage="api")  # fmt: skip
        await self._appender.append(prep.appends)
        for i in new:
            self.metrics.exposures.labels(names[int(i) - 1]).inc()


_MAX_HOPS = 16  # merged_into hops followed by /v1/profiles/{id}


def _decode_memberships(data: dict[str, Any]) -> dict[str, Any]:
    """``computed`` and ``audiences`` decoded (JSON fields of the shared contract 1, decoded here too
    in case the profile schema in use does not list them)."""
    for k in ("computed", "audiences"):
        v = data.get(k)
        if isinstance(v, str) and v:
            with contextlib.suppress(orjson.JSONDecodeError):
                data[k] = orjson.loads(v)
    return data


def audience_listing(defs: Definitions | None) -> list[dict[str, Any]]:
    r"""``name``, ``description`` and ``when`` of each audience of the file (description read from
    the file itself: the loaded definitions keep none; ``""`` when absent or unreadable).

    >>> from operators.definitions import load_definitions
    >>> audience_listing(load_definitions('version: 1\naudiences:\n  - {name: a, when: "email != null"}\n'))
    [{'name': 'a', 'description': '', 'when': 'email != null'}]
    """
    if defs is None:
        return []
    described: dict[str, str] = {}
    try:
        doc = yaml.safe_load(Path(defs.source).read_text(encoding="utf-8"))
        for a in doc.get("audiences") or []:
            if isinstance(a, dict) and isinstance(a.get("description"), str):
                described[str(a.get("name"))] = a["description"]
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    return [{"name": a.name, "description": described.get(a.name, ""), "when": str(a.when)} for a in defs.audiences]


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


def serve(settings: Settings, config: ApiConfig, host: str, port: int, *, log_level: str = "warning") -> None:
    """Run the API under uvicorn (httptools + uvloop) until interrupted."""
    import uvicorn

    tune_gc()

    uvicorn.run(ApiApp(settings, config), host=host, port=port, loop="uvloop", lifespan="on",
                log_level=log_level, access_log=False, timeout_keep_alive=30, timeout_graceful_shutdown=5,
                **server_options(limits_of(settings)))  # fmt: skip  # an open debugger stream must not hold the exit
