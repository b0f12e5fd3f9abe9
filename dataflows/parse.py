"""The flow's first step: buffer entries -> routed items or dead letters.

Entry kinds come from :mod:`liveprofile.store.envelope`; events go through
:func:`operators.events.parse_event` (the same check the collector runs) and are routed by
:func:`operators.identity.anonymous_key`: to the identity step under the anonymous id, or straight
to the user step under the user id. An ``alias`` also sends an
:class:`~operators.identity.Absorb` to the merge graph (``"g"``, :data:`operators.identity.GRAPH_KEY`):
known users are a namespace of their own, and :func:`operators.identity.decide` serializes their merges. Forwarded entries (items of a
user merged away) go straight to the user step of the survivor; a backfill chunk
(:class:`~operators.computed.Seed`) to the user step of the user it names.
"""

from __future__ import annotations

import pickle
from typing import Any

from dataflows import metrics
from dataflows.clock import StreamClock
from dataflows.outputs import DeadLetter
from dataflows.sources.streams import SourceItem
from liveprofile.store.envelope import (
    INTERNAL_PREFIX,
    EntryKind,
    decode_control,
    decode_forward,
    decode_merge,
    decode_seed,
    kind_of,
)
from operators.events import Event, Limits, Rejected, parse_event
from operators.identity import GRAPH_KEY, Absorb, anonymous_key
from operators.user import Forget, MergeIn, Unsuppress

__all__ = ["parse_batch", "Routed"]

Routed = tuple[str, str, Any]  # ("i" identity | "g" merge graph | "u" user, key, item)


def parse_batch(limits: Limits, clock: StreamClock, items: list[SourceItem]) -> list[Routed | DeadLetter]:
    """Parse buffer entries into routed items, or dead letters with their position; valid events
    advance ``clock`` (to their time, at most their receipt)."""
    out: list[Routed | DeadLetter] = []
    append = out.append
    observe = clock.observe
    n_valid = 0
    for shard, entry_id, raw in items:
        if raw.startswith(INTERNAL_PREFIX) and (kind := kind_of(raw)) is not EntryKind.EVENT:
            if kind is EntryKind.MERGE:
                m = decode_merge(raw)
                append(("u", m.to_uid, MergeIn(m.merge_id, m.from_uid, m.ts, m.state)))
            elif kind is EntryKind.FORWARD:
                f = decode_forward(raw)
                for it in pickle.loads(f.items):
                    append(("u", f.to_uid, it))
            elif kind is EntryKind.COMPUTED_SEED:
                seed = decode_seed(raw)
                append(("u", seed.uid, seed))
            else:
                uid = decode_control(raw).user_id
                append(("u", uid, Forget(uid) if kind is EntryKind.FORGET else Unsuppress(uid)))
            continue
        res = parse_event(raw, limits)
        if type(res) is Event:
            n_valid += 1
            observe(res.ts if res.ts < res.received_at else res.received_at, shard)
            akey = anonymous_key(res)
            append(("u", res.uid, res) if akey is None else ("i", akey, res))
            if res.type == "alias" and res.previous_id != res.user_id:
                assert res.previous_id is not None and res.user_id is not None
                append(("g", GRAPH_KEY, Absorb(res.previous_id, res.user_id, res.ts, res.trusted, res)))
        else:
            a, _, b = entry_id.partition(b"-")
            assert isinstance(res, Rejected)
            append(DeadLetter(res, f"events:{shard}", (int(a), int(b or 0))))
    if n_valid:
        metrics.EVENTS_VALID.inc(n_valid)
    return out
