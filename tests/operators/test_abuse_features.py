"""The abuse features of the per-user behaviour state (card testing, identity bombs): what they
count, that they are bounded and independent of arrival order, that the fixed-limit rule flags
them, that they trigger scoring, survive identity merges, and that states and models pickled by
snapshot version 2 (without them) restore."""

from __future__ import annotations

import pickle
from dataclasses import fields

from hypothesis import given, settings
from hypothesis import strategies as st

from operators import snapshot
from operators.behaviour import (
    ABUSE_LOG_MAX,
    FEATURE_LIMITS,
    ORDER_BURST_MS,
    Behaviour,
    SessionConfig,
)
from operators.events import Event, Limits, parse_event
from operators.models import FEATURE_GROUPS, ModelConfig, ShardModels

T0 = 1_714_564_800_000
MIN = 60_000
DAY = 86_400_000
CFG = SessionConfig()
LIM = Limits(timestamp_min_ms=0)


def order(i: int, t: int, total: float) -> Event:
    e = parse_event({"type": "track", "event": "Order Completed", "userId": "u1", "messageId": f"o{i}", "timestamp": t / 1000,
                     "receivedAt": t / 1000, "properties": {"order_id": f"o{i}", "total": total}}, LIM)  # fmt: skip
    assert isinstance(e, Event), e
    return e


def identify(i: int, t: int, email: str) -> Event:
    e = parse_event({"type": "identify", "userId": "u1", "messageId": f"i{i}", "timestamp": t / 1000, "receivedAt": t / 1000,
                     "traits": {"email": email}}, LIM)  # fmt: skip
    assert isinstance(e, Event), e
    return e


def feed(evs: list[Event]) -> Behaviour:
    b = Behaviour()
    for e in evs:
        b.observe(CFG, e, 0)
    return b


def counts(b: Behaviour) -> tuple[int, int, int, int]:
    return b.order_burst, b.small_order_burst, b.identities_day, b.identities_30d


def test_card_testing_is_an_order_burst_of_small_orders() -> None:
    b = feed([order(i, T0 + i * 20_000, 1.5 if i % 3 else 40.0) for i in range(21)])  # 21 orders in 7 minutes
    assert (b.order_burst, b.small_order_burst) == (21, 14)
    assert b.rule_suspect()
    x = b.features()
    assert x["order_burst"] == 21.0 and x["small_order_burst"] == 14.0
    # orders an hour or more before the newest one do not count
    late = feed([order(0, T0, 1.0), order(1, T0 + ORDER_BURST_MS, 1.0), order(2, T0 + ORDER_BURST_MS + 5, 9.0)])
    assert (late.order_burst, late.small_order_burst) == (2, 1) and not late.rule_suspect()


def test_a_shopper_with_a_few_orders_and_emails_is_not_flagged() -> None:
    evs = [identify(0, T0, "ann@example.com"), order(1, T0 + MIN, 3.0), order(2, T0 + 20 * MIN, 4.0),
           identify(3, T0 + 2 * DAY, "ann@example.org"), identify(4, T0 + 3 * DAY, "ANN@example.org ")]  # fmt: skip
    b = feed(evs)
    assert counts(b) == (2, 2, 1, 2)  # the same address in other case counts once
    assert not b.rule_suspect()


def test_identity_bombs_fast_and_slow() -> None:
    fast = feed([identify(i, T0 + i * 30_000, f"x{i}@example.com") for i in range(5)])
    assert (fast.identities_day, fast.identities_30d) == (5, 5) and fast.rule_suspect()
    slow = feed([identify(i, T0 + i * DAY, f"x{i}@example.com") for i in range(7)])  # one a day
    assert (slow.identities_day, slow.identities_30d) == (1, 7) and slow.rule_suspect()
    old = feed([identify(i, T0 + i * 31 * DAY, f"x{i}@example.com") for i in range(7)])  # one a month: people move
    assert (old.identities_day, old.identities_30d) == (1, 1) and not old.rule_suspect()


def test_the_logs_are_bounded() -> None:
    b = feed([identify(i, T0 + i * 1000, f"x{i}@example.com") for i in range(200)]
             + [order(i, T0 + i * 1000, 1.0) for i in range(200)])  # fmt: skip
    assert b.emails_log is not None and b.orders_log is not None
    assert len(b.emails_log) == len(b.orders_log) == 2 * ABUSE_LOG_MAX
    assert counts(b) == (ABUSE_LOG_MAX,) * 4
    assert all(FEATURE_LIMITS[k][1] >= ABUSE_LOG_MAX for k in FEATURE_GROUPS["abuse"])
    assert Behaviour().orders_log is None and Behaviour().emails_log is None  # nothing kept until needed


