"""operators.user: the per-user step, its outputs, timers and suppression."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.behaviour import SessionConfig
from operators.events import Event, Limits, parse_event
from operators.rfm import RfmValues
from operators.user import (
    BehaviourUpdate,
    Forget,
    ProfileUpdate,
    RfmDelta,
    Unsuppress,
    UserConfig,
    UserState,
    next_deadline,
    on_timer,
    render,
    step,
)
from tests.operators import delivery

CFG = UserConfig()
LIM = Limits(timestamp_min_ms=0)
T0 = delivery.T0
MIN = 60_000
H = delivery.H


def ev(i: int, name: str, minute: float, etype: str = "track", **props: object) -> Event:
    t = T0 + int(minute * MIN) + i
    raw: dict = {"type": etype, "userId": "u1", "messageId": f"m{i}", "timestamp": t / 1000,
                 "receivedAt": t / 1000, "properties": props}  # fmt: skip
    if etype == "track":
        raw["event"] = name
    elif etype == "identify":
        raw["traits"] = props
        raw["properties"] = {}
    e = parse_event(raw, LIM)
    assert isinstance(e, Event), e
    return e


def only(outs: list, kind: type) -> list:
    return [o for o in outs if isinstance(o, kind)]


# -- the order-insensitivity property at the step level ---------------------------------


def _run(arrivals: list[tuple[int, Event]], final: int, late: bool) -> UserState:
    """Deliver as the dataflow does: step per event, on_timer whenever next_deadline is due."""
    st_: UserState | None = None

    def timers(until: int) -> None:
        for _ in range(12):
            d = None if st_ is None else next_deadline(CFG, st_)
            # a session closes once the clock is *past* its deadline (close_if_idle: >)
            if d is None or d + 1 > until:
                return
            assert st_ is not None
            on_timer(CFG, st_, until if late else d + 1)
        raise AssertionError("timers keep coming due")

    for at, e in arrivals:
        timers(at)
        st_, _, _ = step(CFG, st_, "u1", [e])
    timers(final)
    assert st_ is not None
    return st_


@settings(max_examples=300, deadline=None)
@given(delivery.specs(max_size=20), st.booleans())
def test_rendered_profile_is_order_insensitive(specs: list[delivery.Spec], late: bool) -> None:
    """Through step and on_timer (sessions, interest, cart timers), late and redelivered
    events end in the same rendered profile as in-order delivery: every field, interest
    scores up to float rounding."""
    evs = delivery.to_events(specs)
    shuffled = delivery.arrivals(specs, evs)
    final = max(t for t, _ in shuffled) + 3 * H
    ref, got = _run(delivery.in_order(evs), final, late), _run(shuffled, final, late)
    fr, fg = render(ref), render(got)
    ir, ig = orjson.loads(fr.pop("interests")), orjson.loads(fg.pop("interests"))
    assert fg == fr
    assert ir.keys() == ig.keys() and all(math.isclose(ir[k], ig[k], abs_tol=2e-4) for k in ir)
    assert got.profile.seq == ref.profile.seq == len(evs)
    assert got.behaviour.sessions == ref.behaviour.sessions


# -- step outputs -----------------------------------------------------------------------


def test_one_profile_update_per_batch_with_rfm_and_render() -> None:
    items = [ev(1, "Product Viewed", 0, category="Shoes > Running"),
             ev(2, "Order Completed", 1, total=20, products=[{"product_id": "a", "price": 10, "quantity": 2,
                                                              "category": "Shoes"}]),
             ev(3, "Page", 2, etype="page", category="Books")]  # fmt: skip
    st_, outs, dups = step(CFG, None, "u1", items)
    assert st_ is not None and dups == 0
    upd = only(outs, ProfileUpdate)
    assert len(upd) == 1
    u = upd[0]
    assert (u.uid, u.seq, u.last_received_ms, u.event) == ("u1", 3, items[2].received_at, None)
    assert u.rfm == RfmValues(items[1].ts, 1, 2000)
    assert only(outs, RfmDelta) == [RfmDelta(None, RfmValues(items[1].ts, 1, 2000))]
    f = u.fields
    assert f == render(st_)
    assert (f["purchase_count"], f["revenue_total"], f["session_count"], f["top_category"]) == ("1", "20.00", "1", "shoes")
    # view 1.0 + purchase 3.0 (one line) on shoes, page 0.5 on books; decayed over 2 minutes only
    interests = orjson.loads(f["interests"])
    assert list(interests) == ["shoes", "books"]
    assert interests["shoes"] == pytest.approx(4.0, abs=1e-3) and interests["books"] == pytest.approx(0.5, abs=1e-3)
    assert f["interests_at"] == "2024-05-01T12:02:00.003Z"
    # a second order moves the customer: old -> new values
    st_, outs, _ = step(CFG, st_, "u1", [ev(4, "Order Completed", 3, total=5)])
    assert only(outs, RfmDelta) == [RfmDelta(RfmValues(items[1].ts, 1, 2000), RfmValues(T0 + 3 * MIN + 4, 2, 2500))]
    # a batch of only duplicates writes nothing
    st_, outs, dups = step(CFG, st_, "u1", items)
    assert (outs, dups) == ([], 3)


def test_a_visitor_is_not_a_customer_and_has_no_interests() -> None:
    st_, outs, _ = step(CFG, None, "u1", [ev(1, "Search", 0)])
    assert st_ is not None and only(outs, RfmDelta) == [] and st_.rfm is None
    (u,) = only(outs, ProfileUpdate)
    assert u.rfm is None
    assert (u.fields["interests"], u.fields["top_category"], u.fields["interests_at"]) == ("{}", "", "")


def test_interest_shares_the_weight_over_order_lines() -> None:
    order = ev(1, "Order Completed", 0, products=[{"product_id": "a", "price": 1, "category": "Shoes"},
                                                  {"product_id": "b", "price": 1, "category": "Books"},
                                                  {"product_id": "c", "price": 1}], category="Garden")  # fmt: skip
    st_, _, _ = step(CFG, None, "u1", [order])
    assert st_ is not None
    # purchase weight 3 split over 3 lines; a line without category takes the event's
    assert st_.interest.render() == {"books": 1.0, "garden": 1.0, "shoes": 1.0}
    two = ev(5, "Order Completed", 0, products=[{"product_id": "a", "price": 1, "category": "Shoes"},
                                                {"product_id": "b", "price": 1, "category": "Books"}])  # fmt: skip
    st2, _, _ = step(CFG, None, "u1", [two])
    assert st2 is not None and st2.interest.render() == {"books": 1.5, "shoes": 1.5}
    # one line: the whole weight goes to the event's category, which the event may set itself
    one = ev(6, "Order Completed", 0, category="Garden", products=[{"product_id": "a", "price": 1, "category": "Shoes"}])
    st1, _, _ = step(CFG, None, "u1", [one])
    assert st1 is not None and st1.interest.render() == {"garden": 3.0}
    st_, _, _ = step(CFG, st_, "u1", [ev(2, "Search", 1, category="Toys")])
    assert "toys" not in st_.interest.render()  # weight 0: says nothing about interest
    st_, _, _ = step(CFG, st_, "u1", [ev(3, "Product Viewed", 2)])
    assert st_.interest.render() == {"books": 1.0, "garden": 1.0, "shoes": 1.0}  # no category: nothing


def test_behaviour_update_when_scoring_is_due() -> None:
    items = [ev(i, "Product Viewed", i * 0.5, product_id=f"p{i % 3}", category="Shoes") for i in range(8)]
    st_, outs, _ = step(CFG, None, "u1", items[:7])
    assert only(outs, BehaviourUpdate) == []  # fewer than 8 session events: not scored
    st_, outs, _ = step(CFG, st_, "u1", items[7:])
    (b,) = only(outs, BehaviourUpdate)
    assert b.uid == "u1" and b.score and b.rule_suspect is False and b.closed == ()
    assert b.session is not None and b.session["views"] == 8.0 and b.session["events"] == 8.0
    assert set(b.features) == {"velocity", "regularity", "breadth_products", "breadth_categories",
                               "view_cart_ratio", "order_z", "fast_email_ratio", "email_latency_log",
                               "order_burst", "small_order_burst", "identities_day", "identities_30d"}  # fmt: skip
    assert b.features["breadth_products"] == 3.0
    # the next event, after the gap, closes the 8-event session: scored with it
    st_, outs, _ = step(CFG, st_, "u1", [ev(20, "Product Viewed", 60)])
    (b,) = only(outs, BehaviourUpdate)
    assert len(b.closed) == 1 and b.closed[0].features["events"] == 8.0 and b.score
    assert st_ is not None and st_.behaviour.sessions == 2


def test_short_session_closing_only_trains_propensity() -> None:
    st_, _, _ = step(CFG, None, "u1", [ev(1, "Product Viewed", 0)])
    st_, outs, _ = step(CFG, st_, "u1", [ev(2, "Product Viewed", 45)])
    (b,) = only(outs, BehaviourUpdate)
    assert len(b.closed) == 1 and not b.score


def test_on_timer_closes_idle_session_and_abandons_the_cart_once() -> None:
    add = ev(1, "Product Added", 0, product_id="a", price=2.5, quantity=2, category="Shoes")
    st_, _, _ = step(CFG, None, "u1", [add])
    assert st_ is not None
    gap, abandon = CFG.session.gap_ms, CFG.abandon_ms
    assert next_deadline(CFG, st_) == add.ts + gap  # the session ends first
    assert on_timer(CFG, st_, add.ts + gap) == []  # not past it yet
    outs = on_timer(CFG, st_, add.ts + gap + 1)
    (b,) = only(outs, BehaviourUpdate)
    assert len(b.closed) == 1 and not b.score and only(outs, ProfileUpdate) == []
    assert next_deadline(CFG, st_) == add.ts + abandon
    assert on_timer(CFG, st_, add.ts + abandon - 1) == []
    outs = on_timer(CFG, st_, add.ts + abandon)
    (u,) = only(outs, ProfileUpdate)
    assert u.event is not None and u.event["name"] == "Cart Abandoned"
    assert u.event["properties"]["cart_value"] == "5.00"
    assert u.fields["cart_abandoned"] == "1" and u.seq == 1  # timers do not advance seq
    assert u.last_received_ms == 0  # no receipt caused it: not a freshness sample
    assert next_deadline(CFG, st_) is None
    assert on_timer(CFG, st_, add.ts + 10 * abandon) == []  # once


def test_the_next_event_fires_the_abandonment_it_passed() -> None:
    """Replays: the user's next event, past the deadline, abandons the cart first."""
    add = ev(1, "Product Added", 0, product_id="a", price=1)
    st_, _, _ = step(CFG, None, "u1", [add])
    st_, outs, _ = step(CFG, st_, "u1", [ev(2, "Product Viewed", 61)])
    (u,) = only(outs, ProfileUpdate)
    assert u.event is not None and u.event["name"] == "Cart Abandoned" and u.seq == 2


