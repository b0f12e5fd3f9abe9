"""Envelope checks shared by every way in (HTTP collector, JSONL replay, webhooks).

``prepare(events, ...)`` stamps ``receivedAt`` (unless the event already has
one and ``keep_received`` is set, as for historical imports), applies batch
defaults, enforces the per-event size limit, validates with
:func:`operators.events.parse_event`, and returns the buffer appends for the
valid events plus the dead-letter appends for the rest. Nothing is written
here; the caller appends both lists in one go, so the dead letters are as
durable as the events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from liveprofile.buffer import Append
from liveprofile.deadletter import dead_letter_fields
from liveprofile.keys import Keys
from operators.events import Limits, Rejected, parse_event
from operators.routing import routing_identity, shard_of

__all__ = ["Prepared", "prepare"]


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
    stage: str = "collector",
    force_type: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    keep_received: bool = False,
) -> Prepared:
    """Turn decoded events into buffer and dead-letter appends (see module doc)."""
    out = Prepared()
    max_event = limits.max_event_bytes
    streams = [keys.events(i) for i in range(shards)]
    dl = keys.dead_letter
    for ev in events:
        if not isinstance(ev, dict):
            raw = orjson.dumps(ev, option=orjson.OPT_NON_STR_KEYS)
            rej = Rejected("not_object", "an event must be a JSON object", raw[:max_event])
        else:
            ev.pop("writeKey", None)
            if force_type is not None:
                ev["type"] = force_type
            if defaults:
                for k, v in defaults.items():
                    ev.setdefault(k, v)
            if not (keep_received and ev.get("receivedAt")):
                ev["receivedAt"] = received_at
            raw = orjson.dumps(ev)
            mid = ev.get("messageId")
            if len(raw) > max_event:
                rej = Rejected(
                    "event_too_large", f"event is {len(raw)} bytes, the limit is {max_event}",
                    raw[:max_event], None, mid if isinstance(mid, str) else None,
                )  # fmt: skip
            else:
                res = parse_event(ev, limits)
                if not isinstance(res, Rejected):
                    out.appends.append((streams[shard_of(routing_identity(ev), shards)], {"e": raw}))
                    out.accepted += 1
                    continue
                rej = Rejected(res.reason, res.message, raw, res.received_at, res.message_id)
        out.rejected.append(rej)
        out.appends.append((dl, dead_letter_fields(rej, stage, source)))
    return out
