"""The email-open pixel: ``GET|HEAD /v1/pixel.gif?user=&campaign=&email_id=&ts=&sig=``.

Contract: every request is answered 200 with the 43-byte transparent GIF (:data:`PIXEL_GIF`,
``Cache-Control: no-store``; HEAD: the headers only) — a mail client learns nothing from the
answer. Only a valid, unexpired signature (:mod:`liveprofile.collector.signing`) with the pixel
enabled (``LIVEPROFILE_PIXEL_SECRET``) produces an ``Email Opened`` track event: ``userId``,
``properties.campaign_id``/``email_id``, a ``messageId`` from the signed parameters and a
``LIVEPROFILE_PIXEL_OPEN_WINDOW`` time bucket (a reload in the window is the same event, and the
last :data:`RECENT_OPENS` of them are not appended again), ``context.userAgent``/``ip`` from the
request, appended like any other event (source ``pixel``; refused while the backlog is full).
Each request is counted by result in ``liveprofile_collector_pixel_requests_total`` and, unless it
recorded an open or was a reload, a HEAD or an invalid event, in
``liveprofile_collector_events_rejected_total`` (``pixel_{result}``, or the buffer's code).

May import: :mod:`operators`, :mod:`liveprofile.asgi` and the collector's own modules.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from liveprofile.asgi import HTTPError, Receive, Scope, Send
from liveprofile.collector.config import CollectorConfig
from liveprofile.collector.gate import BUFFER_CODES, BufferGate
from liveprofile.collector.metrics import CollectorMetrics
from liveprofile.collector.signing import (
    PixelError,
    parse_pixel_query,
    pixel_message_id,
    verify_pixel,
)
from operators.names import EventName
from operators.timeutil import iso

__all__ = ["EmailPixel", "PIXEL_GIF", "PIXEL_HEADERS", "RECENT_OPENS"]

logger = logging.getLogger(__name__)

#: 1x1 transparent GIF (43 bytes).
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
PIXEL_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(PIXEL_GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]
#: how many recent opens (message ids) a process remembers to skip reloads
RECENT_OPENS = 10_000
#: results that are not refusals
_NOT_REFUSED = frozenset(("ok", "duplicate", "head", "invalid_event"))
_BUFFER_CODES = frozenset(BUFFER_CODES)


class EmailPixel:
    """The handler of the pixel endpoint (see the module doc)."""

    def __init__(self, gate: BufferGate, config: CollectorConfig, metrics: CollectorMetrics,
                 clock: Callable[[], float]) -> None:  # fmt: skip
        self.gate = gate
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self._recent_opens: OrderedDict[str, None] = OrderedDict()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> int:
        """Always the GIF; an ``Email Opened`` event only for a valid signature. Returns 200."""
        try:
            result = await self.record_open(scope)
        except Exception:
            logger.exception("collector: pixel handling failed")
            result = "internal_error"
        self.metrics.pixel.labels(result).inc()
        if result not in _NOT_REFUSED:
            self.metrics.rejected.labels(result if result in _BUFFER_CODES else f"pixel_{result}").inc()
        await send({"type": "http.response.start", "status": 200, "headers": PIXEL_HEADERS})
        await send({"type": "http.response.body", "body": PIXEL_GIF})
        return 200

    async def record_open(self, scope: Scope) -> str:
        """Append the open of a validly signed request; the result label (``ok`` or why not)."""
        cfg = self.config
        if scope["method"] == "HEAD":
            return "head"
        if not cfg.pixel_secrets:
            return "disabled"
        now = self.clock()
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
        gate = self.gate
        try:
            await gate.check_backlog()
        except HTTPError as exc:
            return exc.code
        prep = gate.prepare([event], received_at=iso(int(now * 1000)), source="pixel")
        try:
            prep = await gate.without_suppressed(prep)
            prep = await gate.append(prep)
        except HTTPError as exc:
            return exc.code
        self.metrics.count(prep)
        if prep.rejected:
            return "invalid_event"
        self._recent_opens[mid] = None
        if len(self._recent_opens) > RECENT_OPENS:
            self._recent_opens.popitem(last=False)
        return "ok"
