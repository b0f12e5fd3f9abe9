"""Deterministic, realistic Segment-spec test streams with the expected profile of every user.

Contract
--------
``generate(cfg)`` returns a :class:`Generated`: a list of Segment-spec event
dicts in stream order plus, for every user that has at least one valid event,
the profile fields the pipeline must end up with (``truth``), computed by
:func:`expected_profiles` from the emitted valid events with this module's own
straightforward code (nothing from ``operators/`` but the ISO time format). The same :class:`GenConfig` always yields the same output (every
random choice comes from ``random.Random`` seeded with strings derived from
``cfg.seed``; Python's ``hash()`` is never used).

Stream properties:

* Events carry ``type``, ``messageId`` (unique), ``userId``, ``timestamp``
  (ISO 8601 UTC, milliseconds, ``Z``), ``context`` and, for track calls,
  ``event`` + ``properties``. No ``sentAt`` and no ``receivedAt``: the event time
  is the ``timestamp``.
* Per user, event times strictly increase (>= 1 ms apart) and lie in
  ``[end_ms - days, end_ms]``. The valid events are the global merge by time, so
  per-user stream order is time order.
* ``round(duplicate_rate * n_valid)`` valid events are re-emitted as exact
  copies 1..``duplicate_max_positions`` positions after the original, never
  more than ``duplicate_max_lag_ms`` of stream time later (so they stay inside
  the pipeline's dedupe window). They do not count in the truth.
* No ``Product Added``/``Product Removed`` in the last ``abandon_ms + cart_quiet_ms``
  before ``end_ms`` (they become ``Product Viewed``): every abandonment deadline is at
  or before ``end_ms - cart_quiet_ms``, so a live pipeline decides every cart as the
  truth does once its stream clock reached ``Generated.clock_ms``, however long it runs on.
* ``round(invalid_rate * n_valid)`` invalid events are spread through the
  stream, each with a unique ``messageId``; ``Generated.invalid`` lists the
  reason code :func:`operators.events.parse_event` must reject it with.
  They do not count in the truth.

Truth semantics (per user id, all values strings as on the profile hash; the rules of
docs/intelligence.md, with the settings ``GenConfig.session_gap_ms``, ``abandon_ms``,
``interest_half_life_ms``):

* ``event_count`` valid unique events; first/last seen; ``email`` of the newest identify;
  ``traits``: every identify trait but ``email`` (``lastName`` as ``last_name``), the newest
  identify's value of each (a re-identify upgrades ``plan`` from ``free`` to ``pro``);
  email opens/clicks and the newest open time; an open less than 5 s after the delivery of
  the same ``email_id`` is a machine open (``email_opens_machine``), not an open;
* ``purchase_count`` / ``revenue_total`` / first and last purchase over ``Order Completed``
  (order value = ``revenue``, else ``total``, else the sum of price x quantity of its
  products, in exact cents) — the RFM inputs;
* the live cart (``cart`` lines, ``cart_items``, ``cart_value``) = net ``Product Added`` /
  ``Product Removed`` quantities after the newest order, at the newest add's price;
  ``cart_abandoned`` = the cart holds items and ``abandon_ms`` passed after its last
  change with no order, decided by the user's next event or at ``Generated.clock_ms``;
  each abandonment is one ``Generated.abandonments`` entry (the change feed's trigger);
* ``session_count``: clusters of the user's event times separated by more than
  ``session_gap_ms``;
* ``top_category`` / ``interests_at`` and ``Generated.interests``: per category the event
  weights (page 0.5, view 1, cart 2, checkout 2, purchase 3, email click 1.5; an event of
  several lines shares its weight over them) decayed with the half-life to the newest
  weighted event, pruned below 0.05; the top is the highest score at 4 decimals, ties by
  name. Not for bots (the pipeline's bot rule keeps part of their activity out);
* ``rfm_r/f/m/segment``: :func:`rfm_scores` over every customer (empty for the others).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson

from operators.timeutil import iso

__all__ = [
    "GenConfig",
    "Generated",
    "Catalogue",
    "BOT_KINDS",
    "INVALID_REASONS",
    "TRUTH_FIELDS",
    "INTEREST_FIELDS",
    "Expected",
    "expected_profiles",
    "rfm_scores",
    "generate",
    "generate_to_files",
    "write_jsonl",
    "read_jsonl",
]

SECOND_MS = 1000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

#: Reason codes of the injected invalid events (as in ``operators.events.REASONS``).
INVALID_REASONS = (
    "missing_event",
    "unknown_type",
    "missing_identity",
    "invalid_money",
    "invalid_quantity",
    "invalid_email",
    "invalid_timestamp",
)
#: Bot behaviours, assigned round-robin to ``bot0001``, ``bot0002``, ...
BOT_KINDS = ("scraper", "link_scanner")
#: The profile fields the truth holds (exactly, as strings) for every user.
TRUTH_FIELDS = (
    "user_id", "event_count", "purchase_count", "revenue_total", "first_seen_at", "last_seen_at",
    "first_purchase_at", "last_purchase_at", "email", "cart", "cart_items", "cart_value",
    "cart_abandoned", "email_opens", "email_clicks", "last_email_open_at", "email_opens_machine", "session_count",
    "rfm_r", "rfm_f", "rfm_m", "rfm_segment", "traits",
)  # fmt: skip
#: the truth's own spelling of the reserved traits the generator sends camelCase (SPEC 1)
_TRAIT_NAMES = {"firstName": "first_name", "lastName": "last_name"}
#: Held too for every user but the bots (scores themselves: ``Generated.interests``).
INTEREST_FIELDS = ("top_category", "interests_at")

_DEFAULT_CATEGORIES = ("electronics", "books", "fashion", "home", "sports", "beauty", "toys", "garden")
_MAX_CART_OPS = 150  # stay well below the operator's bound on remembered cart operations
_SITE = "https://shop.example.com"
_UAS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
)
_BOT_UAS = {
    "scraper": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.71 Safari/537.36",
    "link_scanner": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/99.0.4844.51 Safari/537.36",
}
_ESP_UA = "esp-webhooks/2.4 (+https://esp.example.net)"
_PUBLIC_OCTETS = (24, 31, 37, 50, 62, 68, 73, 81, 86, 92, 98, 109, 151, 176, 188)
_FIRST = ("anna", "ben", "carla", "dev", "elif", "farid", "grace", "hugo", "ines", "jon", "kira", "liam", "maya", "noah", "olga", "priya", "quinn", "rosa", "sami", "tara")
_LAST = ("smith", "garcia", "mueller", "rossi", "kim", "nguyen", "silva", "novak", "ito", "khan", "okafor", "berg")
_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "web.de", "example.org")
_NOUNS = {
    "electronics": ("Headphones", "Charger", "Speaker", "Webcam", "Keyboard", "Monitor"),
    "books": ("Novel", "Cookbook", "Atlas", "Biography", "Anthology", "Guide"),
    "fashion": ("Jacket", "Sneakers", "Scarf", "T-Shirt", "Jeans", "Dress"),
    "home": ("Lamp", "Blanket", "Vase", "Mug Set", "Cushion", "Clock"),
    "sports": ("Yoga Mat", "Dumbbells", "Racket", "Bottle", "Jump Rope", "Helmet"),
    "beauty": ("Serum", "Lipstick", "Shampoo", "Face Mask", "Perfume", "Cream"),
    "toys": ("Puzzle", "Robot Kit", "Plush Bear", "Board Game", "Blocks", "Kite"),
    "garden": ("Trowel", "Planter", "Hose", "Seed Pack", "Pruner", "Gloves"),
}
_PRICE_RANGE = {"electronics": (15, 400), "books": (6, 45), "fashion": (12, 180), "home": (8, 150),
                "sports": (7, 160), "beauty": (5, 90), "toys": (6, 120), "garden": (4, 110)}  # fmt: skip
_ADJ = ("Classic", "Pro", "Mini", "Eco", "Deluxe", "Smart", "Urban", "Soft", "Ultra", "Everyday")
_BRANDS = ("Acme", "Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent")
_QUERIES = ("gift", "sale", "wireless", "organic", "kids", "summer", "black", "best seller", "new", "cheap")


# --------------------------------------------------------------------------- config & result


@dataclass(frozen=True)
class GenConfig:
    """What to generate. ``end_ms`` (epoch ms UTC, the newest event time) is required.

    ``users`` normal users ``u00001``... plus ``bots`` bot users ``bot0001``...
    ``sessions_mean`` is the mean number of browsing sessions per normal user
    over the span (heavy-tailed); ``preference_share`` the probability that a
    category-bearing activity is in the user's planted category.
    """

    users: int = 1000
    seed: int = 42
    end_ms: int = field(kw_only=True)
    days: float = 30.0
    duplicate_rate: float = 0.0
    invalid_rate: float = 0.0
    bots: int = 0
    categories: tuple[str, ...] = _DEFAULT_CATEGORIES
    products: int = 200
    preference_share: float = 0.65
    sessions_mean: float = 5.0
    checkout_rate: float = 0.45
    reidentify_rate: float = 0.1
    campaign_every_days: float = 3.0
    duplicate_max_positions: int = 500
    duplicate_max_lag_ms: int = 24 * HOUR_MS
    #: the pipeline settings the truth assumes (defaults: the LIVEPROFILE_* defaults)
    session_gap_ms: int = 30 * MINUTE_MS
    abandon_ms: int = HOUR_MS
    interest_half_life_ms: int = 30 * DAY_MS
    #: no cart changes in the last ``abandon_ms + cart_quiet_ms`` before ``end_ms``
    cart_quiet_ms: int = 15 * MINUTE_MS

    def __post_init__(self) -> None:
        problems = []
        if self.users < 0 or self.bots < 0:
            problems.append("users and bots must be >= 0")
        if not self.days > 0 or not self.campaign_every_days > 0 or not self.sessions_mean >= 1:
            problems.append("days and campaign_every_days must be > 0, sessions_mean >= 1")
        if not 0 <= self.duplicate_rate <= 1 or self.invalid_rate < 0:
            problems.append("duplicate_rate must be in [0, 1] and invalid_rate >= 0")
        if not self.categories or len(set(self.categories)) != len(self.categories):
            problems.append("categories must be non-empty and distinct")
        if self.products < len(self.categories):
            problems.append("need at least one product per category")
        if not 0 <= self.preference_share <= 1 or not 0 <= self.checkout_rate <= 1:
            problems.append("preference_share and checkout_rate must be in [0, 1]")
        if self.duplicate_max_positions < 1 or self.duplicate_max_lag_ms < 0:
            problems.append("duplicate_max_positions must be >= 1, duplicate_max_lag_ms >= 0")
        if min(self.session_gap_ms, self.abandon_ms, self.interest_half_life_ms) <= 0 or self.cart_quiet_ms < 0:
            problems.append("session_gap_ms, abandon_ms, interest_half_life_ms must be > 0, cart_quiet_ms >= 0")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def start_ms(self) -> int:
        """The oldest possible event time."""
        return self.end_ms - int(self.days * DAY_MS)


@dataclass
class Generated:
    """A generated stream and what the pipeline must make of it."""

    events: list[dict[str, Any]]
    truth: dict[str, dict[str, str]]
    invalid: list[dict[str, str]]
    bots: list[str]
    preferences: dict[str, str]
    bot_kinds: dict[str, str] = field(default_factory=dict)
    #: messageIds that were planted as duplicates (each appears exactly twice).
    duplicates: list[str] = field(default_factory=list)
    #: per user but the bots: category -> decayed score (unrounded; compare with a tolerance)
    interests: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the ``Cart Abandoned`` triggers the change feed must carry, once each
    abandonments: list[dict[str, Any]] = field(default_factory=list)
    #: the stream clock cart states are decided at (the newest valid event time)
    clock_ms: int | None = None
    #: the earliest abandonment deadline after ``clock_ms`` (None: no cart changes later)
    pending_deadline_ms: int | None = None


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Catalogue:
    """Fixed products: ``props[pid]`` is the Segment product dict (without quantity)."""

    props: dict[str, dict[str, Any]]
    cents: dict[str, int]
    by_category: dict[str, list[str]]
    ids: list[str]

    @classmethod
    def build(cls, seed: int, categories: tuple[str, ...], n: int) -> Catalogue:
        """``n`` products spread round-robin over ``categories`` with fixed prices."""
        rng = random.Random(f"{seed}/catalogue")
        props: dict[str, dict[str, Any]] = {}
        cents: dict[str, int] = {}
        by_cat: dict[str, list[str]] = {c: [] for c in categories}
        for i in range(n):
            cat = categories[i % len(categories)]
            pid = f"p{i + 1:04d}"
            lo, hi = _PRICE_RANGE.get(cat, (5, 100))
            price = rng.randint(lo, hi) * 100 + rng.choice((99, 99, 49, 95, 0))
            brand = rng.choice(_BRANDS)
            noun = rng.choice(_NOUNS.get(cat, ("Item",)))
            props[pid] = {
                "product_id": pid,
                "sku": f"{cat[:3].upper()}-{i + 1:05d}",
                "name": f"{brand} {rng.choice(_ADJ)} {noun}",
                "category": cat,
                "brand": brand,
                "price": price / 100,
            }
            cents[pid] = price
            by_cat[cat].append(pid)
        return cls(props, cents, by_cat, list(props))

    def line(self, pid: str, quantity: int) -> dict[str, Any]:
        """A fresh product dict with ``quantity``."""
        d = dict(self.props[pid])
        d["quantity"] = quantity
        return d


# --------------------------------------------------------------------------- truth
#
# The truth is folded from the emitted events themselves (not from the generator's
# intentions, and with no code from ``operators/``), one user at a time in event-time
# order, by the rules docs/intelligence.md and the module contracts document. Only the settings
# (windows, half-life) are shared with the pipeline, as plain numbers.

#: Interest weight per event (docs/intelligence.md, Interest; ``page`` is any page call).
_INTEREST_WEIGHT = {
    "Product Viewed": 1.0, "Product Clicked": 1.0, "Product Added": 2.0,
    "Product Added to Wishlist": 2.0, "Checkout Started": 2.0, "Order Completed": 3.0,
    "Email Link Clicked": 1.5,
}  # fmt: skip
_PAGE_WEIGHT = 0.5
_INTEREST_PRUNE = 0.05
_INTEREST_MAX = 16
#: Standard RFM grid: segment by R (rows 5..1) and FM = ceil((F + M) / 2) (columns 1..5), written
#: here from the documented rule, independently of operators/rfm.py (tests pin the code to it).
RFM_GRID = {
    5: ("new_customer", "potential_loyalist", "potential_loyalist", "champions", "champions"),
    4: ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
    3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
    2: ("hibernating", "hibernating", "at_risk", "at_risk", "cant_lose"),
    1: ("lost", "hibernating", "at_risk", "at_risk", "cant_lose"),
}


@dataclass
class Expected:
    """What a pipeline must make of a list of valid, unique events.

    ``truth``: per user, the exact profile hash fields (strings). ``interests``: per user
    (not for ``no_interest`` users) category -> decayed score, unrounded: compare with a
    tolerance. ``abandonments``: the ``Cart Abandoned`` triggers sorted by (``ts``,
    ``user_id``): ``ts`` is the deadline, with ``cart_value`` and ``products`` (the cart
    lines as of then). ``clock_ms``: the stream clock the cart states are decided at
    (``None`` without events); ``pending_deadline_ms``: the earliest
    abandonment deadline still ahead of it (``None``: no cart would change later).
    """

    truth: dict[str, dict[str, str]]
    interests: dict[str, dict[str, float]]
    abandonments: list[dict[str, Any]]
    clock_ms: int | None
    pending_deadline_ms: int | None


def _event_ms(value: str) -> int:
    """Epoch ms of an ISO 8601 timestamp (``Z`` or an offset)."""
    from datetime import UTC, datetime

    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _money_cents(value: Any) -> int:
    """Integer cents of a money value: its decimal text, rounded half-even once."""
    from decimal import ROUND_HALF_EVEN, Decimal

    return int((Decimal(repr(value) if isinstance(value, float) else str(value)) * 100).quantize(Decimal(1), ROUND_HALF_EVEN))


def _cents_text(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _category(value: Any) -> str:
    """Top level of a category path, lowercased, single-spaced."""
    if not isinstance(value, str):
        return ""
    for sep in (">", "/", "|"):
        value = value.split(sep)[0]
    return " ".join(value.split()).lower()[:64]


def _lines_of(props: dict[str, Any]) -> list[dict[str, Any]]:
    """The product lines of a track call: ``products``, or the properties as one product."""
    if isinstance(props.get("products"), list):
        return props["products"]
    if "product_id" in props or "sku" in props or "price" in props:
        return [props]
    return []


class _Fold:
    """One user's expected profile, folded from their events in event-time order."""

    def __init__(self, uid: str, abandon_ms: int, half_life_ms: int, interest: bool) -> None:
        self.uid = uid
        self.abandon_ms = abandon_ms
        self.half_life_ms = half_life_ms
        self.interest = interest
        self.times: list[int] = []
        self.purchases = 0
        self.revenue = 0
        self.purchase_times: list[int] = []
        self.email = ""
        self.traits: dict[str, Any] = {}
        self.opens = 0
        self.machine_opens = 0
        self.delivered_at: dict[str, int] = {}  # email id -> delivery time
        self.clicks = 0
        self.open_times: list[int] = []
        self.last_order: int | None = None
        self.cart: dict[str, list[Any]] = {}  # pid -> [net quantity, newest add's cents, name, category]
        self.cart_changed: int | None = None  # newest add/remove after the newest order
        self.abandoned = False
        self.episodes: list[dict[str, Any]] = []
        self.scores: dict[str, float] = {}  # decayed to scores_at
        self.scores_at: int | None = None

    # -- cart
    def live_lines(self) -> list[dict[str, Any]]:
        return [{"product_id": pid, "name": name, "category": cat, "price": _cents_text(cents), "quantity": q}
                for pid, (q, cents, name, cat) in sorted(self.cart.items()) if q > 0]  # fmt: skip

    def deadline(self) -> int | None:
        """When the live cart counts as abandoned (None: nothing to abandon, or already)."""
        if self.abandoned or self.cart_changed is None or not self.live_lines():
            return None
        return self.cart_changed + self.abandon_ms

    def check_abandoned(self, clock: int) -> None:
        d = self.deadline()
        if d is not None and clock >= d:
            lines = self.live_lines()
            value = sum(_money_cents(x["price"]) * x["quantity"] for x in lines)
            self.episodes.append({"user_id": self.uid, "ts": iso(d), "cart_value": _cents_text(value), "products": lines})
            self.abandoned = True

    def cart_op(self, ts: int, sign: int, props: dict[str, Any]) -> None:
        if self.last_order is not None and ts <= self.last_order:
            return  # before the newest order: that order took it
        for p in _lines_of(props):
            pid = str(p.get("product_id", p.get("sku", p.get("id", ""))))
            entry = self.cart.setdefault(pid, [0, 0, "", ""])
            q = int(p.get("quantity", 1))
            entry[0] += sign * q
            if sign > 0:
                entry[1] = _money_cents(p.get("price", 0))
            if p.get("name") or p.get("category"):
                entry[2] = p.get("name") if isinstance(p.get("name"), str) else ""
                entry[3] = _category(p.get("category"))
        self.cart_changed = ts
        self.abandoned = False

    def order(self, ts: int, props: dict[str, Any]) -> None:
        if "revenue" in props:
            cents = _money_cents(props["revenue"])
        elif "total" in props:
            cents = _money_cents(props["total"])
        else:
            cents = sum(_money_cents(p.get("price", 0)) * int(p.get("quantity", 1)) for p in _lines_of(props))
        self.purchases += 1
        self.revenue += cents
        self.purchase_times.append(ts)
        self.last_order = ts
        self.cart.clear()
        self.cart_changed = None
        self.abandoned = False

    # -- interest
    def add_interest(self, ts: int, category: str, weight: float) -> None:
        if not category or weight <= 0:
            return
        if self.scores_at is None:
            self.scores_at = ts
        if ts > self.scores_at:  # decay everything to the newer time, drop what fell below the bound
            factor = 0.5 ** ((ts - self.scores_at) / self.half_life_ms)
            self.scores = {c: v * factor for c, v in self.scores.items() if v * factor >= _INTEREST_PRUNE}
            self.scores_at = ts
        else:
            weight *= 0.5 ** ((self.scores_at - ts) / self.half_life_ms)
        self.scores[category] = self.scores.get(category, 0.0) + weight
        if len(self.scores) > _INTEREST_MAX:
            self.scores = dict(sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))[:_INTEREST_MAX])

    def interest_of(self, ev: dict[str, Any], ts: int) -> None:
        props = ev.get("properties") or {}
        if ev["type"] == "page":
            weight = _PAGE_WEIGHT
        elif ev["type"] == "track":
            weight = _INTEREST_WEIGHT.get(ev.get("event", ""), 0.0)
        else:
            return
        lines = _lines_of(props)
        category = _category(props.get("category")) or (_category(lines[0].get("category")) if lines else "")
        if len(lines) > 1:  # an order or cart of several lines: the weight is shared by line
            for p in lines:
                self.add_interest(ts, _category(p.get("category")) or category, weight / len(lines))
        else:
            self.add_interest(ts, category, weight)

    # -- all
    def apply(self, ts: int, ev: dict[str, Any]) -> None:
        self.check_abandoned(ts)  # the user's next event decides an idle cart
        self.times.append(ts)
        if ev["type"] == "identify" and isinstance((ev.get("traits") or {}).get("email"), str):
            self.email = ev["traits"]["email"].strip()
        if ev["type"] == "identify":  # per-user times increase: the newest identify's value of each trait
            for k, v in (ev.get("traits") or {}).items():
                if k != "email":
                    self.traits[_TRAIT_NAMES.get(k, k)] = v
        if self.interest:
            self.interest_of(ev, ts)
        if ev["type"] != "track":
            return
        name, props = ev.get("event"), ev.get("properties") or {}
        if name == "Order Completed":
            self.order(ts, props)
        elif name in ("Product Added", "Product Removed"):
            self.cart_op(ts, 1 if name == "Product Added" else -1, props)
        elif name == "Email Delivered":
            self.delivered_at[str(props.get("email_id", props.get("campaign_id")))] = ts
        elif name == "Email Opened":
            sent = self.delivered_at.get(str(props.get("email_id", props.get("campaign_id"))))
            if sent is not None and 0 <= ts - sent < 5 * SECOND_MS:  # a machine, not the person
                self.machine_opens += 1
                return
            self.opens += 1
            self.open_times.append(ts)
        elif name == "Email Link Clicked":
            self.clicks += 1

    def sessions(self, gap_ms: int) -> int:
        t = sorted(self.times)
        return 1 + sum(1 for a, b in zip(t, t[1:], strict=False) if b - a > gap_ms) if t else 0

    def fields(self, gap_ms: int) -> dict[str, str]:
        lines = self.live_lines()
        cart_value = sum(_money_cents(x["price"]) * x["quantity"] for x in lines)
        out = {
            "user_id": self.uid,
            "event_count": str(len(self.times)),
            "first_seen_at": iso(min(self.times)),
            "last_seen_at": iso(max(self.times)),
            "purchase_count": str(self.purchases),
            "revenue_total": _cents_text(self.revenue),
            "first_purchase_at": iso(min(self.purchase_times)) if self.purchase_times else "",
            "last_purchase_at": iso(max(self.purchase_times)) if self.purchase_times else "",
            "email": self.email,
            "cart": orjson.dumps(lines).decode() if lines else "[]",
            "cart_items": str(sum(x["quantity"] for x in lines)),
            "cart_value": _cents_text(cart_value),
            "cart_abandoned": "1" if self.abandoned and lines else "0",
            "email_opens": str(self.opens),
            "email_clicks": str(self.clicks),
            "last_email_open_at": iso(max(self.open_times)) if self.open_times else "",
            "email_opens_machine": str(self.machine_opens),
            "session_count": str(self.sessions(gap_ms)),
            "traits": orjson.dumps(dict(sorted(self.traits.items()))).decode(),
        }
        if self.interest:
            ranked = sorted(((c, round(v, 4)) for c, v in self.scores.items() if round(v, 4) > 0), key=lambda kv: (-kv[1], kv[0]))
            out["top_category"] = ranked[0][0] if ranked else ""
            out["interests_at"] = iso(self.scores_at) if ranked and self.scores_at is not None else ""
        return out


