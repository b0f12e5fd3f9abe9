"""operators.rfm against independent computations: removable histograms, lower-quantile
scores, the segment grid."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.devtools.generate import RFM_GRID
from operators.rfm import DAY_MS, SEGMENTS, Population, RfmEdges, RfmValues, segment

values = st.builds(RfmValues, st.integers(0, 400 * DAY_MS), st.integers(1, 40), st.integers(0, 10**7))


def _hist(vals: list[RfmValues]) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    out: tuple[dict[int, int], ...] = ({}, {}, {})
    for v in vals:
        for h, b in zip(out, v.bins(), strict=True):
            h[b] = h.get(b, 0) + 1
    return out  # type: ignore[return-value]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(values | st.none(), min_size=1, max_size=4), max_size=25), st.randoms(use_true_random=False))
def test_population_is_a_pure_function_of_current_values(histories: list[list], rnd) -> None:  # type: ignore[no-untyped-def]
    """Customers move (value -> value, or in/out of the population) in any interleaving;
    the histograms are those of the customers' final values."""
    moves = []
    for c, hist in enumerate(histories):
        prev = None
        for v in hist:
            moves.append((c, prev, v))
            prev = v
    # interleave customers, keeping each customer's own moves in order
    order = [c for c, _, _ in moves]
    rnd.shuffle(order)
    per = {c: [m for m in moves if m[0] == c] for c in set(order)}
    pop = Population()
    for c in order:
        _, old, new = per[c].pop(0)
        pop.apply(old, new)
    final = [h[-1] for h in histories if h[-1] is not None]
    r, f, m = _hist(final)
    assert (pop.r, pop.f, pop.m, pop.n) == (r, f, m, len(final))
    assert all(c > 0 for h in (pop.r, pop.f, pop.m) for c in h.values())  # emptied bins go


