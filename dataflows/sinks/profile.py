"""Profile upserts and tombstones (:class:`RedisProfileSink`) and model patches with the
anomalies stream (:class:`RedisPatchSink`), through the profile script (see :mod:`dataflows.sinks`)."""

from __future__ import annotations

import dataclasses
import time

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import metrics
from dataflows.outputs import ModelOut
from dataflows.sinks.common import Batch, Writer, now_iso
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import ProfileMode, ProfileResult
from operators.identity import public_id
from operators.rfm import rfm_fields
from operators.timeutil import iso
from operators.user import ProfileUpdate, Retire

__all__ = ["RedisProfileSink", "RedisPatchSink"]


class _ProfilePartition(StatelessSinkPartition[tuple[str, ProfileUpdate | Retire]]):
    def __init__(self, w: Writer) -> None:
        self._w = w

    def write_batch(self, items: list[tuple[str, ProfileUpdate | Retire]]) -> None:
        self.prepare(items).run()

    def prepare(self, items: list[tuple[str, ProfileUpdate | Retire]]) -> Batch:
        """The batch writing ``items`` (the newest update per user, coalesced)."""
        t0 = time.perf_counter()
        latest: dict[str, ProfileUpdate | Retire] = {}
        for uid, out in items:
            prev = latest.get(uid)
            if prev is None:
                latest[uid] = out
            elif out.seq >= prev.seq:
                if type(out) is ProfileUpdate and type(prev) is ProfileUpdate:
                    # coalesce: the newest values, an earlier update's trigger event if the newest has none,
                    # and the newest receipt either carries (a timer's write carries none: 0)
                    out = dataclasses.replace(out, fields={**prev.fields, **out.fields}, event=out.event or prev.event,
                                              event_ms=out.event_ms if out.event_ms is not None else prev.event_ms,
                                              last_received_ms=max(out.last_received_ms, prev.last_received_ms))  # fmt: skip
                latest[uid] = out
        w = self._w
        keys = w.keys
        edges = w.edges()
        updated_at = now_iso()

        def build() -> object:
            pipe = w.pipe()
            for uid, out in latest.items():
                if type(out) is Retire:
                    w.call(pipe, uid, out.seq, ProfileMode.TOMBSTONE, {"user_id": public_id(uid), "merged_into": out.into}, b"", updated_at)
                    continue
                fields = dict(out.fields)
                fields.update(rfm_fields(edges, out.rfm))
                event = orjson.dumps(out.event) if out.event else b""
                event_at = iso(out.event_ms) if out.event_ms is not None else ""
                w.call(pipe, uid, out.seq, ProfileMode.UPSERT, fields, event, updated_at, event_at)
            customers = None if keys.cluster else keys.rfm_customers
            for uid, out in latest.items():  # customer index for the RFM refresher (idempotent)
                if type(out) is Retire:
                    w.command(pipe, "SREM", customers or keys.rfm_customers_in(keys.group(uid)), uid)
                elif out.rfm is not None:
                    w.command(pipe, "SADD", customers or keys.rfm_customers_in(keys.group(uid)), uid)
            return pipe

        def finish(replies: list[object]) -> None:
            _account(list(latest.values()), replies[: len(latest)])
            metrics.SINK_SECONDS.labels("profile").observe(time.perf_counter() - t0)

        return Batch(w, build, finish, "profile sink")

    def close(self) -> None:
        self._w.close()


def _account(outs: list[ProfileUpdate | Retire], results: list[object]) -> None:
    """The profile sink's metrics for the script's ``results`` (one per output)."""
    done = time.time()
    written = stale = 0
    for out, ok in zip(outs, results, strict=True):
        if ok == ProfileResult.WRITTEN:
            written += 1
            if type(out) is ProfileUpdate and out.last_received_ms:  # timers' writes are not receipts
                metrics.FRESHNESS.observe(max(0.0, done - out.last_received_ms / 1000))
        elif ok == ProfileResult.STALE:
            stale += 1
    metrics.PROFILE_WRITES.labels("written").inc(written)
    metrics.PROFILE_WRITES.labels("stale").inc(stale)
    metrics.PROFILE_WRITES.labels("unchanged").inc(len(outs) - written - stale)


class RedisProfileSink(DynamicSink[tuple[str, ProfileUpdate | Retire]]):
    """Guarded profile upserts and tombstones (see module docstring)."""

    def __init__(self, url: str, keys: Keys, changes_maxlen: int = 1_000_000, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.changes_maxlen = changes_maxlen
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProfilePartition:
        return _ProfilePartition(Writer(self.url, self.keys, self.changes_maxlen, self.retry_for))


class _PatchPartition(StatelessSinkPartition[ModelOut]):
    def __init__(self, w: Writer, anomalies_maxlen: int) -> None:
        self._w = w
        self._anom_maxlen = anomalies_maxlen

    def write_batch(self, items: list[ModelOut]) -> None:
        self.prepare(items).run()

    def prepare(self, items: list[ModelOut]) -> Batch:
        """The batch writing ``items`` (the newest patch per user, every flagged anomaly)."""
        latest: dict[str, ModelOut] = {}
        for out in items:
            latest[out.uid] = out
        w = self._w
        updated_at = now_iso()
        keys = w.keys

        def build() -> object:
            pipe = w.pipe()
            for uid, out in latest.items():
                w.call(pipe, uid, 0, ProfileMode.PATCH, out.fields, b"", updated_at)
            for out in items:
                if out.flagged:
                    w.command(pipe, "XADD", keys.anomalies, "MAXLEN", "~", self._anom_maxlen, "*",
                              "user_id", out.uid, "score", f"{out.score:.4f}",
                              "features", orjson.dumps(out.features), "at", updated_at)  # fmt: skip
            return pipe

        return Batch(w, build, None, "patch sink")

    def close(self) -> None:
        self._w.close()


class RedisPatchSink(DynamicSink[ModelOut]):
    """Model outputs as profile patches, plus the ``{p}:anomalies`` stream."""

    def __init__(self, url: str, keys: Keys, changes_maxlen: int = 1_000_000, anomalies_maxlen: int = 100_000, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.changes_maxlen = changes_maxlen
        self.anomalies_maxlen = anomalies_maxlen
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PatchPartition:
        return _PatchPartition(Writer(self.url, self.keys, self.changes_maxlen, self.retry_for), self.anomalies_maxlen)
