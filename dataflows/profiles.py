"""The main dataflow: ``python -m bytewax.run dataflows.profiles:flow``.

Wiring only; the logic lives in :mod:`operators`::

    inp (Redis Streams, one partition per shard; resume id in the snapshot)
      -> parse (flat_map_batch: orjson + validate + normalize; merges from the buffer)
      -> valid? --no--> dead_letter (idempotent Redis stream)
      -> anonymous id? --yes--> identity (keyed by anonymous id: link state) --+
      -> user (keyed by canonical user: dedupe, counters, cart, sessions,      <-+
               interest, bot features, timers)
           -> profile_out (Lua upsert: seq guard, changed fields, segments, change feed, RFM scores)
           -> models (keyed by shard: HalfSpaceTrees + propensity) -> patch_out (+ anomalies)
           -> population (one key: RFM histograms) -> edges_out (+ bounded rescoring)
           -> merge_out (anonymous state into the known user's buffer shard)

Step ids are part of the recovery state (guide §6.4): renaming one orphans
its state. Treat them as a schema.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from dataflows import metrics
from dataflows.clock import CLOCK
from dataflows.logic import (
    CoreLogic,
    IdentityLogic,
    ModelsLogic,
    PopulationLogic,
    UserLogic,
    model_shard,
)
from dataflows.redis_sinks import (
    CONTROL_PREFIX,
    MERGE_PREFIX,
    BufferMergeSink,
    DeadLetter,
    EdgesOut,
    ModelOut,
    RedisDeadLetterSink,
    RedisPatchSink,
    RedisProfileSink,
    RfmEdgesSink,
    decode_merge,
)
from dataflows.redis_source import RedisStreamSource, SourceItem
from liveprofile.buffers import raw_writer
from liveprofile.keys import Keys
from liveprofile.settings import Settings
from operators.events import Event, Limits, Rejected, parse_event
from operators.identity import anonymous_key
from operators.user import (
    BehaviourUpdate,
    Forget,
    MergeExport,
    MergeIn,
    ProfileUpdate,
    Retire,
    RfmDelta,
    Unsuppress,
)

__all__ = ["Sinks", "build_flow", "get_flow", "parse_batch"]

FLOW_ID = "liveprofile"
POPULATION_KEY = "rfm"

Routed = tuple[str, str, Any]  # ("i" identity | "u" user, key, item)


def parse_batch(limits: Limits, items: list[SourceItem]) -> list[Routed | DeadLetter]:
    """Parse buffer entries into routed items, or dead letters with their position."""
    out: list[Routed | DeadLetter] = []
    append = out.append
    observe = CLOCK.observe
    n_valid = 0
    for shard, entry_id, raw in items:
        if raw.startswith(MERGE_PREFIX):
            to, mid, frm, ts, state = decode_merge(raw)
            append(("u", to, MergeIn(mid, frm, ts, state)))
            continue
        if raw.startswith(CONTROL_PREFIX):
            ctl = orjson.loads(raw)
            uid = ctl["userId"]
            append(("u", uid, Forget(uid) if ctl["type"] == "_forget" else Unsuppress(uid)))
            continue
        res = parse_event(raw, limits)
        if type(res) is Event:
            n_valid += 1
            observe(res.ts if res.ts < res.received_at else res.received_at)
            akey = anonymous_key(res)
            append(("u", res.uid, res) if akey is None else ("i", akey, res))
        else:
            a, _, b = entry_id.partition(b"-")
            assert isinstance(res, Rejected)
            append(DeadLetter(res, f"events:{shard}", (int(a), int(b or 0))))
    if n_valid:
        metrics.EVENTS_VALID.inc(n_valid)
    return out


class Sinks:
    """The outputs of the flow (tests pass testing sinks)."""

    def __init__(self, profile: Sink, patch: Sink, edges: Sink, merge: Sink, dead_letter: Sink) -> None:
        self.profile = profile
        self.patch = patch
        self.edges = edges
        self.merge = merge
        self.dead_letter = dead_letter


def _is(*types: type) -> Any:
    return lambda kv: type(kv[1]) in types


def build_flow(settings: Settings, source: Source[SourceItem], sinks: Sinks) -> Dataflow:
    """Assemble the dataflow from its I/O parts."""
    limits = settings.limits
    ucfg = settings.user
    mcfg = settings.models
    n_shards = settings.shards
    flow = Dataflow(FLOW_ID)
    raw = op.input("inp", flow, source)
    parsed = op.flat_map_batch("parse", raw, lambda items: parse_batch(limits, items))
    valid = op.branch("valid", parsed, lambda x: type(x) is tuple)
    op.output("dead_letter", valid.falses, sinks.dead_letter)

    if not settings.intelligence:
        core_in = op.filter_map("core_in", valid.trues, lambda x: (x[2].uid, (x[2].uid, x[2])) if type(x[2]) is Event else None)
        profiles = op.stateful_batch("core", core_in, lambda resume: CoreLogic(ucfg, resume))
        op.output("profile_out", profiles, sinks.profile)
        return flow

    stage = op.branch("stage", valid.trues, lambda x: x[0] == "i")
    to_identity: Stream[tuple[str, Event]] = op.map("to_identity", stage.trues, lambda x: (x[1], x[2]))
    linked = op.stateful_batch("identity", to_identity, IdentityLogic)
    rerouted = op.map("rerouted", linked, lambda kv: (kv[1][0], kv[1]))
    direct = op.map("direct", stage.falses, lambda x: (x[1], (x[1], x[2])))
    to_user = op.merge("to_user", rerouted, direct)
    recheck = settings.timer_recheck_s
    outs = op.stateful_batch("user", to_user, lambda resume: UserLogic(ucfg, resume, recheck))

    is_profile = op.branch("is_profile", outs, _is(ProfileUpdate, Retire))
    op.output("profile_out", is_profile.trues, sinks.profile)
    is_behaviour = op.branch("is_behaviour", is_profile.falses, _is(BehaviourUpdate))
    to_models = op.map("to_models", is_behaviour.trues, lambda kv: (model_shard(kv[0], n_shards), kv[1]))
    scored = op.stateful_batch("models", to_models, lambda resume: ModelsLogic(mcfg, n_shards, resume))
    patches: Stream[ModelOut] = op.map("model_out", scored, lambda kv: kv[1])
    op.output("patch_out", patches, sinks.patch)
    is_rfm = op.branch("is_rfm", is_behaviour.falses, _is(RfmDelta))
    to_pop = op.map("to_population", is_rfm.trues, lambda kv: (POPULATION_KEY, kv[1]))
    edges: Stream[EdgesOut] = op.map("edges", op.stateful_batch("population", to_pop, PopulationLogic), lambda kv: kv[1])
    op.output("edges_out", edges, sinks.edges)
    merges: Stream[MergeExport] = op.filter_map("merges", is_rfm.falses, lambda kv: kv[1] if type(kv[1]) is MergeExport else None)
    op.output("merge_out", merges, sinks.merge)
    return flow


def tune_gc() -> None:
    """Collect young garbage less often: the process holds millions of long-lived state
    objects, and CPython's default thresholds (700, 10, 10) would re-scan them constantly.
    Measured: ~25% of parse time went to the collector with the defaults."""
    gc.set_threshold(100_000, 50, 100)


def redis_sinks(s: Settings) -> Sinks:
    """The production sinks for settings ``s`` (the key layout says whether Redis is a cluster)."""
    keys = Keys.of(s)
    url = s.redis_url
    return Sinks(
        profile=RedisProfileSink(url, keys, s.changes_maxlen),
        patch=RedisPatchSink(url, keys, s.changes_maxlen),
        edges=RfmEdgesSink(url, keys, s.changes_maxlen),
        merge=BufferMergeSink(functools.partial(raw_writer, s), s.shards),
        dead_letter=RedisDeadLetterSink(url, keys),
    )


def recovery_enabled(argv: list[str] | None = None, env: dict[str, str] | None = None) -> bool:
    """Whether this process runs with Bytewax recovery (``-r DIR`` or its environment
    variable): only then is it safe to trim the buffer.

    >>> recovery_enabled(["x", "-r", "/rec"], {}), recovery_enabled(["x"], {})
    (True, False)
    """
    argv = sys.argv if argv is None else argv
    env = dict(os.environ) if env is None else env
    return any(a in ("-r", "--recovery-directory") or a.startswith("--recovery-directory=") for a in argv) or bool(
        env.get("BYTEWAX_RECOVERY_DIRECTORY")
    )


def get_flow(stop_at_end: bool = False) -> Dataflow:
    """The production flow, configured from ``LIVEPROFILE_*`` (see docs/configuration.md)."""
    tune_gc()
    s = Settings.from_env()
    keys = Keys.of(s)
    trim = s.buffer_retain_ms if s.buffer_retain_ms is not None and recovery_enabled() else None
    if s.buffer_retain_ms is not None and trim is None:
        logging.getLogger(__name__).info("recovery is off: the buffer is the log and is not trimmed")
    source: Source[SourceItem]
    if s.buffer == "kafka":
        from dataflows.kafka_source import KafkaBufferSource

        source = KafkaBufferSource(s.kafka_brokers, s.kafka_topic, s.redis_url, keys.buffer_progress, s.read_batch, stop_at_end,
                                   cluster=s.redis_cluster)  # fmt: skip
    else:
        source = RedisStreamSource(
            s.redis_url,
            [keys.events(i) for i in range(s.shards)],
            count=s.read_batch,
            idle=timedelta(seconds=s.poll_interval_s),
            stop_at_end=stop_at_end,
            progress_key=keys.buffer_progress,
            trim_retain_ms=trim,
            cluster=s.redis_cluster,
        )
    return build_flow(s, source, redis_sinks(s))


flow = get_flow()
