"""The source debugger's tap: one redacted entry per event the collector accepted or rejected.

Contract. With ``LIVEPROFILE_DEBUGGER=on`` the collector, after a request's append succeeded
(:meth:`liveprofile.collector.gate.BufferGate.append`), writes one stream entry per request to
``{p}:debug-events`` (:attr:`~liveprofile.store.keys.Keys.debug_events`) with ``XADD ... MAXLEN ~
LIVEPROFILE_DEBUGGER_MAXLEN`` (:func:`tap`): field ``d``, the JSON array of one event entry per
appended event — accepted or dead-lettered —, at most :data:`MAX_PER_REQUEST` of them, and field
``omitted``, how many more the request had. One XADD per request, one field: the cheap form (a
field per event attribute and an XADD per event cost the collector half its batch throughput,
``bench/collector.py --debugger``). It is a separate, cheap write *after* the append: the tap never delays, fails or
changes an answer (a failed tap is logged and counted, the events are already acknowledged) and
never holds what ``forget`` erased (events of suppressed users are not tapped: they were not
appended). The API's ``/debugger`` page reads it (:mod:`liveprofile.api.debugger`).

Keys of an event entry (all strings, :func:`entries`):

* ``t`` — the collector's receipt time (``receivedAt``), ``src`` — the way in (``http:batch``, ...),
  ``key`` — the write key's label ``key:`` + the first 8 hex digits of its SHA-256 (never the key:
  :func:`key_label`), ``trust`` — ``server`` or ``browser``;
* ``type``, ``event`` (a track's event name, a page's or screen's name), ``mid`` (``messageId``),
  ``uid`` / ``aid`` / ``pid`` (``userId`` / ``anonymousId`` / an alias's ``previousId``: what the operator's API token may read anyway,
  and what ``forget`` scrubs the stream by);
* ``status`` — ``accepted`` or ``rejected``, with ``reason`` and ``message`` for a rejected one
  (the dead letter's);
* ``summary`` — JSON ``{"traits": {...}, "properties": {...}, "context_traits": {...}}``: the
  names of the event's traits and properties; their values only with
  ``LIVEPROFILE_DEBUGGER_SHOW_VALUES=on``, and then cut to 64 characters; an e-mail address is
  always masked (``a***@example.com``); nested objects and arrays are shown by their kind only
  (:func:`redact`). At most 40 names per part.

May import: :mod:`operators`, :mod:`liveprofile.store`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from operators.events import identity_of

__all__ = ["key_label", "mask_email", "redact", "entries", "tap", "events_of", "MAX_NAMES", "MAX_VALUE_CHARS",
           "MAX_PER_REQUEST"]

#: most names shown per part of a summary
MAX_NAMES = 40
#: most events of one request that are tapped (the rest are counted in ``omitted``)
MAX_PER_REQUEST = 50
#: longest value shown (with LIVEPROFILE_DEBUGGER_SHOW_VALUES=on)
MAX_VALUE_CHARS = 64
_EMAIL = re.compile(r"^\s*([^@\s]+)@([^@\s]+\.[^@\s]+)\s*$")


def key_label(write_key: bytes) -> str:
    """The label a write key is shown by: ``key:`` + 8 hex digits of its SHA-256 (``demo``: none).

    >>> key_label(b"server-key-1"), key_label(b"")
    ('key:0c01931d', 'demo')
    """
    return "key:" + hashlib.sha256(write_key).hexdigest()[:8] if write_key else "demo"


def mask_email(value: str) -> str | None:
    """``value`` masked if it is an e-mail address (first letter, ``***``, the domain), else ``None``.

    >>> mask_email("Ann.Lee@Example.com"), mask_email("not an email")
    ('A***@Example.com', None)
    """
    m = _EMAIL.match(value)
    return f"{m.group(1)[0]}***@{m.group(2)}" if m else None


def _shown(value: object, show_values: bool) -> object:
    if isinstance(value, str):
        masked = mask_email(value)
        if masked is not None:
            return masked
        return value[:MAX_VALUE_CHARS] if show_values else "<text>"
    if isinstance(value, bool) or value is None:
        return value if show_values else "<flag>" if isinstance(value, bool) else None
    if isinstance(value, int | float):
        return value if show_values else "<number>"
    if isinstance(value, dict):
        return "<object>"
    if isinstance(value, list):
        return f"<array of {len(value)}>"
    return "<value>"


def redact(part: object, show_values: bool) -> dict[str, object]:
    """The shown form of one traits/properties object (see the module doc).

    >>> redact({"email": "ann@example.com", "plan": "pro", "n": 3, "tags": [1, 2]}, False)
    {'email': 'a***@example.com', 'plan': '<text>', 'n': '<number>', 'tags': '<array of 2>'}
    >>> redact({"plan": "pro", "n": 3}, True), redact("not an object", True)
    ({'plan': 'pro', 'n': 3}, {})
    """
    if not isinstance(part, dict):
        return {}
    out: dict[str, object] = {}
    for k, v in list(part.items())[:MAX_NAMES]:
        out[str(k)[:MAX_VALUE_CHARS]] = _shown(v, show_values)
    return out


def _text(v: object) -> str:
    return v[:200] if isinstance(v, str) else ""


def _id(v: str | None) -> str:
    return v or ""


def _entry(ev: object, status: str, common: Mapping[str, str], show_values: bool) -> dict[str, str]:
    ev = ev if isinstance(ev, dict) else {}
    ctx = ev.get("context")
    typ = _text(ev.get("type"))
    name = ev.get("event") if typ == "track" else ev.get("name")
    summary = {
        "traits": redact(ev.get("traits"), show_values),
        "properties": redact(ev.get("properties"), show_values),
        "context_traits": redact(ctx.get("traits") if isinstance(ctx, dict) else None, show_values),
    }
    uid, aid, pid = identity_of(ev)  # normalized as the dataflow and ``forget`` name users
    return {
        **common, "type": typ, "event": _text(name), "mid": _text(ev.get("messageId")),
        "uid": _id(uid),
        "aid": _id(aid), "pid": _id(pid),
        "status": status, "reason": "", "message": "",
        "summary": orjson.dumps({k: v for k, v in summary.items() if v}).decode(),
    }  # fmt: skip


def entries(appends: Sequence[tuple[str, Mapping[str, Any]]], dead_letter: str, *, received_at: str, source: str,
            key: str, trust: str, show_values: bool) -> list[dict[str, str]]:  # fmt: skip
    """The tap entries of one request's appends (buffer entries ``{"e": raw}`` are accepted
    events, entries of the ``dead_letter`` stream rejected ones), in order; pass at most
    :data:`MAX_PER_REQUEST` appends.

    >>> es = entries([("lp:events:0", {"e": b'{"type":"track","event":"Signed Up","userId":"u1","properties":{"plan":"pro"}}'}),
    ...               ("lp:dead-letter", {"raw": b'{"type":"track"}', "reason": "missing_event", "message": "no event"})],
    ...              "lp:dead-letter", received_at="t", source="http:batch", key="key:00", trust="server", show_values=False)
    >>> [(e["status"], e["event"], e["uid"], e["reason"], e["summary"]) for e in es]
    [('accepted', 'Signed Up', 'u1', '', '{"properties":{"plan":"<text>"}}'), ('rejected', '', '', 'missing_event', '{}')]
    """
    common = {"t": received_at, "src": source, "key": key, "trust": trust}
    out: list[dict[str, str]] = []
    for stream, fields in appends:
        if stream == dead_letter:
            e = _entry(_loads(fields.get("raw", b"")), "rejected", common, show_values)
            reason, message = fields.get("reason", ""), fields.get("message", "")
            e["reason"] = reason.decode() if isinstance(reason, bytes) else str(reason)
            e["message"] = (message.decode() if isinstance(message, bytes) else str(message))[:300]
            if not e["uid"]:
                e["uid"] = _s(fields.get("user_id"))
            if not e["aid"]:
                e["aid"] = _s(fields.get("anonymous_id"))
        else:
            e = _entry(_loads(fields.get("e", b"")), "accepted", common, show_values)
        out.append(e)
    return out


def _loads(raw: object) -> Any:
    """The decoded event of a buffer entry or dead letter's raw, ``None`` when it is not JSON."""
    try:
        return orjson.loads(raw)  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        return None


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else ""


async def tap(redis: Any, stream: str, batch: Sequence[Mapping[str, str]], omitted: int, maxlen: int) -> None:
    """Append one request's ``batch`` of event entries to the tap ``stream`` (``MAXLEN ~ maxlen``): one XADD."""
    if batch:
        await redis.xadd(stream, {"d": orjson.dumps(batch), "omitted": omitted}, maxlen=maxlen, approximate=True)


def events_of(fields: Mapping[Any, Any]) -> list[dict[str, str]]:
    """The event entries of one tap stream entry (``[]`` for one that does not decode).

    >>> events_of({b"d": b'[{"uid": "u1"}]'}), events_of({"d": "[{}]"}), events_of({"d": "x"})
    ([{'uid': 'u1'}], [{}], [])
    """
    raw = fields.get(b"d", fields.get("d", b"[]"))
    try:
        out = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return [e for e in out if isinstance(e, dict)] if isinstance(out, list) else []
