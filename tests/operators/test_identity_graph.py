"""Property test (issue 12): random interleavings of identify / alias / track / page for a few user
and anonymous ids — ids that collide across the namespaces, self-aliases, chains A -> B -> C,
re-identification on shared devices, duplicates, browser-key aliases — through the real identity
and per-user step functions (:func:`operators.identity.route_once`, :func:`operators.user.step`), wired
as the flow wires them (:mod:`dataflows.parse`: the identity stage for anonymous ids, an
:class:`~operators.identity.Absorb` to the user key ``previousId``; merges and forwards go back
in as the buffer would deliver them). Every profile is compared with an independent reference
identity graph written here: a union of nodes (known users, anonymous visitors) with the set of
``messageId`` s each one counts, exactly once.

``LP_IDENTITY_EXAMPLES`` raises the number of examples (300 by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from operators.events import Event, Limits, Rejected, parse_event
from operators.identity import (
    Absorb,
    AnonState,
    MergeGraph,
    Refused,
    anon_uid,
    anonymous_key,
    decide,
    route_once,
)
from operators.user import Forward, MergeExport, MergeIn, ProfileUpdate, Retire, UserConfig, step

EXAMPLES = int(os.environ.get("LP_IDENTITY_EXAMPLES", "300"))
LIM = Limits(timestamp_min_ms=0)
CFG = UserConfig()
USERS = ["A", "B", "C", "x"]
ANONS = ["x", "y", "A"]  # "x" and "A" are also user ids: the namespaces must keep them apart
T0 = 1_714_564_800_000


# -- the system under test, wired as dataflows.parse / build wire it -----------------------------
@dataclass
class System:
    identity: dict[str, AnonState] = field(default_factory=dict)
    graph: MergeGraph | None = None
    users: dict[str, object] = field(default_factory=dict)
    profiles: dict[str, ProfileUpdate | Retire] = field(default_factory=dict)
    dead: list[tuple[str, str]] = field(default_factory=list)  # (messageId, reason)

    def send(self, raw: dict) -> None:
        ev = parse_event(raw, LIM)
        assert not isinstance(ev, Rejected), ev
        queue: list[tuple[str, object]] = []
        akey = anonymous_key(ev)
        if akey is None:
            queue.append((ev.uid, ev))
        else:
            anon, outs, _ = route_once(CFG.dedupe, self.identity.get(akey), ev)
            if anon is not None:
                self.identity[akey] = anon
            else:
                self.identity.pop(akey, None)
            queue.extend(outs)
        if ev.type == "alias" and ev.previous_id != ev.user_id:
            assert ev.previous_id is not None and ev.user_id is not None
            self._run(queue)
            self.graph, send, refused = decide(self.graph, Absorb(ev.previous_id, ev.user_id, ev.ts, ev.trusted, ev))
            self.dead.extend((r.event.message_id, r.reason) for r in refused)
            queue = list(send)
        self._run(queue)

    def _run(self, queue: list[tuple[str, object]]) -> None:
        while queue:
            key, it = queue.pop(0)
            state, outs, _ = step(CFG, self.users.get(key), key, [it])  # type: ignore[arg-type]
            if state is None:
                self.users.pop(key, None)
            else:
                self.users[key] = state
            for o in outs:
                if type(o) is ProfileUpdate:
                    prev = self.profiles.get(o.uid)
                    if prev is None or o.seq >= prev.seq:
                        self.profiles[o.uid] = o
                elif type(o) is Retire:
                    self.profiles[o.uid] = o
                elif type(o) is MergeExport:
                    queue.append((o.to_uid, MergeIn(o.merge_id, o.from_uid, o.ts, o.state)))
                elif type(o) is Forward:
                    queue.extend((o.to_uid, x) for x in o.items)
                elif type(o) is Refused:
                    self.dead.append((o.event.message_id, o.reason))


# -- the reference identity graph -----------------------------------------------------------------
class Reference:
    """Known users and anonymous visitors are separate nodes (``("u", id)``, ``("a", id)``), each
    with the set of messageIds it counts; ``merged[P] = U`` for known users merged away."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], set[str]] = {}
        self.merged: dict[str, str] = {}
        self.retired: dict[tuple[str, str], str] = {}  # node -> the user its tombstone names
        self.linked: dict[str, str] = {}  # anonymous id -> newest user id seen with it
        self.dead: list[tuple[str, str]] = []
        self.where: dict[str, tuple[str, str]] = {}  # messageId -> the node that first counted it
        #: messageIds already counted somewhere: a redelivery counts nowhere, whichever node its ids
        #: resolve to by then (a shared device re-identified in between: SPEC 1, exactly once)
        self.dups = 0
        self.across = 0  # of them, redeliveries that now resolve to another node than the one counting them

    def root(self, user: str) -> str:
        while user in self.merged:
            user = self.merged[user]
        return user

    def count(self, node: tuple[str, str], mid: str) -> None:
        if node[0] == "u":
            node = ("u", self.root(node[1]))
        if mid in self.where:  # counted once already (wherever it is now): a duplicate
            self.dups += 1
            self.across += self.where[mid] != node  # the shared-device case: it resolves elsewhere now
            return
        self.where[mid] = node
        self.ids.setdefault(node, set()).add(mid)

    def move(self, src: tuple[str, str], user: str) -> None:
        """``src``'s whole history into ``user`` (wherever ``user`` merged to)."""
        got = self.ids.pop(src, set())
        if got:
            dst = ("u", self.root(user))
            self.ids.setdefault(dst, set()).update(got)
            self.retired[src] = user
            for mid in got:
                self.where[mid] = dst
            for mid, n in self.where.items():
                if n == src:
                    self.where[mid] = dst

    def send(self, raw: dict) -> None:
        mid, user, anon, prev = raw["messageId"], raw.get("userId"), raw.get("anonymousId"), raw.get("previousId")
        akey = prev if raw["type"] == "alias" else (anon if anon is not None and anon != user else None)
        if akey is not None and user is not None:
            if akey not in self.linked:
                self.move(("a", akey), user)  # the anonymous history moves once
            self.linked[akey] = user
            self.count(("u", user), mid)
        elif akey is not None:
            self.count(("u", self.linked[akey]) if akey in self.linked else ("a", akey), mid)
        else:
            self.count(("u", user), mid)
        if raw["type"] != "alias" or prev == user:
            return
        if raw.get("_trust") == "browser":
            if prev not in self.merged and self.ids.get(("u", prev)):
                self.dead.append((mid, "untrusted_merge"))
            return
        if prev in self.merged:
            return
        if self.root(user) == prev:
            self.dead.append((mid, "merge_cycle"))
            return
        self.move(("u", prev), user)
        self.merged[prev] = user


