"""The source debugger: a page of the API that shows events as they arrive, live.

Contract (``docs/debugger.md``):

* ``GET /debugger`` — the page (static HTML, no token: it holds no data). It asks for an API
  bearer token (a field, or ``#token=`` in the URL: a fragment never reaches a server), keeps it in
  the page's memory only, and shows nothing without a valid one.
* ``GET /v1/debugger/ticket`` — bearer token required: ``{"ticket", "exp"}``, a ticket that admits
  to the event stream for :data:`TICKET_TTL_S` seconds (checked when a stream opens). A browser's
  ``EventSource`` cannot send an ``Authorization`` header, so the page passes the ticket in the
  query; a ticket is ``{exp}.{kid}.{sig}`` with ``kid`` the first 12 hex digits of the token's
  SHA-256 and ``sig`` the hex HMAC-SHA256, keyed with the token itself, of
  ``lpdbg1|{exp}|{kid}`` (:func:`mint_ticket`): it names no token, cannot be extended, and dies
  with its token (removed from ``LIVEPROFILE_API_TOKENS``, its tickets fail). It grants this
  stream only, nothing else of the API.
* ``GET /v1/debugger/events`` — bearer token or ``?ticket=``; otherwise 401. With
  ``Accept: text/event-stream`` a server-sent-events stream: first the newest
  :data:`BACKLOG` tapped events, then live ones (``event: event``, the data the JSON of one
  :mod:`liveprofile.store.debugtap` event entry plus its ``id``, ``{stream id}/{index}``, and
  ``omitted`` on the last event of a request that had more than were tapped), and every profile change from
  the change feed (``event: change``: ``user_id``, ``anonymous``, ``version`` and ``changed``, the
  changed fields' names — their values only with ``LIVEPROFILE_DEBUGGER_SHOW_VALUES=on``, e-mails
  always masked; fields the API never shows are left out); a ``: ping`` comment every
  :data:`PING_S` seconds; the stream ends after :data:`STREAM_MAX_S` seconds (the page reconnects
  with a new ticket); at most :data:`MAX_STREAMS` at once per API process (503
``too_many_streams`` over it). Any other ``Accept``: the same backlog as JSON ``{"events": [...]}``.

Bounded: the tap is a capped stream (``LIVEPROFILE_DEBUGGER_MAXLEN``), a stream sends at most
:data:`BACKLOG` old entries and reads at most :data:`READ_COUNT` per poll, the page keeps its last
:data:`PAGE_ROWS` rows. Without ``LIVEPROFILE_DEBUGGER=on`` at the collector the stream has no
events (the page says so), only profile changes.

May import: :mod:`operators`, :mod:`liveprofile.store`, :mod:`liveprofile.asgi`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from liveprofile.asgi import Receive, Send
from liveprofile.store.debugtap import events_of, redact
from liveprofile.store.keys import Keys
from operators.schema import SHOWN

__all__ = ["PAGE", "MAX_STREAMS", "TICKET_TTL_S", "BACKLOG", "PAGE_ROWS", "mint_ticket", "check_ticket", "Debugger", "wants_stream"]

#: seconds a ticket admits to the event stream
TICKET_TTL_S = 600
#: tap entries a new stream (or the JSON answer) starts with
BACKLOG = 50
#: stream entries read per poll
READ_COUNT = 200
#: rows the page keeps (older ones are removed)
PAGE_ROWS = 200
#: event streams one API process serves at once (each holds a Redis connection); over it: 503
MAX_STREAMS = 8
#: seconds between keep-alive comments
PING_S = 15.0
#: seconds a stream lasts before it ends (the page reconnects)
STREAM_MAX_S = 300.0
_BLOCK_MS = 1000

PAGE = (Path(__file__).with_name("debugger.html")).read_bytes().replace(b"__PAGE_ROWS__", str(PAGE_ROWS).encode())


def _kid(token: bytes) -> str:
    return hashlib.sha256(token).hexdigest()[:12]


def mint_ticket(token: bytes, now: float, ttl: int = TICKET_TTL_S) -> tuple[str, int]:
    """(ticket, exp) for ``token`` (see the module doc).

    >>> t, exp = mint_ticket(b"tok-123", 1000)
    >>> exp, check_ticket(t, [b"tok-123"], 1500), check_ticket(t, [b"tok-123"], 1601), check_ticket(t, [b"other"], 1500)
    (1600, True, False, False)
    >>> check_ticket(t.replace("1600", "9600"), [b"tok-123"], 1500), check_ticket("garbage", [b"tok-123"], 1500)
    (False, False)
    """
    exp = int(now) + ttl
    kid = _kid(token)
    sig = hmac.new(token, f"lpdbg1|{exp}|{kid}".encode(), hashlib.sha256).hexdigest()
    return f"{exp}.{kid}.{sig}", exp


def check_ticket(ticket: str, tokens: Sequence[bytes], now: float) -> bool:
    """Whether ``ticket`` was minted from one of ``tokens`` and is not past its ``exp``."""
    parts = ticket.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
        return False
    exp, kid, sig = int(parts[0]), parts[1], parts[2]
    ok = False
    for token in tokens:  # every token is tried: the time does not tell which one matched
        good = hmac.new(token, f"lpdbg1|{exp}|{_kid(token)}".encode(), hashlib.sha256).hexdigest()
        ok |= hmac.compare_digest(kid.encode(), _kid(token).encode()) & hmac.compare_digest(sig.encode(), good.encode())
    return ok and now <= exp


def wants_stream(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether the request accepts ``text/event-stream`` (an ``EventSource`` sends it)."""
    return any(k == b"accept" and b"text/event-stream" in v for k, v in headers)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Debugger:
    """Reads the tap and the change feed for ``/v1/debugger/events`` (see the module doc)."""

    def __init__(self, redis: Any, keys: Keys, *, show_values: bool) -> None:
        self.redis = redis
        self.keys = keys
        self.show_values = show_values

    def change(self, fields: dict[str, str]) -> dict[str, Any]:
        """The shown form of one change-feed entry."""
        try:
            changed = orjson.loads(fields.get("changed", "{}"))
        except orjson.JSONDecodeError:
            changed = {}
        changed = {k: v for k, v in changed.items() if k in SHOWN} if isinstance(changed, dict) else {}
        return {"user_id": fields.get("user_id", ""), "anonymous": fields.get("anonymous") == "1",
                "version": fields.get("version", ""), "changed": redact(changed, self.show_values)}  # fmt: skip

    @staticmethod
    def flatten(eid: str, fields: dict[str, str]) -> list[dict[str, Any]]:
        """The event entries of one tap stream entry, each with its ``id`` (``{eid}/{i}``).

        >>> Debugger.flatten("1-0", {"d": '[{"uid": "a"}, {"uid": "b"}]', "omitted": "3"})
        [{'uid': 'a', 'id': '1-0/0'}, {'uid': 'b', 'id': '1-0/1', 'omitted': '3'}]
        """
        out = [{**e, "id": f"{eid}/{i}"} for i, e in enumerate(events_of(fields))]
        if out and fields.get("omitted", "0") not in ("0", ""):
            out[-1]["omitted"] = fields["omitted"]
        return out

    async def backlog(self) -> tuple[list[dict[str, Any]], str]:
        """(the newest :data:`BACKLOG` tapped events, oldest first; the id of the newest tap entry)."""
        rows = await self.redis.xrevrange(self.keys.debug_events, count=BACKLOG)
        events = [e for eid, f in reversed(rows) for e in self.flatten(eid, f)]
        return events[-BACKLOG:], rows[0][0] if rows else "0-0"

    async def stream(self, send: Send, receive: Receive, *, clock: Any = time.monotonic) -> None:
        """Answer one SSE request until the client goes, or :data:`STREAM_MAX_S` passed."""
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
            (b"x-accel-buffering", b"no"), (b"referrer-policy", b"no-referrer")]})  # fmt: skip
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self._pump(send, gone, clock)
        finally:
            watcher.cancel()

    async def _pump(self, send: Send, gone: asyncio.Event, clock: Any) -> None:
        tap = self.keys.debug_events
        changes = [self.keys.changes_in(g) for g in self.keys.groups]
        last: dict[str, str] = {c: "$" for c in changes}
        # the change feed's current ends ("$" would miss what lands between two reads)
        for c in changes:
            newest = await self.redis.xrevrange(c, count=1)
            last[c] = newest[0][0] if newest else "0-0"
        rows, last[tap] = await self.backlog()
        body = b"".join(_sse("event", r) for r in rows) + b": connected\n\n"
        await send({"type": "http.response.body", "body": body, "more_body": True})
        start = ping = clock()
        while not gone.is_set() and clock() - start < STREAM_MAX_S:
            out: list[bytes] = []
            if self.keys.cluster:  # the streams are on different slots: one read each, not blocking
                got = []
                for key in last:
                    got += await self.redis.xread({key: last[key]}, count=READ_COUNT) or []
                if not got:
                    await asyncio.sleep(_BLOCK_MS / 1000)
            else:
                got = await self.redis.xread(last, count=READ_COUNT, block=_BLOCK_MS) or []
            for key, entries in got:
                for eid, f in entries:
                    last[key] = eid
                    if key == tap:
                        out.extend(_sse("event", e) for e in self.flatten(eid, f))
                    else:
                        out.append(_sse("change", {"id": eid, **self.change(f)}))
            if clock() - ping >= PING_S:
                out.append(b": ping\n\n")
                ping = clock()
            if out and not gone.is_set():
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
        if not gone.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
