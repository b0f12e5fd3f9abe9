"""ProfileState and SeenIds: exact folds, dedupe idempotence, order insensitivity."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.dedupe import DedupeConfig, SeenIds
from operators.events import Event, Limits, parse_event
from operators.profile import ProfileState, to_fields
from tests.operators import delivery

T0 = 1_714_564_800_000
LIM = Limits(timestamp_min_ms=0)
DD = DedupeConfig()


def mk(i: int, name: str, t: int, **props: object) -> Event:
    raw = {"type": "track", "event": name, "userId": "u1", "messageId": f"m{i}", "timestamp": t / 1000,
           "receivedAt": (T0 + 10**9) / 1000, "properties": props}  # fmt: skip
    e = parse_event(raw, LIM)
    assert isinstance(e, Event), e
    return e


def fold(events: list[Event]) -> dict[str, str]:
    st_ = ProfileState("u1")
    for e in events:
        st_.apply(e, DD)
    return to_fields(st_)


def test_cart_and_orders() -> None:
    evs = [
        mk(1, "Product Added", T0, product_id="a", price=10, quantity=2),
        mk(2, "Product Added", T0 + 1, product_id="b", price=1.5),
        mk(3, "Product Removed", T0 + 2, product_id="a", price=10, quantity=1),
        mk(4, "Order Completed", T0 + 3, total=11.5),
        mk(5, "Product Added", T0 + 4, product_id="c", price=2.25, quantity=4),
        mk(6, "Product Removed", T0 + 5, product_id="c", price=2.25, quantity=9),
        mk(7, "Product Added", T0 + 6, product_id="d", price=0.1, quantity=3),
    ]
    f = fold(evs)
    assert f["cart_items"] == "3" and f["cart_value"] == "0.30"
    assert f["purchase_count"] == "1" and f["revenue_total"] == "11.50"
    assert f["event_count"] == "7"


def test_email_engagement_and_identify() -> None:
    st_ = ProfileState("u1")
    idn = parse_event({"type": "identify", "userId": "u1", "messageId": "i1", "timestamp": T0 / 1000,
                       "receivedAt": (T0 + 5000) / 1000, "traits": {"email": "a@example.com"}}, LIM)  # fmt: skip
    assert isinstance(idn, Event)
    st_.apply(idn, DD)
    st_.apply(mk(2, "Email Opened", T0 + 10), DD)
    st_.apply(mk(3, "Email Link Clicked", T0 + 20), DD)
    f = to_fields(st_)
    assert (f["email"], f["email_opens"], f["email_clicks"]) == ("a@example.com", "1", "1")
    assert f["last_email_open_at"] == "2024-05-01T12:00:00.010Z"


event_specs = st.lists(
    st.tuples(
        st.sampled_from(["Product Added", "Product Removed", "Order Completed", "Email Opened", "Product Viewed", "Search"]),
        st.integers(0, 10_000),  # time offset
        st.sampled_from(["a", "b", "c"]),
        st.integers(1, 3),
        st.sampled_from([0.99, 5, 12.5]),
    ),
    max_size=25,
)


def events_from(specs: list) -> list[Event]:
    return [mk(i, n, T0 + dt * 7 + i, product_id=p, quantity=q, price=pr) for i, (n, dt, p, q, pr) in enumerate(specs)]


ABANDON_MS = 3_600_000


def _timers(st_: ProfileState, until: int, late: bool) -> None:
    """Fire the abandonment timer as the dataflow does while the stream clock runs to
    ``until``: at its deadline (or, ``late``, only at ``until``), until nothing is due."""
    for _ in range(8):  # each firing either abandons, empties the cart or parks orphans
        d = st_.abandon_deadline(ABANDON_MS)
        if d is None or d > until:
            return
        st_.check_abandoned(until if late else d, ABANDON_MS)
    raise AssertionError("the abandonment timer keeps coming due")


def deliver(arrivals: list[tuple[int, Event]], final_clock: int, late: bool) -> ProfileState:
    """Fold deliveries as the user step and its timers do (tests/operators/delivery.py)."""
    st_ = ProfileState("u1")
    for at, e in arrivals:
        _timers(st_, at, late)
        st_.check_abandoned(e.ts, ABANDON_MS)  # operators.user.step: at the event's own time
        st_.apply(e, DD, ABANDON_MS)
    _timers(st_, final_clock, late)
    return st_


AFTER = st.sampled_from([0, 30 * 60_000, 3 * delivery.H, 50 * delivery.H])


def _same_profile(specs: list[delivery.Spec], late: bool, after: int) -> None:
    evs = delivery.to_events(specs)
    shuffled = delivery.arrivals(specs, evs)
    final = max(t for t, _ in shuffled) + after
    ref = deliver(delivery.in_order(evs), final, late)
    got = deliver(shuffled, final, late)
    assert to_fields(got) == to_fields(ref)
    assert got.seq == ref.seq == len(evs)
    assert got.cart() == ref.cart()


@settings(max_examples=300, deadline=None)
@given(delivery.specs(), st.booleans(), AFTER)
def test_order_insensitive_inside_window(specs: list[delivery.Spec], late: bool, after: int) -> None:
    """Late (up to 26 h), redelivered events with abandonment timers firing in between end in
    the same profile as the same events delivered once, in order: every rendered field
    (cart lines, value, items, abandonment flag, counters, bounds, email, anonymous ids)
    and ``seq``. Spans three days, repeats product ids, puts removals before their adds, and
    runs the timers to a final clock ``after`` the last delivery (before, at and past the
    abandonment deadline)."""
    _same_profile(specs, late, after)


@settings(max_examples=400, deadline=None)
@given(delivery.specs(delivery.CART_KINDS, ("a", "b"), max_size=12), st.booleans(), AFTER)
def test_cart_order_insensitive_inside_window(specs: list[delivery.Spec], late: bool, after: int) -> None:
    """The same property, searched densely on cart operations and orders of two products
    (orphan removals, orders landing between a removal and its add, abandonment)."""
    _same_profile(specs, late, after)


def test_abandonment_is_reached_by_the_delivery_model() -> None:
    """The property above reaches abandonment: a cart left alone past the window is
    abandoned in both deliveries (guards against a model that never fires the timer)."""
    specs = [delivery.Spec("Product Added", 0, "a", 2, 5, None, 0, None),
             delivery.Spec("Product Removed", 10, "a", 1, 5, None, 2 * delivery.H, None)]  # fmt: skip
    evs = delivery.to_events(specs)
    final = evs[-1].ts + 2 * delivery.H
    for late in (False, True):
        ref = deliver(delivery.in_order(evs), final, late)
        got = deliver(delivery.arrivals(specs, evs), final, late)
        assert to_fields(ref)["cart_abandoned"] == to_fields(got)["cart_abandoned"] == "1"
        assert to_fields(got)["cart_items"] == "1"


@settings(max_examples=200, deadline=None)
@given(event_specs, st.integers(0, 25))
def test_replay_is_a_noop(specs: list, cut: int) -> None:
    evs = events_from(specs)
    st_ = ProfileState("u1")
    for e in evs:
        st_.apply(e, DD)
    before = (to_fields(st_), st_.seq)
    # a crash-and-replay re-delivers a suffix, or everything
    for e in evs[min(cut, len(evs)) :] + evs:
        assert not st_.apply(e, DD)
    assert (to_fields(st_), st_.seq) == before


def test_state_pickles_roundtrip() -> None:
    st_ = ProfileState("u1")
    for e in events_from([("Product Added", 1, "a", 2, 5), ("Order Completed", 2, "a", 1, 5)]):
        st_.apply(e, DD)
    back = pickle.loads(pickle.dumps(st_))
    assert to_fields(back) == to_fields(st_) and back.seq == st_.seq
    assert not back.apply(events_from([("Product Added", 1, "a", 2, 5)])[0], DD)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=8), st.integers(0, 10**6)), max_size=100))
def test_dedupe_is_idempotent_and_bounded(items: list) -> None:
    cfg = DedupeConfig(window_ms=10**9, max_ids=50)
    s = SeenIds()
    firsts = [s.first_sight(cfg, m, t) for m, t in items]
    assert len(s) <= 50
    # a repeat of the last 50 distinct ids is always recognised
    assert not any(s.first_sight(cfg, m, t) for m, t in items[-10:])
    distinct = len({m for m, _ in items})
    if distinct <= 50:
        assert sum(firsts) == distinct


def test_dedupe_window_forgets_old_ids() -> None:
    cfg = DedupeConfig(window_ms=1000, max_ids=100)
    s = SeenIds()
    assert s.first_sight(cfg, "old", 0)
    for i in range(70):
        s.first_sight(cfg, f"n{i}", 5000 + i)
    assert s.first_sight(cfg, "old", 0)  # outside the window: forgotten by design


def test_long_cart_histories_keep_the_net_cart() -> None:
    evs = [mk(0, "Product Added", T0, product_id="a", price=1, quantity=5)]
    for i in range(150):
        evs.append(mk(2 * i + 1, "Product Added", T0 + 2 * i + 1, product_id="b", price=2))
        evs.append(mk(2 * i + 2, "Product Removed", T0 + 2 * i + 2, product_id="b", price=2))
    f = fold(evs)
    assert (f["cart_items"], f["cart_value"]) == ("5", "5.00")


def _fold_with_clock(events: list[tuple[Event, int]], abandon_ms: int = 3_600_000) -> ProfileState:
    """Fold events as the user step does: the abandonment check at the stream clock first."""
    st_ = ProfileState("u1")
    for e, clock in events:
        st_.check_abandoned(clock, abandon_ms)
        st_.apply(e, DD, abandon_ms)
    return st_


def test_removal_before_its_add_nets_out_even_after_the_deadline_passed() -> None:
    """Out of order: the removal arrives first, the stream clock passes the abandonment
    deadline (which finds no cart), then the add arrives. The cart must end as in order:
    empty of that product (a regression: the orphan removal used to be dropped)."""
    add = mk(1, "Product Added", T0, product_id="p", price=107, quantity=1)
    rem = mk(2, "Product Removed", T0 + 9_000, product_id="p", price=107, quantity=1)
    other = mk(3, "Product Added", T0 + 5 * 3_600_000, product_id="q", price=5, quantity=1)
    in_order = _fold_with_clock([(add, T0), (rem, T0 + 9_000), (other, other.ts)])
    late = T0 + 3 * 3_600_000  # the clock is past rem + 1 h when the add shows up
    shuffled = _fold_with_clock([(rem, T0 + 9_000), (mk(9, "Page", late), late), (add, late), (other, other.ts)])
    assert in_order.cart() == shuffled.cart() == {"q": (1, 500)}
    assert to_fields(in_order)["cart_items"] == to_fields(shuffled)["cart_items"] == "1"


def test_orphan_removal_has_no_deadline_and_expires() -> None:
    rem = mk(1, "Product Removed", T0, product_id="p", price=1, quantity=1)
    st_ = _fold_with_clock([(rem, T0)])
    assert st_.check_abandoned(T0 + 2 * 3_600_000, 3_600_000) is None
    assert st_.cart_orphans and st_.abandon_deadline(3_600_000) is None  # no timer busy-loop
    # an add of the same product long after the window is not cancelled by the stale removal
    add = mk(2, "Product Added", T0 + 72 * 3_600_000, product_id="p", price=1, quantity=1)
    st_.apply(add, DD)
    assert st_.cart() == {"p": (1, 100)}


def _cart_events(*rows: tuple[str, int, str, int, float]) -> list[Event]:
    """(kind, event-time offset in minutes, product, quantity, price) -> events m0, m1, ..."""
    out = []
    for i, (kind, minute, pid, qty, price) in enumerate(rows):
        props: dict = {"product_id": pid, "quantity": qty, "price": price}
        out.append(mk(i, kind, T0 + minute * 60_000 + i, **(props if kind != "Order Completed" else {"total": 1})))
    return out


def _both(evs: list[Event], delays: dict[int, int]) -> tuple[ProfileState, ProfileState]:
    """(in order, with event ``i`` delivered ``delays[i]`` ms late), timers run to the end."""
    late = sorted(((e.ts + delays.get(i, 0), i, e) for i, e in enumerate(evs)), key=lambda x: x[:2])
    final = max(t for t, _, _ in late) + 3 * delivery.H
    ref = deliver(delivery.in_order(evs), final, late=False)
    got = deliver([(t, e) for t, _, e in late], final, late=False)
    return ref, got


def test_late_order_after_the_removals_that_emptied_the_cart() -> None:
    """Removals netted the cart out at its deadline; a late order then takes the removals,
    leaving a live cart, which must still be abandoned (it had no deadline any more)."""
    evs = _cart_events(("Product Removed", 120, "a", 2, 5), ("Order Completed", 180, "", 1, 0),
                       ("Product Added", 240, "a", 1, 5))  # fmt: skip
    ref, got = _both(evs, {1: 3 * delivery.H})
    assert to_fields(ref)["cart_abandoned"] == to_fields(got)["cart_abandoned"] == "1"
    assert got.cart() == ref.cart() == {"a": (1, 500)}


def test_late_order_splits_a_netted_out_cart() -> None:
    """A removal and a later add net out at the deadline; the order between them arrives
    late: the add is after the order, so it is the cart (it used to be forgotten)."""
    evs = _cart_events(("Product Removed", 0, "b", 1, 1), ("Order Completed", 120, "", 1, 0),
                       ("Product Added", 120, "b", 1, 1))  # fmt: skip
    ref, got = _both(evs, {1: 61 * 60_000})
    assert got.cart() == ref.cart() == {"b": (1, 100)}
    assert to_fields(got) == to_fields(ref)


def test_late_add_does_not_set_the_price() -> None:
    """The price of a line is the one of its newest add, also when an older add arrives
    after the cart netted out (it used to become the price)."""
    evs = _cart_events(("Product Added", 0, "a", 1, 0.99), ("Product Added", 0, "a", 1, 5),
                       ("Product Removed", 0, "a", 1, 5))  # fmt: skip
    ref, got = _both(evs, {0: 61 * 60_000})
    assert got.cart() == ref.cart() == {"a": (1, 500)}


def test_stale_removal_expires_while_other_products_are_in_the_cart() -> None:
    """A removal of a product the cart never held cancels no add more than 48 h later,
    also while other products are in the cart (it used to expire only in an empty cart)."""
    evs = _cart_events(("Product Added", 0, "b", 1, 1), ("Product Removed", 0, "a", 1, 1),
                       ("Product Added", 3 * 1440, "a", 1, 1), ("Product Removed", 3 * 1440, "b", 1, 1))  # fmt: skip
    ref, got = _both(evs, {2: 61 * 60_000})
    assert got.cart() == ref.cart() == {"a": (1, 100)}


@pytest.mark.xfail(strict=True, reason="known gap: removals of products not in the cart wait 48 h, "
                   "measured from the newest event/clock, so a late add 48 h - lateness .. 48 h "
                   "after one may or may not cancel it; exact would need keeping them 48 h + the "
                   "maximal lateness (tests/operators/delivery.py spaces events around it)")  # fmt: skip
def test_orphan_expiry_does_not_depend_on_lateness() -> None:
    """A removal and its add 26 h later cancel (inside the 48 h window), whether the add
    arrives on time or 47 h late after a newer cart event."""
    evs = _cart_events(("Product Removed", 0, "b", 1, 1), ("Product Added", 1560, "b", 1, 1),
                       ("Product Added", 3 * 1440, "a", 1, 1))  # fmt: skip
    ref, got = _both(evs, {1: 47 * delivery.H})
    assert got.cart() == ref.cart()
