"""Per-user category interest, exponentially decayed in event time.

Contract
--------
``Interest`` keeps, per category, ``Σ wᵢ · 2^(−(t_ref − tᵢ)/half_life)``: the
weights of the user's events decayed to ``t_ref``, the newest event time seen.
Adding an event older than ``t_ref`` decays *its* weight instead of the
stored scores, so the result does not depend on arrival order (up to float
rounding; rendered values are rounded to 4 decimals). Scores decayed below
``prune_below`` are dropped and at most ``max_categories`` are kept, so the
state stays small. Rendering is relative to ``t_ref`` (the user's last
activity), which keeps profiles a pure function of the user's events; a
consumer who wants "interest now" multiplies by ``2^(−(now − t_ref)/half_life)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from operators.names import EventName
from operators.snapshot import pack_defaults, restore

__all__ = ["InterestConfig", "Interest", "event_weight"]


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class InterestConfig:
    """Half-life (ms), weights by event kind, and state bounds."""

    half_life_ms: int = 30 * 86_400_000
    view: float = 1.0
    page: float = 0.5
    cart: float = 2.0
    checkout: float = 2.0
    purchase: float = 3.0
    email_click: float = 1.5
    prune_below: float = 0.05
    max_categories: int = 16

    def __post_init__(self) -> None:
        if self.half_life_ms <= 0:
            msg = "interest half-life must be positive"
            raise ValueError(msg)
        if not 0 < self.view <= self.cart <= self.purchase:
            msg = "interest weights must satisfy 0 < view <= cart <= purchase"
            raise ValueError(msg)


_TRACK_KIND = {
    EventName.PRODUCT_VIEWED: "view",
    EventName.PRODUCT_CLICKED: "view",
    EventName.PRODUCT_ADDED: "cart",
    "Product Added to Wishlist": "cart",
    EventName.CHECKOUT_STARTED: "checkout",
    EventName.ORDER_COMPLETED: "purchase",
    EventName.EMAIL_LINK_CLICKED: "email_click",
}


def event_weight(cfg: InterestConfig, etype: str, name: str) -> float:
    """Weight of one event for interest (0 when it says nothing about interest).

    >>> cfg = InterestConfig()
    >>> [event_weight(cfg, "track", n) for n in ("Product Viewed", "Product Added", "Order Completed", "Search")]
    [1.0, 2.0, 3.0, 0.0]
    >>> event_weight(cfg, "page", "Home")
    0.5
    """
    if etype == "page":
        return cfg.page
    if etype != "track":
        return 0.0
    kind = _TRACK_KIND.get(name)
    return float(getattr(cfg, kind)) if kind else 0.0


@dataclass(slots=True)
class Interest:
    """Decayed interest scores of one user.

    >>> cfg = InterestConfig(half_life_ms=1000)
    >>> a, b = Interest(), Interest()
    >>> for cat, w, t in [("shoes", 1.0, 0), ("books", 4.0, 1000), ("shoes", 10.0, 2000)]:
    ...     a.add(cfg, cat, w, t)
    >>> for cat, w, t in [("shoes", 10.0, 2000), ("shoes", 1.0, 0), ("books", 4.0, 1000)]:
    ...     b.add(cfg, cat, w, t)
    >>> a.render() == b.render(), a.render(), a.top()
    (True, {'shoes': 10.25, 'books': 2.0}, 'shoes')
    """

    scores: dict[str, float] = field(default_factory=dict)
    t_ref: int = -(2**62)

    def __getstate__(self) -> tuple[Any, ...]:
        """The pickled state: :func:`operators.snapshot.pack` ed (snapshot version 9)."""
        return _pack_Interest(self)

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout."""
        restore(self, state)

    def add(self, cfg: InterestConfig, category: str, weight: float, ts: int) -> None:
        """Add ``weight`` for ``category`` at event time ``ts``."""
        if not category or weight <= 0:
            return
        if self.t_ref == -(2**62):
            self.t_ref = ts
        if ts > self.t_ref:
            f = math.exp2(-(ts - self.t_ref) / cfg.half_life_ms)
            self.scores = {c: s * f for c, s in self.scores.items() if s * f >= cfg.prune_below}
            self.t_ref = ts
            w = weight
        else:
            w = weight * math.exp2(-(self.t_ref - ts) / cfg.half_life_ms)
        self.scores[category] = self.scores.get(category, 0.0) + w
        if len(self.scores) > cfg.max_categories:
            keep = sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.max_categories]
            self.scores = dict(keep)

    def merge(self, cfg: InterestConfig, other: Interest) -> None:
        """Fold another user's interest in (identity merge); order-insensitive."""
        for cat, s in other.scores.items():
            self.add(cfg, cat, s, other.t_ref)

    def render(self) -> dict[str, float]:
        """Scores rounded to 4 decimals, highest first (ties by name)."""
        items = sorted(((c, round(s, 4)) for c, s in self.scores.items()), key=lambda kv: (-kv[1], kv[0]))
        return {c: s for c, s in items if s > 0}

    def top(self) -> str:
        """The highest-scoring category, or ``""``."""
        r = self.render()
        return next(iter(r), "")


# >>> generated snapshot packers (python -m liveprofile.devtools.packers): do not edit
_PACK_DEFAULTS_Interest = pack_defaults(Interest)


def _pack_Interest(o: Interest) -> tuple[Any, ...]:
    """``operators.snapshot.pack(o)``, field by field (generated)."""
    D = _PACK_DEFAULTS_Interest
    m = 0
    out: list[Any] = [0]
    v: Any
    d: Any
    v = o.scores
    d = D[0]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1
        out.append(v)
    v = o.t_ref
    d = D[1]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2
        out.append(v)
    out[0] = m
    return tuple(out)
# <<< generated snapshot packers
