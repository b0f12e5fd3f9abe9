"""The two folds against each other: the generated one (``computed._fuse_compiled``, what the flow
runs pure) and the loop over a plan (``computed._NativeFold``, what it runs compiled): the same
return value and the same state after every event, live and history, with fluid and fixed
boundaries, out-of-order and late events, money values. (Both against an independent brute-force
evaluation of whole streams: tests/e2e/test_audiences.py and tests/audiences_bruteforce.py.)"""

from __future__ import annotations

import pickle
import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.computed import (
    _COMPILED,
    ComputedState,
    _fold_of,
    _fuse_compiled,
    _NativeFold,
)
from operators.definitions import DAY_MS, HOUR_MS
from operators.events import Event
from tests.operators.test_computed import BASE, DEFS, streams


def _state(c: ComputedState) -> tuple[bytes, set[str] | None, int | None]:
    return pickle.dumps(c), set(c.dirty) if c.dirty is not None else None, c.expire_at


def _fold_both(events: list[Event], history: list[bool], fluid: bool, boundary: int) -> None:
    keys = {(e.type, e.name if e.type == "track" else None) for e in events}
    gen = {k: _fuse_compiled(DEFS._by_event.get(k, ())) for k in keys}
    nat = {k: _NativeFold(DEFS._by_event.get(k, ())) for k in keys}
    b, n = ComputedState(), ComputedState()
    for c in (b, n):
        c.touch(DEFS, boundary, fluid)
        c.values(DEFS, BASE)  # a remembered render: folds mark what they change dirty
        c.expire_at = 2**62
    for e, hist in zip(events, history, strict=True):
        k = (e.type, e.name if e.type == "track" else None)
        for c in (b, n):
            c.max_ts = max(c.max_ts, e.ts)
        got_b = gen[k](b, e, hist)
        got_n = nat[k](n, e, hist)
        assert got_b == got_n
        assert _state(b) == _state(n)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(streams(), st.randoms(use_true_random=False), st.booleans(), st.integers(-3, 3))
def test_generated_fold_equals_the_plan_loop(events: list[Event], rnd: random.Random, fluid: bool, shift: int) -> None:
    rnd.shuffle(events)
    # receipts around the boundary: some before it (history, or fluid live), some after
    events = [replace(e, received_at=BASE + rnd.randint(-3, 3) * HOUR_MS) for e in events]
    history = [rnd.random() < 0.3 for _ in events]
    _fold_both(events, history, fluid, BASE + shift * HOUR_MS)


def test_late_event_for_a_bucket_out_of_the_window_is_skipped_by_both() -> None:
    e = Event(message_id="m1", type="track", name="Product Viewed", uid="u", user_id="u", anonymous_id=None,
              ts=BASE, received_at=BASE, properties={"v": 3, "cat": "shoes"}, traits={}, context={})  # fmt: skip
    late = replace(e, message_id="m0", ts=BASE - 40 * DAY_MS)
    _fold_both([replace(e, ts=BASE + 60 * DAY_MS), late], [False, False], False, 0)


def test_the_flow_folds_with_the_native_loop_when_compiled() -> None:
    """Compiled, the flow's fold is the compiled loop (generated code runs interpreted); pure, the generated code."""
    import operators

    assert operators.mode().startswith("compiled") == _COMPILED
    assert isinstance(_fold_of(DEFS.computed_traits), _NativeFold) == _COMPILED
