"""A labelled abuse stream: the kinds of abuse a shop's own data holds, next to normal users.

Contract
--------
``generate_abuse(cfg)`` returns an :class:`AbuseStream`: Segment-spec events in stream order
(time order; ties keep the per-user order) and ``kinds``, every user id's label — ``normal`` or
one of :data:`ABUSE_KINDS`. It is a stream of its own, separate from the training/demo stream
of :func:`liveprofile.devtools.generate.generate` (whose normal shoppers it reuses, with their
sessions, carts, orders, campaigns and occasional re-identification), so detectors can be
measured on abuse they were never tuned on. The same :class:`AbuseConfig` always yields the same
events (``random.Random`` seeded from strings derived from ``cfg.seed``). No duplicates and no
invalid events: this stream measures detection, not validation.

Abuse kinds (each user a browser-like ``userAgent`` and a residential IP, as a real fraudster's
headless-but-disguised client would have):

* ``crawler`` — a human-paced catalogue crawler: long sessions walking the catalogue with
  ``Product Viewed`` (and listing pages) at 4-25 s think times, no cart, no orders;
* ``card_tester`` — card testing: 1-3 sessions, each 20-60 ``Order Completed`` of 1-3 USD
  within minutes (10-40 s apart), a fresh ``order_id`` and payment-like properties each,
  at most two product views in all, sometimes a ``Checkout Started`` before each order;
* ``identity_bomb`` — one ``userId`` identifying with dozens (20-60) of distinct new emails
  (``identify`` calls whose ``traits.email`` keeps changing): either a burst (10-90 s apart,
  with a little browsing) or spread over days (a few per short session).
"""

from __future__ import annotations

import bisect
import contextlib
import heapq
import math
from dataclasses import dataclass, field
from typing import Any

from dataflows.logic import ModelsLogic, model_shard
from liveprofile.devtools.generate import (
    _DOMAINS,
    _FIRST,
    _LAST,
    DAY_MS,
    HOUR_MS,
    SECOND_MS,
    Catalogue,
    GenConfig,
    _campaigns,
    _Shopper,
    _Stop,
    _User,
)
from operators.events import Event, Limits, parse_event
from operators.models import ModelConfig
from operators.timeutil import parse_ts
from operators.user import BehaviourUpdate, UserConfig, next_deadline, on_timer, step

__all__ = ["ABUSE_KINDS", "AbuseConfig", "AbuseStream", "Detection", "generate_abuse", "detect", "roc_auc", "report"]

#: The labelled abuse kinds (``kinds`` values besides ``normal``).
ABUSE_KINDS = ("crawler", "card_tester", "identity_bomb")


@dataclass(frozen=True)
class AbuseConfig:
    """What to generate: ``users`` normal shoppers ``u00001``... and ``per_kind`` users of each
    abuse kind (``crawl0001``, ``card0001``, ``bomb0001``...) over ``days`` ending at ``end_ms``."""

    end_ms: int = field(kw_only=True)
    users: int = 400
    per_kind: int = 25
    seed: int = 11
    days: float = 14.0
    products: int = 200

    def __post_init__(self) -> None:
        if self.users < 0 or self.per_kind < 0 or not self.days > 0 or self.products < 8:
            raise ValueError("users and per_kind must be >= 0, days > 0, products >= 8")


@dataclass
class AbuseStream:
    """The events (stream order) and each user's label."""

    events: list[dict[str, Any]]
    kinds: dict[str, str]


_PREFIX = {"crawler": "crawl", "card_tester": "card", "identity_bomb": "bomb"}


