"""Redis key layout (SPEC §4 plus the internal buffer).

=================================  ======  =====================================================
key                                type    holds
=================================  ======  =====================================================
``{p}:events:{shard}``             STREAM  buffered raw events, field ``e`` = event JSON
                                           (collector-stamped ``receivedAt``), shards 0..N-1 by
                                           CRC-32(userId or anonymousId) mod N
``{p}:buffer:progress``            HASH    ``{shard}`` -> entries the dataflow has read (backlog =
                                           XINFO entries-added minus this); ``t{shard}`` -> newest
                                           event time seen (the shared stream clock)
``{p}:profile:{user_id}``          HASH    the profile (SPEC §4 fields)
``{p}:profile-changes``            STREAM  change feed: ``user_id``, ``version``, ``changed`` (JSON
                                           object of the changed fields and their new values)
``{p}:dead-letter``                STREAM  ``raw``, ``reason``, ``message``, ``received_at``,
                                           ``stage``, ``source``
``{p}:dead-letter:seen``           SET     source positions already dead-lettered (dedupe of
                                           at-least-once dead-letter writes), trimmed by age
``{p}:dead-letter:redriven``       STREAM  dead letters re-driven by ``liveprofile deadletter replay``
``{p}:segment:{name}``             SET     user ids per segment: RFM segments (``champions``, ...),
                                           ``interest:{category}`` (top category),
                                           ``cart_abandoned``, ``suspect``
``{p}:suppressed``                 SET     forgotten users: never re-created, never synced
``{p}:rfm:edges``                  STRING  current RFM population edges (JSON)
``{p}:rfm:customers``              SET     users with at least one order (RFM rescoring index)
``{p}:anomalies``                  STREAM  flagged events/users with score and features
=================================  ======  =====================================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builders for one prefix.

    >>> k = Keys("lp")
    >>> k.profile("u1"), k.events(3), k.changes
    ('lp:profile:u1', 'lp:events:3', 'lp:profile-changes')
    """

    prefix: str = "lp"

    def events(self, shard: int) -> str:
        return f"{self.prefix}:events:{shard}"

    def profile(self, user_id: str) -> str:
        return f"{self.prefix}:profile:{user_id}"

    def segment(self, name: str) -> str:
        return f"{self.prefix}:segment:{name}"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:profile-changes"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:dead-letter"

    @property
    def dead_letter_redriven(self) -> str:
        return f"{self.prefix}:dead-letter:redriven"

    @property
    def dead_letter_seen(self) -> str:
        return f"{self.prefix}:dead-letter:seen"

    @property
    def buffer_progress(self) -> str:
        return f"{self.prefix}:buffer:progress"

    @property
    def suppressed(self) -> str:
        return f"{self.prefix}:suppressed"

    @property
    def rfm_edges(self) -> str:
        return f"{self.prefix}:rfm:edges"

    @property
    def rfm_customers(self) -> str:
        return f"{self.prefix}:rfm:customers"

    @property
    def anomalies(self) -> str:
        return f"{self.prefix}:anomalies"

    @property
    def profile_prefix(self) -> str:
        return f"{self.prefix}:profile:"
