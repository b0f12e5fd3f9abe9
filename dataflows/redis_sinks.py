"""Redis outputs of the dataflow: profile upserts, model patches, RFM edges, merges, dead letters.

Bytewax sinks are at-least-once: after a crash the outputs of up to one epoch
are written again. Every write here is therefore idempotent *in Redis*, inside
one Lua script per item:

* **Profile upsert** (:data:`PROFILE_LUA`, mode ``upsert``): refuses an incoming
  ``seq`` (the user's input sequence, a pure function of the input) lower than
  the stored one; writes only the fields whose value changed; moves segment
  memberships (``rfm_segment``, ``top_category`` -> ``interest:{cat}``,
  ``cart_abandoned``, ``suspect``); bumps ``version`` (a per-profile write
  counter, strictly increasing) and appends one change-feed entry naming the
  changed fields — all or nothing. A replayed write changes nothing and adds no
  entry. Mode ``patch`` (model outputs) skips the ``seq`` guard; mode
  ``tombstone`` retires a profile merged into another.
* **Dead letter** (:data:`DEAD_LETTER_LUA`): a high-water mark of source
  positions per partition; an entry at or below it was already written.
* **Merges** go back into the buffer (the shard of the target user) with a
  deterministic id the target de-duplicates.

RFM scores are computed here, from the profile's raw values and the current
population edges (``{p}:rfm:edges``, written by :class:`RfmEdgesSink`), so a
stored profile is always scored against the newest edges the writer knew; the
edges sink rescans the customers in bounded slices so idle customers follow
population shifts too.

Transient Redis errors are retried with backoff for up to ``retry_for``
seconds before the sink gives up (the dataflow then stops; recovery resumes it).

**Redis Cluster** (``keys.cluster``): the same writes through a cluster client;
every key one script touches carries the user's group tag
(:meth:`Keys.profile_keys`, :meth:`Keys.script_prefix`), so each script runs on
one slot, and a pipeline is split per node. Scripts are ``SCRIPT LOAD``-ed on
every primary first; a node that lost them (``NoScriptError``) gets them again
and the batch is re-run (every write is idempotent). The RFM refresher walks
the customer index group by group.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import Any

import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import metrics
from liveprofile.deadletter import dead_letter_fields
from liveprofile.keys import Keys
from liveprofile.redisconn import RETRYABLE, RawPipeline, connect, load_scripts, run_script
from liveprofile.scripts import DEAD_LETTER_LUA, PROFILE_LUA
from operators.events import Rejected
from operators.money import to_cents
from operators.rfm import RfmEdges, RfmValues, segment
from operators.routing import shard_of
from operators.timeutil import TimestampError, iso, parse_ts
from operators.user import MergeExport, ProfileUpdate, Retire

__all__ = [
    "DeadLetter",
    "ModelOut",
    "EdgesOut",
    "RedisProfileSink",
    "RedisPatchSink",
    "RedisDeadLetterSink",
    "BufferMergeSink",
    "RfmEdgesSink",
    "rfm_fields",
]

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event with the source position it came from (for idempotence)."""

    rejected: Rejected
    source: str
    position: tuple[int, int]
    stage: str = "dataflow"


@dataclass(frozen=True, slots=True)
class ModelOut:
    """Model outputs for one user: written as a patch; flagged ones go to the anomalies stream."""

    uid: str
    fields: dict[str, str]
    flagged: bool
    score: float
    features: dict[str, float]


@dataclass(frozen=True, slots=True)
class EdgesOut:
    """New RFM population edges (or ``None``: only a refresh tick); ``final``: the input
    ended, rescore every customer now."""

    edges: RfmEdges | None
    final: bool = False


