"""Idempotent dead-letter writes (see :mod:`dataflows.sinks`)."""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import metrics
from dataflows.outputs import DeadLetter
from dataflows.sinks.common import with_retry
from liveprofile.store.connection import connect, load_scripts, run_script
from liveprofile.store.deadletter import dead_letter_fields
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import DEAD_LETTER_LUA, dead_letter_argv

__all__ = ["RedisDeadLetterSink"]


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, url: str, keys: Keys, maxlen: int, retry_for: float) -> None:
        self._r = connect(url, keys.cluster, socket_timeout=10)
        self._keys = keys
        self._maxlen = maxlen
        self._retry_for = retry_for
        self._script = self._r.register_script(DEAD_LETTER_LUA)
        self._loaded = not keys.cluster

    def _load(self) -> None:
        load_scripts(self._r, [self._script])
        self._loaded = True

    def write_batch(self, items: list[DeadLetter]) -> None:
        keys = [self._keys.dead_letter, self._keys.dead_letter_seen]

        def run() -> list[int]:
            if not self._loaded:
                self._load()
            pipe = self._r.pipeline(transaction=False)
            for d in items:
                a, b = d.position
                src = f"{d.source}:{a}-{b}"
                args = dead_letter_argv(d.source, d.position, self._maxlen, dead_letter_fields(d.rejected, d.stage, src))
                run_script(self._script, keys, args, pipe)
            return pipe.execute()

        with_retry(run, "dead-letter sink", self._retry_for, self._load)
        for d in items:
            metrics.EVENTS_REJECTED.labels(d.rejected.reason).inc()

    def close(self) -> None:
        self._r.close()


class RedisDeadLetterSink(DynamicSink[DeadLetter]):
    """Idempotent dead-letter writes (see module docstring)."""

    def __init__(self, url: str, keys: Keys, maxlen: int = 1_000_000, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.maxlen = maxlen
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.url, self.keys, self.maxlen, self.retry_for)
