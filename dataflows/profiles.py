"""The main dataflow: ``python -m bytewax.run dataflows.profiles:flow``.

Wiring only; the logic lives in :mod:`operators`::

    inp (Redis Streams, one partition per shard)
      -> parse (flat_map_batch: orjson + validate + normalize)
      -> branch valid / rejected ----------------------------> dead_letter (Redis stream)
      -> (keyed by user id in parse) -> profile (stateful_batch, UserLogic)
      -> profile_out (versioned Lua upsert + change feed)

Step ids are part of the recovery state (guide §6.4): renaming one orphans
its state. Treat them as a schema.
"""

from __future__ import annotations

import gc
from datetime import timedelta

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from dataflows import metrics
from dataflows.redis_sinks import DeadLetter, ProfileOut, RedisDeadLetterSink, RedisProfileSink
from dataflows.redis_source import RedisStreamSource, SourceItem
from dataflows.user_logic import UserLogic
from liveprofile.keys import Keys
from liveprofile.settings import Settings
from operators.events import Event, Limits, parse_event

__all__ = ["build_flow", "get_flow", "parse_batch"]

FLOW_ID = "liveprofile"


def parse_batch(limits: Limits, items: list[SourceItem]) -> list[tuple[str, Event] | DeadLetter]:
    """Parse buffer entries into ``(user key, event)`` pairs, or dead letters with their position."""
    out: list[tuple[str, Event] | DeadLetter] = []
    append = out.append
    for shard, entry_id, raw in items:
        res = parse_event(raw, limits)
        if type(res) is Event:
            append((res.uid, res))
        else:
            a, _, b = entry_id.partition(b"-")
            append(DeadLetter(res, f"events:{shard}", (int(a), int(b or 0))))  # type: ignore[arg-type]
    n_valid = len(out) - sum(1 for x in out if type(x) is DeadLetter)
    if n_valid:
        metrics.EVENTS_VALID.inc(n_valid)
    return out


def build_flow(
    settings: Settings,
    source: Source[SourceItem],
    profile_sink: Sink[tuple[str, ProfileOut]],
    dead_letter_sink: Sink[DeadLetter],
) -> Dataflow:
    """Assemble the dataflow from its I/O parts (tests pass testing ones)."""
    limits = settings.limits
    dedupe = settings.dedupe
    flow = Dataflow(FLOW_ID)
    raw = op.input("inp", flow, source)
    parsed = op.flat_map_batch("parse", raw, lambda items: parse_batch(limits, items))
    split = op.branch("valid", parsed, lambda x: type(x) is tuple)
    op.output("dead_letter", split.falses, dead_letter_sink)
    keyed: KeyedStream[Event] = split.trues  # type: ignore[assignment]
    profiles = op.stateful_batch("profile", keyed, lambda resume: UserLogic(dedupe, resume))
    op.output("profile_out", profiles, profile_sink)
    return flow


def tune_gc() -> None:
    """Collect young garbage less often: the process holds millions of long-lived state
    objects, and CPython's default thresholds (700, 10, 10) would re-scan them constantly.
    Measured: ~25% of parse time went to the collector with the defaults."""
    gc.set_threshold(100_000, 50, 100)


def get_flow(stop_at_end: bool = False) -> Dataflow:
    """The production flow, configured from ``LIVEPROFILE_*`` (see README)."""
    tune_gc()
    s = Settings.from_env()
    keys = Keys(s.key_prefix)
    source = RedisStreamSource(
        s.redis_url,
        [keys.events(i) for i in range(s.shards)],
        count=s.read_batch,
        idle=timedelta(seconds=s.poll_interval_s),
        stop_at_end=stop_at_end,
        progress_key=keys.buffer_progress,
    )
    return build_flow(
        s,
        source,
        RedisProfileSink(s.redis_url, keys),
        RedisDeadLetterSink(s.redis_url, keys),
    )


flow = get_flow()
