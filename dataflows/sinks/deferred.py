"""Sink writes sent at once and their replies read later, on the worker (single worker).

A synchronous sink stops the dataflow for a whole Redis round trip per batch: send the
pipeline, wait while Redis runs its scripts, read the replies. Measured on the deployed flow
(``bench/pipeline.py``'s stream, one worker), the worker was blocked ~21 % of its wall time,
nearly all of it waiting for the profile and patch sinks' replies. The threaded
:class:`~dataflows.sinks.overlap.Lane` hides that wait but costs ~30 % more CPU per event (the
GIL handed back and forth between two busy threads). A :class:`Channel` needs no thread:
a sink's batch is built and *sent* on the worker, and its replies are read as they arrive, without
waiting (:meth:`Channel.collect`, at every write and every source poll), and waited for only when
the channel holds more than ``depth`` batches, or at the epoch's close. Meanwhile Redis runs the
scripts on its own core and the worker computes the next batches.

The guarantees stay those of the synchronous sinks:

* **Order.** Every deferred batch (profile upserts, model patches, catalogue writes) goes over
  the channel's one connection, so Redis runs them in the order the worker produced them (the
  profile upserts before the patches of the same users). A sink wrapped here that cannot defer (no ``prepare``: the RFM edges, which read
  profiles back) first reads every pending reply, then writes synchronously, as before.
* **Durability with the epoch.** As with the lane, the sinks are Bytewax
  ``FixedPartitionedSink``\\ s of one partition (:class:`~dataflows.sinks.overlap.OverlappedSink`),
  snapshotted at the close of every epoch they were written in; the snapshot first reads every
  pending reply (:meth:`Channel.drain`), so an epoch is never committed before its writes
  succeeded.
* **Failure.** A batch whose replies hold an error, or a connection that fails, makes the
  channel drop its connection (later replies unread) and write that batch *and every later
  pending one* again, in order, synchronously, with their sinks' retries (every sink's write is
  idempotent, so re-running a batch Redis already ran changes nothing, and the final state is
  that of the writes in order). An error that survives the retries is raised on the worker,
  which stops the dataflow as the synchronous sinks did (the epoch is not committed).
* **Bounded.** At most ``depth`` batches are pending; the next one first reads the oldest's
  replies.

One server only: on a Redis Cluster a batch is a cluster pipeline, written synchronously
(after the pending ones are read). One partition (``"0"``), so for a flow run by **one worker**
(:func:`dataflows.profiles.single_worker`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from dataflows.sinks.common import Batch
from liveprofile.store.connection import connect, read_replies

__all__ = ["Channel"]


class Channel:
    """One connection over which sink batches are sent in order and answered later (see the
    module docstring). One channel per built flow (:func:`dataflows.build.redis_sinks`)."""

    def __init__(self, url: str, depth: int = 4) -> None:
        self._client = connect(url, False, socket_timeout=10)
        self._depth = depth
        self._conn: Any = None
        self._pending: deque[tuple[Batch, int, list[Any]]] = deque()  # (batch, replies due, replies read)
        self._failed = False  # an error was raised on the worker: nothing more is written

    def __len__(self) -> int:
        """Batches sent whose replies are not read yet."""
        return len(self._pending)

    def write(self, inner: Any, values: list[Any]) -> None:
        """Write ``values`` through the sink partition ``inner``: deferred when it can
        ``prepare`` a :class:`~dataflows.sinks.common.Batch`, else synchronously once every
        pending batch is answered."""
        prepare = getattr(inner, "prepare", None)
        if prepare is None:
            self.drain()
            inner.write_batch(values)
        else:
            self.submit(prepare(values))

    def submit(self, batch: Batch) -> None:
        """Send ``batch`` after every batch sent before; read the oldest replies while more than
        ``depth`` are pending."""
        if self._failed:
            raise RuntimeError("an earlier sink write failed; this dataflow is stopping")
        w = batch.writer
        if not w.loaded or w.keys.cluster:  # a writer's first batch loads its script; a cluster pipeline
            self.drain()
            self._guard(batch.run)
            return
        cmds = batch.build().take()
        self.collect()
        pending = self._pending
        pending.append((batch, len(cmds), []))
        try:
            if self._conn is None:
                self._conn = self._client.connection_pool.get_connection()
            self._conn.send_packed_command([b"".join(cmds)])
        except Exception:  # noqa: BLE001 - the connection's trouble: every pending batch again
            self._rewrite()
            return
        while len(pending) > self._depth:
            self._read_oldest()

    def drain(self, once: bool = False) -> None:
        """Read every pending batch's replies (writing again what failed); raises what fails
        for good. ``once``: nothing, after a failure was raised (Bytewax closes its partitions
        while it unwinds from that first error, and a second one there would abort the process)."""
        if once and self._failed:
            return
        while self._pending:
            self._read_oldest()

    def collect(self) -> None:
        """Read the replies that have arrived, without waiting for more: the worker calls it
        whenever it sends a batch and whenever its source polls (:func:`dataflows.profiles.get_flow`),
        so a batch's accounting (the freshness histogram's sample: the time its replies were read)
        lags its write by at most one poll, also when no next batch comes."""
        conn = self._conn
        pending = self._pending
        while pending and conn is not None:
            _, n, got = pending[0]
            try:
                while len(got) < n and conn.can_read(timeout=0):
                    got += read_replies(conn, 1)
            except Exception:  # noqa: BLE001 - a lost connection: every pending batch again
                self._rewrite()
                return
            if len(got) < n:
                return
            self._finish()

    def _read_oldest(self) -> None:
        _, n, got = self._pending[0]
        try:
            got += read_replies(self._conn, n - len(got))
        except Exception:  # noqa: BLE001 - a timeout or a lost connection: every pending batch again
            self._rewrite()
            return
        self._finish()

    def _finish(self) -> None:
        """Account for the oldest pending batch, all of whose replies are read."""
        batch, _, replies = self._pending[0]
        for r in replies:
            if isinstance(r, Exception):
                self._rewrite()
                return
        self._pending.popleft()
        self._guard(lambda: batch.done(replies))

    def _rewrite(self) -> None:
        """Drop the connection (replies may be unread) and write every pending batch again, in
        order, synchronously with its sink's retries."""
        self._drop()
        pending = self._pending
        while pending:
            batch, _, _ = pending.popleft()
            self._guard(batch.run)

    def _guard(self, fn: Any) -> None:
        try:
            fn()
        except BaseException:
            self._failed = True
            self._pending.clear()  # their epoch is not committed: they are replayed after a restart
            self._drop()
            raise

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._client.connection_pool.release(conn)