class _Abuser(_User):
    """One abusive user of ``kind``; ``play`` emits its events in increasing time."""

    def __init__(self, uid: str, kind: str, cfg: GenConfig, cat: Catalogue) -> None:
        super().__init__(uid, cfg, cat)
        self.kind = kind

    def play(self) -> None:
        with contextlib.suppress(_Stop):
            {"crawler": self.crawl, "card_tester": self.test_cards, "identity_bomb": self.bomb}[self.kind]()

    def _start(self, margin_ms: int) -> int:
        cfg = self.cfg
        return self.rng.randint(cfg.start_ms, max(cfg.start_ms, cfg.end_ms - margin_ms))

    def _email(self) -> str:
        r = self.rng
        return f"{r.choice(_FIRST)}.{r.choice(_LAST)}{r.randint(1, 99999)}@{r.choice(_DOMAINS)}"

    def think(self, lo_s: float, hi_s: float) -> int:
        """A human-looking pause: log-uniform between ``lo_s`` and ``hi_s`` seconds."""
        return int(math.exp(self.rng.uniform(math.log(lo_s), math.log(hi_s))) * SECOND_MS)

    def crawl(self) -> None:
        """Sessions that walk the catalogue at a human pace (no cart, no orders)."""
        rng, ids = self.rng, self.catalogue.ids
        t = self._start(2 * DAY_MS)
        pos = rng.randrange(len(ids))
        for _ in range(rng.randint(1, 4)):
            for i in range(rng.randint(90, 260)):
                pid = ids[pos % len(ids)]
                pos += rng.choice((1, 1, 1, 2))
                if i % 20 == 0:
                    cat = self.catalogue.props[pid]["category"]
                    t = self.page_view(t, "Category", f"/c/{cat}?page={i // 20 + 1}", cat) + self.think(3, 12)
                t = self.product_event(t, "Product Viewed", pid, 1) + self.think(4, 25)
            t += rng.randint(2 * HOUR_MS, DAY_MS)

    def test_cards(self) -> None:
        """Bursts of tiny orders, each with a new order id and card, almost nothing viewed."""
        rng = self.rng
        t = self._start(DAY_MS)
        views = rng.randint(0, 2)
        checkout_first = rng.random() < 0.5
        if rng.random() < 0.5:
            t = self.identify(t, self._email(), "Card") + self.think(5, 30)
        for _ in range(rng.randint(1, 3)):
            t = self.page_view(t, "Gift cards", "/c/gift-cards", "gift cards") + self.think(3, 15)
            for _ in range(rng.randint(20, 60)):
                if views > 0 and rng.random() < 0.2:
                    views -= 1
                    pid = rng.choice(self.catalogue.ids)
                    t = self.product_event(t, "Product Viewed", pid, 1) + self.think(2, 8)
                cents = rng.randint(100, 300)
                order_id = f"o-{rng.getrandbits(40):010x}"
                line = {"product_id": "gift-card", "sku": "GC-1", "name": "Gift Card", "category": "gift cards",
                        "price": cents / 100, "quantity": 1}  # fmt: skip
                if checkout_first:
                    t = self.track(t, "Checkout Started", {"order_id": order_id, "value": cents / 100, "currency": "USD",
                                                           "products": [line]}) + self.think(3, 10)  # fmt: skip
                props = {"order_id": order_id, "total": cents / 100, "currency": "USD", "products": [line],
                         "payment_method": "card", "card_last4": f"{rng.randint(0, 9999):04d}",
                         "card_bin": f"{rng.randint(400000, 499999)}"}  # fmt: skip
                t = self.track(t, "Order Completed", props) + self.think(10, 40)
            t += rng.randint(HOUR_MS, 12 * HOUR_MS)

    def bomb(self) -> None:
        """One user id identifying with dozens of new emails: in one burst, or over days."""
        rng = self.rng
        n = rng.randint(20, 60)
        if rng.random() < 0.5:  # a burst with a little browsing in between
            t = self._start(3 * HOUR_MS)
            t = self.page_view(t, "Home", "/") + self.think(2, 10)
            for _ in range(n):
                t = self.identify(t, self._email(), rng.choice(_FIRST).capitalize()) + self.think(10, 90)
                if rng.random() < 0.3:
                    t = self.product_event(t, "Product Viewed", rng.choice(self.catalogue.ids), 1) + self.think(3, 20)
            return
        days = max(self.cfg.days - 1, 1.0)
        t = self._start(int(days * DAY_MS))
        while n > 0:  # short sessions of 1-4 new identities, hours apart
            t = self.page_view(t, "Home", "/") + self.think(2, 10)
            for _ in range(min(n, rng.randint(1, 4))):
                t = self.identify(t, self._email(), rng.choice(_FIRST).capitalize()) + self.think(5, 60)
                n -= 1
            t += rng.randint(2 * HOUR_MS, 8 * HOUR_MS)


def generate_abuse(cfg: AbuseConfig) -> AbuseStream:
    """Generate the labelled abuse stream for ``cfg`` (deterministic)."""
    gcfg = GenConfig(users=cfg.users, seed=cfg.seed, end_ms=cfg.end_ms, days=cfg.days, products=cfg.products)
    cat = Catalogue.build(cfg.seed, gcfg.categories, gcfg.products)
    campaigns = _campaigns(gcfg)
    actors: list[_User] = []
    kinds: dict[str, str] = {}
    for i in range(cfg.users):
        u = _Shopper(f"u{i + 1:05d}", gcfg, cat)
        u.play(campaigns)
        actors.append(u)
        kinds[u.uid] = "normal"
    for kind in ABUSE_KINDS:
        for i in range(cfg.per_kind):
            a = _Abuser(f"{_PREFIX[kind]}{i + 1:04d}", kind, gcfg, cat)
            a.play()
            actors.append(a)
            kinds[a.uid] = kind
    merged = heapq.merge(*([(ts, ai, k, ev) for k, (ts, ev) in enumerate(a.out)] for ai, a in enumerate(actors)))
    events = [ev for _, _, _, ev in merged]
    return AbuseStream(events, {a.uid: kinds[a.uid] for a in actors if a.out})


# --------------------------------------------------------------------------- measuring detection


@dataclass
class Detection:
    """What the models stage reported last for each user (the profile's ``anomaly_score`` and
    ``suspect``), and how often each user was scored."""

    score: dict[str, float]
    suspect: dict[str, bool]
    scorings: int