# -- generated traffic ----------------------------------------------------------------------------
call = st.one_of(
    st.tuples(st.sampled_from(["track", "page"]), st.sampled_from([None, *USERS]), st.sampled_from([None, *ANONS]), st.none(), st.booleans()),
    st.tuples(st.just("identify"), st.sampled_from(USERS), st.sampled_from([None, *ANONS, *USERS]), st.none(), st.booleans()),
    st.tuples(st.just("alias"), st.sampled_from(USERS), st.none(), st.sampled_from([*USERS, *ANONS]), st.booleans()),
)
traffic = st.lists(st.one_of(call, st.tuples(st.just("dup"), st.integers(0, 40))), min_size=1, max_size=40)
def _appended(rows: list[tuple]) -> int:
    """How many events ``_raws`` makes of ``rows`` (a leading ``dup`` makes none)."""
    n = 0
    for row in rows:
        n += row[0] != "dup" or n > 0
    return n


@st.composite
def shared_device(draw: st.DrawFn) -> list[tuple]:
    """Traffic made for the exactly-once hole: the general traffic around one planted case (the
    device ``x`` identified as U1, an anonymous event, the device re-identified as U2, that event
    redelivered), so every example redelivers an event after its anonymous id moved."""
    before, after = draw(traffic), draw(st.lists(st.one_of(call, st.tuples(st.just("dup"), st.integers(0, 60))), max_size=15))
    u1, u2 = draw(st.permutations(["A", "B", "C"]))[:2]
    at = _appended(before) + 1  # the index of the planted anonymous event
    planted = [("identify", u1, "x", None, False), ("track", None, "x", None, False), ("identify", u2, "x", None, False), ("dup", at)]
    merge = draw(st.sampled_from([[], [("alias", u2, None, u1, False)], [("alias", u1, None, u2, False)]]))
    return [*before, *planted, *after, *merge]


def _raws(rows: list[tuple]) -> list[dict]:
    out: list[dict] = []
    for i, row in enumerate(rows):
        if row[0] == "dup":
            if out:
                out.append(dict(out[row[1] % len(out)]))  # a redelivery: the same event again
            continue
        etype, user, anon, prev, browser = row
        if user is None and anon is None:
            anon = "y"
        raw: dict = {"type": etype, "messageId": f"m{i}", "timestamp": (T0 + i * 1000) / 1000, "receivedAt": (T0 + 10**6) / 1000}
        if etype == "track":
            raw["event"] = "Product Viewed"
        for k, v in (("userId", user), ("anonymousId", anon), ("previousId", prev)):
            if v is not None:
                raw[k] = v
        if browser and etype == "alias":
            raw["_trust"] = "browser"
        out.append(raw)
    return out


