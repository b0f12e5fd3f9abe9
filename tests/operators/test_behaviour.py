"""operators.behaviour: sessions, order z-scores, email latency and identity merges, against
values worked out independently."""

from __future__ import annotations

import math
import statistics
from array import array

from operators.behaviour import FEATURE_LIMITS, Behaviour, SessionConfig, _get, _put
from operators.events import Event, Limits, parse_event

T0 = 1_714_564_800_000
MIN = 60_000
CFG = SessionConfig()  # 30 min gap
LIM = Limits(timestamp_min_ms=0)


def tr(i: int, name: str, t: int, **props: object) -> Event:
    e = parse_event({"type": "track", "event": name, "userId": "u1", "messageId": f"m{i}", "timestamp": t / 1000,
                     "receivedAt": t / 1000, "properties": props}, LIM)  # fmt: skip
    assert isinstance(e, Event), e
    return e


def feed(b: Behaviour, evs: list[Event]) -> list:
    closed = []
    for e in evs:
        closed += b.observe(CFG, e, 0)
    return closed


def test_order_z_is_the_zscore_against_the_users_earlier_orders() -> None:
    b = Behaviour()
    amounts = [10, 20, 30, 1000, 5]
    zs = []
    for i, a in enumerate(amounts):
        feed(b, [tr(i, "Order Completed", T0 + i * MIN, total=a)])
        zs.append(b.order_z)
    logs = [math.log1p(a) for a in amounts]
    assert zs[:2] == [0.0, 0.0]  # fewer than two earlier orders: no z yet
    for k in (2, 3, 4):
        want = (logs[k] - statistics.mean(logs[:k])) / statistics.stdev(logs[:k])
        assert math.isclose(zs[k], want, rel_tol=1e-9)
    assert b.order_n == 5 and math.isclose(b.order_mean, statistics.mean(logs))
    same = Behaviour()
    for i in range(3):
        feed(same, [tr(i, "Order Completed", T0 + i * MIN, total=7)])
    assert same.order_z == 0.0  # no spread: 0, not a division by zero
    assert b.features()["order_z"] == zs[-1]
    spike = Behaviour()
    for i, a in enumerate([10, 10.01, 10, 10**6]):
        feed(spike, [tr(i, "Order Completed", T0 + i * MIN, total=a)])
    assert spike.order_z > 100 and spike.features()["order_z"] == FEATURE_LIMITS["order_z"][1]  # clipped


def test_session_counters_features_and_close() -> None:
    b = Behaviour()
    evs = [tr(0, "Product Viewed", T0, product_id="a", category="Shoes"),
           tr(1, "Product Viewed", T0 + MIN, product_id="b", category="Books"),
           tr(2, "Product Added", T0 + 2 * MIN, product_id="a", price=1),
           tr(3, "Checkout Started", T0 + 3 * MIN),
           tr(4, "Order Completed", T0 + 4 * MIN, total=5),
           tr(5, "Product Removed", T0 + 5 * MIN, product_id="a", price=1)]  # fmt: skip
    assert feed(b, evs) == []
    s = b.session
    assert s is not None and (s.events, s.views, s.adds, s.removes, s.checkouts, s.converted) == (6, 2, 1, 1, 1, True)
    assert s.products == {"a", "b"} and s.categories == {"shoes", "books"}
    x = b.features()  # fewer than 8 events and no closed session: the open session's features
    assert x["velocity"] == 6 / 5 and x["breadth_products"] == 2.0 and x["view_cart_ratio"] == 0.5
    assert x["regularity"] == 1.0  # five equal gaps
    assert b.deadline(CFG) == T0 + 5 * MIN + CFG.gap_ms
    assert b.close_if_idle(CFG, T0 + 5 * MIN + CFG.gap_ms, 3) == []
    (c,) = b.close_if_idle(CFG, T0 + 5 * MIN + CFG.gap_ms + 1, 3)
    # propensity features are counted at the session's first order (views, adds, ... before
    # it; events and duration include the order event itself), not at its end
    assert c.converted and (c.start, c.end) == (T0, T0 + 5 * MIN)
    assert c.features == {"views": 2.0, "adds": 1.0, "removes": 0.0, "checkouts": 1.0, "categories": 2.0,
                          "duration_min": 4.0, "events": 5.0, "email_clicks": 0.0, "past_orders": 0.0,
                          "cart_ops": 0.0}  # fmt: skip
    assert b.past_orders == 1 and b.session is None and b.deadline(CFG) is None
    assert b.last_session is not None and b.last_session[5] == 6.0  # its events
    # a closed session's features are what a later short session is judged by
    feed(b, [tr(9, "Product Viewed", T0 + 3 * 3_600_000)])
    assert b.features()["breadth_products"] == 2.0
    assert b.sessions == 2


