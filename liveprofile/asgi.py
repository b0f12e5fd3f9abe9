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
  :data:`HEALTH_SCHEMA`: the ``/healthz`` answer both apps give).

May import: nothing of liveprofile (a test holds the services to importing it, not each other).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "Scope", "Receive", "Send", "HTTPError", "JSON", "respond", "run_lifespan", "query_params",
    "schema_ref", "json_content", "HEALTH_SCHEMA",
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
