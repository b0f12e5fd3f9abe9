"""RFM: recency, frequency, monetary scores 1–5 relative to the population.

Contract
--------
* The **population** of customers (users with at least one order) is kept as
  three removable histograms: last purchase by *day*, order count exactly, and
  revenue in 2 %-wide log bins. Memory is bounded by the number of distinct
  bins (a few thousand at most, whatever the number of customers), the
  histograms merge by addition, and a customer whose values change is moved
  with ``apply(old, new)`` — so the histogram, and the edges derived from it,
  are a pure function of the customers' current values, in any order.
* **Edges** are, per dimension, the four smallest bins with at least
  20/40/60/80 % of the customers strictly below them; a value scores
  ``1 + #(edges ≤ its bin)``. Ties stay together, and the lowest bin always
  scores 1 (half of a shop's customers often bought once: they are F=1).
  Recency ranks the last-purchase *time* (more recent = higher), so a replayed
  multi-year history scores exactly as it would have live.
* **Recency windows** (:data:`RECENCY_FLOORS`): quantiles alone call the older half of a young
  shop's buyers "lost" even if they bought yesterday. So a customer whose last purchase is
  within 7 days of the population's newest purchase scores R ≥ 4, within 30 days R ≥ 3, whatever
  the quantiles say (R = max(quantile score, window floor)); on a shop with years of history
  the quantile edges already lie inside these windows and nothing changes. It is done on the
  R edges (an edge is never later than its window's first day), so scoring stays
  ``1 + #(edges ≤ bin)`` and the edges a pure function of the population.
* **Segments** follow the standard R × FM grid (FM = ⌈(F+M)/2⌉), see
  :func:`segment`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson
from mypy_extensions import mypyc_attr

from operators.snapshot import set_slots_state, slots_state

__all__ = ["RfmValues", "Population", "RfmEdges", "segment", "rfm_fields", "SEGMENTS", "DAY_MS", "RECENCY_FLOORS"]

DAY_MS = 86_400_000
_LOG_STEP = math.log(1.02)
_NEVER = 2**62
#: (days, R floor): a last purchase within ``days`` of the population's newest one (that day
#: included, so 7 = the newest purchase's day and the 6 before) scores at least the floor
RECENCY_FLOORS: tuple[tuple[int, int], ...] = ((7, 4), (30, 3))
SEGMENTS = (
    "champions", "loyal", "potential_loyalist", "new_customer", "promising", "need_attention",
    "about_to_sleep", "at_risk", "cant_lose", "hibernating", "lost",
)  # fmt: skip


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class RfmValues:
    """One customer's raw RFM values."""

    last_purchase_ms: int
    frequency: int
    monetary_cents: int

    def bins(self) -> tuple[int, int, int]:
        """Histogram bins: (day, count, log-2% revenue bin).

        >>> RfmValues(3 * DAY_MS + 5, 2, 10000).bins()
        (3, 2, 465)
        """
        return (
            self.last_purchase_ms // DAY_MS,
            min(self.frequency, 100_000),
            int(round(math.log1p(max(self.monetary_cents, 0)) / _LOG_STEP)),
        )


def _edges(hist: dict[int, int], n: int) -> tuple[int, int, int, int]:
    if n <= 0:
        return (_NEVER, _NEVER, _NEVER, _NEVER)
    out = [_NEVER] * 4
    below = 0
    for b in sorted(hist):
        c = hist[b]
        # lower quantile: a bin scores by the share of customers strictly below it, so
        # the lowest bin is always 1 (e.g. one-time buyers: F=1, however many they are)
        score = 1 + min(4, int(5 * below / n))
        for k in range(2, score + 1):
            if out[k - 2] == _NEVER:
                out[k - 2] = b
        below += c
    return (out[0], out[1], out[2], out[3])


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class RfmEdges:
    """Quintile edges per dimension, in bin space; ``n`` customers behind them."""

    r: tuple[int, ...] = (_NEVER,) * 4
    f: tuple[int, ...] = (_NEVER,) * 4
    m: tuple[int, ...] = (_NEVER,) * 4
    n: int = 0

    def score(self, v: RfmValues) -> tuple[int, int, int]:
        """Scores (R, F, M), each 1–5.

        >>> pop = Population()
        >>> for i in range(1, 101):
        ...     pop.apply(None, RfmValues(i * DAY_MS, 1 + i // 10, i * 1000))
        >>> e = pop.edges()
        >>> e.score(RfmValues(100 * DAY_MS, 11, 100_000)), e.score(RfmValues(1 * DAY_MS, 1, 1000))
        ((5, 5, 5), (1, 1, 1))
        """
        rb, fb, mb = v.bins()
        return (
            1 + sum(1 for e in self.r if e <= rb),
            1 + sum(1 for e in self.f if e <= fb),
            1 + sum(1 for e in self.m if e <= mb),
        )

    def to_json(self) -> bytes:
        return orjson.dumps({"r": self.r, "f": self.f, "m": self.m, "n": self.n})

    @classmethod
    def from_json(cls, data: bytes | str | None) -> RfmEdges:
        if not data:
            return cls()
        d = orjson.loads(data)
        return cls(tuple(d["r"]), tuple(d["f"]), tuple(d["m"]), int(d["n"]))


