"""Identity resolution: anonymous ids linked to known user ids.

Contract
--------
**Two namespaces.** User ids and anonymous ids never name each other: the per-user step keys
an anonymous visitor's profile by :func:`anon_uid` (``ANON_PREFIX + anonymousId``), a string no
user id can be (:func:`operators.events.parse_event` strips surrounding whitespace from every
id, and the prefix starts with a space), and the store gives anonymous profiles their own key
family (:meth:`liveprofile.store.keys.Keys.profile_anon`). So ``identify {userId: X,
anonymousId: <a victim's userId>}`` links an *anonymous* profile of that name, never the victim.
:func:`public_id` turns a key back into the id a client sent.

``route(linked, event)`` is the step of the identity stage, keyed by the
event's anonymous id (``anonymousId``; for ``alias`` the ``previousId``). The
state is the user id that anonymous id is linked to (``None`` until an event
carries both ids). It returns the new state and the items to send on, each
with the key it goes to:

* an event that carries a ``userId`` goes to that user; the first such event
  also sends a :class:`Link` to the anonymous key, whose state (its anonymous
  profile) then merges into the user — exactly once, whichever arrives first;
* an anonymous-only event goes to the linked user once there is one, else to
  the anonymous profile (key :func:`anon_uid`).

``alias {previousId: P, userId: U}`` also names a possibly *known* user P: the flow's parse
step sends an :class:`Absorb` to the merge graph (one key, :data:`GRAPH_KEY`: aliases of known
users are rare), and :func:`decide` there serializes every known-user merge, so merges never
make a cycle whatever the order they race in:

* ``P == U`` (a self-alias): nothing;
* from a browser write key: on to P's user step, which refuses it (``untrusted_merge``, a dead
  letter) if P is a known user, and does nothing otherwise;
* P already merged into someone: nothing (a user merges away once);
* U already merged (transitively) into P: refused (``merge_cycle``, a dead letter);
* else the edge P -> U is recorded and the Absorb goes on to P's user step, which exports P's
  state to U, tombstones P (``merged_into`` = U) and forwards P's later items to U
  (:func:`operators.user.step`).

A later ``userId`` on the same anonymous id (a shared device) re-links future
anonymous events to the newest user but merges nothing more: the anonymous
history has already moved.

**Exactly once across re-identification.** An anonymous-only event is routed by the link, and
the link can change between two deliveries of the same event (an SDK retry, a buffer replay):
counted on A, re-identified to B, redelivered, it would reach B, whose dedupe has never seen it
(and after ``alias A -> B`` count twice on the survivor). So the identity stage's state is an
:class:`AnonState`: the link *and* the ``messageId`` s of the anonymous-only events this
anonymous id routed, remembered with the per-user dedupe's window and cap
(:class:`operators.dedupe.DedupeConfig`); :func:`route_once` routes such an event at most once,
wherever the link points by the time it comes again. Events carrying a ``userId`` always go to
that user (whose own dedupe, merged along with its state, catches their redeliveries), so only
the events whose destination can change are remembered here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from operators.dedupe import DedupeConfig, SeenIds
from operators.events import Event
from operators.snapshot import pack, restore, set_slots_state, slots_state

__all__ = [
    "ANON_PREFIX", "GRAPH_KEY", "Absorb", "AnonState", "MergeGraph", "Refused", "decide", "Link", "anon_uid",
    "anonymous_key", "is_anon", "public_id", "route", "route_once",
]  # fmt: skip

#: the per-user key prefix of anonymous profiles; no parsed id starts with whitespace
ANON_PREFIX = " anon:"


def anon_uid(anonymous_id: str) -> str:
    """The per-user key of the anonymous profile ``anonymous_id``.

    >>> anon_uid("a1"), is_anon(anon_uid("a1")), is_anon("a1"), public_id(anon_uid("a1"))
    (' anon:a1', True, False, 'a1')
    """
    return ANON_PREFIX + anonymous_id


def is_anon(uid: str) -> bool:
    """Whether the per-user key ``uid`` is an anonymous profile's."""
    return uid.startswith(ANON_PREFIX)


def public_id(uid: str) -> str:
    """The id a client sent for the per-user key ``uid`` (the anonymous id, or the user id)."""
    return uid[len(ANON_PREFIX):] if uid.startswith(ANON_PREFIX) else uid


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Link:
    """Tell the anonymous profile ``anonymous_id`` to merge into ``user_id``."""

    anonymous_id: str
    user_id: str
    ts: int


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Absorb:
    """An ``alias`` asking the known user ``previous_id`` to merge into ``user_id``
    (sent to the user key ``previous_id``; ``event`` is the alias itself, for a dead letter)."""

    previous_id: str
    user_id: str
    ts: int
    trusted: bool
    event: Event


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Refused:
    """An alias that is not honoured: a dead letter ``reason`` for ``event``; ``uid`` and ``seq``
    name its position (``merge:{uid}``, ``seq``) so a replayed refusal is written once."""

    uid: str
    seq: int
    reason: str
    message: str
    event: Event


#: the one key of the merge graph step
GRAPH_KEY = " merge-graph"  # a leading space: no user id can be it


@dataclass(slots=True)
class MergeGraph:
    """Known users merged away: ``into[P] = U``; ``refusals`` numbers the graph's dead letters."""

    into: dict[str, str]
    refusals: int = 0

    def root(self, uid: str) -> str:
        """Where ``uid``'s merges end (itself if it never merged)."""
        while uid in self.into:
            uid = self.into[uid]
        return uid

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """Pickled as a plain slots class pickles (and did before compiling): ``(None, slots)``."""
        return slots_state(self)

    def __setstate__(self, state: Any) -> None:
        set_slots_state(self, state)


