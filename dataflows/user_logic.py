"""Stateful adapter: per-user :class:`~operators.profile.ProfileState` in Bytewax.

One logic per user key (``op.stateful_batch``): ``on_batch`` folds every event
of the batch into the state and emits at most one :class:`ProfileOut` per
batch (coalescing at the source of the writes). ``snapshot`` returns the
pickled state as ``bytes``: immutable, so Bytewax needs no deep copy, and
cheaper than ``copy.deepcopy`` of the dataclass (guide §2.3, §12.5).
"""

from __future__ import annotations

import pickle

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from dataflows.redis_sinks import ProfileOut
from operators.dedupe import DedupeConfig
from operators.events import Event
from operators.profile import ProfileState, to_fields

__all__ = ["UserLogic"]


class UserLogic(StatefulBatchLogic[Event, ProfileOut, bytes]):
    """Fold a user's events; emit the profile once per batch when it changed."""

    __slots__ = ("_dedupe", "state")

    def __init__(self, dedupe: DedupeConfig, resume: bytes | None) -> None:
        self._dedupe = dedupe
        self.state: ProfileState | None = pickle.loads(resume) if resume is not None else None

    def on_batch(self, values: list[Event]) -> tuple[list[ProfileOut], bool]:
        st = self.state
        if st is None:
            st = self.state = ProfileState(values[0].uid)
        changed = False
        dups = 0
        dedupe = self._dedupe
        for ev in values:
            if st.apply(ev, dedupe):
                changed = True
            else:
                dups += 1
        if dups:
            metrics.EVENTS_DUPLICATE.inc(dups)
        if not changed:
            return [], StatefulBatchLogic.RETAIN
        return [ProfileOut(st.version, to_fields(st), st.last_received)], StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
