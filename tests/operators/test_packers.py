"""The generated snapshot packers (:mod:`liveprofile.devtools.packers`) are :func:`operators.snapshot.pack`.

* The generated blocks are up to date with the classes' fields (``--check``): a field added
  without regenerating fails here.
* User states pickle flat (snapshot version 10) and restore equal, as their version-9 pickles do.
* On the per-user states the real step builds from a generated stream, and on copies of them
  with any set of fields put back to (an equal copy of) their defaults, every packer returns
  exactly ``pack``'s tuple: the same values, of the same types, in the same order, with the same
  mask (so the pickled bytes, and every snapshot, are unchanged).
"""

from __future__ import annotations

import copy
import copyreg
import functools
import io
import pickle
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.devtools import packers
from liveprofile.devtools.generate import GenConfig, generate
from operators import behaviour, interest, profile, snapshot, user
from operators.events import Event, Limits, parse_event

#: class -> (its generated packer, the fields ``pack`` skips for it)
CASES: dict[type, tuple[Any, frozenset[str]]] = {
    profile.ProfileState: (profile._pack_ProfileState, frozenset()),
    interest.Interest: (interest._pack_Interest, frozenset()),
    behaviour.Session: (behaviour._pack_Session, frozenset()),
    behaviour.Behaviour: (behaviour._pack_Behaviour, behaviour._DERIVED),
    user.UserState: (user._pack_UserState, frozenset()),
}


def test_the_generated_blocks_are_up_to_date() -> None:
    assert packers.main(["--check"]) == 0, "run: python -m liveprofile.devtools.packers"
    assert {c for m in packers.PACKED.values() for c, _ in m} == {c.__name__ for c in CASES}


@functools.cache
def _states() -> dict[type, list[Any]]:
    """The states, built once (on first use, not at import)."""
    gen = generate(GenConfig(users=150, seed=5, end_ms=1_764_000_000_000, days=20, duplicate_rate=0.02))
    lim = Limits(timestamp_min_ms=0)
    cfg = user.UserConfig()
    states: dict[str, Any] = {}
    for raw in gen.events:
        ev = parse_event(dict(raw, receivedAt=raw["timestamp"]), lim)
        if isinstance(ev, Event):
            states[ev.uid], _, _ = user.step(cfg, states.get(ev.uid), ev.uid, [ev])
    out: dict[type, list[Any]] = {c: [] for c in CASES}
    for s in states.values():
        if not isinstance(s, user.UserState):
            continue
        out[user.UserState].append(s)
        out[profile.ProfileState].append(s.profile)
        out[interest.Interest].append(s.interest)
        out[behaviour.Behaviour].append(s.behaviour)
        if s.behaviour.session is not None:
            out[behaviour.Session].append(s.behaviour.session)
    out[profile.ProfileState].append(profile.ProfileState("u-default"))
    out[interest.Interest].append(interest.Interest())
    out[behaviour.Behaviour].append(behaviour.Behaviour())
    return out



def _same(cls: type, o: Any) -> None:
    packer, skip = CASES[cls]
    got, want = packer(o), snapshot.pack(o, skip)
    assert got == want
    assert [type(x) for x in got] == [type(x) for x in want]
    assert pickle.dumps(got, protocol=pickle.HIGHEST_PROTOCOL) == pickle.dumps(want, protocol=pickle.HIGHEST_PROTOCOL)


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_each_packer_gives_packs_tuple_on_real_states(cls: type) -> None:
    objs = _states()[cls]
    assert len(objs) >= 20
    for o in objs:
        _same(cls, o)
    # the states exercise both sides of most fields' test (at their default, and away from it)
    masks = [snapshot.pack(o, CASES[cls][1])[0] for o in objs]
    n = len(fields(cls))
    assert sum(1 for i in range(n) if any(m >> i & 1 for m in masks)) >= min(n // 2, 4)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_each_packer_gives_packs_tuple_with_fields_put_back_to_their_defaults(data: st.DataObject) -> None:
    """A field equal to its default but not the default object (a new empty list, a copy of the
    default Interest) is left out by both; one at its default object too."""
    cls = data.draw(st.sampled_from(list(CASES)), label="class")
    o = copy.copy(data.draw(st.sampled_from(_states()[cls]), label="state"))
    defaults = snapshot.pack_defaults(cls)
    names = [f.name for f in fields(cls)]
    reset = data.draw(st.sets(st.integers(0, len(names) - 1)), label="fields reset")
    for i in reset:
        d = defaults[i]
        if d is snapshot._REQUIRED:
            continue
        fresh = data.draw(st.booleans(), label=f"{names[i]}: an equal copy")
        object.__setattr__(o, names[i], copy.copy(d) if fresh else d)
    _same(cls, o)


class _Version9Pickler(pickle.Pickler):
    """Pickles a user state as version 9 did: the class and its packed state, the nested states
    reduced one by one."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is user.UserState:
            return copyreg.__newobj__, (user.UserState,), obj.__getstate__()
        return NotImplemented


def _v9(st: user.UserState) -> bytes:
    buf = io.BytesIO()
    _Version9Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(st)
    return buf.getvalue()


def test_user_states_pickle_flat_and_restore_equal() -> None:
    """Version 10: one reference to ``user_state_from_flat``, no class of the nested states named;
    the state comes back equal, and so does its version-9 pickle (a resumed old snapshot); the
    flat pickle is smaller."""
    for state in _states()[user.UserState]:
        raw = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        for name in (b"ProfileState", b"Behaviour", b"Interest", b"Session", b"SeenIds", b"RfmValues"):
            assert name not in raw
        assert b"user_state_from_flat" in raw
        assert pickle.loads(raw) == state
        old = _v9(state)
        assert b"ProfileState" in old and pickle.loads(old) == state
        assert len(raw) < len(old)
        assert snapshot.load(snapshot.dump(state)) == state


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_a_user_state_with_nested_states_at_their_defaults_pickles_flat(data: st.DataObject) -> None:
    s = data.draw(st.sampled_from(_states()[user.UserState]), label="state")
    o = user.UserState(s.profile, s.interest, s.behaviour, s.rfm)
    if data.draw(st.booleans(), label="default interest"):
        o.interest = interest.Interest()
    if data.draw(st.booleans(), label="default behaviour"):
        o.behaviour = behaviour.Behaviour()
    if data.draw(st.booleans(), label="no rfm"):
        o.rfm = None
    if data.draw(st.booleans(), label="no session"):
        o.behaviour = copy.copy(o.behaviour)
        o.behaviour.session = None
    back = pickle.loads(pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL))
    assert back == o
    assert back == pickle.loads(_v9(o))