def test_forget_erases_and_suppresses_until_unsuppress() -> None:
    order = ev(1, "Order Completed", 0, total=3)
    st_, _, _ = step(CFG, None, "u1", [order])
    assert st_ is not None and st_.rfm is not None
    rfm = st_.rfm
    st_, outs, dups = step(CFG, st_, "u1", [Forget("u1"), ev(2, "Product Viewed", 1)])
    assert st_ is not None and st_.suppressed and st_.profile.seq == 0
    assert outs == [RfmDelta(rfm, None)] and dups == 1  # leaves the population; the event is dropped
    assert next_deadline(CFG, st_) is None and on_timer(CFG, st_, T0 + 10 * H) == []
    assert st_.profile.uid == "u1"
    st_, outs, dups = step(CFG, st_, "u1", [ev(3, "Product Viewed", 2), ev(30, "Product Viewed", 2)])
    assert (outs, dups) == ([], 2)
    st_, outs, dups = step(CFG, st_, "u1", [Unsuppress("u1"), ev(4, "Product Added", 3, product_id="a", price=1)])
    assert st_ is not None and not st_.suppressed and dups == 0
    (u,) = only(outs, ProfileUpdate)
    assert u.uid == "u1" and u.seq == 1 and u.fields["event_count"] == "1"  # a fresh state
    assert next_deadline(CFG, st_) == min(T0 + 3 * MIN + 4 + CFG.session.gap_ms, T0 + 3 * MIN + 4 + CFG.abandon_ms)
    # Unsuppress of a user who is not suppressed changes nothing
    before = render(st_)
    st_, outs, _ = step(CFG, st_, "u1", [Unsuppress("u1")])
    assert st_ is not None and render(st_) == before and outs == []