def decide(graph: MergeGraph | None, ab: Absorb) -> tuple[MergeGraph | None, list[tuple[str, Absorb]], list[Refused]]:
    """One merge-graph step for an alias (see the module docstring): the new graph (``None``:
    empty), the Absorbs to send on (key: P's user key), and refusals.

    >>> from operators.events import parse_event, Limits
    >>> ev = parse_event({"type": "alias", "userId": "B", "previousId": "A", "receivedAt": 0}, Limits(timestamp_min_ms=0))
    >>> g, out, bad = decide(None, Absorb("A", "B", 0, True, ev)); g.into, [k for k, _ in out], bad
    ({'A': 'B'}, ['A'], [])
    >>> ev2 = parse_event({"type": "alias", "userId": "A", "previousId": "B", "receivedAt": 0}, Limits(timestamp_min_ms=0))
    >>> g, out, bad = decide(g, Absorb("B", "A", 0, True, ev2)); out, [r.reason for r in bad]
    ([], ['merge_cycle'])
    """
    p, u = ab.previous_id, ab.user_id
    if p == u:
        return graph, [], []
    if not ab.trusted:
        return graph, [(p, ab)], []
    g = graph if graph is not None else MergeGraph({})
    if p in g.into:
        return graph, [], []
    if g.root(u) == p:
        g.refusals += 1
        return g, [], [Refused(GRAPH_KEY, g.refusals, "merge_cycle", f"{u!r} is already merged into {p!r}", ab.event)]
    g.into[p] = u
    return g, [(p, ab)], []


def anonymous_key(ev: Event) -> str | None:
    """The key of the identity stage for ``ev`` (``None``: no anonymous id, skip the stage).

    >>> from operators.events import parse_event, Limits
    >>> e = parse_event({"type": "alias", "userId": "u1", "previousId": "a1", "receivedAt": 0}, Limits(timestamp_min_ms=0))
    >>> anonymous_key(e)
    'a1'
    """
    if ev.type == "alias":
        return ev.previous_id
    if ev.anonymous_id is not None and ev.anonymous_id != ev.user_id:
        return ev.anonymous_id
    return None


def route(linked: str | None, ev: Event) -> tuple[str | None, list[tuple[str, Event | Link]]]:
    """One identity step (see module docstring).

    >>> from operators.events import parse_event, Limits
    >>> L = Limits(timestamp_min_ms=0)
    >>> anon = parse_event({"type": "page", "anonymousId": "a1", "receivedAt": 0}, L)
    >>> ident = parse_event({"type": "identify", "anonymousId": "a1", "userId": "u1", "receivedAt": 0}, L)
    >>> st, out = route(None, anon); st, [k for k, _ in out]
    (None, [' anon:a1'])
    >>> st, out = route(st, ident); st, [(k, type(x).__name__) for k, x in out]
    ('u1', [(' anon:a1', 'Link'), ('u1', 'Event')])
    >>> st, out = route(st, anon); st, [k for k, _ in out]
    ('u1', ['u1'])
    """
    akey = anonymous_key(ev)
    user = ev.user_id
    if user is not None and akey is not None:
        out: list[tuple[str, Event | Link]] = []
        if linked is None:
            out.append((anon_uid(akey), Link(anon_uid(akey), user, ev.ts)))
        out.append((user, ev))
        return user, out
    if linked is not None:
        return linked, [(linked, ev)]
    return None, [(ev.uid if akey is None else anon_uid(akey), ev)]


@dataclass(slots=True)
class AnonState:
    """The identity stage's state of one anonymous id: the user it is linked to (``None`` until an
    event carries both ids) and the ``messageId`` s of the anonymous-only events it routed."""

    linked: str | None = None
    seen: SeenIds = field(default_factory=SeenIds)

    def __getstate__(self) -> tuple[Any, ...]:
        """The pickled state: :func:`operators.snapshot.pack` ed (snapshot version 9)."""
        return pack(self)

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout."""
        restore(self, state)

    def __bool__(self) -> bool:
        """Whether there is anything to keep (an unlinked id whose window emptied costs nothing)."""
        return self.linked is not None or len(self.seen) > 0


def route_once(cfg: DedupeConfig, st: AnonState | None, ev: Event) -> tuple[AnonState | None, list[tuple[str, Event | Link]], bool]:
    """:func:`route`, routing each anonymous-only event at most once per ``messageId`` (within
    ``cfg``'s window and cap): the new state (``None``: nothing to keep), the items to send on,
    and whether ``ev`` was such a duplicate (routed nowhere).

    >>> from operators.events import parse_event, Limits
    >>> L, cfg = Limits(timestamp_min_ms=0), DedupeConfig()
    >>> def ev(**kw): return parse_event({"type": "track", "event": "x", "receivedAt": 0, **kw}, L)
    >>> st, out, dup = route_once(cfg, None, ev(anonymousId="x", userId="A", messageId="i1"))
    >>> st, out, dup = route_once(cfg, st, ev(anonymousId="x", messageId="e1")); [k for k, _ in out], dup
    (['A'], False)
    >>> st, out, dup = route_once(cfg, st, ev(anonymousId="x", userId="B", messageId="i2")); st.linked
    'B'
    >>> route_once(cfg, st, ev(anonymousId="x", messageId="e1"))[1:]  # the retry: not on B too
    ([], True)
    """
    if st is None:
        st = AnonState()
    if ev.user_id is None and not st.seen.first_sight(cfg, ev.message_id, ev.ts):
        return (st or None), [], True
    st.linked, out = route(st.linked, ev)
    return (st or None), out, False
