"""What browsers need from the collector: CORS, the SDKs' settings endpoints, Segment's Pixel API.

Contract (SPEC §2):

* **CORS** (:class:`CorsPolicy`, ``LIVEPROFILE_CORS_ORIGINS``, parsed by
  :func:`liveprofile.collector.config.parse_cors_origins`: comma-separated origins
  ``scheme://host[:port]``, ``*`` for any; default none, so a new install grants no page). On the
  browser routes (the event paths, the settings endpoints, the Pixel API):

  - a preflight ``OPTIONS`` from an allowed origin is answered ``204`` with
    ``Access-Control-Allow-Origin: <the origin>`` (echoed, never ``*``),
    ``Access-Control-Allow-Credentials: true`` (analytics.js passes its ``credentials`` option
    to ``fetch``, RudderStack's XHR may set ``withCredentials``: both work; the collector reads no
    cookie, its only credential is the write key in the request), the methods ``GET, POST,
    OPTIONS``, the request headers the SDKs send (:data:`ALLOWED_HEADERS`) and ``Max-Age``;
  - a preflight from any other origin is ``403 cors_origin_not_allowed`` with no grant: the
    browser then never sends the request;
  - every other response to an allowed origin, errors included, carries the same
    ``Access-Control-Allow-Origin``/``-Credentials`` and exposes ``Retry-After``; every answer on
    these routes carries ``Vary: Origin``. A disallowed origin's simple request (a ``text/plain``
    POST with no ``Authorization``, e.g. ``navigator.sendBeacon``) is processed like any request
    with its write key — CORS only decides what a page may *read*; the write key decides what is
    kept.
  - an ``OPTIONS`` without ``Origin`` (not a preflight) is ``204`` with ``Allow``.

* **Settings endpoints** the SDKs fetch at load when pointed at a self-hosted host:

  - ``GET /v1/projects/{writeKey}/settings`` (analytics.js ``cdnURL``): the settings JSON whose
    ``integrations["Segment.io"]`` sends to this collector (``apiHost`` = the request's ``Host`` +
    ``/v1``, ``protocol`` the request's scheme, or ``X-Forwarded-Proto``), no device-mode
    destinations, no remote plugins or middleware, remote metrics off (``sampleRate`` 0);
  - ``GET /sourceConfig`` and ``/sourceConfig/`` (RudderStack JS SDK v3 ``configUrl``; the write
    key in the ``writeKey`` query parameter or the Basic header): a source config with the source
    enabled and no device-mode destinations.

  An unknown write key is ``401 unauthorized`` (a missing one too), as on the event paths.

* **Pixel API** ``GET /v1/pixel/{type}?data=<base64 JSON>`` (Segment's): ``data`` (standard or
  URL-safe base64, padding optional) is one event with its ``writeKey``; it is taken exactly like
  a ``POST /v1/{type}`` with that body (the write key only from ``data``, so a browser key's events
  are stamped ``browser``) and answered ``200`` with the 43-byte GIF. ``data`` that is not base64
  is ``400 malformed_data``; an unknown ``type`` is ``404 not_found``; everything else (bad JSON,
  no or unknown key, an invalid event, a full backlog) is answered as ``POST /v1/{type}`` answers
  it, as JSON.

May import: :mod:`liveprofile.asgi` and the collector's own modules.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs

import orjson

from liveprofile.asgi import HTTPError, Receive, Scope, Send, respond
from liveprofile.collector.ingest import SINGLE_TYPES, SegmentIngest
from liveprofile.collector.pixel import PIXEL_GIF, PIXEL_HEADERS
from liveprofile.collector.writekeys import WriteKeys

__all__ = [
    "CorsPolicy", "ALLOWED_HEADERS", "SdkSettings", "PixelApi",
    "SEGMENT_SETTINGS_PREFIX", "SEGMENT_SETTINGS_SUFFIX", "PIXEL_API_PREFIX", "SOURCE_CONFIG_PATHS",
]  # fmt: skip

#: request headers the SDKs send cross-origin (analytics-next 1.84: Content-Type text/plain,
#: Authorization, X-Retry-Count; RudderStack JS 3.34: Content-Type application/json, Authorization,
#: Accept, SentAt, AnonymousId and its Rsa-* retry headers; gzip senders: Content-Encoding)
ALLOWED_HEADERS = (
    b"Content-Type, Authorization, Content-Encoding, Accept, X-Retry-Count, X-Requested-With, AnonymousId, SentAt, "
    b"Rsa-Recovered, Rsa-Retry-Attempt, Rsa-Retry-Reason, Rsa-Since-First-Attempt, Rsa-Since-Last-Attempt"
)
SEGMENT_SETTINGS_PREFIX = "/v1/projects/"
SEGMENT_SETTINGS_SUFFIX = "/settings"
PIXEL_API_PREFIX = "/v1/pixel/"
SOURCE_CONFIG_PATHS = ("/sourceConfig", "/sourceConfig/")
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,255}$")


class CorsPolicy:
    """Which origins get a grant, and the headers of one (see the module doc)."""

    def __init__(self, origins: Sequence[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.encode() for o in origins if o != "*")

    def allowed(self, origin: bytes | None) -> bool:
        """Whether ``origin`` (the request's ``Origin`` header) gets a grant.

        >>> p = CorsPolicy(("https://shop.example",))
        >>> p.allowed(b"https://shop.example"), p.allowed(b"https://evil.example"), p.allowed(None)
        (True, False, False)
        >>> CorsPolicy(()).allowed(b"https://shop.example")
        False
        """
        if not origin or origin == b"null":  # an opaque origin (a sandboxed frame, a file) is never granted
            return False
        return self.any or origin.lower() in self.origins

    @staticmethod
    def grant(origin: bytes) -> list[tuple[bytes, bytes]]:
        """The headers of a grant to ``origin`` on an actual (non-preflight) response."""
        return [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", b"Retry-After"),
        ]

    def wrap(self, send: Send, origin: bytes | None) -> Send:
        """``send`` with ``Vary: Origin`` and, for an allowed ``origin``, the grant added to the response head."""
        extra = [(b"vary", b"Origin")]
        if origin is not None and self.allowed(origin):
            extra += self.grant(origin)

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return wrapped

    async def preflight(self, scope: Scope, send: Send, methods: frozenset[str]) -> int:
        """Answer an ``OPTIONS`` request (its ``send`` is not wrapped); returns the status."""
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        allow = ", ".join(sorted(methods)).encode()
        if origin is None:
            await respond(send, 204, b"", [(b"allow", allow)])
            return 204
        vary = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        if not self.allowed(origin):
            raise HTTPError(403, "cors_origin_not_allowed",
                            "this origin is not in LIVEPROFILE_CORS_ORIGINS", [vary])  # fmt: skip
        await respond(send, 204, b"", [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-allow-methods", allow),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", b"600"),
            vary,
        ])  # fmt: skip
        return 204


def _query(scope: Scope) -> dict[str, str]:
    qs = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}


class SdkSettings:
    """The settings endpoints of analytics.js and RudderStack's JS SDK (see the module doc)."""

    def __init__(self, write_keys: WriteKeys) -> None:
        self.write_keys = write_keys

    async def segment(self, scope: Scope, receive: Receive, send: Send) -> int:
        """``GET /v1/projects/{writeKey}/settings``."""
        path: str = scope["path"]
        key = path[len(SEGMENT_SETTINGS_PREFIX) : -len(SEGMENT_SETTINGS_SUFFIX)]
        if not key or "/" in key:
            raise HTTPError(404, "not_found", f"no endpoint GET {path[:200]}")
        self.write_keys.check({}, {"writeKey": key})
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if not _HOST_RE.match(host):
            raise HTTPError(400, "bad_host", "the request has no usable Host header")
        proto = headers.get(b"x-forwarded-proto", scope.get("scheme", "http").encode()).decode("latin-1").split(",")[0].strip()
        proto = proto if proto in ("http", "https") else "http"
        doc = {
            "integrations": {
                "Segment.io": {
                    "apiKey": key, "apiHost": f"{host}/v1", "protocol": proto,
                    "unbundledIntegrations": [], "addBundledMetadata": True, "maybeBundledConfigIds": {},
                    "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
                },
            },
            "plan": {"track": {"__default": {"enabled": True, "integrations": {}}},
                     "identify": {"__default": {"enabled": True}}, "group": {"__default": {"enabled": True}}},
            "edgeFunction": {}, "analyticsNextEnabled": True, "middlewareSettings": {}, "enabledMiddleware": {},
            "metrics": {"sampleRate": 0}, "legacyVideoPluginsEnabled": False, "remotePlugins": [],
        }  # fmt: skip
        await respond(send, 200, orjson.dumps(doc), [(b"cache-control", b"private, max-age=60")])
        return 200

    async def rudderstack(self, scope: Scope, receive: Receive, send: Send) -> int:
        """``GET /sourceConfig[/]?writeKey=...``."""
        q = _query(scope)
        _, _trust = self.write_keys.check(dict(scope["headers"]), {"writeKey": q.get("writeKey", "")})
        key = q.get("writeKey", "")
        doc = {
            "isHosted": False,
            "source": {
                "id": "liveprofile", "name": "liveprofile", "writeKey": key, "enabled": True,
                "workspaceId": "liveprofile", "config": {}, "destinations": [],
                "sourceDefinition": {"name": "Javascript", "category": "event stream"},
            },
        }  # fmt: skip
        await respond(send, 200, orjson.dumps(doc), [(b"cache-control", b"private, max-age=60")])
        return 200


def decode_pixel_data(data: str) -> bytes:
    """The JSON of a Pixel API ``data`` parameter (standard or URL-safe base64, padding optional).

    >>> decode_pixel_data("eyJhIjoxfQ")
    b'{"a":1}'
    >>> decode_pixel_data("!!")
    Traceback (most recent call last):
    ...
    liveprofile.asgi.HTTPError: the data parameter is not base64
    """
    s = data.strip().replace("-", "+").replace("_", "/").replace(" ", "+")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (ValueError, binascii.Error):
        raise HTTPError(400, "malformed_data", "the data parameter is not base64") from None


class PixelApi:
    """Segment's Pixel API (see the module doc)."""

    def __init__(self, ingest: SegmentIngest) -> None:
        self.ingest = ingest

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """``GET /v1/pixel/{type}?data=...``: the event taken like a POST, then the GIF."""
        path: str = scope["path"]
        kind = path[len(PIXEL_API_PREFIX) :]
        if kind not in SINGLE_TYPES:
            raise HTTPError(404, "not_found", f"no Pixel API call {kind[:40]!r}; one of {', '.join(SINGLE_TYPES)}")
        body = decode_pixel_data(_query(scope).get("data", "")) or b"{}"
        status, answer = await self.ingest.ingest_body(kind, {}, body)
        if status != 200:
            await respond(send, status, answer)
            return status
        await send({"type": "http.response.start", "status": 200, "headers": PIXEL_HEADERS})
        await send({"type": "http.response.body", "body": PIXEL_GIF})
        return 200