def test_a_late_event_from_a_closed_session_counts_totals_only() -> None:
    b = Behaviour()
    feed(b, [tr(0, "Product Viewed", T0), tr(1, "Product Viewed", T0 + 2 * 3_600_000)])
    assert b.session is not None and b.session.start == T0 + 2 * 3_600_000
    feed(b, [tr(2, "Product Viewed", T0 + 5 * MIN)])  # an hour and more before the open session
    assert b.session.events == 1 and b.sessions == 2


def test_email_latency_and_fast_ratio() -> None:
    b = Behaviour()
    evs = [tr(0, "Email Delivered", T0, email_id="e1"), tr(1, "Email Opened", T0 + 2_000, email_id="e1"),
           tr(2, "Email Link Clicked", T0 + 62_000, email_id="e1"),
           tr(3, "Email Opened", T0 + 9_000, email_id="nope"),  # never delivered: ignored
           tr(4, "Email Delivered", T0 + 100_000, email_id=7), tr(5, "Email Opened", T0 + 99_000, email_id=7)]  # fmt: skip
    feed(b, evs)
    assert (b.email_n, b.email_fast) == (2, 1)
    assert math.isclose(b.email_latency_s, 2.0 + (62.0 - 2.0) / 2)  # running mean of 2 s and 62 s
    x = b.features()
    assert x["fast_email_ratio"] == 0.5 and math.isclose(x["email_latency_log"], math.log1p(32.0))
    assert Behaviour().features()["email_latency_log"] == FEATURE_LIMITS["email_latency_log"][1]
    for i in range(10):  # only the newest 8 deliveries are kept
        feed(b, [tr(10 + i, "Email Delivered", T0 + 200_000 + i, email_id=f"d{i}")])
    assert len(b.delivered) == 16


def test_merge_adds_histories_up() -> None:
    a, o = Behaviour(), Behaviour()
    feed(a, [tr(0, "Product Viewed", T0), tr(1, "Order Completed", T0 + MIN, total=3)])
    a.close_if_idle(CFG, T0 + 3_600_000, 0)
    feed(a, [tr(2, "Email Delivered", T0 + 4_000_000, email_id="x")])
    feed(o, [tr(3, "Product Viewed", T0 + 10 * MIN), tr(4, "Email Delivered", T0 + 20 * MIN, email_id="y"),
             tr(5, "Email Opened", T0 + 20 * MIN + 1000, email_id="y")])  # fmt: skip
    o.close_if_idle(CFG, T0 + 3_600_000, 0)
    o.older_sessions = 3
    o.past_orders = 2
    a.merge(o, CFG)
    # spans: a (T0..T0+1min) and o (T0+10..T0+20min) are within the gap: one session, plus a's
    # email-delivery session and o's 3 older ones
    assert a.spans == [(T0, T0 + 20 * MIN + 1000), (T0 + 4_000_000, T0 + 4_000_000)]
    assert a.sessions == 5 and a.older_sessions == 3
    assert a.past_orders == 1 + 2 and (a.email_n, a.email_fast) == (1, 1)
    assert _get(a.delivered, _key("x")) is not None and _get(a.delivered, _key("y")) is not None
    assert a.session is not None and a.session.start == T0 + 4_000_000  # a's own open session stays
    fresh = Behaviour()
    fresh.merge(a, CFG)
    assert fresh.session is a.session  # adopted when there is none


def _key(eid: str) -> int:
    import zlib

    return zlib.crc32(eid.encode())


def test_pair_array_helpers() -> None:
    pairs = array("q")
    _put(pairs, 7, 100)
    _put(pairs, 9, 200)
    _put(pairs, 7, 300)
    assert list(pairs) == [7, 300, 9, 200]
    assert (_get(pairs, 7), _get(pairs, 9), _get(pairs, 8)) == (300, 200, None)


def test_scoring_schedule_follows_email_interactions() -> None:
    b = Behaviour()
    assert not b.due_for_scoring()
    b.email_n = 1
    assert b.due_for_scoring()
    b.mark_scored()
    assert not b.due_for_scoring() and b.scored_events == 0 and b.scored_email == 1
