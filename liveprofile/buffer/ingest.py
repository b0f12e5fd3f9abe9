"""Envelope checks shared by every way in (HTTP collector, JSONL replay, webhooks).

``prepare(events, ...)`` stamps ``receivedAt`` (unless the event already has
one and ``keep_received`` is set, as for historical imports), applies batch
defaults, enforces the per-event size limit, validates with
:func:`operators.events.parse_event`, and returns the buffer appends for the
valid events plus the dead-letter appends for the rest. Nothing is written
here; the caller appends both lists in one go, so the dead letters are as
durable as the events.

With ``mask_ip`` (``LIVEPROFILE_TRUNCATE_IP=on``) ``context.ip`` is truncated by
:func:`truncate_ip` before the event is serialized, so neither the buffer nor
the dead letters ever hold the full address; a value that is not an IP address
is dropped.

``prepare`` never raises on decoded JSON: an event that cannot be serialized
again (nesting deeper than orjson writes, lone surrogates, non-string keys
from in-process callers) is dead-lettered as ``invalid_field_type``.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from liveprofile.buffer.streams import Append
from liveprofile.store.deadletter import Stage, dead_letter_fields
from liveprofile.store.keys import Keys
from operators.events import Limits, Reason, Rejected, parse_event
from operators.routing import shard_of

__all__ = ["Prepared", "prepare", "truncate_ip"]


@dataclass
class Prepared:
    """Appends to make, and what was rejected (in input order)."""

    appends: list[Append] = field(default_factory=list)
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)


def prepare(
    events: Iterable[object],
    *,
    keys: Keys,
    shards: int,
    limits: Limits,
    received_at: str,
    source: str,
    stage: Stage = Stage.COLLECTOR,
    force_type: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    keep_received: bool = False,
    mask_ip: bool = False,
) -> Prepared:
    """Turn decoded events into buffer and dead-letter appends (see module doc)."""
    out = Prepared()
    max_event = limits.max_event_bytes
    streams = [keys.events(i) for i in range(shards)]
    dl = keys.dead_letter
    for ev in events:
        if not isinstance(ev, dict):
            raw = _dumps_or_none(ev, orjson.OPT_NON_STR_KEYS)
            rej = Rejected(Reason.NOT_OBJECT, "an event must be a JSON object", (raw if raw is not None else _fallback_raw(ev))[:max_event])
        else:
            ev.pop("writeKey", None)
            if force_type is not None:
                ev["type"] = force_type
            if defaults:
                for k, v in defaults.items():
                    ev.setdefault(k, v)
            if not (keep_received and ev.get("receivedAt")):
                ev["receivedAt"] = received_at
            if mask_ip:
                _mask_context_ip(ev)
            mid = ev.get("messageId")
            try:
                raw: bytes | None = orjson.dumps(ev)
            except orjson.JSONEncodeError:
                raw = None
            if raw is None:
                rej = Rejected(
                    Reason.INVALID_FIELD_TYPE, "the event cannot be serialized as JSON (nesting too deep, invalid text or keys)",
                    _fallback_raw(ev)[:max_event], None, mid if isinstance(mid, str) else None,
                )  # fmt: skip
            elif len(raw) > max_event:
                rej = Rejected(
                    Reason.EVENT_TOO_LARGE, f"event is {len(raw)} bytes, the limit is {max_event}",
                    raw[:max_event], None, mid if isinstance(mid, str) else None,
                )  # fmt: skip
            else:
                res = parse_event(ev, limits)
                if not isinstance(res, Rejected):
                    out.appends.append((streams[shard_of(res.uid, shards)], {"e": raw}))
                    out.accepted += 1
                    continue
                rej = Rejected(res.reason, res.message, raw, res.received_at, res.message_id)
        out.rejected.append(rej)
        out.appends.append((dl, dead_letter_fields(rej, stage, source)))
    return out


def _dumps_or_none(value: object, option: int) -> bytes | None:
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        return None


def _fallback_raw(value: object) -> bytes:
    """Best-effort text of an event orjson cannot write (for the dead letter)."""
    try:
        return json.dumps(value, ensure_ascii=True, default=repr, check_circular=False).encode()
    except (RecursionError, ValueError, TypeError, OverflowError):
        return b""


def _mask_context_ip(ev: dict[str, Any]) -> None:
    ctx = ev.get("context")
    if not isinstance(ctx, dict) or "ip" not in ctx:
        return
    ip = ctx["ip"]
    masked = truncate_ip(ip) if isinstance(ip, str) else None
    if masked == ip or ip is None:
        return
    ctx = dict(ctx)  # batch defaults share one context object: never edit it in place
    if masked is None:
        del ctx["ip"]
    else:
        ctx["ip"] = masked
    ev["context"] = ctx


def truncate_ip(value: str) -> str | None:
    """``value`` with the host part zeroed (IPv4 to /24, IPv6 to /48), or ``None`` if not an IP.

    Accepts what trackers and proxies send: surrounding spaces, ``[v6]``, a
    ``:port`` suffix, an IPv6 zone, IPv4-mapped IPv6 (truncated as IPv4).

    >>> truncate_ip("203.0.113.77"), truncate_ip("2001:db8:abcd:12:1:2:3:4"), truncate_ip("[2001:db8::1]:443")
    ('203.0.113.0', '2001:db8:abcd::', '2001:db8::')
    >>> truncate_ip("::ffff:198.51.100.9"), truncate_ip("198.51.100.9:8080"), truncate_ip("not an ip")
    ('198.51.100.0', '198.51.100.0', None)
    """
    if len(value) > 64:
        return None
    return _truncate_ip(value.strip())


@lru_cache(maxsize=4096)
def _truncate_ip(s: str) -> str | None:
    if s.startswith("["):
        s = s[1 : s.find("]")] if "]" in s else s[1:]
    elif s.count(":") == 1:  # IPv4 with a port
        s = s.split(":", 1)[0]
    s = s.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        else:
            return str(ipaddress.IPv6Network((addr, 48), strict=False).network_address)
    return str(ipaddress.IPv4Network((addr, 24), strict=False).network_address)
