"""Dead-letter entries: the one format every stage writes (SPEC §4 ``{p}:dead-letter``).

Fields of each stream entry: ``reason`` (a code from
:data:`operators.events.REASONS`), ``message`` (readable), ``raw`` (the event
as received), ``received_at``, ``message_id``, ``stage`` (a :class:`Stage`) and ``source`` (where it came from: ``http:batch``,
``events:3:1700000000000-0``, ...), ``user_id`` and ``anonymous_id`` (the event's ids as
:func:`operators.events.identity_of` normalizes them, ``""`` when absent: erasure finds a user's
dead letters by them even when ``raw`` is cut short and no longer JSON).
"""

from __future__ import annotations

from enum import StrEnum

import orjson

from operators.events import Rejected, identity_of

__all__ = ["Stage", "dead_letter_fields"]


class Stage(StrEnum):
    """Where an event was rejected (the dead letter's ``stage``)."""

    COLLECTOR = "collector"  # the HTTP collector's envelope check (also webhooks and the pixel)
    DATAFLOW = "dataflow"  # the dataflow's parse step
    REPLAY = "replay"  # history import of Segment events (liveprofile replay)
    IMPORT = "import"  # file import through a mapping or of NDJSON (liveprofile import)
    REDRIVE = "redrive"  # a dead letter sent back through the checks (liveprofile deadletter replay)
    API = "api"  # events the profile API makes (experiment exposures)


def dead_letter_fields(rej: Rejected, stage: Stage | str, source: str, event: object = None) -> dict[str, bytes | str]:
    """The fields of one dead-letter stream entry; ``event`` is the decoded event when the caller
    has it (its ids are read from ``raw`` otherwise).

    >>> sorted(dead_letter_fields(Rejected("missing_event", "no event", b"{}"), "collector", "http:track"))
    ['anonymous_id', 'message', 'message_id', 'raw', 'reason', 'received_at', 'source', 'stage', 'user_id']
    >>> dead_letter_fields(Rejected("event_too_large", "big", b'{"userId": " u1", "prop'), "collector", "x", {"userId": " u1"})["user_id"]
    'u1'
    """
    if event is None:
        try:
            event = orjson.loads(rej.raw)
        except orjson.JSONDecodeError:
            event = None
    user_id, anonymous_id, _ = identity_of(event)
    return {
        "reason": rej.reason,
        "message": rej.message,
        "raw": rej.raw,
        "received_at": str(rej.received_at if rej.received_at is not None else ""),
        "message_id": rej.message_id or "",
        "stage": stage,
        "source": source,
        "user_id": user_id or "",
        "anonymous_id": anonymous_id or "",
    }
