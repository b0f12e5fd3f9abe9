"""Sink writes that overlap the dataflow's computing from a thread, committed with the epoch (single
worker; ``LIVEPROFILE_OVERLAP_IO=threads``; the default ``replies`` is :mod:`dataflows.sinks.deferred`).

A Bytewax sink's ``write_batch`` runs on the worker thread, so every Redis round trip of a
sink (send the pipeline, wait while Redis runs its scripts, read the replies) used to stop the
whole dataflow: measured on the deployed flow, ~15 % of its wall time went to waiting for the
sinks' replies. Here each sink's ``write_batch`` only *queues* the batch on a :class:`Lane`,
one I/O thread per flow that runs the queued writes (the wrapped sink's own ``write_batch``,
retries included) one after another in the order they were queued; the worker goes on with
the next batches while the thread waits on its socket (which releases the GIL).

The guarantees stay those of the synchronous sinks:

* **Order.** The flow's sinks share one lane, so Redis sees their writes in exactly the
  order the worker produced them (as when each ``write_batch`` waited), e.g. a profile
  upsert before the RFM rescoring that reads it. Writes the flow reads back itself (the
  merges it appends to the buffer) stay synchronous (:func:`dataflows.build.redis_sinks`).
* **Durability with the epoch.** :class:`OverlappedSink` is a Bytewax
  ``FixedPartitionedSink``, whose partitions are snapshotted at the close of every epoch in
  which they were written, and Bytewax commits an epoch (source positions and state) only
  after every snapshot of that epoch is in. The snapshot first waits until every queued write
  is done (:meth:`Lane.drain`), so an epoch is never committed before all its writes have
  succeeded; a crash before that replays the epoch, as before. (``DynamicSink`` outputs are
  not in Bytewax's commit at all: the synchronous sinks relied on the worker running them
  before the commit.)
* **Failure.** A write that fails for good (its retries exhausted) makes the next
  ``write_batch``, snapshot or close raise that error on the worker, which stops the dataflow
  as before; the writes queued after it are not run (their epoch is not committed).
* **Bounded.** At most ``depth`` batches wait in the lane; ``write_batch`` blocks when it is
  full (e.g. while Redis refuses writes, the worker stops soon after, as before).

The items a sink receives must not be mutated by the flow after it emitted them (they are
written later, from the lane's thread): every output type of :mod:`operators` is immutable or
freshly built per emission.

Partitions: one (``"0"``), so this is for a flow run by **one worker** (``-w 1``, no ``-a``):
with more workers all writes would be routed to the worker holding the partition.
:func:`dataflows.profiles.single_worker` decides; otherwise the sinks are used directly.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

if TYPE_CHECKING:
    from dataflows.sinks.deferred import Channel

__all__ = ["Lane", "OverlappedSink", "PART"]

X = TypeVar("X")

#: the one partition of every overlapped sink
PART = "0"
#: the interpreter's GIL switch interval (seconds) while a lane runs
SWITCH_INTERVAL_S = 0.0005


class Lane:
    """One daemon thread running queued writes in order (see the module docstring).

    One lane per built flow (:func:`dataflows.build.redis_sinks`): an error stays until the
    lane is dropped, so a failed write is never forgotten while its flow runs."""

    def __init__(self, depth: int = 4) -> None:
        self._depth = depth
        self._queue: queue.Queue[Callable[[], object]] | None = None
        self._error: BaseException | None = None
        self._reported = False  # the error was raised to the worker once
        self._lock = threading.Lock()

    def _start(self) -> queue.Queue[Callable[[], object]]:
        with self._lock:
            if self._queue is None:
                # the lane's thread reacquires the GIL after every socket read; by default the
                # computing worker would hold it up to 5 ms each time
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
                self._queue = queue.Queue(maxsize=self._depth)
                threading.Thread(target=self._run, args=(self._queue,), name="sink-lane", daemon=True).start()
            return self._queue

    def _run(self, q: queue.Queue[Callable[[], object]]) -> None:
        while True:
            fn = q.get()
            try:
                if self._error is None:  # after a failure nothing more is written
                    fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the worker by _raise
                self._error = exc
            finally:
                q.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            self._reported = True
            raise self._error

    def submit(self, fn: Callable[[], object]) -> None:
        """Queue ``fn`` after every write queued before (blocks while ``depth`` are waiting);
        raises the error of an earlier write that failed."""
        self._raise()
        self._start().put(fn)

    def write(self, inner: StatelessSinkPartition[Any], values: list[Any]) -> None:
        """Queue ``inner.write_batch(values)`` (:meth:`submit`)."""
        self.submit(lambda: inner.write_batch(values))

    def drain(self, once: bool = False) -> None:
        """Wait until every queued write is done; raises the error of one that failed (with
        ``once``: only if it was not raised before — Bytewax closes partitions while it unwinds
        from that first error, and a second one there would abort the process)."""
        q = self._queue
        if q is not None:
            q.join()
        if not (once and self._reported):
            self._raise()


class _OverlappedPartition(StatefulSinkPartition[X, None]):
    def __init__(self, inner: StatelessSinkPartition[X], lane: Lane | Channel) -> None:
        self._inner = inner
        self._lane = lane

    def write_batch(self, values: list[X]) -> None:
        self._lane.write(self._inner, values)

    def snapshot(self) -> None:
        """The epoch's barrier: every write queued so far is done (or this raises)."""
        self._lane.drain()

    def close(self) -> None:
        try:
            self._lane.drain(once=True)
        finally:
            self._inner.close()


class OverlappedSink(FixedPartitionedSink[X, None], Generic[X]):
    """``inner``'s writes run on ``lane`` (see the module docstring). Items are ``(key, value)``
    as Bytewax's partitioned sinks want them (the key is ignored: one partition); ``inner``
    receives the values."""

    def __init__(self, inner: DynamicSink[X], lane: Lane | Channel) -> None:
        self.inner = inner
        self.lane = lane

    def list_parts(self) -> list[str]:
        return [PART]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _OverlappedPartition[X]:
        return _OverlappedPartition(self.inner.build(step_id, 0, 1), self.lane)