def rfm_scores(customers: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, str]]:
    """R, F, M (1-5) and segment of every customer from (last purchase ms, orders, revenue cents).

    The documented lower-quantile rule over the whole population: a customer scores
    ``1 + min(4, floor(5 * below / n))`` where ``below`` counts the customers in a strictly
    lower bin — bins are the last purchase's UTC day, the order count, and revenue in 2 %
    log bins (``round(ln(1 + cents) / ln 1.02)``, as pinned by ``operators.rfm``'s doctest).
    Recency windows (docs/intelligence.md): a last purchase within 7 days of the newest one
    (counted in UTC days, that day included) scores R at least 4, within 30 days at least 3.
    """
    import bisect as _bisect

    n = len(customers)
    if not n:
        return {}
    bins = {u: (last // DAY_MS, orders, round(math.log1p(cents) / math.log(1.02))) for u, (last, orders, cents) in customers.items()}
    columns = [sorted(b[k] for b in bins.values()) for k in range(3)]
    newest_day = columns[0][-1]
    out = {}
    for u, b in bins.items():
        r, f, m = (1 + min(4, 5 * _bisect.bisect_left(columns[k], b[k]) // n) for k in range(3))
        days_before = newest_day - b[0]
        if days_before < 7:
            r = max(r, 4)
        elif days_before < 30:
            r = max(r, 3)
        fm = (f + m + 1) // 2
        out[u] = {"rfm_r": str(r), "rfm_f": str(f), "rfm_m": str(m), "rfm_segment": RFM_GRID[r][fm - 1]}
    return out


def expected_profiles(
    events: Iterable[dict[str, Any]],
    *,
    session_gap_ms: int = 30 * MINUTE_MS,
    abandon_ms: int = HOUR_MS,
    half_life_ms: int = 30 * DAY_MS,
    no_interest: Iterable[str] = (),
    clock_ms: int | None = None,
) -> Expected:
    """The profiles a pipeline must build from ``events``: valid, de-duplicated Segment
    events keyed by ``userId`` (no anonymous ids, no ``sentAt``), in any order.

    Cart states are decided at ``clock_ms`` (default: the newest event time, which is
    what a finite replay's end-of-input timers use). ``no_interest`` users get no
    interest fields (bots: the bot rule keeps part of their activity out of interest).
    """
    no_int = set(no_interest)
    timed = sorted(((_event_ms(ev["timestamp"]), i, ev) for i, ev in enumerate(events)), key=itemgetter(0, 1))
    folds: dict[str, _Fold] = {}
    for ts, _, ev in timed:
        uid = ev["userId"]
        f = folds.get(uid)
        if f is None:
            f = folds[uid] = _Fold(uid, abandon_ms, half_life_ms, uid not in no_int)
        f.apply(ts, ev)
    clock = clock_ms if clock_ms is not None else (timed[-1][0] if timed else None)
    pending = []
    for f in folds.values():
        if clock is not None:
            f.check_abandoned(clock)
        d = f.deadline()
        if d is not None:
            pending.append(d)
    truth = {u: f.fields(session_gap_ms) for u, f in folds.items()}
    customers = {u: (max(f.purchase_times), f.purchases, f.revenue) for u, f in folds.items() if f.purchases}
    scores = rfm_scores(customers)
    for u, t in truth.items():
        t.update(scores.get(u, {"rfm_r": "", "rfm_f": "", "rfm_m": "", "rfm_segment": ""}))
    return Expected(
        truth=truth,
        interests={u: {c: v for c, v in f.scores.items() if round(v, 4) > 0} for u, f in folds.items() if f.interest},
        abandonments=sorted((a for f in folds.values() for a in f.episodes), key=itemgetter("ts", "user_id")),
        clock_ms=clock,
        pending_deadline_ms=min(pending) if pending else None,
    )


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID string drawn from ``rng`` (same as ``uuid.UUID(int=..., version=4)``)."""
    n = (rng.getrandbits(128) & _UUID_CLEAR) | _UUID_SET
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_UUID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID_SET = (0x8000 << 48) | (0x4000 << 64)


# --------------------------------------------------------------------------- one user


class _Stop(Exception):
    """The user's next event would be after ``end_ms``."""


@dataclass(frozen=True)
class _Campaign:
    campaign_id: str
    subject: str
    sent_ms: int


class _User:
    """Emits one user's events in strictly increasing time (the truth is computed afterwards
    from the emitted events, see :func:`expected_profiles`)."""

    def __init__(self, uid: str, cfg: GenConfig, cat: Catalogue, ua: str | None = None) -> None:
        self.uid = uid
        self.cfg = cfg
        self.catalogue = cat
        self.rng = random.Random(f"{cfg.seed}/{uid}")
        self.end = cfg.end_ms
        self.last = cfg.start_ms - 1
        self.out: list[tuple[int, dict[str, Any]]] = []
        self.ua = ua or self.rng.choice(_UAS)
        self.ip = self._ip()
        self.page: dict[str, str] | None = None
        self.cart: dict[str, int] = {}
        self.cart_ops = 0
        self.freeze_from = cfg.end_ms - cfg.abandon_ms - cfg.cart_quiet_ms

    # -- primitives

    def _ip(self) -> str:
        r = self.rng
        return f"{r.choice(_PUBLIC_OCTETS)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def _tick(self, at: int) -> int:
        ts = max(at, self.last + 1)
        if ts > self.end:
            raise _Stop
        self.last = ts
        return ts

    def _emit(self, at: int, etype: str, extra: dict[str, Any], ua: str | None = None) -> int:
        ts = self._tick(at)
        ctx: dict[str, Any] = {"userAgent": ua or self.ua, "ip": self.ip,
                               "library": {"name": "analytics.js", "version": "next-1.70.0"}}  # fmt: skip
        if self.page is not None and ua is None:
            ctx["page"] = dict(self.page)
        ev: dict[str, Any] = {
            "type": etype,
            "messageId": _uuid4(self.rng),
            "userId": self.uid,
            "timestamp": iso(ts),
            "context": ctx,
        }
        ev.update(extra)
        self.out.append((ts, ev))
        return ts

    def track(self, at: int, name: str, props: dict[str, Any], ua: str | None = None) -> int:
        """Emit a track call; returns its time."""
        return self._emit(at, "track", {"event": name, "properties": props}, ua)

    def page_view(self, at: int, name: str, path: str, category: str | None = None) -> int:
        """Emit a page call and make ``path`` the current page."""
        self.page = {"path": path, "url": _SITE + path, "title": f"{name} | Shop"}
        props: dict[str, Any] = {"path": path, "url": _SITE + path}
        if category is not None:
            props["category"] = category
        return self._emit(at, "page", {"name": name, "properties": props})

    def identify(self, at: int, email: str, first_name: str, **traits: Any) -> int:
        """Emit an identify call carrying ``email``, ``first_name`` and ``traits``."""
        return self._emit(at, "identify", {"traits": {"email": email, "first_name": first_name, **traits}})

    def gap(self, median_ms: int = 20 * SECOND_MS) -> int:
        """A think time between two events of a session (log-normal, 1 s .. 5 min)."""
        g = int(self.rng.lognormvariate(math.log(median_ms), 0.8))
        return min(max(g, SECOND_MS), 5 * MINUTE_MS)

    # -- email

    def email_delivered(self, at: int, camp: _Campaign, email_id: str) -> int:
        return self.track(at, "Email Delivered", {"campaign_id": camp.campaign_id, "email_id": email_id,
                                                   "email_subject": camp.subject}, ua=_ESP_UA)  # fmt: skip

    def email_opened(self, at: int, camp: _Campaign, email_id: str) -> int:
        return self.track(at, "Email Opened", {"campaign_id": camp.campaign_id, "email_id": email_id}, ua=self.ua)

    def email_clicked(self, at: int, camp: _Campaign, email_id: str, url: str) -> int:
        props = {"campaign_id": camp.campaign_id, "email_id": email_id, "link_url": url}
        return self.track(at, "Email Link Clicked", props, ua=self.ua)

    # -- commerce

    def product_event(self, at: int, name: str, pid: str, qty: int) -> int:
        """Product Viewed/Added/Removed; Added/Removed update the generator's own cart.

        Cart changes are frozen in the last ``abandon_ms + cart_quiet_ms`` before ``end_ms``
        (an add or removal there becomes a view): no abandonment deadline then falls after
        ``end_ms - cart_quiet_ms``, so a live pipeline whose stream clock runs on past the end
        of the stream decides every cart as the truth does.
        """
        if name in ("Product Added", "Product Removed") and max(at, self.last + 1) > self.freeze_from:
            name, qty = "Product Viewed", 1
        self.page = {"path": f"/p/{pid}", "url": f"{_SITE}/p/{pid}", "title": self.catalogue.props[pid]["name"]}
        ts = self.track(at, name, self.catalogue.line(pid, qty))
        if name in ("Product Added", "Product Removed"):
            dq = qty if name == "Product Added" else -qty
            self.cart[pid] = self.cart.get(pid, 0) + dq
            if self.cart[pid] <= 0:
                del self.cart[pid]
            self.cart_ops += 1
        return ts

    def cart_lines(self) -> list[dict[str, Any]]:
        return [self.catalogue.line(pid, q) for pid, q in sorted(self.cart.items())]

    def cart_cents(self) -> int:
        return sum(self.catalogue.cents[pid] * q for pid, q in self.cart.items())

    def checkout(self, at: int) -> int:
        """Cart Viewed (sometimes), Checkout Started, Order Completed; empties the cart."""
        rng = self.rng
        t = at
        order_id = f"o-{rng.getrandbits(40):010x}"
        cents = self.cart_cents()
        if rng.random() < 0.6:
            self.page = {"path": "/cart", "url": f"{_SITE}/cart", "title": "Cart | Shop"}
            t = self.track(t, "Cart Viewed", {"cart_id": f"c-{self.uid}", "products": self.cart_lines()}) + self.gap()
        self.page = {"path": "/checkout", "url": f"{_SITE}/checkout", "title": "Checkout | Shop"}
        t = self.track(t, "Checkout Started", {"order_id": order_id, "value": cents / 100, "currency": "USD",
                                               "products": self.cart_lines()}) + self.gap(60 * SECOND_MS)  # fmt: skip
        props: dict[str, Any] = {"order_id": order_id, "currency": "USD", "products": self.cart_lines()}
        mode = rng.random()
        if mode < 1 / 3:
            props["revenue"] = cents / 100
        elif mode < 2 / 3:
            props["total"] = cents / 100
        ts = self.track(t, "Order Completed", props)
        self.cart.clear()
        self.cart_ops = 0
        return ts


# --------------------------------------------------------------------------- normal users


class _Shopper(_User):
    """A normal user with a planted preferred category."""

    def __init__(self, uid: str, cfg: GenConfig, cat: Catalogue) -> None:
        super().__init__(uid, cfg, cat)
        rng = self.rng
        self.preferred = rng.choice(cfg.categories)
        self.others = [c for c in cfg.categories if c != self.preferred] or [self.preferred]
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        self.first_name = first.capitalize()
        self.last_name = last.capitalize()
        self.email = f"{first}.{last}{rng.randint(1, 999)}@{rng.choice(_DOMAINS)}"
        self.viewed: list[str] = []

    def pick_category(self) -> str:
        """The preferred category with probability ``preference_share``, else another one."""
        if self.rng.random() < self.cfg.preference_share:
            return self.preferred
        return self.rng.choice(self.others)

    def pick_product(self) -> str:
        return self.rng.choice(self.catalogue.by_category[self.pick_category()])

    def plan(self, campaigns: list[_Campaign]) -> list[tuple[int, int, Callable[..., Any], tuple[Any, ...]]]:
        """Episodes (start time, tie-break, action, args) over the user's life."""
        cfg, rng = self.cfg, self.rng
        span = cfg.end_ms - cfg.start_ms
        join = cfg.start_ms + int(rng.random() * span * 0.9)
        eps: list[tuple[int, int, Callable[..., Any], tuple[Any, ...]]] = [(join, 0, self.session, (True, None))]
        n = max(1, round(rng.lognormvariate(math.log(cfg.sessions_mean) - 0.32, 0.8))) - 1
        for _ in range(n):
            eps.append((rng.randint(join, cfg.end_ms), len(eps), self.session, (False, None)))
        if rng.random() < cfg.reidentify_rate:
            eps.append((rng.randint(join, cfg.end_ms), len(eps), self.reidentify, ()))
        for camp in campaigns:
            if camp.sent_ms > join + HOUR_MS and rng.random() < 0.8:
                eps.extend(self.plan_email(camp, len(eps)))
        return eps

    def plan_email(self, camp: _Campaign, k: int) -> list[tuple[int, int, Callable[..., Any], tuple[Any, ...]]]:
        """Delivery, maybe an open (minutes to a day later), maybe a click leading to a session."""
        rng = self.rng
        email_id = f"em-{rng.getrandbits(48):012x}"
        t = camp.sent_ms + rng.randint(0, 2 * HOUR_MS)
        eps: list[tuple[int, int, Callable[..., Any], tuple[Any, ...]]] = [(t, k, self.email_delivered, (camp, email_id))]
        if rng.random() < 0.35:
            t += min(int(rng.lognormvariate(math.log(40 * MINUTE_MS), 1.3)), DAY_MS)
            eps.append((t, k + 1, self.email_opened, (camp, email_id)))
            if rng.random() < 0.3:
                t += rng.randint(5 * SECOND_MS, 2 * MINUTE_MS)
                eps.append((t, k + 2, self.click_through, (camp, email_id)))
        return eps

    def play(self, campaigns: list[_Campaign]) -> None:
        """Run all episodes in start order until the end of the span."""
        episodes = sorted(self.plan(campaigns), key=lambda e: (e[0], e[1]))
        try:
            for start, _, action, args in episodes:
                action(start, *args)
        except _Stop:
            pass

    def reidentify(self, at: int) -> None:
        """A later identify with a changed address (the newest one wins)."""
        local, _, _ = self.email.partition("@")
        self.email = f"{local}@{self.rng.choice(_DOMAINS)}"
        self.identify(at, self.email, self.first_name, lastName=self.last_name, plan="pro")

    def click_through(self, at: int, camp: _Campaign, email_id: str) -> None:
        cat = self.pick_category()
        path = f"/c/{cat}?utm_source=email&utm_campaign={camp.campaign_id}"
        t = self.email_clicked(at, camp, email_id, _SITE + path)
        if self.rng.random() < 0.6:
            self.session(t + self.rng.randint(2 * SECOND_MS, 10 * SECOND_MS), False, cat)

    def session(self, at: int, first: bool, landing: str | None) -> None:
        """A burst of page/product/custom events, ending in a checkout or an abandoned cart."""
        rng = self.rng
        self.viewed = []
        if landing is not None:
            t = self.page_view(at, "Category", f"/c/{landing}", landing)
        elif rng.random() < 0.4:
            t = self.page_view(at, "Home", "/")
        else:
            cat = self.pick_category()
            t = self.page_view(at, "Category", f"/c/{cat}", cat)
        if first:
            t = self.identify(t + self.gap(8 * SECOND_MS), self.email, self.first_name, lastName=self.last_name, plan="free")
        for _ in range(rng.randint(2, 14)):
            t = self.step(t + self.gap())
        if self.cart and rng.random() < self.cfg.checkout_rate:
            self.checkout(t + self.gap())

    def step(self, at: int) -> int:
        """One in-session action: listing page, product view, cart change, search, video."""
        rng = self.rng
        r = rng.random()
        can_cart = self.cart_ops < _MAX_CART_OPS
        if r < 0.28:
            cat = self.pick_category()
            return self.page_view(at, "Category", f"/c/{cat}", cat)
        if r < 0.60:
            return self.view_product(at)
        if r < 0.75:
            if can_cart and self.viewed:
                return self.product_event(at, "Product Added", rng.choice(self.viewed), rng.choice((1, 1, 1, 2, 3)))
            return self.view_product(at)
        if r < 0.80:
            if can_cart and self.cart:
                pid = rng.choice(sorted(self.cart))
                return self.product_event(at, "Product Removed", pid, rng.randint(1, self.cart[pid]))
            return self.view_cart_or_product(at)
        if r < 0.87:
            return self.track(at, "Search", {"query": rng.choice(_QUERIES)})
        if r < 0.92:
            cat = self.pick_category()
            return self.track(at, "Video Played", {"video_id": f"v-{cat}-{rng.randint(1, 20)}", "category": cat})
        return self.view_cart_or_product(at)

    def view_product(self, at: int) -> int:
        pid = self.pick_product()
        self.viewed.append(pid)
        return self.product_event(at, "Product Viewed", pid, 1)

    def view_cart_or_product(self, at: int) -> int:
        if not self.cart:
            return self.view_product(at)
        self.page = {"path": "/cart", "url": f"{_SITE}/cart", "title": "Cart | Shop"}
        return self.track(at, "Cart Viewed", {"cart_id": f"c-{self.uid}", "products": self.cart_lines()})


# --------------------------------------------------------------------------- bots


class _Bot(_User):
    """A bot: regular 200-300 ms inter-arrival, bursts, no purchases."""

    def __init__(self, uid: str, kind: str, cfg: GenConfig, cat: Catalogue) -> None:
        super().__init__(uid, cfg, cat, ua=_BOT_UAS[kind])
        self.kind = kind
        self.ip = f"{self.rng.choice((34, 35, 52, 54, 104, 159))}.{self.rng.randint(0, 255)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"

    def tick_ms(self) -> int:
        return self.rng.randint(200, 300)

    def play(self, campaigns: list[_Campaign]) -> None:
        try:
            if self.kind == "scraper":
                self.scrape()
            else:
                self.scan_links(campaigns)
        except _Stop:
            pass

    def scrape(self) -> None:
        """Bursts that walk the catalogue with Product Viewed (and listing pages)."""
        rng, cfg = self.rng, self.cfg
        hi = max(cfg.start_ms, cfg.end_ms - HOUR_MS)
        starts = sorted(rng.randint(cfg.start_ms, hi) for _ in range(rng.randint(3, 8)))
        pos = rng.randrange(len(self.catalogue.ids))
        for start in starts:
            t = start
            for i in range(rng.randint(150, 600)):
                pid = self.catalogue.ids[pos % len(self.catalogue.ids)]
                pos += 1
                if i % 25 == 0:
                    cat = self.catalogue.props[pid]["category"]
                    t = self.page_view(t, "Category", f"/c/{cat}?page={i // 25 + 1}", cat) + self.tick_ms()
                t = self.product_event(t, "Product Viewed", pid, 1) + self.tick_ms()

    def scan_links(self, campaigns: list[_Campaign]) -> None:
        """A mail-security scanner: opens and clicks every link 1-2 s after each delivery."""
        rng, cfg = self.rng, self.cfg
        self.identify(cfg.start_ms + rng.randint(0, HOUR_MS), f"inbox{self.uid[3:]}@corp-{rng.randint(1, 99)}.example.com", "Security")
        sends = [(c.sent_ms + rng.randint(0, 2 * HOUR_MS), c) for c in campaigns]
        extra = [_Campaign(f"tx-{k:04d}", "Your receipt", rng.randint(cfg.start_ms, cfg.end_ms)) for k in range(rng.randint(40, 120))]
        sends += [(c.sent_ms, c) for c in extra]
        for t, camp in sorted(sends, key=lambda s: (s[0], s[1].campaign_id)):
            email_id = f"em-{rng.getrandbits(48):012x}"
            t0 = self.email_delivered(t, camp, email_id)
            t = self.email_opened(t0 + rng.randint(1000, 1200), camp, email_id)
            for j in range(rng.randint(1, 3)):
                t = self.email_clicked(t + rng.randint(200, 260), camp, email_id, f"{_SITE}/l/{camp.campaign_id}/{j}")


# --------------------------------------------------------------------------- invalid events


def _invalid_event(rng: random.Random, reason: str, uid: str, ts: int, mid: str) -> dict[str, Any]:
    """An event that ``parse_event`` must reject with ``reason`` (and nothing earlier)."""
    ev: dict[str, Any] = {"type": "track", "messageId": mid, "userId": uid, "timestamp": iso(ts),
                          "context": {"userAgent": rng.choice(_UAS), "ip": f"{rng.choice(_PUBLIC_OCTETS)}.0.113.{rng.randint(1, 254)}"}}  # fmt: skip
    product = {"product_id": "p0001", "sku": "X-00001", "name": "Broken Thing", "category": "misc", "price": 9.99}
    if reason == "missing_event":
        ev["properties"] = {"query": "shoes"}
    elif reason == "unknown_type":
        ev.update(type="purchase", event="Order Completed", properties={"revenue": 10.0})
    elif reason == "missing_identity":
        del ev["userId"]
        ev.update(event="Product Viewed", properties=dict(product, quantity=1))
    elif reason == "invalid_money":
        ev.update(event="Order Completed", properties={"order_id": f"o-bad-{mid[-6:]}", "currency": "USD",
                                                       "revenue": rng.choice((-5, "abc")), "products": [dict(product, quantity=1)]})  # fmt: skip
    elif reason == "invalid_quantity":
        ev.update(event="Product Added", properties=dict(product, quantity=rng.choice((0, 1.5))))
    elif reason == "invalid_email":
        ev["type"] = "identify"
        ev["traits"] = {"email": "not-an-email", "first_name": "Broken"}
    elif reason == "invalid_timestamp":
        ev.update(event="Search", properties={"query": "sale"}, timestamp="yesterday-ish")
    else:  # pragma: no cover - guarded by INVALID_REASONS
        raise ValueError(reason)
    return ev


# --------------------------------------------------------------------------- assembly


def _campaigns(cfg: GenConfig) -> list[_Campaign]:
    """The marketing calendar: one campaign every ``campaign_every_days``, mid-morning."""
    every = int(cfg.campaign_every_days * DAY_MS)
    out = []
    t, k = cfg.start_ms + every // 2, 1
    while t < cfg.end_ms - HOUR_MS:
        out.append(_Campaign(f"cmp-{k:03d}", f"Picks for you #{k}", t))
        t, k = t + every, k + 1
    return out


def _play_all(cfg: GenConfig, cat: Catalogue) -> tuple[list[_User], list[_Bot]]:
    campaigns = _campaigns(cfg)
    users: list[_User] = []
    for i in range(cfg.users):
        u = _Shopper(f"u{i + 1:05d}", cfg, cat)
        u.play(campaigns)
        users.append(u)
    bots = []
    for i in range(cfg.bots):
        b = _Bot(f"bot{i + 1:04d}", BOT_KINDS[i % len(BOT_KINDS)], cfg, cat)
        b.play(campaigns)
        bots.append(b)
    return users, bots


class _Assembler:
    """Interleaves the time-ordered valid events with duplicates and invalid events."""

    def __init__(self, cfg: GenConfig, valid: list[tuple[int, int, int, dict[str, Any]]], uids: list[str]) -> None:
        self.cfg = cfg
        self.rng = random.Random(f"{cfg.seed}/stream")
        self.valid = valid
        self.times = [v[0] for v in valid]
        self.uids = uids
        n = len(valid)
        self.n_dup = round(cfg.duplicate_rate * n)
        self.n_inv = round(cfg.invalid_rate * n) if uids else 0
        self.dup_of = set(self.rng.sample(range(n), self.n_dup))
        total = n + self.n_dup + self.n_inv
        self.reserved: dict[int, tuple[str, Any]] = {}
        for s in self.rng.sample(range(total), self.n_inv):
            self.reserved[s] = ("invalid", None)
        self.out: list[dict[str, Any]] = []
        self.invalid: list[dict[str, str]] = []
        self.duplicates: list[str] = []

    def run(self) -> None:
        vi = 0
        last_ts = self.times[0] if self.times else self.cfg.end_ms
        while vi < len(self.valid):
            item = self.reserved.pop(len(self.out), None)
            if item is not None:
                self.emit_reserved(item, last_ts)
                continue
            last_ts, _, _, ev = self.valid[vi]
            self.out.append(ev)
            if vi in self.dup_of:
                self.schedule_duplicate(vi, ev)
            vi += 1
        for s in sorted(self.reserved):
            self.emit_reserved(self.reserved[s], last_ts)
        self.reserved.clear()

    def emit_reserved(self, item: tuple[str, Any], last_ts: int) -> None:
        kind, payload = item
        if kind == "duplicate":
            self.out.append(payload)
            self.duplicates.append(payload["messageId"])
            return
        # every reason once first (so small streams still cover them all), then a random mix
        k = len(self.invalid)
        reason = INVALID_REASONS[k] if k < len(INVALID_REASONS) else self.rng.choice(INVALID_REASONS)
        mid = f"bad-{self.cfg.seed}-{len(self.invalid) + 1:07d}"
        self.out.append(_invalid_event(self.rng, reason, self.rng.choice(self.uids), last_ts, mid))
        self.invalid.append({"messageId": mid, "reason": reason})

    def schedule_duplicate(self, vi: int, ev: dict[str, Any]) -> None:
        """Reserve a free slot 1..k positions after the original (k bounded by positions and lag)."""
        s = len(self.out) - 1
        j = bisect.bisect_right(self.times, self.times[vi] + self.cfg.duplicate_max_lag_ms)
        kmax = max(1, min(self.cfg.duplicate_max_positions, j - vi))
        k = self.rng.randint(1, kmax)
        candidates = [*range(s + k, s + kmax + 1), *range(s + k - 1, s, -1)]
        slot = next((c for c in candidates if c not in self.reserved), None)
        if slot is None:  # only with absurd rates: take the next free slot further on
            slot = s + kmax + 1
            while slot in self.reserved:
                slot += 1
        self.reserved[slot] = ("duplicate", orjson.loads(orjson.dumps(ev)))


def generate(cfg: GenConfig) -> Generated:
    """Generate the stream and the expected per-user profiles for ``cfg`` (deterministic)."""
    cat = Catalogue.build(cfg.seed, cfg.categories, cfg.products)
    users, bots = _play_all(cfg, cat)
    everyone: list[_User] = [*users, *bots]
    valid = [(ts, ui, k, ev) for ui, u in enumerate(everyone) for k, (ts, ev) in enumerate(u.out)]
    valid.sort(key=itemgetter(0))  # stable: ties keep (user, sequence) order
    asm = _Assembler(cfg, valid, [u.uid for u in everyone if u.out])
    asm.run()
    exp = expected_profiles(
        (ev for _, _, _, ev in valid), session_gap_ms=cfg.session_gap_ms, abandon_ms=cfg.abandon_ms,
        half_life_ms=cfg.interest_half_life_ms, no_interest=[b.uid for b in bots],
    )  # fmt: skip
    return Generated(
        events=asm.out,
        truth={u.uid: exp.truth[u.uid] for u in everyone if u.uid in exp.truth},
        invalid=asm.invalid,
        bots=[b.uid for b in bots],
        preferences={u.uid: u.preferred for u in users if isinstance(u, _Shopper) and u.out},
        bot_kinds={b.uid: b.kind for b in bots},
        duplicates=asm.duplicates,
        interests=exp.interests,
        abandonments=exp.abandonments,
        clock_ms=exp.clock_ms,
        pending_deadline_ms=exp.pending_deadline_ms,
    )


# --------------------------------------------------------------------------- files


def write_jsonl(path: str | Path, events: Iterable[dict[str, Any]]) -> None:
    """Write one compact JSON object per line."""
    with open(path, "wb") as fh:
        for ev in events:
            fh.write(orjson.dumps(ev))
            fh.write(b"\n")


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON object of every non-blank line."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                yield orjson.loads(line)


def generate_to_files(cfg: GenConfig, events_path: str | Path, truth_path: str | Path | None = None) -> Generated:
    """Generate, write the events as JSONL and (optionally) the truth as JSON.

    The truth file holds ``truth``, ``invalid``, ``bots``, ``bot_kinds``,
    ``preferences``, ``duplicates``, ``interests``, ``abandonments`` and ``clock_ms``.
    """
    gen = generate(cfg)
    write_jsonl(events_path, gen.events)
    if truth_path is not None:
        doc = {
            "truth": gen.truth,
            "invalid": gen.invalid,
            "bots": gen.bots,
            "bot_kinds": gen.bot_kinds,
            "preferences": gen.preferences,
            "duplicates": gen.duplicates,
            "interests": gen.interests,
            "abandonments": gen.abandonments,
            "clock_ms": gen.clock_ms,
        }
        Path(truth_path).write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return gen
