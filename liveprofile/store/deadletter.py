"""Dead-letter entries: the one format every stage writes (SPEC §4 ``{p}:dead-letter``).

Fields of each stream entry: ``reason`` (a code from
:data:`operators.events.REASONS`), ``message`` (readable), ``raw`` (the event
as received), ``received_at``, ``message_id``, ``stage`` (a :class:`Stage`) and ``source`` (where it came from: ``http:batch``,
``events:3:1700000000000-0``, ...).
"""

from __future__ import annotations

from enum import StrEnum

from operators.events import Rejected

__all__ = ["Stage", "dead_letter_fields"]


class Stage(StrEnum):
    """Where an event was rejected (the dead letter's ``stage``)."""

    COLLECTOR = "collector"  # the HTTP collector's envelope check (also webhooks and the pixel)
    DATAFLOW = "dataflow"  # the dataflow's parse step
    REPLAY = "replay"  # history import of Segment events (liveprofile replay)
    IMPORT = "import"  # file import through a mapping or of NDJSON (liveprofile import)
    REDRIVE = "redrive"  # a dead letter sent back through the checks (liveprofile deadletter replay)
    API = "api"  # events the profile API makes (experiment exposures)


def dead_letter_fields(rej: Rejected, stage: Stage | str, source: str) -> dict[str, bytes | str]:
    """The fields of one dead-letter stream entry.

    >>> sorted(dead_letter_fields(Rejected("missing_event", "no event", b"{}"), "collector", "http:track"))
    ['message', 'message_id', 'raw', 'reason', 'received_at', 'source', 'stage']
    """
    return {
        "reason": rej.reason,
        "message": rej.message,
        "raw": rej.raw,
        "received_at": str(rej.received_at if rej.received_at is not None else ""),
        "message_id": rej.message_id or "",
        "stage": stage,
        "source": source,
    }