@dataclass(slots=True)
class Population:
    """Removable histograms of the customer population (see module docstring)."""

    r: dict[int, int] = field(default_factory=dict)
    f: dict[int, int] = field(default_factory=dict)
    m: dict[int, int] = field(default_factory=dict)
    n: int = 0

    def apply(self, old: RfmValues | None, new: RfmValues | None) -> None:
        """Move one customer from ``old`` values (None: was not a customer) to ``new``."""
        if old == new:
            return
        if old is not None:
            for h, b in zip((self.r, self.f, self.m), old.bins(), strict=True):
                c = h.get(b, 0) - 1
                if c > 0:
                    h[b] = c
                else:
                    h.pop(b, None)
            self.n -= 1
        if new is not None:
            for h, b in zip((self.r, self.f, self.m), new.bins(), strict=True):
                h[b] = h.get(b, 0) + 1
            self.n += 1

    def edges(self) -> RfmEdges:
        """Current quintile edges (recency with its windows, see the module docstring).

        >>> pop = Population()
        >>> for day in (0, 0, 1, 1, 2, 2, 2, 2):  # a 3-day-old shop
        ...     pop.apply(None, RfmValues(day * DAY_MS, 1, 1000))
        >>> [pop.edges().score(RfmValues(d * DAY_MS, 1, 1000))[0] for d in (0, 1, 2)]
        [4, 4, 4]
        """
        return RfmEdges(_recency_windows(_edges(self.r, self.n), self.r), _edges(self.f, self.n), _edges(self.m, self.n), self.n)

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """Pickled as a plain slots class pickles (and did before compiling): ``(None, slots)``."""
        return slots_state(self)

    def __setstate__(self, state: Any) -> None:
        set_slots_state(self, state)


def _recency_windows(edges: tuple[int, int, int, int], hist: dict[int, int]) -> tuple[int, int, int, int]:
    """R edges no later than the first day of each :data:`RECENCY_FLOORS` window."""
    if not hist:
        return edges
    newest = max(hist)
    out = list(edges)
    for days, floor in RECENCY_FLOORS:
        for k in range(floor - 1):  # edge k is where score k + 2 starts
            out[k] = min(out[k], newest - days + 1)
    return (out[0], out[1], out[2], out[3])


def segment(r: int, f: int, m: int) -> str:
    """Named segment from the R × FM grid.

    >>> segment(5, 5, 5), segment(5, 1, 1), segment(1, 5, 5), segment(1, 1, 1), segment(2, 2, 1)
    ('champions', 'new_customer', 'cant_lose', 'lost', 'hibernating')
    """
    fm = (f + m + 1) // 2
    if r == 5 and fm >= 4:
        return "champions"
    if r >= 3 and fm >= 4:
        return "loyal"
    if r >= 4 and fm >= 2:
        return "potential_loyalist"
    if r == 5:
        return "new_customer"
    if r == 4:
        return "promising"
    if r == 3 and fm == 3:
        return "need_attention"
    if r == 3:
        return "about_to_sleep"
    if fm == 5:
        return "cant_lose"
    if fm >= 3:
        return "at_risk"
    if r == 1 and fm == 1:
        return "lost"
    return "hibernating"


def rfm_fields(edges: RfmEdges, v: RfmValues | None) -> dict[str, str]:
    """The four RFM profile fields for raw values ``v`` under ``edges`` ('' for non-customers).

    >>> rfm_fields(RfmEdges(), None)
    {'rfm_r': '', 'rfm_f': '', 'rfm_m': '', 'rfm_segment': ''}
    """
    if v is None or edges.n == 0:  # not a customer, or no population to rank against yet
        return {"rfm_r": "", "rfm_f": "", "rfm_m": "", "rfm_segment": ""}
    r, f, m = edges.score(v)
    return {"rfm_r": str(r), "rfm_f": str(f), "rfm_m": str(m), "rfm_segment": segment(r, f, m)}
