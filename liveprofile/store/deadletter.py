"""Dead-letter entries: the one format every stage writes (SPEC §4 ``{p}:dead-letter``).

Fields of each stream entry: ``reason`` (a code from
:data:`operators.events.REASONS`), ``message`` (readable), ``raw`` (the event
as received), ``received_at``, ``message_id``, ``stage`` (``collector`` or
``dataflow``) and ``source`` (where it came from: ``http:batch``,
``events:3:1700000000000-0``, ...).
"""

from __future__ import annotations

from operators.events import Rejected

__all__ = ["dead_letter_fields"]


def dead_letter_fields(rej: Rejected, stage: str, source: str) -> dict[str, bytes | str]:
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
