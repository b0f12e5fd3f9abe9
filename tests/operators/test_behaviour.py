"""operators.behaviour: sessions, order z-scores, email latency and identity merges, against
values worked out independently."""

from __future__ import annotations

import math
import statistics
from array import array

import pytest

from operators.behaviour import (
    FEATURE_LIMITS,
    Behaviour,
    Session,
    SessionConfig,
    _get,
    _put,
    _session_features,
)
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
    evs = [tr(0, "Email Delivered", T0, email_id="e1"), tr(1, "Email Link Clicked", T0 + 2_000, email_id="e1"),
           tr(2, "Email Link Clicked", T0 + 62_000, email_id="e1"),
           tr(6, "Email Opened", T0 + 1_000, email_id="e1"),  # 1 s after delivery: a machine open, not a feature
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
             tr(5, "Email Link Clicked", T0 + 20 * MIN + 1000, email_id="y")])  # fmt: skip
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


def _session(events: int, minutes: float, products: int = 0, gaps: tuple[float, ...] = ()) -> Session:
    s = Session(start=T0, last=T0 + int(minutes * MIN), events=events)
    s.products = {f"p{i}" for i in range(products)}
    s.gap_n, s.gap_sum, s.gap_sq = len(gaps), sum(gaps), sum(g * g for g in gaps)
    return s


def test_rule_suspect_thresholds() -> None:
    def email(n: int, fast: int) -> bool:
        b = Behaviour()
        b.email_n, b.email_fast = n, fast
        return b.rule_suspect()

    assert (email(8, 7), email(7, 7), email(10, 8), email(10, 9), email(0, 0)) == (True, False, False, True, False)

    def sess(s: Session) -> bool:
        b = Behaviour()
        b.session = s
        return b.rule_suspect()

    assert sess(_session(41, 1)) and not sess(_session(40, 1))  # velocity > 40 per minute
    assert sess(_session(30, 10, products=80)) and not sess(_session(30, 10, products=79))
    assert not sess(_session(29, 0.1, products=100))  # under 30 events: never
    assert sess(_session(30, 10, gaps=(10, 10, 10, 10)))  # perfectly regular
    assert not sess(_session(30, 10, gaps=(9, 11, 9, 11)))  # cv 0.1: regularity 0.9, not above
    # a short open session: judged by the last closed one
    b = Behaviour()
    b.session = _session(3, 1)
    b.last_session = (50.0, 0.0, 0.0, 0.0, 0.0, 30.0)
    assert b.rule_suspect()
    b.last_session = (50.0, 0.0, 0.0, 0.0, 0.0, 29.0)
    assert not b.rule_suspect()
    b.session = _session(8, 10)  # 8+ events: its own features, not the last session's
    b.last_session = (50.0, 0.0, 0.0, 0.0, 0.0, 30.0)
    assert not b.rule_suspect()


def test_session_features_against_direct_statistics() -> None:
    gaps = (1.0, 2.0, 3.0, 6.0)
    s = _session(5, 0.2, products=2, gaps=gaps)
    s.views, s.adds = 4, 1
    f = _session_features(s)
    cv = statistics.pstdev(gaps) / statistics.mean(gaps)
    assert math.isclose(f["regularity"], 1 - cv) and f["velocity"] == 5.0  # under a minute counts as one
    assert f["view_cart_ratio"] == 0.25 and f["breadth_products"] == 2.0 and f["events"] == 5.0
    assert _session_features(_session(10, 5, gaps=(1, 1)))["regularity"] == 0.0  # fewer than 3 gaps
    assert _session_features(_session(10, 5, gaps=(0, 0, 0)))["regularity"] == 0.0  # no time between
    assert _session_features(_session(10, 5, gaps=(1, 100, 1)))["regularity"] == 0.0  # clipped at 0
    assert _session_features(_session(10, 2.5))["velocity"] == 4.0 and _session_features(_session(1, 0))["view_cart_ratio"] == 0.0


def test_counters_count_every_event() -> None:
    b = Behaviour()
    names = ["Product Added", "Product Removed", "Checkout Started", "Email Link Clicked"] * 2
    feed(b, [tr(i, n, T0 + i * 1000, email_id="e") for i, n in enumerate(names)])
    s = b.session
    assert s is not None and (s.adds, s.removes, s.checkouts, s.email_clicks, s.events) == (2, 2, 2, 2, 8)
    assert (s.gap_n, s.gap_sum, s.gap_sq) == (7, 7.0, 7.0)  # seconds between events
    feed(b, [tr(20, "Product Viewed", T0 + 3000, product_id="late")])  # late, inside the session
    assert s.events == 9 and s.gap_n == 7 and s.last == T0 + 7000 and "late" in s.products


