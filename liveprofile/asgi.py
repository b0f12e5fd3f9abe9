"""What the two HTTP services (collector, API) share: plain ASGI with no framework, because
every request is on the hot path.

* :data:`Scope`, :data:`Receive`, :data:`Send` — the ASGI callables' types;
* :class:`HTTPError` — a request-level refusal (status, error code, readable message, headers),
  answered as JSON by each app in its own error shape;
* :func:`respond` — one response, with ``Content-Length`` (never chunked) and JSON as the default
  content type;
* :func:`run_lifespan` — the ASGI lifespan protocol around an app's ``startup``/``shutdown``;
* :func:`query_params` — the last value of each query parameter;
* OpenAPI building blocks both apps' documents use (:func:`schema_ref`, :func:`json_content`,
  :data:`HEALTH_SCHEMA`: the ``/healthz`` answer both apps give);
* :class:`HttpLimits` and :class:`LimitedHttpToolsProtocol` — the HTTP limits both servers run
  under (uvicorn's httptools protocol, :func:`server_options`): a request head (request line and
  headers) over ``max_header_bytes`` is refused ``431`` as soon as that much arrived (the rest is
  never read), a head not complete ``header_timeout_s`` after its first byte (or after the
  connection opened) is refused ``408``, a body not complete ``body_timeout_s`` after its head is
  refused ``408`` (a trickled body cannot hold a connection), and at ``max_connections`` open
  connections (or running requests) new requests are answered ``503`` (the condition of uvicorn's
  ``limit_concurrency``, checked here so that the answer is JSON too). Each refusal is a JSON body
  ``{"success": false, "error": code, "code": code, "message": text}`` (codes ``headers_too_large``,
  ``header_timeout``, ``body_timeout``, ``too_many_connections``) and closes the connection.

May import: nothing of liveprofile (a test holds the services to importing it, not each other).
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qs

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "Scope", "Receive", "Send", "HTTPError", "JSON", "respond", "run_lifespan", "query_params",
    "schema_ref", "json_content", "HEALTH_SCHEMA",
    "HttpLimits", "LimitedHttpToolsProtocol", "server_options", "limits_of", "tune_gc",
]  # fmt: skip

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = (b"content-type", b"application/json")


class HTTPError(Exception):
    """A request-level refusal: status, error code, readable message, extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


async def respond(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] | None = None) -> None:
    """Send one complete response (``Content-Length`` set; ``application/json`` unless ``headers``
    name a content type)."""
    hdrs = list(headers) if headers else []
    if not any(h[0] == b"content-type" for h in hdrs):
        hdrs.append(JSON)
    hdrs.append((b"content-length", str(len(body)).encode()))  # not chunked: cheaper for every client
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def run_lifespan(receive: Receive, send: Send, startup: Callable[[], Awaitable[None]], shutdown: Callable[[], Awaitable[None]]) -> None:
    """Answer the ASGI lifespan messages: ``startup`` (a failure is reported to the server, which
    then does not serve), then ``shutdown``."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def query_params(scope: Scope) -> dict[str, str]:
    """The query string's parameters, the last value of each.

    >>> query_params({"query_string": b"a=1&b=2&a=3"})
    {'a': '3', 'b': '2'}
    """
    qs = scope.get("query_string", b"")
    if not qs:
        return {}
    return {k: v[-1] for k, v in parse_qs(qs.decode("latin-1")).items()}


def schema_ref(name: str) -> dict[str, str]:
    """An OpenAPI reference to ``#/components/schemas/{name}``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI ``content`` object: ``schema`` as ``application/json``."""
    return {"application/json": {"schema": schema}}


#: the ``/healthz`` answer of both apps
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"enum": ["ok", "unavailable"]}, "redis": {"type": "string"}},
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The HTTP limits of a server (``LIVEPROFILE_HTTP_*``, see the module doc)."""

    max_header_bytes: int = 32768
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 2048


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under :attr:`limits` (set by :func:`server_options`)."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lp_head = 0  # bytes of the current request head received so far
        self._lp_in_head = True
        self._lp_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._lp_arm(self.limits.header_timeout_s, "header_timeout", "the request head did not arrive in time")

    def _lp_arm(self, delay: float, code: str, message: str) -> None:
        self._lp_disarm()
        self._lp_timer = self.loop.call_later(delay, self._lp_refuse, 408, code, message)

    def _lp_disarm(self) -> None:
        if self._lp_timer is not None:
            self._lp_timer.cancel()
            self._lp_timer = None

    def _lp_refuse(self, status: int, code: str, message: str) -> None:
        self._lp_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            body = json.dumps({"success": False, "error": code, "code": code, "message": message}).encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
            if cycle is not None:
                cycle.response_started = cycle.response_complete = True  # the app's answer, if any, is dropped
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lp_disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lp_in_head:
            if self._lp_head == 0 and self._lp_timer is None:
                self._lp_arm(self.limits.header_timeout_s, "header_timeout", "the request head did not arrive in time")
            self._lp_head += len(data)
        super().data_received(data)
        if self._lp_in_head and self._lp_head > self.limits.max_header_bytes and self.parser is not None:
            self._lp_refuse(431, "headers_too_large", f"the request line and headers are over {self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self._lp_in_head = False
        self._lp_head = 0
        self._lp_arm(self.limits.body_timeout_s, "body_timeout", f"the request body did not arrive within {self.limits.body_timeout_s:g} s")
        limit = self.limits.max_connections
        if len(self.connections) >= limit or len(self.tasks) >= limit:
            app, self.app = self.app, _too_many_connections  # this request only: the app is picked in super()
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._lp_disarm()
        self._lp_in_head = True
        self._lp_head = 0
        super().on_message_complete()


_TOO_MANY = json.dumps({"success": False, "error": "too_many_connections", "code": "too_many_connections",
                        "message": "the server is at its connection limit (LIVEPROFILE_HTTP_MAX_CONNECTIONS); retry later"}).encode()


async def _too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer at the connection limit: 503 JSON, ``Retry-After: 1``, connection closed."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(_TOO_MANY)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _TOO_MANY, "more_body": False})


def limits_of(settings: Any) -> HttpLimits:
    """The :class:`HttpLimits` of a :class:`liveprofile.settings.Settings` (``LIVEPROFILE_HTTP_*``)."""
    return HttpLimits(settings.http_max_header_bytes, settings.http_header_timeout_s, settings.http_body_timeout_s, settings.http_max_connections)


def server_options(limits: HttpLimits) -> dict[str, Any]:
    """uvicorn options that run a server under ``limits`` (the protocol by import path, so that
    worker processes load it too; each process sets the limits when it builds its app)."""
    LimitedHttpToolsProtocol.limits = limits
    return {"http": "liveprofile.asgi:LimitedHttpToolsProtocol"}  # the connection limit is the protocol's


def tune_gc() -> None:
    """For a server process (the API, the collector), called once before serving: startup
    objects leave the GC's view (``gc.freeze``) and young collections run less often
    (``gc.set_threshold(50_000, 20, 20)``). Objects are still freed by reference counting at
    once; only cycles wait longer. A collector request decodes hundreds of dicts per batch, so
    under the defaults the cyclic GC ran almost every request and full collections scanned the
    whole startup heap (17 % of the collector's CPU samples at 4,000 events/s, py-spy --native)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