def detect(stream: AbuseStream, shards: int = 4, batch: int = 1000, model: ModelConfig | None = None, user: UserConfig | None = None) -> Detection:
    """Run ``stream`` through the dataflow's own operators, in stream order and in batches of
    ``batch`` events as the dataflow's epochs deliver them: validation
    (:func:`operators.events.parse_event`), the per-user step (:func:`operators.user.step`, one
    call per user and batch with that user's events in order), session timers in stream time
    (:func:`operators.user.on_timer` once the stream clock — the newest event time — passes a
    user's deadline, and for everyone after the last event), and the models stage
    (:class:`dataflows.logic.ModelsLogic`, one per model shard as the dataflow keys it, fed each
    batch's updates in order). Returns each user's last reported score and flag."""
    ucfg, mcfg = user or UserConfig(), model or ModelConfig()
    limits = Limits(timestamp_min_ms=0)
    logics: dict[str, ModelsLogic] = {}
    states: dict[str, Any] = {}
    score: dict[str, float] = {}
    suspect: dict[str, bool] = {}
    timers: list[tuple[int, str]] = []
    scorings = 0

    def models(outs: list[Any]) -> None:
        nonlocal scorings
        per: dict[str, list[BehaviourUpdate]] = {}
        for o in outs:
            if isinstance(o, BehaviourUpdate):
                per.setdefault(model_shard(o.uid, shards), []).append(o)
        for key, ups in per.items():
            logic = logics.get(key) or logics.setdefault(key, ModelsLogic(mcfg, shards, None))
            for m in logic.on_batch(ups)[0]:
                score[m.uid], suspect[m.uid] = m.score, m.flagged
                scorings += 1

    def fire(clock: int) -> list[Any]:
        outs: list[Any] = []
        while timers and timers[0][0] < clock:
            _, uid = heapq.heappop(timers)
            st = states.get(uid)
            d = None if st is None else next_deadline(ucfg, st)
            if d is None:
                continue
            if d < clock:
                outs += on_timer(ucfg, st, clock)
                d = next_deadline(ucfg, st)
            if d is not None:
                heapq.heappush(timers, (d, uid))
        return outs

    clock = 0
    for i in range(0, len(stream.events), batch):
        by_user: dict[str, list[Event]] = {}
        for raw in stream.events[i : i + batch]:
            ev = parse_event(raw, limits, received_at=parse_ts(raw["timestamp"]))  # received as it happened
            if not isinstance(ev, Event):
                raise ValueError(f"the abuse stream holds an invalid event: {ev.reason} {ev.message}")
            by_user.setdefault(ev.uid, []).append(ev)
            clock = max(clock, ev.ts)
        outs: list[Any] = []
        for uid, evs in by_user.items():
            st, o, _ = step(ucfg, states.get(uid), uid, list(evs))
            states[uid] = st
            outs += o
            d = None if st is None else next_deadline(ucfg, st)
            if d is not None:
                heapq.heappush(timers, (d, uid))
        models(outs + fire(clock))
    models(fire(max((t for t, _ in timers), default=0) + 1))
    return Detection(score, suspect, scorings)


def roc_auc(pos: list[float], neg: list[float]) -> float:
    """Area under the ROC curve of scores ``pos`` (abuse) against ``neg`` (normal): the chance
    that a random abuser scores above a random normal user, ties counting half.

    >>> roc_auc([0.9, 0.8], [0.1, 0.8]), roc_auc([0.5], [0.5])
    (0.875, 0.5)
    """
    if not pos or not neg:
        return float("nan")
    ranked = sorted(neg)
    wins = 0.0
    for x in pos:
        lo, hi = bisect.bisect_left(ranked, x), bisect.bisect_right(ranked, x)
        wins += lo + (hi - lo) / 2
    return wins / (len(pos) * len(neg))


def report(stream: AbuseStream, det: Detection) -> dict[str, float]:
    """ROC AUC of ``anomaly_score`` per abuse kind against normal users, each kind's recall
    (share flagged ``suspect``), and ``false_flag_rate``: the share of normal users flagged.
    A user never scored counts as score 0, not suspect (what its profile would say)."""
    by: dict[str, list[str]] = {}
    for uid, kind in stream.kinds.items():
        by.setdefault(kind, []).append(uid)
    normal = [det.score.get(u, 0.0) for u in by.get("normal", [])]
    out: dict[str, float] = {}
    for kind in ABUSE_KINDS:
        uids = by.get(kind, [])
        out[f"{kind}_auc"] = roc_auc([det.score.get(u, 0.0) for u in uids], normal)
        out[f"{kind}_recall"] = sum(det.suspect.get(u, False) for u in uids) / len(uids) if uids else float("nan")
    normals = by.get("normal", [])
    out["false_flag_rate"] = sum(det.suspect.get(u, False) for u in normals) / len(normals) if normals else float("nan")
    out["false_flags"] = float(sum(det.suspect.get(u, False) for u in normals))
    return out