def _with_retry(fn: Callable[[], object], what: str, retry_for: float, reload: Callable[[], None] | None = None) -> object:
    """Run ``fn`` until it succeeds, retrying transient errors with backoff for ``retry_for``
    seconds; on ``NoScriptError`` (a cluster node lost its scripts) call ``reload`` and retry."""
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            return fn()
        except redis.exceptions.NoScriptError:
            if reload is None or time.monotonic() > deadline:
                raise
            logger.warning("%s: a Redis node lost the scripts; loading them again", what)
            _with_retry(reload, what, retry_for)
        except RETRYABLE as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("%s: Redis unreachable (%s); retrying in %.2fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _raise_errors(replies: list[Any]) -> list[Any]:
    """The replies of a pipeline, or the first error among them raised (redis-py's
    pipelines raise it; :class:`RawPipeline` returns it in place)."""
    for r in replies:
        if isinstance(r, redis.ResponseError):
            raise r
    return replies


def _now_iso() -> str:
    return iso(int(time.time() * 1000))


def rfm_fields(edges: RfmEdges, v: RfmValues | None) -> dict[str, str]:
    """The four RFM profile fields for raw values ``v`` under ``edges`` ('' for non-customers).

    >>> rfm_fields(RfmEdges(), None)
    {'rfm_r': '', 'rfm_f': '', 'rfm_m': '', 'rfm_segment': ''}
    """
    if v is None or edges.n == 0:  # not a customer, or no population to rank against yet
        return {"rfm_r": "", "rfm_f": "", "rfm_m": "", "rfm_segment": ""}
    r, f, m = edges.score(v)
    return {"rfm_r": str(r), "rfm_f": str(f), "rfm_m": str(m), "rfm_segment": segment(r, f, m)}


class _Writer:
    """Shared plumbing: a client, the profile script, the key layout, cached RFM edges."""

    def __init__(self, url: str, keys: Keys, changes_maxlen: int, retry_for: float) -> None:
        self._r = connect(url, keys.cluster, socket_timeout=10)
        self._keys = keys
        self._maxlen = changes_maxlen
        self._retry_for = retry_for
        self._script = self._r.register_script(PROFILE_LUA)
        self._loaded = False  # EVALSHA needs the script loaded first (every primary of a cluster)
        # single Redis: the per-call keys are constants but the profile's (the hot path stays as it was)
        self._single = None if keys.cluster else (keys.profile_prefix, keys.changes, keys.suppressed)
        self._edges = RfmEdges()
        self._edges_at = 0.0

    def load(self) -> None:
        """``SCRIPT LOAD`` the profile script (every primary of a cluster)."""
        load_scripts(self._r, [self._script])
        self._loaded = True

    def retry(self, fn: Callable[[], object], what: str) -> object:
        """:func:`_with_retry` with this writer's budget, loading the script first where needed."""

        def run() -> object:
            if not self._loaded:
                self.load()
            return fn()

        return _with_retry(run, what, self._retry_for, self.load)

    def edges(self) -> RfmEdges:
        if time.monotonic() - self._edges_at > 0.5:
            raw = _with_retry(lambda: self._r.get(self._keys.rfm_edges), "rfm edges", self._retry_for)
            self._edges = RfmEdges.from_json(raw)  # type: ignore[arg-type]
            self._edges_at = time.monotonic()
        return self._edges

    def pipe(self) -> Any:
        """A pipeline for :meth:`call` and :meth:`command`: a :class:`RawPipeline` on one
        server (the hot path), redis-py's cluster pipeline on a cluster."""
        return RawPipeline(self._r) if self._single is not None else self._r.pipeline(transaction=False)

    @staticmethod
    def command(pipe: Any, *args: Any) -> None:
        """Queue a plain command in a pipeline from :meth:`pipe`."""
        if type(pipe) is RawPipeline:
            pipe.command(*args)
        else:
            pipe.execute_command(*args)

    def call(self, pipe: Any, uid: str, seq: int, mode: str, fields: dict[str, str], event: bytes | str, updated_at: str) -> None:
        """Queue one :data:`PROFILE_LUA` call; the fields travel as one JSON array argument
        (packing ~70 separate arguments per call cost more than the rest of the sink)."""
        keys = self._keys
        single = self._single
        packed = orjson.dumps(list(chain.from_iterable(fields.items())))
        if single is not None:
            pipe.command("EVALSHA", self._script.sha, 3, single[0] + uid, single[1], single[2],
                         seq, updated_at, self._maxlen, uid, event, keys.prefix, mode, packed)  # fmt: skip
        else:
            args = [seq, updated_at, self._maxlen, uid, event, keys.script_prefix(uid), mode, packed]
            run_script(self._script, keys.profile_keys(uid), args, pipe)

    def close(self) -> None:
        self._r.close()


class _ProfilePartition(StatelessSinkPartition[tuple[str, ProfileUpdate | Retire]]):
    def __init__(self, w: _Writer) -> None:
        self._w = w

    def write_batch(self, items: list[tuple[str, ProfileUpdate | Retire]]) -> None:
        t0 = time.perf_counter()
        latest: dict[str, ProfileUpdate | Retire] = {}
        for uid, out in items:
            prev = latest.get(uid)
            if prev is None:
                latest[uid] = out
            elif out.seq >= prev.seq:
                if type(out) is ProfileUpdate and type(prev) is ProfileUpdate:
                    # coalesce: the newest values, and an earlier update's trigger event if the newest has none
                    out = dataclasses.replace(out, fields={**prev.fields, **out.fields}, event=out.event or prev.event)
                latest[uid] = out
        w = self._w
        keys = w._keys
        edges = w.edges()
        updated_at = _now_iso()

        def run() -> list[object]:
            pipe = w.pipe()
            for uid, out in latest.items():
                if type(out) is Retire:
                    w.call(pipe, uid, out.seq, "tombstone", {"user_id": uid, "merged_into": out.into}, b"", updated_at)
                    continue
                fields = dict(out.fields)
                fields.update(rfm_fields(edges, out.rfm))
                event = orjson.dumps(out.event) if out.event else b""
                w.call(pipe, uid, out.seq, "upsert", fields, event, updated_at)
            customers = None if keys.cluster else keys.rfm_customers
            for uid, out in latest.items():  # customer index for the RFM refresher (idempotent)
                if type(out) is Retire:
                    w.command(pipe, "SREM", customers or keys.rfm_customers_in(keys.group(uid)), uid)
                elif out.rfm is not None:
                    w.command(pipe, "SADD", customers or keys.rfm_customers_in(keys.group(uid)), uid)
            return _raise_errors(pipe.execute())[: len(latest)]

        results = w.retry(run, "profile sink")
        done = time.time()
        written = stale = 0
        for out, ok in zip(latest.values(), results, strict=True):  # type: ignore[call-overload]
            if ok == 1:
                written += 1
                if type(out) is ProfileUpdate:
                    metrics.FRESHNESS.observe(max(0.0, done - out.last_received_ms / 1000))
            elif ok == 0:
                stale += 1
        metrics.PROFILE_WRITES.labels("written").inc(written)
        metrics.PROFILE_WRITES.labels("stale").inc(stale)
        metrics.PROFILE_WRITES.labels("unchanged").inc(len(latest) - written - stale)
        metrics.SINK_SECONDS.labels("profile").observe(time.perf_counter() - t0)

    def close(self) -> None:
        self._w.close()


class RedisProfileSink(DynamicSink[tuple[str, ProfileUpdate | Retire]]):
    """Guarded profile upserts and tombstones (see module docstring)."""

    def __init__(self, url: str, keys: Keys, changes_maxlen: int = 1_000_000, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.changes_maxlen = changes_maxlen
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProfilePartition:
        return _ProfilePartition(_Writer(self.url, self.keys, self.changes_maxlen, self.retry_for))


class _PatchPartition(StatelessSinkPartition[ModelOut]):
    def __init__(self, w: _Writer, anomalies_maxlen: int) -> None:
        self._w = w
        self._anom_maxlen = anomalies_maxlen

    def write_batch(self, items: list[ModelOut]) -> None:
        latest: dict[str, ModelOut] = {}
        for out in items:
            latest[out.uid] = out
        w = self._w
        updated_at = _now_iso()
        keys = w._keys

        def run() -> None:
            pipe = w.pipe()
            for uid, out in latest.items():
                w.call(pipe, uid, 0, "patch", out.fields, b"", updated_at)
            for out in items:
                if out.flagged:
                    w.command(pipe, "XADD", keys.anomalies, "MAXLEN", "~", self._anom_maxlen, "*",
                              "user_id", out.uid, "score", f"{out.score:.4f}",
                              "features", orjson.dumps(out.features), "at", updated_at)  # fmt: skip
            _raise_errors(pipe.execute())

        w.retry(run, "patch sink")

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
        return _PatchPartition(_Writer(self.url, self.keys, self.changes_maxlen, self.retry_for), self.anomalies_maxlen)


class _EdgesPartition(StatelessSinkPartition[EdgesOut]):
    """Writes the edges, then rescores a bounded slice of customers per batch."""

    def __init__(self, w: _Writer, slice_size: int) -> None:
        self._w = w
        self._slice = slice_size
        self._group = 0  # position of the rescoring pass: group, then SSCAN cursor in its index
        self._cursor = 0
        self._pass_edges: RfmEdges | None = None
        self._pass_changed = False
        self._idle = False

    def write_batch(self, items: list[EdgesOut]) -> None:
        w = self._w
        keys = w._keys
        new = [it.edges for it in items if it.edges is not None]
        if new:
            edges = new[-1]

            def publish() -> None:
                pipe = w._r.pipeline(transaction=False)
                pipe.set(keys.rfm_edges, edges.to_json())
                pipe.hset(keys.rfm_refresh, "converged", 0)
                pipe.execute()

            _with_retry(publish, "rfm edges", w._retry_for)
            w._edges, w._edges_at = edges, time.monotonic()
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
        keys = w._keys
        edges = w.edges()
        if self._group == 0 and self._cursor == 0:
            self._pass_edges = edges
            self._pass_changed = False
        cursor, members = w._r.sscan(keys.rfm_customers_in(self._group), self._cursor, count=self._slice)
        fields = ("last_purchase_at", "purchase_count", "revenue_total", "rfm_r", "rfm_f", "rfm_m", "rfm_segment")
        pipe = w._r.pipeline(transaction=False)
        uids = [m.decode() if isinstance(m, bytes) else m for m in members]
        for uid in uids:
            pipe.hmget(keys.profile(uid), fields)
        rows = pipe.execute()
        pipe = w.pipe()
        updated_at = _now_iso()
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
                w.call(pipe, uid, 0, "patch", want, b"", updated_at)
                n += 1
        if n:
            _raise_errors(pipe.execute())
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
            w._r.hset(keys.rfm_refresh, mapping={"converged": int(converged), "customers": edges.n, "at": updated_at})

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
        return _EdgesPartition(_Writer(self.url, self.keys, self.changes_maxlen, self.retry_for), self.slice_size)


class _MergePartition(StatelessSinkPartition[MergeExport]):
    def __init__(self, write: Callable[[list[tuple[int, bytes]]], None], shards: int, retry_for: float) -> None:
        self._write = write
        self._shards = shards
        self._retry_for = retry_for

    def write_batch(self, items: list[MergeExport]) -> None:
        entries = [(shard_of(m.to_uid, self._shards), encode_merge(m)) for m in items]
        _with_retry(lambda: self._write(entries), "merge sink", self._retry_for)


class BufferMergeSink(DynamicSink[MergeExport]):
    """Identity merges, appended to the target user's buffer shard (see :func:`encode_merge`).

    ``writer`` builds, in each worker, the function that appends ``(shard, raw)``
    entries to the configured buffer (Redis Streams or Kafka)."""

    def __init__(self, writer: Callable[[], Callable[[list[tuple[int, bytes]]], None]], shards: int, retry_for: float = 300.0) -> None:
        self.writer = writer
        self.shards = shards
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MergePartition:
        return _MergePartition(self.writer(), self.shards, self.retry_for)


MERGE_PREFIX = b'{"type":"_merge"'
CONTROL_PREFIX = (b'{"type":"_forget"', b'{"type":"_unsuppress"')  # privacy controls (liveprofile.privacy)


def encode_merge(m: MergeExport) -> bytes:
    """The buffer entry of an identity merge; internal (the collector refuses ``_merge``)."""
    return orjson.dumps({
        "type": "_merge", "messageId": m.merge_id, "userId": m.to_uid, "from": m.from_uid,
        "ts": m.ts, "state": base64.b64encode(m.state).decode(),
    })  # fmt: skip


def decode_merge(raw: bytes) -> tuple[str, str, str, int, bytes]:
    """(to user, merge id, from user, ts, state) of a merge entry."""
    d = orjson.loads(raw)
    return d["userId"], d["messageId"], d["from"], int(d["ts"]), base64.b64decode(d["state"])


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
                args: list[object] = [d.source, a, b, self._maxlen]
                for k, v in dead_letter_fields(d.rejected, d.stage, src).items():
                    args.append(k)
                    args.append(v)
                run_script(self._script, keys, args, pipe)
            return pipe.execute()

        _with_retry(run, "dead-letter sink", self._retry_for, self._load)
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