def _check(raws: list[dict]) -> None:
    sut, ref = System(), Reference()
    for raw in raws:
        ref.send(raw)
    if currently_in_test_context():  # the statistics of the property tests (--hypothesis-show-statistics)
        event("a redelivery resolves to another node" if ref.across else "no redelivery across nodes")
    for raw in raws:
        sut.send(raw)
    want: dict[str, object] = {}
    for (kind, ident), ids in ref.ids.items():
        if ids:
            want[ident if kind == "u" else anon_uid(ident)] = len(ids)
    for (kind, ident), into in ref.retired.items():
        want[ident if kind == "u" else anon_uid(ident)] = ("merged_into", into)
    got: dict[str, object] = {}
    for key, p in sut.profiles.items():
        if type(p) is Retire:
            assert p.into != p.uid  # never a self-pointing merged_into
            got[key] = ("merged_into", p.into)
        else:
            assert "merged_into" not in p.fields and p.fields["user_id"] == key
            got[key] = int(p.fields["event_count"])
    assert got == want
    assert sorted(sut.dead) == sorted(ref.dead)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic)
def test_every_profile_matches_the_reference_identity_graph(rows: list[tuple]) -> None:
    _check(_raws(rows))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shared_device())
def test_a_shared_device_s_redeliveries_match_the_reference_identity_graph(rows: list[tuple]) -> None:
    """The same property on traffic made for the exactly-once hole (a redelivery after the device
    was re-identified, maybe a merge of its users later): the general traffic above hits it in
    ~1 % of examples, this in every one (the planted case; a prefix may have linked ``x`` already,
    or merged one of the users: then the planted redelivery may resolve to the same node)."""
    _check(_raws(rows))


def test_the_named_cases() -> None:
    """The cases the issue names, spelled out (the property test finds them too)."""
    hijack = [
        {"type": "identify", "userId": "victim", "messageId": "v1", "traits": {"email": "v@example.com"}},
        {"type": "identify", "userId": "attacker", "anonymousId": "victim", "messageId": "h1"},
    ]
    chain = [
        {"type": "track", "event": "x", "userId": u, "messageId": f"{u}1"} for u in ("A", "B", "C")
    ] + [
        {"type": "alias", "userId": "B", "previousId": "A", "messageId": "ab"},
        {"type": "alias", "userId": "C", "previousId": "B", "messageId": "bc"},
        {"type": "alias", "userId": "A", "previousId": "C", "messageId": "ca"},  # back to A: a cycle, refused
        {"type": "track", "event": "x", "userId": "A", "messageId": "A2"},
    ]
    selfalias = [{"type": "track", "event": "x", "userId": "u", "messageId": f"s{i}"} for i in range(40)]
    selfalias.append({"type": "alias", "userId": "u", "previousId": "u", "messageId": "self"})
    for case in (hijack, chain, selfalias):
        _check([{"timestamp": (T0 + i) / 1000, "receivedAt": (T0 + 10**6) / 1000, **r} for i, r in enumerate(case)])


SHARED_DEVICE = [
    {"type": "identify", "userId": "A", "anonymousId": "x", "messageId": "i1"},
    {"type": "track", "event": "Product Viewed", "anonymousId": "x", "messageId": "e1"},  # counted on A
    {"type": "identify", "userId": "B", "anonymousId": "x", "messageId": "i2"},  # the device re-identified
    {"type": "track", "event": "Product Viewed", "anonymousId": "x", "messageId": "e1"},  # the SDK's retry
]
MERGE_AB = {"type": "alias", "userId": "B", "previousId": "A", "messageId": "ab"}  # from a server key


def _timed(rows: list[dict]) -> list[dict]:
    return [{"timestamp": (T0 + i) / 1000, "receivedAt": (T0 + 10**6) / 1000, **r} for i, r in enumerate(rows)]


def test_a_redelivery_after_a_shared_device_is_re_identified_counts_once() -> None:
    """The exactly-once hole: ``e1`` was counted on A; after the device's anonymous id moved to B
    its redelivery resolves to B. It must count on neither B nor (after ``alias A -> B``) twice
    on the survivor. On main B counted it too (A 2, B 2) and the merged B counted 5 of 4 events."""
    sut = System()
    for raw in _timed(SHARED_DEVICE):
        sut.send(raw)
    counts = {k: int(p.fields["event_count"]) for k, p in sut.profiles.items() if type(p) is ProfileUpdate}
    assert counts == {"A": 2, "B": 1}
    sut.send(_timed([*SHARED_DEVICE, MERGE_AB])[-1])
    b = sut.profiles["B"]
    assert type(b) is ProfileUpdate and b.fields["event_count"] == "4"  # i1, e1, i2, ab: each once
    assert type(sut.profiles["A"]) is Retire
    _check(_timed([*SHARED_DEVICE, MERGE_AB]))


def test_property_driver_sees_event_objects() -> None:
    assert isinstance(parse_event({"type": "page", "anonymousId": "a", "receivedAt": 0}, LIM), Event)
