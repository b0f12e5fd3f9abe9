"""The flow's wiring, importable without building the production flow.

:func:`build_flow` takes its I/O parts (tests pass ``bytewax.testing`` sources and sinks) and
its :class:`~dataflows.clock.StreamClock`; :func:`redis_sinks` and :func:`buffer_source` are the
production parts for a :class:`~liveprofile.settings.Settings`. The shape of the flow is drawn
in :mod:`dataflows.profiles`.

Step ids are part of the recovery state (guide §6.4): renaming one orphans its state. Treat
them as a schema.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.outputs import Sink

from dataflows.clock import StreamClock
from dataflows.logic import (
    CatalogueLogic,
    CoreLogic,
    GraphLogic,
    IdentityLogic,
    ModelsLogic,
    PopulationLogic,
    UserLogic,
    model_shard,
)
from dataflows.outputs import DeadLetter, EdgesOut, ModelOut
from dataflows.parse import parse_batch
from dataflows.sinks import (
    BufferMergeSink,
    RedisAccountSink,
    RedisCatalogueSink,
    RedisDeadLetterSink,
    RedisPatchSink,
    RedisProfileSink,
    RfmEdgesSink,
)
from dataflows.sinks.deferred import Channel
from dataflows.sinks.overlap import Lane, OverlappedSink
from dataflows.sources.streams import RedisStreamSource, SourceItem
from liveprofile.buffer.writers import raw_writer
from liveprofile.settings import DEFINITIONS_NEED_INTELLIGENCE, ConfigError, Settings
from liveprofile.store.keys import Keys
from operators.catalogue import keyed_sightings
from operators.events import Event, Rejected
from operators.timeutil import iso
from operators.user import (
    BehaviourUpdate,
    Forward,
    MergeExport,
    ProfileUpdate,
    Refused,
    Retire,
    RfmDelta,
)

__all__ = ["Sinks", "build_flow", "redis_sinks", "buffer_source", "output", "FLOW_ID"]

FLOW_ID = "liveprofile"
POPULATION_KEY = "rfm"


class Sinks:
    """The outputs of the flow (tests pass testing sinks); ``catalogue`` ``None``: the flow builds
    no catalogue (:mod:`operators.catalogue`)."""

    def __init__(self, profile: Sink, patch: Sink, edges: Sink, merge: Sink, dead_letter: Sink,
                 catalogue: Sink | None = None, account: Sink | None = None) -> None:  # fmt: skip
        self.profile = profile
        self.patch = patch
        self.edges = edges
        self.merge = merge
        self.dead_letter = dead_letter
        self.catalogue = catalogue
        self.account = account  # group calls' account traits and members (None: not written)
        #: what the source calls at every poll: the deferred sinks' :meth:`Channel.collect` (or None)
        self.on_poll: Callable[[], None] | None = None


def _is(*types: type) -> Any:
    return lambda kv: type(kv[1]) in types


def _keyed(x: Any) -> tuple[str, Any]:
    return ("", x)


def output(step_id: str, up: Stream[Any], sink: Sink[Any]) -> None:
    """``op.output``; an :class:`~dataflows.sinks.overlap.OverlappedSink` (a partitioned sink)
    gets its items as ``("", item)`` (step ``{step_id}_keyed``), so it writes what the plain
    sink would."""
    if isinstance(sink, OverlappedSink):
        up = op.map(f"{step_id}_keyed", up, _keyed)
    op.output(step_id, up, sink)


def build_flow(settings: Settings, source: Source[SourceItem], sinks: Sinks, clock: StreamClock) -> Dataflow:
    """Assemble the dataflow from its I/O parts and its stream clock (the one the source shares
    progress through; every stateful step reads time from it)."""
    limits = settings.limits
    ucfg = settings.user
    mcfg = settings.models
    n_shards = settings.shards
    flow = Dataflow(FLOW_ID)
    raw = op.input("inp", flow, source)
    parsed = op.flat_map_batch("parse", raw, lambda items: parse_batch(limits, clock, items))
    valid = op.branch("valid", parsed, lambda x: type(x) is tuple)
    output("dead_letter", valid.falses, sinks.dead_letter)
    if sinks.catalogue is not None:  # products seen in the stream, keyed by product id
        seen = op.flat_map_batch("catalogue_in", valid.trues, keyed_sightings)  # one compiled call per batch
        output("catalogue_out", op.map("catalogue_writes", op.stateful_batch("catalogue", seen, CatalogueLogic), lambda kv: kv[1]), sinks.catalogue)
    if sinks.account is not None:
        groups = op.filter_map("groups", valid.trues, lambda x: x[2] if type(x[2]) is Event and x[2].group_id is not None and x[0] != "g" else None)
        output("account_out", groups, sinks.account)

    if not settings.intelligence:
        if ucfg.definitions is not None:  # Settings.from_env refuses this too; a hand-built Settings must not slip by
            raise ConfigError(DEFINITIONS_NEED_INTELLIGENCE)
        core_in = op.filter_map("core_in", valid.trues, lambda x: (x[2].uid, (x[2].uid, x[2])) if type(x[2]) is Event else None)
        profiles = op.stateful_batch("core", core_in, lambda resume: CoreLogic(ucfg, resume))
        output("profile_out", profiles, sinks.profile)
        return flow

    stage = op.branch("stage", valid.trues, lambda x: x[0] == "i")
    to_identity: Stream[tuple[str, Event]] = op.map("to_identity", stage.trues, lambda x: (x[1], x[2]))
    linked = op.stateful_batch("identity", to_identity, lambda resume: IdentityLogic(ucfg.dedupe, resume))
    rerouted = op.map("rerouted", linked, lambda kv: (kv[1][0], kv[1]))
    is_graph = op.branch("is_graph", stage.falses, lambda x: x[0] == "g")
    to_graph = op.map("to_graph", is_graph.trues, lambda x: (x[1], x[2]))
    decided = op.stateful_batch("merge_graph", to_graph, GraphLogic)
    approved = op.branch("approved", decided, lambda kv: type(kv[1]) is tuple)
    absorbs = op.map("absorbs", approved.trues, lambda kv: (kv[1][0], kv[1]))
    output("cycle_out", op.map("cycles", approved.falses, lambda kv: refused_dead_letter(kv[1])), sinks.dead_letter)
    direct = op.map("direct", is_graph.falses, lambda x: (x[1], (x[1], x[2])))
    to_user = op.merge("to_user", rerouted, absorbs, direct)
    recheck = settings.timer_recheck_s
    idle = settings.state_idle_s
    outs = op.stateful_batch("user", to_user, lambda resume: UserLogic(ucfg, clock, resume, recheck, idle))

    is_profile = op.branch("is_profile", outs, _is(ProfileUpdate, Retire))
    output("profile_out", is_profile.trues, sinks.profile)
    is_behaviour = op.branch("is_behaviour", is_profile.falses, _is(BehaviourUpdate))
    to_models = op.map("to_models", is_behaviour.trues, lambda kv: (model_shard(kv[0], n_shards), kv[1]))
    scored = op.stateful_batch("models", to_models, lambda resume: ModelsLogic(mcfg, n_shards, resume))
    patches: Stream[ModelOut] = op.map("model_out", scored, lambda kv: kv[1])
    output("patch_out", patches, sinks.patch)
    is_rfm = op.branch("is_rfm", is_behaviour.falses, _is(RfmDelta))
    to_pop = op.map("to_population", is_rfm.trues, lambda kv: (POPULATION_KEY, kv[1]))
    edges: Stream[EdgesOut] = op.map("edges", op.stateful_batch("population", to_pop, lambda resume: PopulationLogic(clock, resume)), lambda kv: kv[1])
    output("edges_out", edges, sinks.edges)
    merges: Stream[MergeExport | Forward] = op.filter_map("merges", is_rfm.falses, lambda kv: kv[1] if type(kv[1]) in (MergeExport, Forward) else None)
    output("merge_out", merges, sinks.merge)
    refused = op.filter_map("refused", is_rfm.falses, lambda kv: refused_dead_letter(kv[1]) if type(kv[1]) is Refused else None)
    output("refused_out", refused, sinks.dead_letter)
    return flow


def refused_dead_letter(r: Refused) -> DeadLetter:
    """The dead letter of an alias the user step refused: source ``merge:{uid}``, position its ``seq``
    (a replay after recovery refuses at the same ``seq``: written once)."""
    ev = r.event
    raw = orjson.dumps({"type": ev.type, "messageId": ev.message_id, "userId": ev.user_id, "previousId": ev.previous_id,
                        "anonymousId": ev.anonymous_id, "timestamp": iso(ev.ts), "receivedAt": iso(ev.received_at)})  # fmt: skip
    return DeadLetter(Rejected(r.reason, r.message, raw, ev.received_at, ev.message_id), f"merge:{r.uid}", (r.seq, 0))


def redis_sinks(s: Settings, overlap: str = "off") -> Sinks:
    """The production sinks for settings ``s`` (the key layout says whether Redis is a cluster).

    ``overlap`` (only for a flow run by one worker; ``LIVEPROFILE_OVERLAP_IO``): ``"replies"``,
    the profile, patch and catalogue sinks send their batches over one
    :class:`~dataflows.sinks.deferred.Channel` and read the replies later, the RFM edges write
    after those replies (:mod:`dataflows.sinks.deferred`); ``"threads"``, every sink but the
    merges writes from one shared :class:`~dataflows.sinks.overlap.Lane` while the worker
    computes (:mod:`dataflows.sinks.overlap`). Either way each epoch is committed only after its
    writes are done. With ``"replies"`` the returned sinks' ``on_poll`` is the channel's
    :meth:`~dataflows.sinks.deferred.Channel.collect`, for the source to call at every poll."""
    keys = Keys.of(s)
    url = s.redis_url
    sinks: dict[str, Any] = {
        "profile": RedisProfileSink(url, keys, s.changes_maxlen),
        "patch": RedisPatchSink(url, keys, s.changes_maxlen),
        "edges": RfmEdgesSink(url, keys, s.changes_maxlen),
        "merge": BufferMergeSink(functools.partial(raw_writer, s), s.shards),
        "dead_letter": RedisDeadLetterSink(url, keys, s.dead_letter_maxlen),
        "catalogue": RedisCatalogueSink(url, keys, s.catalogue_top_max),
        "account": RedisAccountSink(url, keys),
    }
    if overlap == "replies" and not keys.cluster:
        # the dead letters, accounts and merges stay plain (rare; nothing orders them after the
        # profile writes, and waiting for the channel's replies before each would undo the overlap)
        channel = Channel(url)
        for name in ("profile", "patch", "catalogue", "edges"):
            sinks[name] = OverlappedSink(sinks[name], channel)
        out = Sinks(**sinks)
        out.on_poll = channel.collect
        return out
    if overlap == "threads":
        # the merges stay synchronous: the source reads them back from the buffer, and a
        # stop-at-end run must see them before it finds a shard drained (they are rare)
        lane = Lane()
        sinks = {name: sink if name == "merge" else OverlappedSink(sink, lane) for name, sink in sinks.items()}
    return Sinks(**sinks)


def buffer_source(s: Settings, clock: StreamClock, stop_at_end: bool = False, trim_retain_ms: int | None = None,
                  read_ahead: bool = False, send_ahead: bool = False, on_poll: Callable[[], None] | None = None) -> Source[SourceItem]:  # fmt: skip
    """The source reading the configured buffer (``LIVEPROFILE_BUFFER``), sharing progress through
    ``clock``; ``read_ahead``: Redis shards read their next page while the flow computes (a
    thread each); ``send_ahead``: they send its read at once and take the reply at the next poll;
    ``on_poll``: called at every poll of a Redis shard (the deferred sinks' :meth:`Channel.collect`)."""
    keys = Keys.of(s)
    if s.buffer == "kafka":
        from dataflows.sources.kafka import KafkaBufferSource

        return KafkaBufferSource(s.kafka_brokers, s.kafka_topic, s.redis_url, keys.buffer_progress, s.read_batch, stop_at_end,
                                 cluster=s.redis_cluster, clock=clock)  # fmt: skip
    return RedisStreamSource(
        s.redis_url,
        [keys.events(i) for i in range(s.shards)],
        count=s.read_batch,
        idle=timedelta(seconds=s.poll_interval_s),
        stop_at_end=stop_at_end,
        progress_key=keys.buffer_progress,
        trim_retain_ms=trim_retain_ms,
        cluster=s.redis_cluster,
        clock=clock,
        read_ahead=read_ahead,
        send_ahead=send_ahead,
        on_poll=on_poll,
    )
