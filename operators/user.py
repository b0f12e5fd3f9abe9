"""The whole per-user state and its step function.

Contract
--------
``UserState`` bundles the user's :class:`~operators.profile.ProfileState`
(counters, cart, dedupe), :class:`~operators.interest.Interest`,
:class:`~operators.behaviour.Behaviour` (sessions, bot features) and the RFM
values last reported to the population. ``step(cfg, state, uid, items)``
folds a batch of items — events, identity :class:`~operators.identity.Link`s,
:class:`MergeIn`s and :class:`Forget` — and returns the new state (``None`` once the user
merged into another and is retired) plus the outputs:

* :class:`ProfileUpdate` — the rendered profile, at most one per batch;
* :class:`BehaviourUpdate` — the anomaly feature vector and propensity inputs
  for the shard's models (plus sessions closed in the batch);
* :class:`RfmDelta` — the user's move in the customer population;
* :class:`MergeExport` / :class:`Retire` — when an anonymous profile merges
  into a known user (a :class:`~operators.identity.Link`), or a known user into another
  (an :class:`~operators.identity.Absorb` from a trusted ``alias``);
* :class:`Forward` — items that reached a user already merged away, sent on to the survivor;
* :class:`~operators.identity.Refused` — an ``alias`` the step will not honour
  (``untrusted_merge``: a browser key asked to merge a known user).

Which known-user merges happen is decided first, in one place, by
:func:`operators.identity.decide` (the merge graph: no cycles, a user merges away once); the
step here carries an approved :class:`~operators.identity.Absorb` out.

A user merged away keeps a :class:`Merged` stub (``into``, its ``seq``): its later events and
merges are forwarded to ``into`` (so they land on the survivor, deduplicated there by
``messageId``), and its profile stays a tombstone with ``merged_into``. An anonymous profile
that merged is retired (the identity stage sends its later events to the user), but the rest
of the batch it merged in is forwarded, never dropped. A self-alias (``previousId ==
userId``) merges nothing: no profile is wiped, no ``merged_into`` points at itself.

``on_timer(cfg, state, clock)`` is the live-traffic path: sessions and carts
whose event-time deadline the stream clock has passed, and computed-trait window
exits. ``next_deadline`` tells when to call it. ``clock`` is the stream's
event-time clock (ms), always passed in; ``step`` folds a batch by its events' own
times and takes the stream time only as ``now_ms`` (default: the user's newest
event time), the time the computed traits are rendered at.

Computed traits and audiences (``cfg.definitions`` set; SPEC §6, issue 14). Every applied
(non-duplicate) event is observed by the user's :class:`~operators.computed.ComputedState`; a
:class:`MergeIn` merges the other user's state in; the first touch after a definitions change
prunes the traits no longer defined (:meth:`~operators.computed.ComputedState.prune`: a new or
changed trait starts from its deployment). :func:`render` adds ``computed`` (the values at
``max(the user's newest event time, now_ms)``) and ``audiences``
(:func:`operators.audiences.evaluate` over the rendered fields and those values). Windows exit by
themselves: :func:`next_deadline` includes the next bucket exit after the last render, and
:func:`on_timer` re-renders at the latest exit the clock passed, emitting a
:class:`ProfileUpdate` (``event_ms`` = that exit) only when ``computed`` or ``audiences``
changed. A user with only all-time traits arms no timer. With ``cfg.definitions`` ``None``
nothing of this exists: no fields, no timers, the state's ``computed`` stays ``None``.

**An identity merge counts each event once, however the buffer is replayed.** After a restart
from a snapshot the buffer can hold the killed run's :class:`MergeExport` of an anonymous profile
*with* events that the replay, reading the shards in another order, routes to the known user
directly (the identify first), or *without* events the replay routes to the anonymous profile
(the identify later); the re-emitted export has the same ``merge_id``. So an anonymous profile
keeps a :class:`MergeLog`: the items (events, backfill seeds) it applied, the newest
:data:`MERGE_LOG_MIN` at least (at most twice that), with the pickled state before them. The
first copy of a merge the user reads is merged *without* the logged events the user's dedupe
already holds (by ``messageId``): the anonymous state is rebuilt from the state before the log
with every other logged item folded in through the very fold the step applies (profile
counters, cart, sessions and behaviour features, interest, computed traits); with none held
(the usual case) the state merges as exported, with no rebuild. A later copy (its ``merge_id``
already taken) adds the logged events the user lacks, through the same fold. Either copy, read
before or after the events routed directly, so gives the user each event once.

Beyond the bound: an event the user holds that is older than the anonymous profile's log (more
than :data:`MERGE_LOG_MIN` newer items were applied after it) counts twice, as every event did
before the log, and one only a later copy holds, older than its log, is missing; so is a held
event the user's dedupe no longer remembers (its window and cap: counted twice), and a later
copy adds no event older than the dedupe window before the user's newest (it might have been
forgotten). An anonymous state from before snapshot version 8 has no log and merges as exported;
known users merged by an ``alias`` keep no log either. A rebuilt state misses only what timers
did to the anonymous profile between its events (a session closed or a cart marked abandoned by
the stream clock: the next event decides them alike), and its computed traits are folded under
the definitions of the merge.

A :class:`~operators.computed.Seed` (``liveprofile definitions backfill``) folds history into the
user's computed traits (:meth:`~operators.computed.ComputedState.apply_seed`: only events received
before each trait's boundary, each chunk once); when it changed something it is an input item
(``seq`` advances) and the profile is re-rendered (``event_ms``: the newest event time it counted), so
the audiences it moves the user into or out of are change-feed entries like any other. A seed for a
user this flow has never seen, or already taken, writes nothing.
"""

