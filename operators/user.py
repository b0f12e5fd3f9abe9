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
whose event-time deadline the stream clock has passed. ``next_deadline``
tells when to call it. ``clock`` is the stream's event-time clock (ms), always
passed in; ``step`` needs none (a batch is folded by its events' own times).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

from operators.behaviour import Behaviour, ClosedSession, SessionConfig
from operators.dedupe import DedupeConfig
from operators.definitions import Definitions
from operators.events import Event
from operators.identity import Absorb, Link, Refused, is_anon, public_id
from operators.interest import Interest, InterestConfig, event_weight
from operators.profile import ProfileState, to_fields
from operators.rfm import RfmValues
from operators.timeutil import iso

__all__ = [
    "UserConfig",
    "UserState",
    "MergeIn",
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
]


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


@dataclass(frozen=True, slots=True)
class MergeIn:
    """An anonymous user's exported state arriving at the known user (via the buffer)."""

    merge_id: str
    from_uid: str
    ts: int
    state: bytes


@dataclass(frozen=True, slots=True)
class Forget:
    """Erase the user's state (GDPR; the profile itself is deleted by ``liveprofile forget``)
    and ignore their events until :class:`Unsuppress`."""

    uid: str


@dataclass(frozen=True, slots=True)
class Unsuppress:
    """Stop ignoring a forgotten user: their next events start a fresh state."""

    uid: str


@dataclass(frozen=True, slots=True)
class ProfileUpdate:
    """One profile write: ``seq`` guard, string fields, newest receipt time, trigger event."""

    uid: str
    seq: int
    fields: dict[str, str]
    last_received_ms: int
    rfm: RfmValues | None
    event: dict[str, Any] | None = None
    tombstone_for: str | None = None


@dataclass(frozen=True, slots=True)
class BehaviourUpdate:
    """Input of the shard's models for one user and batch."""

    uid: str
    features: dict[str, float]
    rule_suspect: bool
    session: dict[str, float] | None
    closed: tuple[ClosedSession, ...] = ()
    score: bool = True  # False: only closed sessions for the propensity model, no anomaly scoring


@dataclass(frozen=True, slots=True)
class RfmDelta:
    """A customer's move in the RFM population (``None``: not a customer)."""

    old: RfmValues | None
    new: RfmValues | None


@dataclass(frozen=True, slots=True)
class MergeExport:
    """The anonymous state to deliver to ``to_uid`` (through the buffer, exactly once)."""

    from_uid: str
    to_uid: str
    merge_id: str
    ts: int
    state: bytes


@dataclass(frozen=True, slots=True)
class Retire:
    """The anonymous profile ``uid`` merged into ``into``: tombstone it."""

    uid: str
    into: str
    seq: int


@dataclass(frozen=True, slots=True)
class Merged:
    """The state of a known user merged into ``into`` (a stub: everything is forwarded)."""

    into: str
    seq: int


@dataclass(frozen=True, slots=True)
class Forward:
    """Items for ``from_uid``, which merged into ``to_uid``: deliver them there (through the buffer)."""

    from_uid: str
    to_uid: str
    items: tuple[Event | MergeIn, ...]


Output = ProfileUpdate | BehaviourUpdate | RfmDelta | MergeExport | Retire | Forward | Refused


@dataclass(slots=True)
class UserState:
    """All state of one user (picklable)."""

    profile: ProfileState
    interest: Interest = field(default_factory=Interest)
    behaviour: Behaviour = field(default_factory=Behaviour)
    rfm: RfmValues | None = None
    suppressed: bool = False

    @classmethod
    def new(cls, uid: str) -> UserState:
        return cls(ProfileState(uid))


def _rfm_of(p: ProfileState) -> RfmValues | None:
    if p.purchase_count <= 0:
        return None
    # monetary: net revenue (refunds and cancellations taken off, SPEC 4), never below 0
    return RfmValues(p.last_purchase, p.purchase_count, max(p.net_revenue_cents(), 0))


def render(st: UserState) -> dict[str, str]:
    """All per-user profile fields (strings)."""
    f = to_fields(st.profile)
    interests = st.interest.render()
    f["interests"] = _json(interests)
    f["top_category"] = next(iter(interests), "")
    f["interests_at"] = iso(st.interest.t_ref) if interests else ""
    f["session_count"] = str(st.behaviour.sessions)
    return f


def _json(d: dict[str, float]) -> str:
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


def _outputs(st: UserState, changed: bool, event: dict[str, Any] | None, closed: list[ClosedSession], behaviour: bool) -> list[Output]:
    out: list[Output] = []
    p = st.profile
    if changed or event is not None:
        new = _rfm_of(p)
        if new != st.rfm:
            out.append(RfmDelta(st.rfm, new))
            st.rfm = new
        out.append(ProfileUpdate(p.uid, p.seq, render(st), p.last_received, new, event))
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


Item = Event | Link | MergeIn | Forget | Unsuppress | Absorb


def _forward(stub: Merged, uid: str, items: list[Item]) -> list[Output]:
    """What a merged-away user does with ``items``: forward events and merges to the survivor."""
    fwd: list[Event | MergeIn] = [it for it in items if type(it) is Event or type(it) is MergeIn]  # type: ignore[misc]
    return [Forward(uid, stub.into, tuple(fwd))] if fwd else []


def step(cfg: UserConfig, st: UserState | Merged | None, uid: str, items: list[Item]) -> tuple[UserState | Merged | None, list[Output], int]:
    """Fold a batch of items for user ``uid`` (see module docstring).

    Returns the new state, the outputs, and how many events were duplicates.
    """
    if type(st) is Merged:
        rest: list[Item] = []
        for i, it in enumerate(items):
            if type(it) is Forget:  # erase the stub too, and start suppressed
                rest = list(items[i:])
                break
        else:
            return st, _forward(st, uid, items), 0
        head = _forward(st, uid, items[: len(items) - len(rest)])
        st2, out, dups = step(cfg, None, uid, rest)
        return st2, head + out, dups
    if st is None:
        st = UserState.new(uid)
    p = st.profile
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
            if not p.apply(it, cfg.dedupe, cfg.abandon_ms, cfg.max_traits):
                dups += 1
                continue
            changed = True
            behaviour = True
            cart_ops = len(p.cart_ops)
            closed.extend(st.behaviour.observe(cfg.session, it, cart_ops))
            if not st.behaviour.rule_suspect():
                _interest(cfg, st, it)
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
                    rest = _forward(Merged(into, 0), uid, list(items[i + 1 :]))
                    return Merged(into, 0), extra + rest, dups
                continue
            extra.extend(_outputs(st, changed, trigger, closed, behaviour))
            merge_id = f"merge:{uid}:{into}"
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
            out: list[Output] = [RfmDelta(st.rfm, None)] if st.rfm is not None else []
            st = UserState.new(uid)
            st.suppressed = True
            p = st.profile
            changed = behaviour = False
            trigger = None
            closed = []
            extra = out
        elif type(it) is Unsuppress:
            if st.suppressed:
                st = UserState.new(uid)
                p = st.profile
        elif type(it) is MergeIn:
            if not p.seen.first_sight(cfg.dedupe, it.merge_id, it.ts):
                continue
            other: UserState = pickle.loads(it.state)
            # an anonymous profile is remembered as an anonymous id of this user; a known one is not
            other.profile.uid = public_id(it.from_uid) if is_anon(it.from_uid) else uid
            p.merge(other.profile, cfg.dedupe, cfg.max_traits)
            st.interest.merge(cfg.interest, other.interest)
            st.behaviour.merge(other.behaviour, cfg.session)
            changed = True
    if st.suppressed:
        return st, extra, dups
    if p.seq == 0 and not extra and all(type(it) is Absorb or type(it) is Link for it in items):  # no-op aliases: keep no state
        return None, [], dups
    return st, extra + _outputs(st, changed, trigger, closed, behaviour), dups


def on_timer(cfg: UserConfig, st: UserState | Merged, clock: int) -> list[Output]:
    """Live-traffic timers: close an idle session, abandon an idle cart."""
    if type(st) is Merged or st.suppressed:
        return []
    cart_ops = len(st.profile.cart_ops)
    closed = st.behaviour.close_if_idle(cfg.session, clock, cart_ops)
    trigger = st.profile.check_abandoned(clock, cfg.abandon_ms)
    if trigger is None and not closed:
        return []
    return _outputs(st, trigger is not None, trigger, closed, False)


def next_deadline(cfg: UserConfig, st: UserState | Merged) -> int | None:
    """Earliest event time at which :func:`on_timer` has something to do."""
    if type(st) is Merged or st.suppressed:
        return None
    ds = [d for d in (st.behaviour.deadline(cfg.session), st.profile.abandon_deadline(cfg.abandon_ms)) if d is not None]
    return min(ds) if ds else None