def test_email_delivery_bookkeeping() -> None:
    b = Behaviour()
    times = [T0 + 9000 - i * 1000 for i in range(9)]  # the 9th delivery is the oldest
    for i, t in enumerate(times):
        feed(b, [tr(i, "Email Delivered", t, campaign_id=f"c{i}")])
    assert len(b.delivered) == 16 and _get(b.delivered, _key("c8")) is None  # the oldest went
    assert all(_get(b.delivered, _key(f"c{i}")) == times[i] for i in range(8))
    feed(b, [tr(20, "Email Link Clicked", times[0], campaign_id="c0"),  # same instant: latency 0, fast
             tr(21, "Email Link Clicked", times[1] + 5000, campaign_id="c1"),  # exactly 5 s: not fast
             tr(22, "Email Link Clicked", times[2] - 1, campaign_id="c2")])  # before its delivery: ignored  # fmt: skip
    assert (b.email_n, b.email_fast) == (2, 1) and b.email_latency_s == 2.5
    for i in range(30):  # the running mean is over the last ~20 interactions
        feed(b, [tr(100 + i, "Email Link Clicked", times[3] + 10_000, campaign_id="c3")])
    # exact mean of the first 20 (0, 5 and eighteen 10 s), then 1/20 steps for 12 more
    assert math.isclose(b.email_latency_s, 10 - (10 - 185 / 20) * (19 / 20) ** 12)
    n = b.email_n
    feed(b, [tr(200, "Email Opened", times[4] + 4_999, campaign_id="c4")])  # an open < 5 s: a machine's
    assert b.email_n == n


def test_merge_adds_to_both_sides_counts() -> None:
    a, o = Behaviour(), Behaviour()
    a.older_sessions, a.email_n, a.email_fast = 1, 2, 1
    o.older_sessions, o.email_n, o.email_fast = 2, 3, 3
    for i, k in enumerate(("x", "y")):
        _put(o.delivered, _key(k), T0 + i)
    _put(a.delivered, _key("x"), T0 - 5)
    a.session = _session(2, 1)
    o.session = _session(3, 2)
    a.merge(o, CFG)
    assert (a.older_sessions, a.email_n, a.email_fast) == (3, 5, 4)
    assert (_get(a.delivered, _key("x")), _get(a.delivered, _key("y"))) == (T0 - 5, T0 + 1)  # own kept
    assert a.session is not None and a.session.events == 2  # the open session stays its own


def test_span_merging_and_retention() -> None:
    b = Behaviour()
    gap = CFG.gap_ms
    b._span(CFG, T0)
    b._span(CFG, T0 + gap)  # exactly the gap: the same session
    b._span(CFG, T0 + 3 * gap)
    assert b.spans == [(T0, T0 + gap), (T0 + 3 * gap, T0 + 3 * gap)]
    b._span(CFG, T0 + 2 * gap)  # within the gap of both: one session
    assert b.spans == [(T0, T0 + 3 * gap)] and b.sessions == 1
    r = Behaviour()
    r._span(CFG, T0)
    r._span_range(CFG, T0 + gap, T0 + 2 * gap)  # a range exactly the gap away fuses
    assert r.spans == [(T0, T0 + 2 * gap)]
    many = Behaviour()
    for k in range(15):  # at most SPAN_KEEP_MAX spans kept; the older ones are counted
        many._span(CFG, T0 + k * 2 * gap)
    assert len(many.spans) == 12 and many.older_sessions == 3 and many.sessions == 15
    old = Behaviour()
    old._span(CFG, T0)
    old._span(CFG, T0 + 3 * 86_400_000)  # exactly SPAN_KEEP_MS later: kept
    assert len(old.spans) == 2
    old._span(CFG, T0 + 3 * 86_400_000 + 1)
    assert len(old.spans) == 1 and old.older_sessions == 1 and old.sessions == 2


def test_more_boundaries() -> None:
    b = Behaviour()
    for k in range(2):  # two converted sessions: two past orders
        feed(b, [tr(10 * k, "Order Completed", T0 + k * 3_600_000, total=1)])
        b.close_if_idle(CFG, T0 + k * 3_600_000 + CFG.gap_ms + 1, 0)
    assert b.past_orders == 2
    assert _session_features(_session(10, 5, gaps=(2, 2, 2)))["regularity"] == 1.0  # exactly 3 gaps count
    assert _session_features(_session(10, 5, gaps=(0.5, 0.5, 0.5)))["regularity"] == 1.0  # sub-second gaps
    e = Behaviour()
    feed(e, [tr(0, "Email Delivered", T0, email_id="a"), tr(1, "Email Opened", T0 + 1000, email_id="a"),
             tr(2, "Email Link Clicked", T0 + 2000, email_id="a")])  # fmt: skip
    assert (e.email_n, e.email_fast) == (1, 1)  # the 1 s open is a machine's (Apple MPP): only the click


def test_session_config_must_be_positive() -> None:
    for bad in (0, -1):
        with pytest.raises(ValueError) as exc:
            SessionConfig(gap_ms=bad)
        assert str(exc.value) == "session gap must be positive"
    assert SessionConfig(gap_ms=1).gap_ms == 1