from __future__ import annotations

import pickle
import zlib
from array import array
from dataclasses import dataclass, field, fields
from itertools import accumulate
from operator import attrgetter
from typing import Any

from mypy_extensions import mypyc_attr

from operators.audiences import evaluate
from operators.behaviour import Behaviour, ClosedSession, Session, SessionConfig
from operators.computed import ComputedState, Seed, same_value, trait_paths
from operators.dedupe import DedupeConfig, SeenIds
from operators.definitions import Definitions
from operators.events import Event, Product
from operators.identity import Absorb, Link, Refused, is_anon, public_id
from operators.interest import Interest, InterestConfig, event_weight
from operators.profile import ProfileState, to_fields
from operators.rfm import RfmValues
from operators.snapshot import pack_bit, pack_defaults, packed_index, reset_to_defaults, restore
from operators.timeutil import iso

__all__ = [
    "UserConfig",
    "UserState",
    "MergeIn",
    "MergeLog",
    "MERGE_LOG_MIN",
    "Forget",
    "Unsuppress",
    "ProfileUpdate",
    "BehaviourUpdate",
    "RfmDelta",
    "MergeExport",
    "Retire",
    "Merged",
    "Forward",
    "step",
    "on_timer",
    "next_deadline",
    "redeployed",
    "redeploy",
]


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class UserConfig:
    """Everything the per-user step is configured by."""

    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    interest: InterestConfig = field(default_factory=InterestConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    abandon_ms: int = 3_600_000
    #: most traits a profile holds (``LIVEPROFILE_MAX_TRAITS``; see :mod:`operators.traits`)
    max_traits: int = 100
    #: computed traits and audiences (``LIVEPROFILE_DEFINITIONS``; ``None``: none)
    definitions: Definitions | None = None

    def __post_init__(self) -> None:
        if self.abandon_ms <= 0:
            msg = "cart abandonment window must be positive"
            raise ValueError(msg)


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class MergeIn:
    """An anonymous user's exported state arriving at the known user (via the buffer)."""

    merge_id: str
    from_uid: str
    ts: int
    state: bytes


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Forget:
    """Erase the user's state (GDPR; the profile itself is deleted by ``liveprofile forget``)
    and ignore their events until :class:`Unsuppress`."""

    uid: str


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Unsuppress:
    """Stop ignoring a forgotten user: their next events start a fresh state."""

    uid: str


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    """One profile write: ``seq`` guard, string fields, trigger event; ``last_received_ms``: the
    collector's receipt time of the newest event the write carries (what freshness is measured
    from), ``0`` when no received event caused it (a timer: session close, cart abandonment, a
    window exit; a redeploy); ``event_ms``: the event time that caused it (the batch's newest event, or the window exit a
    timer fired for; the change feed's ``event_at``)."""

    uid: str
    seq: int
    fields: dict[str, str]
    last_received_ms: int
    rfm: RfmValues | None
    event: dict[str, Any] | None = None
    tombstone_for: str | None = None
    event_ms: int | None = None


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class BehaviourUpdate:
    """Input of the shard's models for one user and batch."""

    uid: str
    features: dict[str, float]
    rule_suspect: bool
    session: dict[str, float] | None
    closed: tuple[ClosedSession, ...] = ()
    score: bool = True  # False: only closed sessions for the propensity model, no anomaly scoring


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class RfmDelta:
    """A customer's move in the RFM population (``None``: not a customer)."""

    old: RfmValues | None
    new: RfmValues | None


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class MergeExport:
    """The anonymous state to deliver to ``to_uid`` (through the buffer, exactly once)."""

    from_uid: str
    to_uid: str
    merge_id: str
    ts: int
    state: bytes


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Retire:
    """The anonymous profile ``uid`` merged into ``into``: tombstone it."""

    uid: str
    into: str
    seq: int


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Merged:
    """The state of a known user merged into ``into`` (a stub: everything is forwarded)."""

    into: str
    seq: int


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Forward:
    """Items for ``from_uid``, which merged into ``to_uid``: deliver them there (through the buffer)."""

    from_uid: str
    to_uid: str
    items: tuple[Event | MergeIn, ...]


Output = ProfileUpdate | BehaviourUpdate | RfmDelta | MergeExport | Retire | Forward | Refused


#: an anonymous profile's :class:`MergeLog` holds at least its newest this many applied items
#: (at most twice as many): the replayed events a merge leaves out are among them
MERGE_LOG_MIN = 32


@dataclass(slots=True)
class MergeLog:
    """What an anonymous profile keeps so that its merge can leave out the events the user
    already holds (module docstring): ``items``, the events and seeds it applied since ``base``
    (the pickled state before them, without its log; ``None``: a new state), in order, and
    ``mid``, the pickled state after ``items[:MERGE_LOG_MIN]`` once there are that many. At
    ``2 * MERGE_LOG_MIN`` items ``mid`` becomes ``base`` and the items before it go: so at least
    the newest :data:`MERGE_LOG_MIN` are always there, with one pickle per that many items.
    The events are kept as their field values with only the ``context`` their folds read
    (``userAgent``, and the paths the computed traits read)."""

    #: events as their field values (``Event(*row)``), seeds as they are
    items: list[tuple[Any, ...] | Seed] = field(default_factory=list)
    base: bytes | None = None
    mid: bytes | None = None

    def __getstate__(self) -> tuple[int, bytes]:
        """The pickled state (snapshot version 9): ``(1, zlib of the pickled (columns, seeds, base,
        mid))``: the logged events by field (:func:`_columns`: one visitor's events repeat most of
        their values field by field, so compressed they cost a fraction), the seeds with their
        positions among the items."""
        items = self.items
        rows = [x for x in items if type(x) is tuple]
        seeds = [(i, x) for i, x in enumerate(items) if type(x) is not tuple] if len(rows) < len(items) else []
        raw = pickle.dumps((_columns(rows), seeds, self.base, self.mid), protocol=pickle.HIGHEST_PROTOCOL)
        return 1, zlib.compress(raw, _LOG_LEVEL)

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout (before version 9: the slots)."""
        if type(state) is tuple and type(state[0]) is int:
            cols, seeds, self.base, self.mid = pickle.loads(zlib.decompress(state[1]))
            items: list[tuple[Any, ...] | Seed] = _rows(cols)  # type: ignore[assignment]
            for i, x in seeds:
                items.insert(i, x)
            self.items = items
        else:
            for k, v in reset_to_defaults(self, state).items():
                object.__setattr__(self, k, v)


#: the zlib level of a pickled :class:`MergeLog` (6 is ~2 % smaller and ~30 % slower)
_LOG_LEVEL = 1


def _columns(rows: list[tuple[Any, ...]]) -> tuple[int, list[Any]]:
    """Logged event rows by field, ``(how many, columns)``: ``ts`` as its first value and the
    differences (int64 bytes), ``received_at`` less ``ts`` (int64 bytes), ``products`` as tuples of
    the :class:`~operators.events.Product` fields; :func:`_rows` reverses it exactly. (UUID
    messageIds as their 16 bytes would save ~200 B more per visitor but cost ~75 µs a pickle.)"""
    if not rows:
        return 0, []
    cols: list[Any] = [list(c) for c in zip(*rows, strict=True)]
    ts = cols[_TS]
    try:
        dts = array("q", [ts[0], *(b - a for a, b in zip(ts, ts[1:], strict=False))]).tobytes()
        dra = array("q", [r - t for r, t in zip(cols[_RA], ts, strict=True)]).tobytes()
    except OverflowError:  # times beyond int64 differences: kept as they are
        pass
    else:
        cols[_TS], cols[_RA] = dts, dra
    cols[_PR] = [tuple((p.product_id, p.name, p.category, p.price_cents, p.quantity) for p in ps) if ps else () for ps in cols[_PR]]
    return len(rows), cols


def _rows(packed: tuple[int, list[Any]]) -> list[tuple[Any, ...]]:
    """The rows of :func:`_columns`."""
    n, cols = packed
    if not n:
        return []
    if type(cols[_TS]) is bytes:
        ts = cols[_TS] = list(accumulate(array("q", cols[_TS])))
        cols[_RA] = [r + t for r, t in zip(array("q", cols[_RA]), ts, strict=True)]
    cols[_PR] = [tuple(Product(*p) for p in ps) if ps else () for ps in cols[_PR]]
    return list(zip(*cols, strict=True))


@dataclass(slots=True)
class UserState:
    """All state of one user (picklable)."""

    profile: ProfileState
    interest: Interest = field(default_factory=Interest)
    behaviour: Behaviour = field(default_factory=Behaviour)
    rfm: RfmValues | None = None
    suppressed: bool = False
    # -- snapshot version 6 (append only: older snapshots restore with the defaults) --------
    #: computed traits (``None`` until the first event under definitions)
    computed: ComputedState | None = None
    #: the audiences last rendered (sorted)
    audiences: tuple[str, ...] = ()
    #: the stream time ``computed`` was last rendered at (the timers compare against it)
    computed_at: int = -(2**62)
    #: the :attr:`~operators.definitions.Definitions.fingerprint` ``computed`` and ``audiences``
    #: were last rendered under (``""``: none): another one at start means a re-render (redeploy)
    defs_fp: str = ""
    # -- snapshot version 8 ---------------------------------------------------------------
    #: an anonymous profile's newest applied items, for an idempotent merge (``None``: a known
    #: user, or an anonymous state from before version 8: merged as exported)
    merge_log: MergeLog | None = None

    @classmethod
    def new(cls, uid: str) -> UserState:
        """A new state for ``uid`` (an anonymous profile's with an empty :class:`MergeLog`)."""
        return cls(ProfileState(uid), merge_log=MergeLog() if is_anon(uid) else None)

    def __getstate__(self) -> tuple[Any, ...]:
        """The state :func:`operators.snapshot.pack` gives (snapshot version 9); pickled flat
        (:meth:`__reduce__`)."""
        return _pack_UserState(self)

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout (version 5 had no computed traits)."""
        restore(self, state)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as ``user_state_from_flat(flat_state(self))`` (snapshot version 10): one
        reference to a function instead of one per class of the nested states, which the pickler
        resolves by importing their module each time (about a third of a snapshot's cost)."""
        return (user_state_from_flat, (flat_state(self),))


def _restored(cls: Any, state: Any) -> Any:
    """An object of ``cls`` restored from ``state`` as the unpickler restores it (``__new__``, then
    ``__setstate__``)."""
    obj = cls.__new__(cls)
    obj.__setstate__(state)
    return obj


_U_INTEREST, _U_BEHAVIOUR, _U_RFM = (pack_bit(UserState, n) for n in ("interest", "behaviour", "rfm"))
_P_SEEN = pack_bit(ProfileState, "seen")
_B_SESSION = pack_bit(Behaviour, "session")


def flat_state(st: UserState) -> tuple[Any, ...]:
    """``st``'s packed state with the nested states the pickler would reduce one by one (the
    profile and its seen ids, the interest, the behaviour and its session) replaced, where they
    are, by their own ``__getstate__``, the RFM values by their three numbers (:func:`user_state_from_flat`
    reverses it: the same objects as unpickling them one by one would build)."""
    out = list(st.__getstate__())
    m: int = out[0]
    p = st.profile
    ps = list(p.__getstate__())
    k = packed_index(ps[0], _P_SEEN)
    if k:
        ps[k] = p.seen.__getstate__()
    out[1] = tuple(ps)  # the profile: a required field, always present
    i = packed_index(m, _U_INTEREST)
    if i:
        out[i] = st.interest.__getstate__()
    i = packed_index(m, _U_BEHAVIOUR)
    if i:
        b = st.behaviour
        bs = list(b.__getstate__())
        k = packed_index(bs[0], _B_SESSION)
        if k:
            sess = b.session
            assert sess is not None
            bs[k] = sess.__getstate__()
        out[i] = tuple(bs)
    i = packed_index(m, _U_RFM)
    if i:
        rfm = st.rfm
        assert rfm is not None
        out[i] = (rfm.last_purchase_ms, rfm.frequency, rfm.monetary_cents)
    return tuple(out)


def user_state_from_flat(flat: tuple[Any, ...]) -> UserState:
    """The :class:`UserState` of a :func:`flat_state` (each nested state made by ``__new__`` and
    its ``__setstate__``, innermost first, as the unpickler would)."""
    vals = list(flat)
    m: int = vals[0]
    ps = list(vals[1])
    k = packed_index(ps[0], _P_SEEN)
    if k:
        ps[k] = _restored(SeenIds, ps[k])
    vals[1] = _restored(ProfileState, tuple(ps))
    i = packed_index(m, _U_INTEREST)
    if i:
        vals[i] = _restored(Interest, vals[i])
    i = packed_index(m, _U_BEHAVIOUR)
    if i:
        bs = list(vals[i])
        k = packed_index(bs[0], _B_SESSION)
        if k:
            bs[k] = _restored(Session, bs[k])
        vals[i] = _restored(Behaviour, tuple(bs))
    i = packed_index(m, _U_RFM)
    if i:
        vals[i] = RfmValues(*vals[i])
    st: UserState = _restored(UserState, tuple(vals))
    return st


def _rfm_of(p: ProfileState) -> RfmValues | None:
    if p.purchase_count <= 0:
        return None
    # monetary: net revenue (refunds and cancellations taken off, SPEC 4), never below 0
    return RfmValues(p.last_purchase, p.purchase_count, max(p.net_revenue_cents(), 0))


def render(st: UserState, defs: Definitions | None = None, now_ms: int | None = None) -> dict[str, str]:
    """All per-user profile fields (strings). With ``defs``: also ``computed`` (the values at
    :func:`render_time`) and ``audiences``; ``st.audiences`` and ``st.computed_at`` are updated."""
    f = to_fields(st.profile)
    interests = st.interest.render()
    f["interests"] = _json(interests)
    f["top_category"] = next(iter(interests), "")
    f["interests_at"] = iso(st.interest.t_ref) if interests else ""
    f["session_count"] = str(st.behaviour.sessions)
    if defs is not None:
        now = render_time(st, now_ms)
        comp = st.computed or ComputedState()
        values, computed = comp.values_json(defs, now)
        if comp.audience_memo is None:
            comp.audience_memo = {}
        rules: list[Any] = []  # the late audiences' rules (operators.residual), for the profile script
        st.audiences = evaluate(defs, f, values, comp.audience_memo, rules)  # only audiences whose inputs changed
        st.computed_at = now
        f["computed"] = computed
        f["audiences"] = _json(list(st.audiences))
        f["audience_rules"] = _json(rules)
        st.defs_fp = defs.fingerprint
    return f


def render_time(st: UserState, now_ms: int | None) -> int:
    """The time computed traits are rendered at: ``max(the user's newest event time, now_ms)``
    (and never before the previous render)."""
    # never before the last render (a timer may have rendered a window exit after the newest event)
    newest = max(st.computed.max_ts if st.computed is not None else -(2**62), st.profile.last_seen, st.computed_at)
    return newest if now_ms is None else max(newest, now_ms)


def _json(d: Any) -> str:
    import orjson

    return orjson.dumps(d).decode()


def _interest(cfg: UserConfig, st: UserState, ev: Event) -> None:
    w = event_weight(cfg.interest, ev.type, ev.name)
    if w <= 0:
        return
    if len(ev.products) > 1:  # an order or cart of several lines: share the weight by line
        share = w / len(ev.products)
        for p in ev.products:
            st.interest.add(cfg.interest, p.category or ev.category, share, ev.ts)
        return
    if ev.category:
        st.interest.add(cfg.interest, ev.category, w, ev.ts)


def _outputs(cfg: UserConfig, st: UserState, changed: bool, event: dict[str, Any] | None, closed: list[ClosedSession], behaviour: bool,
             now_ms: int | None = None, event_ms: int | None = None, received: bool = True) -> list[Output]:  # fmt: skip
    """The outputs of one fold; ``received``: whether received events caused it (else the profile
    write's ``last_received_ms`` is 0: timers and redeploys are not freshness samples)."""
    out: list[Output] = []
    p = st.profile
    if changed or event is not None:
        new = _rfm_of(p)
        if new != st.rfm:
            out.append(RfmDelta(st.rfm, new))
            st.rfm = new
        out.append(ProfileUpdate(p.uid, p.seq, render(st, cfg.definitions, now_ms), p.last_received if received else 0, new, event,
                                 event_ms=event_ms))  # fmt: skip
    # score when due, and when a session of 8+ events closes (its complete features);
    # a short session closing only trains the propensity model
    b = st.behaviour
    due_now = behaviour and b.due_for_scoring()
    due = due_now or any(c.features["events"] >= 8 for c in closed)
    if closed or due:
        if due_now:
            b.mark_scored()
        sess = b.session.counters(b.past_orders, len(p.cart_ops)) if b.session else None
        out.append(BehaviourUpdate(p.uid, b.features(), b.rule_suspect(), sess, tuple(closed), score=due))
    return out


Item = Event | Link | MergeIn | Forget | Unsuppress | Absorb | Seed


def _fold_event(cfg: UserConfig, st: UserState, ev: Event, fresh: bool, closed: list[ClosedSession]) -> bool:
    """Fold one event into ``st`` (after its cart-abandonment check): the profile (``False``: a
    duplicate, nothing changed), the computed traits, sessions (closed ones appended to
    ``closed``) and interest; an anonymous profile logs it for its merge (:class:`MergeLog`)."""
    p = st.profile
    if not p.apply(ev, cfg.dedupe, cfg.abandon_ms, cfg.max_traits):
        return False
    defs = cfg.definitions
    if defs is not None:
        if st.computed is None:
            st.computed = ComputedState()
            if fresh:
                st.computed.touch(defs, ev.received_at, fluid=True)
        st.computed.observe(defs, ev)
    closed.extend(st.behaviour.observe(cfg.session, ev, len(p.cart_ops)))
    if not st.behaviour.rule_suspect():
        _interest(cfg, st, ev)
    if st.merge_log is not None:
        items = st.merge_log.items
        _log(st, _row(defs, ev, items[-1] if items and type(items[-1]) is tuple else None))
    return True


def _fold_seed(defs: Definitions, st: UserState, seed: Seed) -> int | None:
    """Fold a backfill chunk into ``st``'s computed traits: the newest event time it counted
    (``None``: it changed nothing); a change is an input item (``seq`` advances) and logged."""
    if st.computed is None:
        st.computed = ComputedState()
    newest = st.computed.apply_seed(defs, seed)
    if newest is not None:
        st.profile.seq += 1
        if st.merge_log is not None:
            _log(st, seed)
    return newest


def _log(st: UserState, item: tuple[Any, ...] | Seed) -> None:
    """Append an applied item to the anonymous profile's :class:`MergeLog` (and move it on)."""
    log = st.merge_log
    assert log is not None
    log.items.append(item)
    n = len(log.items)
    if n == MERGE_LOG_MIN:
        log.mid = _checkpoint(st)
    elif n >= 2 * MERGE_LOG_MIN:
        log.base, log.items = log.mid, log.items[MERGE_LOG_MIN:]
        log.mid = _checkpoint(st)


def _checkpoint(st: UserState) -> bytes:
    """The pickled state without its log (what a rebuild starts from)."""
    log, st.merge_log = st.merge_log, None
    try:
        return pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        st.merge_log = log


#: the ``context`` keys every fold reads (machine opens: the user agent)
_FOLD_CONTEXT = frozenset({"userAgent"})
#: the ``properties`` keys the folds read (machine opens, the email an email event is about, a
#: refund's id); the computed traits' paths come on top (:func:`_kept_keys`)
_FOLD_PROPERTIES = frozenset({"machine_open", "sg_machine_open", "email_id", "campaign_id", "refund_id"})
#: per definitions fingerprint: the keys of ``properties``, ``context`` and ``traits`` a logged
#: event keeps (``None``: all of them, a trait reads it whole)
_kept: dict[str, tuple[frozenset[str] | None, ...]] = {}
_EVENT_FIELDS = tuple(f.name for f in fields(Event))
_as_row = attrgetter(*_EVENT_FIELDS)
_MID, _TS, _CTX = _EVENT_FIELDS.index("message_id"), _EVENT_FIELDS.index("ts"), _EVENT_FIELDS.index("context")
_RA, _PR = _EVENT_FIELDS.index("received_at"), _EVENT_FIELDS.index("products")
#: the dicts a logged event keeps only the read keys of, and the keys every fold reads of each
_SLIMMED = tuple((_EVENT_FIELDS.index(f), f, base) for f, base in (("properties", _FOLD_PROPERTIES), ("context", _FOLD_CONTEXT), ("traits", frozenset())))
#: fields most of one visitor's events share (pickled once when the same object)
_SHARED = tuple(_EVENT_FIELDS.index(f) for f in ("type", "name", "uid", "anonymous_id", "category"))


def _kept_keys(defs: Definitions | None) -> tuple[frozenset[str] | None, ...]:
    """The keys a logged event keeps of each dict in :data:`_SLIMMED` under ``defs``."""
    fp = defs.fingerprint if defs is not None else ""
    got = _kept.get(fp)
    if got is None:
        paths = trait_paths(defs.computed_traits) if defs is not None else frozenset()
        got = _kept[fp] = tuple(None if (top,) in paths else base | {q[1] for q in paths if len(q) > 1 and q[0] == top} for _, top, base in _SLIMMED)
    return got


def _row(defs: Definitions | None, ev: Event, prev: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """``ev`` as logged: its field values (``Event(*row)`` is it again; a tuple pickles without the
    field names), with only the ``properties``, ``context`` and ``traits`` keys the folds read
    (:data:`_FOLD_PROPERTIES`, ``userAgent``, and the computed traits' paths; all of one if a trait
    reads it whole: the heaviest part of most events, and nothing a rebuild needs), and the
    strings equal to the previous row's shared with it."""
    row = list(_as_row(ev))
    for (i, _, _), keys in zip(_SLIMMED, _kept_keys(defs), strict=True):
        d = row[i]
        if d and keys is not None and not d.keys() <= keys:
            row[i] = {k: v for k, v in d.items() if k in keys}
    ctx = row[_CTX]
    if prev is not None:
        for i in _SHARED:
            if row[i] == prev[i]:
                row[i] = prev[i]
        ua, pua = ctx.get("userAgent"), prev[_CTX].get("userAgent")
        if ua is not None and ua == pua and ua is not pua:
            row[_CTX] = {**ctx, "userAgent": pua}
    return tuple(row)


def _logged(log: MergeLog) -> list[Event | Seed]:
    """The items of a :class:`MergeLog`, events as :class:`~operators.events.Event` s again."""
    return [x if type(x) is Seed else Event(*x) for x in log.items]  # type: ignore[misc]


def _not_held(cfg: UserConfig, other: UserState, held: SeenIds) -> list[Event]:
    """The logged events of the anonymous state ``other`` that ``held`` (the user's dedupe) does
    not remember, except those older than its window before its newest event (it may have
    forgotten them). The events the first copy merged were inserted after the merge's id, so
    while ``held`` still holds that id its cap has not dropped them either."""
    log = other.merge_log
    if log is None:
        return []
    cutoff = held.newest - cfg.dedupe.window_ms
    return [Event(*x) for x in log.items if type(x) is tuple and x[_TS] >= cutoff and x[_MID] not in held]


def _without_held(cfg: UserConfig, other: UserState, held: SeenIds) -> UserState:
    """The anonymous state ``other`` without the logged events whose ``messageId`` s ``held`` (the
    user's dedupe) remembers: ``other`` itself when there are none (or it has no log), else
    rebuilt from the state before its log with every other logged item folded in, in order."""
    log = other.merge_log
    if log is None or not any(type(x) is tuple and x[_MID] in held for x in log.items):
        return other
    st: UserState = pickle.loads(log.base) if log.base is not None else UserState(ProfileState(other.profile.uid))
    defs = cfg.definitions
    if defs is not None and st.computed is not None:
        st.computed.prune(defs)
    closed: list[ClosedSession] = []
    for x in _logged(log):
        if type(x) is Event:
            if x.message_id not in held:
                st.profile.check_abandoned(x.ts, cfg.abandon_ms)
                _fold_event(cfg, st, x, log.base is None, closed)
        elif defs is not None and st.profile.seq > 0:
            _fold_seed(defs, st, x)  # type: ignore[arg-type]
    return st


def _forward(stub: Merged, uid: str, items: list[Item]) -> list[Output]:
    """What a merged-away user does with ``items``: forward events and merges to the survivor."""
    fwd: list[Event | MergeIn] = [it for it in items if type(it) is Event or type(it) is MergeIn]  # type: ignore[misc]
    return [Forward(uid, stub.into, tuple(fwd))] if fwd else []


def step(cfg: UserConfig, st: UserState | Merged | None, uid: str, items: list[Item],
         now_ms: int | None = None) -> tuple[UserState | Merged | None, list[Output], int]:  # fmt: skip
    """Fold a batch of items for user ``uid`` (see module docstring); ``now_ms``: the stream time
    (``None``: the user's newest event time), what the computed traits are rendered at.

    Returns the new state, the outputs, and how many events were duplicates.
    """
    if isinstance(st, Merged):
        rest: list[Item] = []
        for i, it in enumerate(items):
            if type(it) is Forget:  # erase the stub too, and start suppressed
                rest = list(items[i:])
                break
        else:
            return st, _forward(st, uid, items), 0
        head = _forward(st, uid, items[: len(items) - len(rest)])
        st2, out, dups = step(cfg, None, uid, rest, now_ms)
        return st2, head + out, dups
    # a user this flow has never seen has no history it processed before the definitions: every
    # live event counts for their computed traits, however late its receipt time (a fluid boundary)
    fresh = st is None
    if st is None:
        st = UserState.new(uid)
    defs = cfg.definitions
    if defs is not None and st.computed is not None:
        st.computed.prune(defs)  # a changed definitions file: drop the state of traits gone or changed
    p = st.profile
    event_ms: int | None = None
    changed = False
    behaviour = False
    trigger: dict[str, Any] | None = None
    closed: list[ClosedSession] = []
    extra: list[Output] = []
    dups = 0
    for i, it in enumerate(items):
        if st.suppressed and type(it) is not Unsuppress:
            if type(it) is Event:
                dups += 1  # counted with the dropped events
            continue
        if type(it) is Event:
            t = p.check_abandoned(it.ts, cfg.abandon_ms)
            if t is not None:
                trigger, changed = t, True
            if not _fold_event(cfg, st, it, fresh, closed):
                dups += 1
                continue
            changed = True
            behaviour = True
            event_ms = it.ts if event_ms is None else max(event_ms, it.ts)
        elif type(it) is Link or type(it) is Absorb:
            into = it.user_id
            if into == uid or is_anon(uid) != (type(it) is Link):  # a self-alias, or not this namespace's
                continue
            if type(it) is Absorb and not it.trusted:
                if p.seq > 0:  # a known user: a browser key may not merge it
                    p.seq += 1  # the refusal is an input item: its dead letter has its own position
                    extra.append(Refused(uid, p.seq, "untrusted_merge", f"alias of the known user {uid!r} into {into!r} from a browser write key", it.event))
                continue
            if p.seq == 0:  # nothing to merge
                if type(it) is Absorb:  # approved by the merge graph: later events with this id go to ``into``
                    fwd = _forward(Merged(into, 0), uid, list(items[i + 1 :]))
                    return Merged(into, 0), extra + fwd, dups
                continue
            extra.extend(_outputs(cfg, st, changed, trigger, closed, behaviour, now_ms, event_ms))
            merge_id = f"merge:{uid}:{into}"
            if st.merge_log is not None:
                st.merge_log.mid = None  # a rebuild starts from the base: the export need not carry it
            extra.append(MergeExport(uid, into, merge_id, it.ts, pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL)))
            if st.rfm is not None:
                extra.append(RfmDelta(st.rfm, None))
            stub = Merged(into, p.seq + 1)
            extra.append(Retire(uid, into, stub.seq))
            extra.extend(_forward(stub, uid, list(items[i + 1 :])))
            # an anonymous profile is retired (the identity stage routes its later events);
            # a known user keeps the stub that forwards to the survivor
            return (None if is_anon(uid) else stub), extra, dups
        elif type(it) is Forget:
            forgot: list[Output] = [RfmDelta(st.rfm, None)] if st.rfm is not None else []
            st = UserState.new(uid)
            st.suppressed = True
            p = st.profile
            changed = behaviour = False
            trigger = event_ms = None
            closed = []
            extra = forgot
        elif type(it) is Unsuppress:
            if st.suppressed:
                st = UserState.new(uid)
                p = st.profile
                fresh = True
        elif type(it) is MergeIn:
            if not p.seen.first_sight(cfg.dedupe, it.merge_id, it.ts):
                # a later copy of a merge already taken: only the logged events the user lacks
                # (a replayed export can hold events the first copy had not; module doc)
                for ev in _not_held(cfg, pickle.loads(it.state), p.seen):
                    t = p.check_abandoned(ev.ts, cfg.abandon_ms)
                    if t is not None:
                        trigger, changed = t, True
                    if _fold_event(cfg, st, ev, False, closed):
                        changed = behaviour = True
                        event_ms = ev.ts if event_ms is None else max(event_ms, ev.ts)
                continue
            # an event the user already holds (a replayed export, see the module doc) is left out
            other: UserState = _without_held(cfg, pickle.loads(it.state), p.seen)
            # an anonymous profile is remembered as an anonymous id of this user; a known one is not
            other.profile.uid = public_id(it.from_uid) if is_anon(it.from_uid) else uid
            p.merge(other.profile, cfg.dedupe, cfg.max_traits)
            st.interest.merge(cfg.interest, other.interest)
            st.behaviour.merge(other.behaviour, cfg.session)
            if defs is not None and other.computed is not None:
                if st.computed is None:
                    st.computed = ComputedState()
                    if fresh:  # new to the flow: its own live events count however early received, as if first
                        st.computed.touch(defs, it.ts, fluid=True)
                st.computed.merge(other.computed, defs)
            event_ms = it.ts if event_ms is None else max(event_ms, it.ts)
            changed = True
        elif type(it) is Seed:
            # a backfill chunk: history for the user's computed traits (none for a user this flow
            # has never seen: a backfill makes no profiles); a seed already taken changes nothing
            if defs is None or p.seq == 0:
                continue
            newest = _fold_seed(defs, st, it)  # a change is an input item: the write has its own position
            if newest is not None:
                event_ms = newest if event_ms is None else max(event_ms, newest)
                changed = True
    if st.suppressed:
        return st, extra, dups
    if p.seq == 0 and not extra and all(type(it) in (Absorb, Link, Seed) for it in items):  # no-op aliases or seeds: keep no state
        return None, [], dups
    return st, extra + _outputs(cfg, st, changed, trigger, closed, behaviour, now_ms, event_ms), dups


def _last_exit(cfg: UserConfig, st: UserState, clock: int) -> int | None:
    """The latest computed-trait bucket exit in ``(st.computed_at, clock]`` (``None``: none)."""
    defs, c = cfg.definitions, st.computed
    if defs is None or c is None:
        return None
    return c.last_change_ms(defs, st.computed_at, clock)


def on_timer(cfg: UserConfig, st: UserState | Merged, clock: int) -> list[Output]:
    """Live-traffic timers: close an idle session, abandon an idle cart, and re-render the computed
    traits and audiences at the latest window exit the clock passed (a :class:`ProfileUpdate`
    with ``event_ms`` = that exit, only if ``computed`` or ``audiences`` changed)."""
    if isinstance(st, Merged) or st.suppressed:
        return []
    cart_ops = len(st.profile.cart_ops)
    closed = st.behaviour.close_if_idle(cfg.session, clock, cart_ops)
    trigger = st.profile.check_abandoned(clock, cfg.abandon_ms)
    exit_ms = _last_exit(cfg, st, clock)
    if trigger is None and exit_ms is not None and st.profile.seq > 0:
        defs = cfg.definitions
        c = st.computed
        assert defs is not None and c is not None
        before = c.values(defs, st.computed_at)  # remembered from the last render, as a rule
        # no event since that render, so the profile fields are as rendered: the audiences can
        # change only if a computed value does (a session closing re-renders anyway, below)
        after = c.values(defs, exit_ms)
        if after is before or (after.keys() == before.keys() and all(same_value(after[k], before[k]) for k in after)):
            st.computed_at = exit_ms  # nothing changed: no write, and the next timer is the next exit
            exit_ms = None
    if trigger is None and not closed and exit_ms is None:
        return []
    at = exit_ms if exit_ms is not None else (clock if trigger is not None else None)
    changed = trigger is not None or exit_ms is not None
    return _outputs(cfg, st, changed, trigger, closed, False, exit_ms, at, received=False)


def redeployed(cfg: UserConfig, st: UserState | Merged | None) -> bool:
    """Was this state's profile rendered under other definitions than ``cfg``'s (or none, or
    rendered under definitions that are gone)? Then :func:`redeploy` re-renders it."""
    if type(st) is not UserState or st.suppressed or st.profile.seq == 0:
        return False
    want = cfg.definitions.fingerprint if cfg.definitions is not None else ""
    return st.defs_fp != want


def redeploy(cfg: UserConfig, st: UserState | Merged, clock: int) -> list[Output]:
    """Re-render a profile under changed definitions, with no new event: a new or changed trait
    starts empty (pruned), every audience is evaluated again, and the profile write carries the
    memberships entered and left (``event_ms`` = the stream time ``clock``). With the definitions
    removed, ``computed`` becomes ``{}`` and ``audiences`` ``[]`` (the user leaves every audience).
    Run once per user when the dataflow starts under another definitions file (:func:`redeployed`);
    a profile that renders the same writes nothing (the profile script compares values)."""
    if type(st) is not UserState or not redeployed(cfg, st):
        return []
    defs = cfg.definitions
    if defs is None:
        st.defs_fp = ""
        st.audiences = ()
        p = st.profile
        fields = {**render(st), "computed": "{}", "audiences": "[]", "audience_rules": "[]"}
        return [ProfileUpdate(p.uid, p.seq, fields, 0, _rfm_of(p), None, event_ms=clock)]
    if st.computed is not None:
        st.computed.prune(defs)
    return _outputs(cfg, st, True, None, [], False, clock, clock, received=False)


def next_deadline(cfg: UserConfig, st: UserState | Merged) -> int | None:
    """Earliest event time at which :func:`on_timer` has something to do (computed traits: the
    next bucket exit after their last render)."""
    if isinstance(st, Merged) or st.suppressed:
        return None
    ds = [d for d in (st.behaviour.deadline(cfg.session), st.profile.abandon_deadline(cfg.abandon_ms)) if d is not None]
    if cfg.definitions is not None and st.computed is not None:
        d = st.computed.next_change_ms(cfg.definitions, st.computed_at)
        if d is not None:
            ds.append(d)
    return min(ds) if ds else None


# >>> generated snapshot packers (python -m liveprofile.devtools.packers): do not edit
_PACK_DEFAULTS_UserState = pack_defaults(UserState)


def _pack_UserState(o: UserState) -> tuple[Any, ...]:
    """``operators.snapshot.pack(o)``, field by field (generated)."""
    D = _PACK_DEFAULTS_UserState
    m = 0
    out: list[Any] = [0]
    v: Any
    d: Any
    v = o.profile
    d = D[0]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1
        out.append(v)
    v = o.interest
    d = D[1]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2
        out.append(v)
    v = o.behaviour
    d = D[2]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4
        out.append(v)
    v = o.rfm
    d = D[3]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8
        out.append(v)
    v = o.suppressed
    d = D[4]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16
        out.append(v)
    v = o.computed
    d = D[5]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 32
        out.append(v)
    v = o.audiences
    d = D[6]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 64
        out.append(v)
    v = o.computed_at
    d = D[7]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 128
        out.append(v)
    v = o.defs_fp
    d = D[8]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 256
        out.append(v)
    v = o.merge_log
    d = D[9]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 512
        out.append(v)
    out[0] = m
    return tuple(out)
# <<< generated snapshot packers