@settings(max_examples=60, deadline=None)
@given(
    orders=st.lists(st.tuples(st.integers(0, 3 * ORDER_BURST_MS), st.sampled_from((1.0, 2.5, 4.99, 5.0, 80.0))), max_size=20),
    emails=st.lists(st.tuples(st.integers(0, 40 * DAY), st.integers(0, 9)), max_size=20),
    seed=st.randoms(use_true_random=False),
)
def test_the_counts_do_not_depend_on_arrival_order(orders: list[tuple[int, float]], emails: list[tuple[int, int]], seed) -> None:  # noqa: ANN001
    evs = [order(i, T0 + t, v) for i, (t, v) in enumerate(orders)] + [identify(i, T0 + t, f"e{k}@example.com") for i, (t, k) in enumerate(emails)]
    shuffled = list(evs)
    seed.shuffle(shuffled)
    a, b = feed(evs), feed(shuffled)
    assert counts(a) == counts(b)
    # against a direct count
    if orders:
        newest = max(t for t, _ in orders)
        inside = [v for t, v in orders if t > newest - ORDER_BURST_MS]
        assert (a.order_burst, a.small_order_burst) == (len(inside), sum(v < 5 for v in inside))
    if emails:
        first: dict[int, int] = {}
        for t, k in emails:
            first[k] = min(first.get(k, t), t)
        newest = max(first.values())
        assert a.identities_day == sum(t > newest - DAY for t in first.values())
        assert a.identities_30d == sum(t > newest - 30 * DAY for t in first.values())


def test_growth_past_one_makes_the_user_due_for_scoring() -> None:
    b = feed([order(0, T0, 2.0)])
    b.mark_scored()
    assert not b.due_for_scoring()  # one order: nothing to look at yet
    b.observe(CFG, order(1, T0 + 10_000, 2.0), 0)
    assert b.due_for_scoring()  # a second order within the hour
    b.mark_scored()
    b.observe(CFG, identify(2, T0 + 20_000, "a@example.com"), 0)
    assert not b.due_for_scoring()
    b.observe(CFG, identify(3, T0 + 30_000, "b@example.com"), 0)
    assert b.due_for_scoring()


def test_a_merge_folds_the_logs_in() -> None:
    a = feed([identify(i, T0 + i * MIN, f"a{i}@example.com") for i in range(3)] + [order(i, T0 + i * MIN, 1.0) for i in range(6)])
    b = feed([identify(i, T0 + i * MIN, f"b{i}@example.com") for i in range(3)] + [order(10 + i, T0 + i * MIN, 1.0) for i in range(6)])
    a.merge(b, CFG)
    assert counts(a) == (12, 12, 6, 6) and a.rule_suspect()


def test_a_version_2_behaviour_and_models_restore() -> None:
    """Pickles of the version-2 layout (no abuse fields, no abuse forest) load under this code."""
    new = feed([order(0, T0, 2.0)])
    v3_only = {"orders_log", "emails_log", "order_burst", "small_order_burst", "identities_day", "identities_30d", "abuse_n", "scored_abuse"}
    old = Behaviour.__new__(Behaviour)
    old.__setstate__((None, {f.name: getattr(new, f.name) for f in fields(Behaviour) if f.name not in v3_only}))
    raw = pickle.loads(pickle.dumps(old))
    assert raw.past_orders == new.past_orders and raw.order_n == 1
    assert (raw.orders_log, counts(raw), raw.abuse_n) == (None, (0, 0, 0, 0), 0)
    raw.observe(CFG, order(1, T0 + MIN, 2.0), 0)
    assert raw.order_burst == 1 and raw.features()["order_burst"] == 1.0

    m = ShardModels.new(ModelConfig(window_size=5))
    del m.hst["abuse"]
    restored = snapshot.load(snapshot.dump(m, version=2))
    assert sorted(restored.hst) == sorted(FEATURE_GROUPS)
    assert restored.hst["abuse"].n_trees == m.hst["session"].n_trees and restored.hst["abuse"].seed == ModelConfig().seed + 2
    x = {k: lo for k, (lo, _) in FEATURE_LIMITS.items()}
    assert 0.0 <= restored.score_behaviour(x, learn=True) <= 1.0


def test_the_pickle_keeps_the_logs_and_recounts() -> None:
    """Counts are derived (not pickled), defaults are left out: a user without orders or emails
    pickles exactly as before the abuse fields; one with them round-trips equal."""
    plain = feed([])
    mask = plain.__getstate__()[0]  # snapshot version 9: packed, bit i = field i written
    slots = {f.name for i, f in enumerate(fields(Behaviour)) if mask >> i & 1}
    assert not slots & {"orders_log", "emails_log", "order_burst", "small_order_burst", "identities_day",
                             "identities_30d", "abuse_n", "scored_abuse"}  # fmt: skip
    busy = feed([identify(i, T0 + i * MIN, f"x{i}@example.com") for i in range(5)] + [order(i, T0 + i * MIN, 2.0) for i in range(9)])
    busy.mark_scored()
    back = pickle.loads(pickle.dumps(busy))
    assert back == busy and counts(back) == (9, 9, 5, 5) and back.rule_suspect() and not back.due_for_scoring()
