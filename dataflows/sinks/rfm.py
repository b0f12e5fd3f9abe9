"""RFM population edges and the bounded rescoring of idle customers (see :mod:`dataflows.sinks`)."""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import metrics
from dataflows.outputs import EdgesOut
from dataflows.sinks.common import Writer, now_iso, raise_errors, with_retry
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import ProfileMode
from operators.money import to_cents
from operators.rfm import RfmEdges, RfmValues, rfm_fields
from operators.timeutil import TimestampError, parse_ts

__all__ = ["RfmEdgesSink"]


class _EdgesPartition(StatelessSinkPartition[EdgesOut]):
    """Writes the edges, then rescores a bounded slice of customers per batch."""

    def __init__(self, w: Writer, slice_size: int) -> None:
        self._w = w
        self._slice = slice_size
        self._group = 0  # position of the rescoring pass: group, then SSCAN cursor in its index
        self._cursor = 0
        self._pass_edges: RfmEdges | None = None
        self._pass_changed = False
        self._idle = False

    def write_batch(self, items: list[EdgesOut]) -> None:
        w = self._w
        keys = w.keys
        new = [it.edges for it in items if it.edges is not None]
        if new:
            edges = new[-1]

            def publish() -> None:
                pipe = w.client.pipeline(transaction=False)
                pipe.set(keys.rfm_edges, edges.to_json())
                pipe.hset(keys.rfm_refresh, "converged", 0)
                pipe.execute()

            with_retry(publish, "rfm edges", w.retry_for)
            w.remember_edges(edges)
            self._idle = False
        if any(it.final for it in items):
            self._group = self._cursor = 0
            self._idle = False
            passes = 0
            while not self._idle and passes < 5:  # full passes until one changes nothing
                w.retry(self._rescore_slice, "rfm refresh")
                passes += self._group == 0 and self._cursor == 0
            return
        if self._idle:
            return
        w.retry(self._rescore_slice, "rfm refresh")

    def _rescore_slice(self) -> None:
        w = self._w
        keys = w.keys
        edges = w.edges()
        if self._group == 0 and self._cursor == 0:
            self._pass_edges = edges
            self._pass_changed = False
        cursor, members = w.client.sscan(keys.rfm_customers_in(self._group), self._cursor, count=self._slice)
        fields = ("last_purchase_at", "purchase_count", "revenue_total", "rfm_r", "rfm_f", "rfm_m", "rfm_segment")
        pipe = w.client.pipeline(transaction=False)
        uids = [m.decode() if isinstance(m, bytes) else m for m in members]
        for uid in uids:
            pipe.hmget(w.profile_key(uid), fields)
        rows = pipe.execute()
        pipe = w.pipe()
        updated_at = now_iso()
        n = 0
        for uid, row in zip(uids, rows, strict=True):
            vals = [x.decode() if isinstance(x, bytes) else x for x in row]
            if not vals[0] or not vals[1]:
                continue
            try:
                v = RfmValues(parse_ts(vals[0]), int(vals[1]), to_cents(vals[2] or "0"))
            except (ValueError, TimestampError):
                continue
            want = rfm_fields(edges, v)
            if [want["rfm_r"], want["rfm_f"], want["rfm_m"], want["rfm_segment"]] != vals[3:]:
                w.call(pipe, uid, 0, ProfileMode.PATCH, want, b"", updated_at)
                n += 1
        if n:
            raise_errors(pipe.execute())
            self._pass_changed = True
            metrics.RFM_RESCORED.inc(n)
        self._cursor = int(cursor)
        if self._cursor == 0:
            self._group = (self._group + 1) % len(keys.groups)
        if self._group == 0 and self._cursor == 0:
            converged = not self._pass_changed and self._pass_edges == edges
            if converged:
                self._idle = True  # a full pass found nothing to change
            # operators (and tests) can see whether idle customers' scores have caught up
            w.client.hset(keys.rfm_refresh, mapping={"converged": int(converged), "customers": edges.n, "at": updated_at})

    def close(self) -> None:
        self._w.close()


class RfmEdgesSink(DynamicSink[EdgesOut]):
    """RFM population edges and the bounded rescoring of idle customers."""

    def __init__(self, url: str, keys: Keys, changes_maxlen: int = 1_000_000, slice_size: int = 1000, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.changes_maxlen = changes_maxlen
        self.slice_size = slice_size
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _EdgesPartition:
        return _EdgesPartition(Writer(self.url, self.keys, self.changes_maxlen, self.retry_for), self.slice_size)
