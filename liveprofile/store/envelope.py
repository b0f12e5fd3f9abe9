"""Buffer entries: the one home of their kinds and of the internal entries' format.

Every buffer entry (a Redis Streams field ``e``, or a Kafka message value) is one JSON object:

* :attr:`EntryKind.EVENT` — a Segment-spec event, as the envelope checks
  (:mod:`liveprofile.buffer.ingest`) stored it;
* :attr:`EntryKind.MERGE` — an anonymous visitor's state moving into a known user (written by
  the dataflow's merge sink, read back by the target user's shard);
* :attr:`EntryKind.FORWARD` — items (events, merges) that reached a user already merged into
  another, on their way to the survivor (written by the merge sink; ``items`` is their pickle,
  like a merge's state: internal entries are made only here, never by a client);
* :attr:`EntryKind.FORGET` / :attr:`EntryKind.UNSUPPRESS` — privacy controls written by
  ``liveprofile forget`` / ``unsuppress``;
* :attr:`EntryKind.COMPUTED_SEED` — a backfill chunk for one user's computed traits, written by
  ``liveprofile definitions backfill`` (:func:`encode_seed`: an
  :class:`operators.computed.Seed` with its events compacted to the paths the traits read).

The kind is the explicit ``type`` field. Internal kinds are spelled with a leading ``_`` (``_merge``,
``_forget``, ``_unsuppress``), a type no client can send: the event check admits only the six
Segment types (:data:`operators.events.EVENT_TYPES`) wherever ``type`` sits in the object. Internal
entries are only ever made by :func:`encode_merge` / :func:`encode_forward` / :func:`encode_control` /
:func:`encode_seed`, which write ``type``
first, so :func:`kind_of` decides from the first bytes without parsing every event (the hot path).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from enum import StrEnum

import orjson

from operators.computed import Seed, compact_event, event_of_compact

__all__ = ["INTERNAL_PREFIX", "EntryKind", "Merge", "Control", "Forwarded", "encode_forward", "decode_forward", "kind_of", "encode_merge",
           "decode_merge", "encode_control", "decode_control", "encode_seed", "decode_seed"]  # fmt: skip


class EntryKind(StrEnum):
    """What a buffer entry holds; the value is its ``type`` field (events: one of the Segment types)."""

    EVENT = "event"
    MERGE = "_merge"
    FORWARD = "_forward"
    FORGET = "_forget"
    UNSUPPRESS = "_unsuppress"
    COMPUTED_SEED = "_computed_seed"


#: every internal entry starts with these bytes, no event does (a cheap first test on the hot path)
INTERNAL_PREFIX = b'{"type":"_'
_BY_PREFIX = {b'{"type":"' + k.value.encode() + b'"': k for k in (EntryKind.MERGE, EntryKind.FORWARD, EntryKind.FORGET, EntryKind.UNSUPPRESS, EntryKind.COMPUTED_SEED)}


def kind_of(raw: bytes) -> EntryKind:
    """The kind of the entry ``raw``.

    >>> kind_of(b'{"type":"track","event":"x"}'), kind_of(encode_control(EntryKind.FORGET, "u1", "t"))
    (<EntryKind.EVENT: 'event'>, <EntryKind.FORGET: '_forget'>)
    >>> kind_of(b'{"event":"x","type":"_merge"}')  # not made here: an (invalid) event, dead-lettered as such
    <EntryKind.EVENT: 'event'>
    """
    if not raw.startswith(INTERNAL_PREFIX):
        return EntryKind.EVENT
    for prefix, kind in _BY_PREFIX.items():
        if raw.startswith(prefix):
            return kind
    return EntryKind.EVENT


@dataclass(frozen=True, slots=True)
class Merge:
    """An identity merge: ``state`` (the visitor's pickled state) moves from ``from_uid`` into ``to_uid``."""

    to_uid: str
    merge_id: str
    from_uid: str
    ts: int
    state: bytes


@dataclass(frozen=True, slots=True)
class Control:
    """A privacy control for one user."""

    kind: EntryKind
    user_id: str
    at: str


def encode_merge(m: Merge) -> bytes:
    """The buffer entry of a merge.

    >>> decode_merge(encode_merge(Merge("u1", "m1", "a1", 5, b"\\x00")))
    Merge(to_uid='u1', merge_id='m1', from_uid='a1', ts=5, state=b'\\x00')
    """
    return orjson.dumps({
        "type": EntryKind.MERGE.value, "messageId": m.merge_id, "userId": m.to_uid, "from": m.from_uid,
        "ts": m.ts, "state": base64.b64encode(m.state).decode(),
    })  # fmt: skip


def decode_merge(raw: bytes) -> Merge:
    """The merge in an entry of kind :attr:`EntryKind.MERGE`."""
    d = orjson.loads(raw)
    return Merge(d["userId"], d["messageId"], d["from"], int(d["ts"]), base64.b64decode(d["state"]))


@dataclass(frozen=True, slots=True)
class Forwarded:
    """Items for ``from_uid`` (merged away) to deliver to ``to_uid``; ``items`` is their pickle."""

    to_uid: str
    from_uid: str
    items: bytes


def encode_forward(f: Forwarded) -> bytes:
    """The buffer entry of forwarded items.

    >>> kind_of(encode_forward(Forwarded("u2", "u1", b"x"))), decode_forward(encode_forward(Forwarded("u2", "u1", b"x")))
    (<EntryKind.FORWARD: '_forward'>, Forwarded(to_uid='u2', from_uid='u1', items=b'x'))
    """
    return orjson.dumps({"type": EntryKind.FORWARD.value, "userId": f.to_uid, "from": f.from_uid,
                         "items": base64.b64encode(f.items).decode()})  # fmt: skip


def decode_forward(raw: bytes) -> Forwarded:
    """The forwarded items in an entry of kind :attr:`EntryKind.FORWARD`."""
    d = orjson.loads(raw)
    return Forwarded(d["userId"], d["from"], base64.b64decode(d["items"]))


def encode_control(kind: EntryKind, user_id: str, at: str) -> bytes:
    """The buffer entry of a privacy control (``kind`` is FORGET or UNSUPPRESS).

    >>> decode_control(encode_control(EntryKind.UNSUPPRESS, "u1", "2024-05-01T00:00:00.000Z"))
    Control(kind=<EntryKind.UNSUPPRESS: '_unsuppress'>, user_id='u1', at='2024-05-01T00:00:00.000Z')
    """
    if kind not in (EntryKind.FORGET, EntryKind.UNSUPPRESS):
        raise ValueError(f"not a control kind: {kind}")
    return orjson.dumps({"type": kind.value, "userId": user_id, "at": at})


def decode_control(raw: bytes) -> Control:
    """The control in an entry of kind FORGET or UNSUPPRESS."""
    d = orjson.loads(raw)
    return Control(EntryKind(d["type"]), d["userId"], d.get("at", ""))


def encode_seed(seed: Seed, paths: frozenset[tuple[str, ...]]) -> bytes:
    """The buffer entry of a backfill chunk: ``seed`` with each event compacted to its times,
    ``messageId``, type, name and the values at ``paths`` (:func:`operators.computed.compact_event`).
    ``userId`` is the per-user key the entry is for (an anonymous profile's too).

    >>> from operators.computed import _ev
    >>> s = Seed("seed:1", "u1", "r", 3, 0, 99, (("n", "d"),), (_ev("Order Completed", 5, revenue=2, x=1),))
    >>> raw = encode_seed(s, frozenset({("properties", "revenue")}))
    >>> kind_of(raw), decode_seed(raw).events[0].properties, decode_seed(raw).traits
    (<EntryKind.COMPUTED_SEED: '_computed_seed'>, {'revenue': 2}, (('n', 'd'),))
    """
    return orjson.dumps({
        "type": EntryKind.COMPUTED_SEED.value, "messageId": seed.seed_id, "userId": seed.uid, "run": seed.run,
        "day": seed.day, "part": seed.part, "upto": seed.upto_ms, "traits": [list(t) for t in seed.traits],
        "events": [compact_event(e, paths) for e in seed.events],
    })  # fmt: skip


def decode_seed(raw: bytes) -> Seed:
    """The seed in an entry of kind :attr:`EntryKind.COMPUTED_SEED`."""
    d = orjson.loads(raw)
    uid = str(d["userId"])
    return Seed(str(d["messageId"]), uid, str(d["run"]), int(d["day"]), int(d["part"]), int(d["upto"]),
                tuple((str(n), str(g)) for n, g in d["traits"]), tuple(event_of_compact(e, uid) for e in d["events"]))  # fmt: skip
