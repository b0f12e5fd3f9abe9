"""Stateful adapters: the operators' step functions inside Bytewax.

Each class wraps pure functions from :mod:`operators` and adds only engine
concerns: which key it runs under, timers (``notify_at``), and snapshots
(always ``bytes`` from :func:`operators.snapshot.dump`: versioned, immutable so Bytewax needs
no deep copy, and far cheaper than ``copy.deepcopy``; guide §2.3, §12.5). Resumed state goes
through :func:`operators.snapshot.load`, which migrates older layouts.

* :class:`IdentityLogic` — keyed by anonymous id; state: :class:`operators.identity.AnonState`,
  the linked user id and the messageIds of the anonymous-only events routed (so a redelivery
  after the id was re-identified counts nowhere: exactly once); discarded once both are empty.
* :class:`GraphLogic` — one key (:data:`operators.identity.GRAPH_KEY`); state: the
  :class:`operators.identity.MergeGraph` of known users merged away (aliases of known users only).
* :class:`UserLogic` — keyed by canonical user id (anonymous profiles: ``anon_uid``); state: :class:`operators.user.UserState`;
  timers for session end, cart abandonment and computed-trait window exits in stream time.
* :class:`ModelsLogic` — keyed by model shard; state: :class:`operators.models.ShardModels`.
* :class:`PopulationLogic` — one key; state: the RFM :class:`operators.rfm.Population`;
  emits edges when they change, and refresh ticks for a while after.
* :class:`CatalogueLogic` — keyed by product id; state: :class:`operators.catalogue.ProductState`;
  emits the product's absolute catalogue write once per batch that changed it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from dataflows import metrics
from dataflows.clock import StreamClock
from dataflows.outputs import EdgesOut, ModelOut
from operators import snapshot
from operators.catalogue import CatalogueOut, ProductState, Sighting, apply, output
from operators.dedupe import DedupeConfig
from operators.events import Event
from operators.identity import Absorb, AnonState, MergeGraph, decide, route_once
from operators.models import ModelConfig, ShardModels, judge, model_fields
from operators.profile import ProfileState, to_fields
from operators.rfm import Population, RfmEdges
from operators.routing import shard_of
from operators.user import (
    BehaviourUpdate,
    Merged,
    MergeExport,
    ProfileUpdate,
    RfmDelta,
    UserConfig,
    UserState,
    next_deadline,
    on_timer,
    redeploy,
    redeployed,
    step,
)

__all__ = ["timer_wait", "IdentityLogic", "GraphLogic", "UserLogic", "CoreLogic", "ModelsLogic", "PopulationLogic", "CatalogueLogic", "model_shard"]


def model_shard(uid: str, n: int) -> str:
    """The models key of a user: one model set per shard, never per user."""
    return f"m{shard_of(uid, n)}"

_RETAIN = StatefulBatchLogic.RETAIN
_DISCARD = StatefulBatchLogic.DISCARD
_RESIDENT = metrics.USER_STATES.labels("resident")
_PACKED = metrics.USER_STATES.labels("packed")
_MAX_TIMER_WAIT = 30.0  # s: re-check event-time deadlines at least this often (the clock may jump)


def timer_wait(clock: StreamClock, deadline_ms: int, recheck_s: float) -> float:
    """Wall seconds until a user's timer should next look at ``deadline_ms`` (event time).

    With no new event the stream clock reaches it in ``seconds_until``; events of other users can
    make it jump there sooner, so the timer re-checks every ``recheck_s``. But the stream clock
    never passes the wall clock (an event counts at most at its receipt time, and without events it
    moves with wall time), so a deadline still ahead of the wall cannot be reached before the wall
    gets there: the timer sleeps until then instead of re-checking. On live traffic a deadline days
    away (a computed trait's window exit) costs one or two wake-ups, not one per ``recheck_s``;
    while catching up on a backlog (deadlines behind the wall) it re-checks as before.

    >>> c = StreamClock(lambda: 1000.0); c.observe(900_000)  # the stream 100 s behind the wall
    >>> timer_wait(c, 900_000 + 86_400_000, 30.0)  # a day ahead of the stream: sleep until the wall is there
    86300.0
    >>> timer_wait(c, 960_000, 30.0), timer_wait(c, 920_000, 30.0), timer_wait(c, 800_000, 30.0)  # behind the wall
    (30.0, 20.0, 0.0)
    """
    stream_s = max(clock.seconds_until(deadline_ms), 0.0)
    wall_s = deadline_ms / 1000 - clock.wall().timestamp()
    return min(stream_s, max(wall_s, recheck_s))


class IdentityLogic(StatefulBatchLogic[Event, tuple[str, Any], bytes]):
    """Route by the anonymous id's link, each anonymous-only event once (see
    :func:`operators.identity.route_once`); duplicates count in ``EVENTS_DUPLICATE``."""

    __slots__ = ("_cfg", "state")

    def __init__(self, cfg: DedupeConfig, resume: bytes | str | None) -> None:
        self._cfg = cfg
        # a bare ``str`` is the snapshot of the layout before versioning (the linked id alone)
        self.state: AnonState | None = (
            None if resume is None else AnonState(resume) if isinstance(resume, str) else snapshot.load(resume)
        )

    def on_batch(self, values: list[Event]) -> tuple[list[tuple[str, Any]], bool]:
        out: list[tuple[str, Any]] = []
        st, cfg = self.state, self._cfg
        dups = 0
        for ev in values:
            st, items, dup = route_once(cfg, st, ev)
            out.extend(items)
            dups += dup
        if dups:
            metrics.EVENTS_DUPLICATE.inc(dups)
        self.state = st
        return out, (_RETAIN if st is not None else _DISCARD)

    def snapshot(self) -> bytes:
        assert self.state is not None
        return snapshot.dump(self.state)


class GraphLogic(StatefulBatchLogic[Absorb, Any, bytes]):
    """The merge graph (see :func:`operators.identity.decide`): Absorbs on to the user step, refusals out."""

    def __init__(self, resume: bytes | None) -> None:
        self.graph: MergeGraph | None = snapshot.load(resume) if resume is not None else None

    def on_batch(self, values: list[Absorb]) -> tuple[list[Any], bool]:
        out: list[Any] = []
        g = self.graph
        for ab in values:
            g, send, refused = decide(g, ab)
            out.extend(send)
            out.extend(refused)
        self.graph = g
        return out, (_RETAIN if g is not None else _DISCARD)

    def snapshot(self) -> bytes:
        return snapshot.dump(self.graph)


class UserLogic(StatefulBatchLogic[tuple[str, Any], Any, bytes]):
    """Per-user state (see :mod:`operators.user`).

    **Idle users are packed** (``idle_s``, ``LIVEPROFILE_STATE_IDLE``; ``None``: never): once a user
    has had no event for ``idle_s`` of wall time and no timer is due, the state is dropped and kept
    only as its compressed snapshot (:func:`operators.snapshot.compressed`: about a fifth of the live
    objects' memory), with the next event-time deadline it had. The next event, or that deadline
    coming due, unpacks it first, so every output is the one the unpacked state gives; a packed
    user's :meth:`snapshot` is those bytes (no pickling). A resumed key starts packed (Bytewax
    builds every resumed key at start), unless it needs a re-render under changed definitions.
    The process's memory grows with the users active within ``idle_s``; ``USER_STATES`` counts
    both forms.
    """

    __slots__ = ("_cfg", "_clock", "_recheck", "_idle", "state", "_packed", "_due", "_touched", "_redeploy")

    def __init__(self, cfg: UserConfig, clock: StreamClock, resume: bytes | None, recheck_s: float = _MAX_TIMER_WAIT,
                 idle_s: float | None = None) -> None:  # fmt: skip
        self._cfg = cfg
        self._clock = clock
        self._recheck = recheck_s
        self._idle = idle_s
        #: the packed state (compressed snapshot bytes) while ``state`` is ``None``
        self._packed: bytes | None = None
        #: a packed state's next event-time deadline (:func:`operators.user.next_deadline`)
        self._due: int | None = None
        #: wall seconds of the last event
        self._touched = 0.0
        self.state: UserState | Merged | None = snapshot.load(resume) if resume is not None else None
        # resumed under another definitions file: re-render once, with no event of the user's
        # (Bytewax builds every resumed key at start, so every profile is brought up to date)
        self._redeploy = resume is not None and redeployed(cfg, self.state)
        if self.state is not None:
            _RESIDENT.inc()
            if idle_s is not None and not self._redeploy:
                assert resume is not None
                self._pack(next_deadline(cfg, self.state), resume if snapshot.version_of(resume) == snapshot.VERSION else None)

    def _idle_now(self) -> bool:
        """Packing is on and the user has had no event for the idle window."""
        return self._idle is not None and self._clock.wall_s() >= self._touched + self._idle

    def _pack(self, due: int | None, raw: bytes | None = None) -> None:
        """Keep the state only as its compressed snapshot (``raw``: its snapshot bytes, if known)
        and ``due``, its :func:`~operators.user.next_deadline`."""
        st = self.state
        assert st is not None
        self._due = due
        self._packed = snapshot.compressed(raw if raw is not None else snapshot.dump(st))
        self.state = None
        _RESIDENT.dec()
        _PACKED.inc()

    def _unpack(self) -> UserState | Merged:
        assert self._packed is not None
        st: UserState | Merged = snapshot.load(self._packed)
        self.state, self._packed, self._due = st, None, None
        _PACKED.dec()
        _RESIDENT.inc()
        return st

    def on_batch(self, values: list[tuple[str, Any]]) -> tuple[list[Any], bool]:
        uid = values[0][0]
        had = self.state is not None
        if not had and self._packed is not None:
            self._unpack()
            had = True
        if self._idle is not None:
            self._touched = self._clock.wall_s()
        # rendered at the user's own newest event time, not the stream clock: a window exit between
        # the two is the timer's (armed at once, it fires with event_ms = the exit), so every
        # transition's event_at is a time at which it holds
        self.state, outs, dups = step(self._cfg, self.state, uid, [v for _, v in values])
        if self.state is None:
            if had:
                _RESIDENT.dec()
        elif not had:
            _RESIDENT.inc()
        if self._cfg.definitions is not None and self.state is not None:
            # the window exits the stream clock already passed, in the same output (the sink writes
            # the user once): on a backlog the clock runs ahead of each user's events, and a timer
            # round trip per user per batch would cost a second profile write
            outs += on_timer(self._cfg, self.state, self._clock.now())
        if dups:
            metrics.EVENTS_DUPLICATE.inc(dups)
        for o in outs:
            if type(o) is ProfileUpdate and o.event is not None:
                metrics.CARTS_ABANDONED.inc()
            elif type(o) is MergeExport:
                metrics.MERGES.inc()
            elif type(o) is BehaviourUpdate:
                for c in o.closed:
                    metrics.SESSIONS_CLOSED.labels("1" if c.converted else "0").inc()
        return outs, (_RETAIN if self.state is not None else _DISCARD)

    def _wait(self, deadline_ms: int) -> datetime:
        clock = self._clock
        return clock.wall() + timedelta(seconds=timer_wait(clock, deadline_ms, self._recheck))

    def notify_at(self) -> datetime | None:
        st = self.state
        if st is None:
            return None if self._due is None else self._wait(self._due)
        if self._redeploy:
            return self._clock.wall()
        d = next_deadline(self._cfg, st)
        at = None if d is None else self._wait(d)
        if self._idle is not None:
            pack_at = datetime.fromtimestamp(self._touched + self._idle, UTC)
            if at is None or pack_at < at:
                return pack_at
        return at

    def _redeployed(self, clock: int) -> list[Any]:
        if not self._redeploy:
            return []
        self._redeploy = False
        assert self.state is not None
        return redeploy(self._cfg, self.state, clock)

    def on_notify(self) -> tuple[list[Any], bool]:
        now = self._clock.now()
        st = self.state
        if st is None:
            if self._packed is None:
                return [], _DISCARD
            if self._due is None or now < self._due:
                return [], _RETAIN  # a re-check before the deadline: stays packed
            st = self._unpack()
        elif not self._redeploy and self._idle_now():
            d = next_deadline(self._cfg, st)
            if d is None or now < d:  # idle, and no timer is due
                self._pack(d)
                return [], _RETAIN
        outs = self._redeployed(now) + on_timer(self._cfg, st, now)
        for o in outs:
            if type(o) is ProfileUpdate and o.event is not None:
                metrics.CARTS_ABANDONED.inc()
        if self._idle_now():
            self._pack(next_deadline(self._cfg, st))  # a packed (or idle) user's timer fired: packed again
        return outs, _RETAIN

    def on_eof(self) -> tuple[list[Any], bool]:
        """End of a finite input: fire what the newest event time already decided
        (not wall-clock extrapolation, so a finite replay ends the same every time)."""
        newest = self._clock.newest()
        if self.state is None:
            if self._packed is None:
                return [], _DISCARD
            if self._due is None or newest < self._due:
                return [], _RETAIN  # nothing is due: stays packed
            self._unpack()
        assert self.state is not None
        return self._redeployed(newest) + on_timer(self._cfg, self.state, newest), _RETAIN

    def snapshot(self) -> bytes:
        if self.state is None and self._packed is not None:
            return self._packed
        return snapshot.dump(self.state)


class CoreLogic(StatefulBatchLogic[tuple[str, Any], ProfileUpdate, bytes]):
    """The core path only (``LIVEPROFILE_INTELLIGENCE=off``): dedupe, counters, cart, email."""

    __slots__ = ("_cfg", "state")

    def __init__(self, cfg: UserConfig, resume: bytes | None) -> None:
        self._cfg = cfg
        self.state: ProfileState | None = snapshot.load(resume) if resume is not None else None

    def on_batch(self, values: list[tuple[str, Any]]) -> tuple[list[ProfileUpdate], bool]:
        st = self.state
        if st is None:
            st = self.state = ProfileState(values[0][0])
        dedupe, abandon, max_traits = self._cfg.dedupe, self._cfg.abandon_ms, self._cfg.max_traits
        applied = 0
        for _, ev in values:
            if type(ev) is Event and st.apply(ev, dedupe, abandon, max_traits):
                applied += 1
        if applied < len(values):
            metrics.EVENTS_DUPLICATE.inc(len(values) - applied)
        if not applied:
            return [], _RETAIN
        return [ProfileUpdate(st.uid, st.seq, to_fields(st), st.last_received, None)], _RETAIN

    def snapshot(self) -> bytes:
        return snapshot.dump(self.state)


class ModelsLogic(StatefulBatchLogic[BehaviourUpdate, ModelOut, bytes]):
    """Anomaly scoring and purchase propensity for the users of one shard."""

    def __init__(self, cfg: ModelConfig, n_shards: int, resume: bytes | None) -> None:
        self._cfg = cfg
        self._n = n_shards
        self.models: ShardModels = snapshot.load(resume) if resume is not None else ShardModels.new(cfg)
        self._auc: Any = None

    def on_batch(self, values: list[BehaviourUpdate]) -> tuple[list[ModelOut], bool]:
        m = self.models
        thr = self._cfg.threshold
        out = []
        for u in values:
            if not u.score:  # a short session closed: the propensity model learns, nothing to score
                for c in u.closed:
                    m.learn_session(c.features, c.converted, learn=not u.rule_suspect)
                continue
            raw = m.score_behaviour(u.features, learn=not u.rule_suspect)
            metrics.ANOMALY_SCORES.observe(raw)
            score, flagged = judge(raw, u.rule_suspect, thr)
            if flagged:
                metrics.FLAGGED.inc()
            for c in u.closed:
                m.learn_session(c.features, c.converted, learn=not flagged)
            fields = model_fields(score, flagged, m.propensity(u.session) if u.session is not None else None)
            out.append(ModelOut(u.uid, fields, flagged, score, u.features))
        if m.sessions:
            if self._auc is None:
                self._auc = metrics.PROPENSITY_AUC.labels(model_shard(values[0].uid, self._n))
            self._auc.set(m.auc_value())  # == m.auc.get()
        return out, _RETAIN

    def snapshot(self) -> bytes:
        return snapshot.dump(self.models)


class PopulationLogic(StatefulBatchLogic[RfmDelta, EdgesOut, bytes]):
    """The RFM customer population; edges out when they change, at most once per ``TICK``."""

    REFRESH_FOR = timedelta(minutes=10)
    TICK = timedelta(seconds=2)

    def __init__(self, clock: StreamClock, resume: bytes | None) -> None:
        self._wall = clock.wall  # the emission pace is wall time (stream time may stand still)
        self.pop: Population = snapshot.load(resume) if resume is not None else Population()
        self._edges: RfmEdges | None = None
        self._sent_at = datetime.min.replace(tzinfo=UTC)
        self._dirty = False
        self._changed_at: datetime | None = self._wall()  # rescan once after a (re)start

    def _emit(self, now: datetime) -> list[EdgesOut]:
        self._dirty = False
        self._sent_at = now
        edges = self.pop.edges()
        if edges == self._edges:
            return [EdgesOut(None)]
        self._edges = edges
        self._changed_at = now
        return [EdgesOut(edges)]

    def on_batch(self, values: list[RfmDelta]) -> tuple[list[EdgesOut], bool]:
        for d in values:
            self.pop.apply(d.old, d.new)
        self._dirty = True
        now = self._wall()
        if now - self._sent_at < self.TICK:
            return [], _RETAIN
        return self._emit(now), _RETAIN

    def notify_at(self) -> datetime | None:
        now = self._wall()
        if self._dirty:
            return self._sent_at + self.TICK
        if self._changed_at is None or now - self._changed_at > self.REFRESH_FOR:
            self._changed_at = None
            return None
        return max(self._sent_at + self.TICK, now)

    def on_notify(self) -> tuple[list[EdgesOut], bool]:
        return self._emit(self._wall()), _RETAIN

    def on_eof(self) -> tuple[list[EdgesOut], bool]:
        """End of a finite input: the final edges, and a full rescoring pass."""
        return [EdgesOut(self.pop.edges(), final=True)], _RETAIN

    def snapshot(self) -> bytes:
        return snapshot.dump(self.pop)



class CatalogueLogic(StatefulBatchLogic[Sighting, CatalogueOut, bytes]):
    """One product's catalogue state (see :mod:`operators.catalogue`): its sightings folded in, its
    absolute write out when they changed it. The state and the input position are snapshotted
    together, so a re-read after recovery finds its lines already counted."""

    __slots__ = ("state",)

    def __init__(self, resume: bytes | None) -> None:
        self.state: ProductState | None = snapshot.load(resume) if resume is not None else None

    def on_batch(self, values: list[Sighting]) -> tuple[list[CatalogueOut], bool]:
        self.state, before, changed = apply(self.state, values)
        if not changed:
            return [], _RETAIN
        return [output(values[0].product_id, self.state, before)], _RETAIN

    def snapshot(self) -> bytes:
        return snapshot.dump(self.state)