def test_forget_then_events_in_one_batch_drops_what_came_before() -> None:
    st_, outs, dups = step(CFG, None, "u1", [ev(1, "Product Viewed", 0), Forget("u1"), ev(2, "Product Viewed", 1)])
    assert st_ is not None and st_.suppressed and outs == [] and dups == 1
    # forget and unsuppress in one batch: an empty, unsuppressed state and nothing to write
    st_, outs, dups = step(CFG, None, "u1", [ev(1, "Product Viewed", 0), Forget("u1"), Unsuppress("u1")])
    assert st_ is not None and not st_.suppressed and st_.profile.seq == 0 and (outs, dups) == ([], 0)
    # while suppressed, events before an Unsuppress are dropped, those after it count
    st_, outs, dups = step(CFG, None, "u1", [Forget("u1"), ev(3, "Product Viewed", 2), Unsuppress("u1"),
                                             ev(4, "Product Viewed", 3)])  # fmt: skip
    assert st_ is not None and dups == 1
    (u,) = only(outs, ProfileUpdate)
    assert (u.seq, u.fields["event_count"], u.fields["first_seen_at"]) == (1, "1", "2024-05-01T12:03:00.004Z")


@pytest.mark.parametrize("ms", [0, -1])
def test_config_rejects_a_non_positive_abandonment_window(ms: int) -> None:
    with pytest.raises(ValueError, match="^cart abandonment window must be positive$"):
        UserConfig(abandon_ms=ms)
    assert UserConfig(abandon_ms=1).abandon_ms == 1


def test_custom_windows_are_used() -> None:
    cfg = UserConfig(session=SessionConfig(gap_ms=5 * MIN), abandon_ms=10 * MIN)
    add = ev(1, "Product Added", 0, product_id="a", price=1)
    st_, _, _ = step(cfg, None, "u1", [add])
    assert st_ is not None and next_deadline(cfg, st_) == add.ts + 5 * MIN
    assert on_timer(cfg, st_, add.ts + 5 * MIN + 1) != []
    assert next_deadline(cfg, st_) == add.ts + 10 * MIN