@settings(max_examples=150, deadline=None)
@given(st.lists(values, min_size=1, max_size=60))
def test_scores_are_lower_quantiles(vals: list[RfmValues]) -> None:
    """A customer's score per dimension is 1 + min(4, floor(5 x share of customers whose bin
    is strictly below theirs)): counted directly, not through the edges; recency then at least
    its window's floor (4 within 7 days of the newest purchase, 3 within 30)."""
    pop = Population()
    for v in vals:
        pop.apply(None, v)
    edges = pop.edges()
    assert edges.n == len(vals)
    n = len(vals)
    newest = max(v.bins()[0] for v in vals)
    for v in vals:
        want = [1 + min(4, (5 * sum(1 for w in vals if w.bins()[d] < v.bins()[d])) // n) for d in range(3)]
        age = newest - v.bins()[0]
        want[0] = max(want[0], 4 if age < 7 else 3 if age < 30 else 1)
        assert edges.score(v) == tuple(want)
    lowest = min(vals, key=lambda v: v.bins()[1])
    assert edges.score(lowest)[1] == 1  # the lowest bin always scores 1
    assert RfmEdges.from_json(edges.to_json()) == edges


def test_edges_fixed_vector() -> None:
    pop = Population()
    for i in range(10):
        pop.apply(None, RfmValues(i * DAY_MS, 1 if i < 6 else i, 100 * (i + 1)))
    e = pop.edges()
    assert e.r == (-20, -20, 3, 8) and e.n == 10  # quantiles (2, 4, 6, 8) within the windows (days 9-29, 9-6)
    assert e.f == (6, 6, 6, 8)  # six one-time buyers: 60 % below the first bin above them
    assert e.score(RfmValues(9 * DAY_MS, 1, 100)) == (5, 1, 1)
    assert e.score(RfmValues(9 * DAY_MS + DAY_MS - 1, 9, 1000)) == (5, 5, 5)  # same day bin
    assert Population().edges() == RfmEdges() and RfmEdges().score(RfmValues(0, 1, 0)) == (1, 1, 1)


def test_bins() -> None:
    assert RfmValues(0, 1, 0).bins() == (0, 1, 0)
    assert RfmValues(DAY_MS - 1, 1, 0).bins()[0] == 0 and RfmValues(DAY_MS, 1, 0).bins()[0] == 1
    assert RfmValues(0, 10**6, 0).bins()[1] == 100_000  # capped
    assert RfmValues(0, 1, -5).bins()[2] == 0  # negative revenue counts as none
    # 2 % revenue bins: log1p(cents) / log(1.02), rounded
    for cents in (1, 99, 10_000, 123_456_789):
        assert RfmValues(0, 1, cents).bins()[2] == round(math.log1p(cents) / math.log(1.02))
    assert RfmValues(0, 1, 10_000).bins()[2] + 1 == RfmValues(0, 1, 10_202).bins()[2]


def test_apply_same_values_is_a_noop_and_removal_drops_empty_bins() -> None:
    pop = Population()
    v = RfmValues(DAY_MS, 2, 500)
    pop.apply(None, v)
    pop.apply(v, RfmValues(DAY_MS, 2, 500))
    assert (pop.r, pop.f, pop.n) == ({1: 1}, {2: 1}, 1)
    pop.apply(None, v)
    pop.apply(v, None)
    assert (pop.r, pop.f, pop.n) == ({1: 1}, {2: 1}, 1)
    pop.apply(v, None)
    assert (pop.r, pop.f, pop.m, pop.n) == ({}, {}, {}, 0)


# R rows 5..1, FM columns 1..5 (FM = ceil((F+M)/2)): the documented grid, as the generator's
# truth writes it independently of operators/rfm.py
GRID = RFM_GRID


def test_segment_grid() -> None:
    seen = set()
    for r in range(1, 6):
        for f in range(1, 6):
            for m in range(1, 6):
                name = segment(r, f, m)
                assert name == GRID[r][math.ceil((f + m) / 2) - 1], (r, f, m)
                seen.add(name)
    assert seen == set(SEGMENTS)


def test_edges_json() -> None:
    e = RfmEdges((1, 2, 3, 4), (1, 1, 2, 3), (5, 6, 7, 8), 42)
    assert RfmEdges.from_json(e.to_json()) == e
    assert RfmEdges.from_json(e.to_json().decode()) == e
    assert RfmEdges.from_json(None) == RfmEdges.from_json(b"") == RfmEdges() and RfmEdges().n == 0
    assert e.to_json() == b'{"r":[1,2,3,4],"f":[1,1,2,3],"m":[5,6,7,8],"n":42}'


LOST_OR_SLIPPING = {"lost", "at_risk", "hibernating", "cant_lose", "about_to_sleep"}


def test_a_buyer_from_this_week_is_never_lost_on_a_young_shop() -> None:
    """A 3-day-old shop (issue 12: buyers from yesterday scored R=1, 56 of 77 in the demo):
    every buyer is within the 7-day window, so R >= 4 and no segment of lapsed customers.
    Failed on main: the day-0 buyers scored R=1 ('lost' / 'hibernating')."""
    pop = Population()
    vals = [RfmValues(day * DAY_MS + i * 1000, 1 + i % 3, 1000 + 37 * i) for day in range(3) for i in range(30)]
    for v in vals:
        pop.apply(None, v)
    e = pop.edges()
    for v in vals:
        r, f, m = e.score(v)
        assert r >= 4 and segment(r, f, m) not in LOST_OR_SLIPPING, (v, r, f, m)


def test_recency_windows_do_not_touch_a_long_history() -> None:
    """Two years of buyers, evenly spread: the quantile edges already lie within the windows, so
    every score is the plain lower quantile."""
    pop = Population()
    vals = [RfmValues(d * DAY_MS, 1, 1000) for d in range(0, 730, 3)]
    for v in vals:
        pop.apply(None, v)
    e = pop.edges()
    n = len(vals)
    for v in vals:
        assert e.score(v)[0] == 1 + min(4, (5 * sum(1 for w in vals if w.bins()[0] < v.bins()[0])) // n)
