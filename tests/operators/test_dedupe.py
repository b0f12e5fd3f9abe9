"""operators.dedupe.SeenIds: replays are no-ops, the window and the cap evict as documented."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.dedupe import DedupeConfig, SeenIds, _digest, _find

ids = st.text(min_size=1, max_size=12)
# (message id, event time) within one window of 1000 ms
within = st.lists(st.tuples(ids, st.integers(0, 999)), max_size=120)


def _snapshot(s: SeenIds) -> tuple[bytes, list[int], int]:
    return bytes(s.ids), list(s.times), s.newest


@settings(max_examples=200, deadline=None)
@given(within, st.randoms(use_true_random=False))
def test_first_sight_once_per_id_and_a_replay_is_a_noop(items: list[tuple[str, int]], rnd) -> None:  # type: ignore[no-untyped-def]
    """Inside the window and the cap, first_sight is True exactly for the first delivery of
    each id; replaying any of them again, in any order, answers False and changes nothing."""
    cfg = DedupeConfig(window_ms=1000, max_ids=500)
    s = SeenIds()
    seen: set[str] = set()
    for m, t in items:
        assert s.first_sight(cfg, m, t) == (m not in seen)
        seen.add(m)
    assert len(s) == len(seen)
    before = _snapshot(s)
    replay = list(items)
    rnd.shuffle(replay)
    assert not any(s.first_sight(cfg, m, t) for m, t in replay)
    assert _snapshot(s) == before
    s.prune(cfg)  # nothing is older than the window before the newest
    assert _snapshot(s) == before


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ids, st.integers(0, 10_000)), min_size=1, max_size=120))
def test_prune_forgets_exactly_what_is_older_than_the_window(items: list[tuple[str, int]]) -> None:
    cfg = DedupeConfig(window_ms=1000, max_ids=500)
    s = SeenIds()
    first_ts: dict[str, int] = {}
    for m, t in items:
        if s.first_sight(cfg, m, t):
            first_ts[m] = t
    newest = max(first_ts.values())  # duplicates do not move the window
    assert s.newest == newest
    s.prune(cfg)
    kept = {m for m, t in first_ts.items() if t >= newest - 1000}
    assert len(s) == len(kept)
    for m in first_ts:  # a remembered id is a duplicate; a forgotten one is new again
        assert s.first_sight(cfg, m, newest) == (m not in kept)


def test_window_boundary_is_inclusive() -> None:
    """An id exactly ``window_ms`` older than the newest event is still remembered."""
    cfg = DedupeConfig(window_ms=1000, max_ids=100)
    s = SeenIds()
    for m, t in [("gone", -1), ("edge", 0), ("new", 1000)]:
        assert s.first_sight(cfg, m, t)
    s.prune(cfg)
    assert list(s.times) == [0, 1000]
    assert (s.first_sight(cfg, "new", 1000), s.first_sight(cfg, "edge", 0)) == (False, False)
    assert s.first_sight(cfg, "gone", -1)


def test_prune_is_amortized_every_32_inserts() -> None:
    cfg = DedupeConfig(window_ms=10, max_ids=1000)
    s = SeenIds()
    for i in range(31):
        assert s.first_sight(cfg, f"old{i}", 0)
    assert s.first_sight(cfg, "new", 100)  # the 32nd insert prunes: old ones are 100 ms old
    assert len(s) == 1
    assert s.first_sight(cfg, "old0", 0)  # forgotten, by design


@settings(max_examples=200, deadline=None)
@given(st.lists(ids, max_size=150, unique=True), st.integers(1, 60))
def test_cap_keeps_the_newest_inserted(distinct: list[str], cap: int) -> None:
    cfg = DedupeConfig(window_ms=10**9, max_ids=cap)
    s = SeenIds()
    for i, m in enumerate(distinct):
        assert s.first_sight(cfg, m, i)
        assert len(s) == min(i + 1, cap)
    kept = set(distinct[-cap:])
    for m in reversed(distinct):  # newest first, so re-inserting a forgotten one evicts nothing kept
        assert s.first_sight(cfg, m, len(distinct)) == (m not in kept)


@settings(max_examples=200, deadline=None)
@given(within, within)
def test_merge_remembers_both_sides_once(a_items: list[tuple[str, int]], b_items: list[tuple[str, int]]) -> None:
    """Identity merge: every id either side saw is a duplicate afterwards, each stored once;
    merging the same state again changes nothing."""
    cfg = DedupeConfig(window_ms=1000, max_ids=500)
    a, b = SeenIds(), SeenIds()
    firsts = [t for m, t in a_items if a.first_sight(cfg, m, t)]
    firsts += [t for m, t in b_items if b.first_sight(cfg, m, t)]
    a.merge(cfg, b)
    union = {m for m, _ in a_items} | {m for m, _ in b_items}
    assert len(a) == len(union)
    assert a.newest == max(firsts, default=-(2**62))
    before = _snapshot(a)
    a.merge(cfg, b)
    assert _snapshot(a) == before
    assert not any(a.first_sight(cfg, m, 0) for m in union)


def test_cap_exactly() -> None:
    cfg = DedupeConfig(window_ms=10**9, max_ids=3)
    s = SeenIds()
    for i in range(3):
        assert s.first_sight(cfg, f"m{i}", i)
    assert len(s) == 3  # at the cap: nothing dropped
    assert s.first_sight(cfg, "m3", 3) and len(s) == 3 and list(s.times) == [1, 2, 3]
    assert [s.first_sight(cfg, f"m{i}", 9) for i in (3, 2, 1)] == [False, False, False]
    a, b = SeenIds(), SeenIds()
    for i in range(2):
        a.first_sight(cfg, f"a{i}", i)
    b.first_sight(cfg, "b0", 5)
    a.merge(cfg, b)
    assert len(a) == 3 and list(a.times) == [0, 1, 5]


def test_merge_respects_the_cap() -> None:
    cfg = DedupeConfig(window_ms=10**9, max_ids=5)
    a, b = SeenIds(), SeenIds()
    for i in range(5):
        a.first_sight(cfg, f"a{i}", i)
        b.first_sight(cfg, f"b{i}", i)
    a.merge(cfg, b)
    assert len(a) == 5
    assert not any(a.first_sight(cfg, f"b{i}", 0) for i in range(5))  # the newest inserted stay


def test_pickle_round_trip_keeps_every_id() -> None:
    cfg = DedupeConfig(window_ms=1000, max_ids=100)
    s = SeenIds()
    for i in range(40):
        s.first_sight(cfg, f"m{i}", 500 + i)
    back = pickle.loads(pickle.dumps(s))
    assert _snapshot(back) == _snapshot(s)
    assert not any(back.first_sight(cfg, f"m{i}", 0) for i in range(40))


def test_digest_is_stable_blake2b() -> None:
    """Fixed vectors: snapshots store digests, so they must not change between processes or
    versions (never Python's salted ``hash``)."""
    assert _digest("m1").hex() == hashlib.blake2b(b"m1", digest_size=8).hexdigest() == "d11f79d4b490b654"
    assert _digest("\ud800") == hashlib.blake2b(b"\xed\xa0\x80", digest_size=8).digest()  # lone surrogate


def test_find_counts_only_aligned_digests() -> None:
    d1, d2 = _digest("x"), _digest("y")
    buf = bytearray(d1 + d2)
    assert (_find(buf, d1), _find(buf, d2), _find(buf, _digest("z"))) == (0, 1, -1)
    straddling = d1[4:] + d2[:4]
    assert _find(buf, straddling) == -1
    # an unaligned false hit before the real one is skipped
    assert _find(bytearray(d1 + d2 + straddling), straddling) == 2
    # and one after the real one does not hide it
    assert _find(bytearray(straddling + d1 + d2), straddling) == 0
    assert _find(bytearray(d1 + d2 + straddling + d1 + d2), straddling) == 2  # hits at 4, 16, 28
    zeros = bytes(8)  # overlapping hits one byte apart: the aligned one is found
    assert _find(bytearray(b"\x01" * 7 + bytes(9)), zeros) == 1


@pytest.mark.parametrize(("window", "cap"), [(0, 10), (-1, 10), (10, 0), (10, -5)])
def test_config_must_be_positive(window: int, cap: int) -> None:
    with pytest.raises(ValueError, match="^dedupe window and max_ids must be positive$"):
        DedupeConfig(window_ms=window, max_ids=cap)
    assert DedupeConfig(window_ms=1, max_ids=1) == DedupeConfig(1, 1)
