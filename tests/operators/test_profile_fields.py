"""ProfileState against fixed, hand-checked vectors (the properties in test_profile.py compare
the code with itself; these pin what it must compute), and its cart helpers."""

from __future__ import annotations

from operators.dedupe import DedupeConfig
from operators.events import Event, Limits, parse_event
from operators.profile import _MAX_CART_OPS, ProfileState, _compact, _recent_ops, to_fields

T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z
H = 3_600_000
LIM = Limits(timestamp_min_ms=0)
DD = DedupeConfig()


def raw(i: int, etype: str, t: int, event: str | None = None, **kw: object) -> Event:
    body: dict = {"type": etype, "userId": "u1", "messageId": f"m{i}", "timestamp": t / 1000,
                  "receivedAt": (t + 500) / 1000, **kw}  # fmt: skip
    if event is not None:
        body["event"] = event
    e = parse_event(body, LIM)
    assert isinstance(e, Event), e
    return e


def tr(i: int, event: str, t: int, **props: object) -> Event:
    return raw(i, "track", t, event, properties=props)


def fold(evs: list[Event], uid: str = "u1") -> ProfileState:
    st = ProfileState(uid)
    for e in evs:
        st.apply(e, DD)
    return st


HISTORY = [
    raw(0, "identify", T0, anonymousId="a-2", traits={"email": "ann@example.com", "firstName": "Ann"}),
    raw(1, "alias", T0 + 1000, previousId="a-1"),
    tr(2, "Product Added", T0 + 2000, product_id="a", price=10, quantity=2, name="Alpha", category="Shoes > Running"),
    tr(3, "Order Completed", T0 + 3000, total=20.5),
    tr(4, "Product Added", T0 + 4000, product_id="b", price=1.25, quantity=3, name="Beta"),
    tr(5, "Product Added", T0 + 5000, product_id="c", price=2),
    tr(6, "Product Added", T0 + 5500, product_id="d", price=0.5, category="Garden"),
    tr(7, "Email Opened", T0 + 6000),
    tr(8, "Email Link Clicked", T0 + 7000),
    tr(9, "Order Completed", T0 - 24 * H, revenue=5),  # a day older, arriving last
]
LINES = [
    {"product_id": "b", "name": "Beta", "category": "", "price": "1.25", "quantity": 3},
    {"product_id": "c", "name": "", "category": "", "price": "2.00", "quantity": 1},
    {"product_id": "d", "name": "", "category": "garden", "price": "0.50", "quantity": 1},
]


def test_fields_of_a_known_history() -> None:
    """Worked by hand: the add of 'a' is before the newest order (gone); b, c, d are the cart
    (3 x 1.25 + 2.00 + 0.50); the late order counts in totals and in the first purchase."""
    st = fold(HISTORY)
    assert to_fields(st) == {
        "user_id": "u1", "email": "ann@example.com", "event_count": "10",
        "first_seen_at": "2024-04-30T12:00:00.000Z", "last_seen_at": "2024-05-01T12:00:07.000Z",
        "purchase_count": "2", "revenue_total": "25.50",
        "refund_total": "0.00", "cancelled_total": "0.00", "revenue_net": "25.50",
        "first_purchase_at": "2024-04-30T12:00:00.000Z", "last_purchase_at": "2024-05-01T12:00:03.000Z",
        "cart_value": "6.25", "cart_items": "5",
        "cart": '[{"product_id":"b","name":"Beta","category":"","price":"1.25","quantity":3},'
                '{"product_id":"c","name":"","category":"","price":"2.00","quantity":1},'
                '{"product_id":"d","name":"","category":"garden","price":"0.50","quantity":1}]',
        "cart_abandoned": "0", "email_opens": "1", "email_clicks": "1",
        "last_email_open_at": "2024-05-01T12:00:06.000Z", "email_opens_machine": "0",
        "email_unsubscribed": "0", "unsubscribed_at": "", "consent": "{}", "anonymous_ids": '["a-1","a-2"]',
        "traits": '{"first_name":"Ann"}', "groups": "[]",
    }  # fmt: skip
    assert st.seq == 10 and st.last_received == T0 + 7500
    assert st.cart_lines() == LINES


def test_fields_of_an_empty_profile() -> None:
    assert to_fields(ProfileState("u9")) == {
        "user_id": "u9", "email": "", "event_count": "0", "first_seen_at": "", "last_seen_at": "",
        "purchase_count": "0", "revenue_total": "0.00", "refund_total": "0.00", "cancelled_total": "0.00",
        "revenue_net": "0.00", "first_purchase_at": "", "last_purchase_at": "",
        "cart_value": "0.00", "cart_items": "0", "cart": "[]", "cart_abandoned": "0", "email_opens": "0",
        "email_clicks": "0", "last_email_open_at": "", "email_opens_machine": "0", "email_unsubscribed": "0",
        "unsubscribed_at": "", "consent": "{}", "anonymous_ids": "[]", "traits": "{}", "groups": "[]",
    }  # fmt: skip


def test_abandonment_trigger_payload() -> None:
    st = fold(HISTORY)
    deadline = T0 + 5500 + H  # the newest cart operation + the window
    assert st.abandon_deadline(H) == deadline
    assert st.check_abandoned(deadline - 1, H) is None
    assert st.check_abandoned(deadline, H) == {
        "name": "Cart Abandoned",
        "id": f"cart-abandoned:u1:{deadline}",
        "ts": "2024-05-01T13:00:05.500Z",
        "properties": {"cart_value": "6.25", "products": LINES},
    }
    assert to_fields(st)["cart_abandoned"] == "1"
    assert st.check_abandoned(deadline + H, H) is None and st.abandon_deadline(H) is None  # once
    st.apply(tr(20, "Product Removed", T0 + 2 * H, product_id="b", quantity=3), DD)
    assert to_fields(st)["cart_abandoned"] == "0" and st.abandon_deadline(H) == T0 + 3 * H  # live again


def test_aliases_keep_the_newest_twenty_and_never_the_user() -> None:
    evs = [raw(i, "page", T0 + i, anonymousId=f"anon-{i:02d}") for i in range(25)]
    evs.append(raw(30, "page", T0 + 30, anonymousId="anon-24"))  # again: not twice
    evs.append(raw(31, "page", T0 + 31, anonymousId="u1"))  # the user's own id: not an alias
    st = fold(evs)
    assert st.aliases == [f"anon-{i:02d}" for i in range(5, 25)]


def test_a_cart_operation_at_the_orders_millisecond_belongs_to_the_order() -> None:
    """Strictly after the newest order, in either arrival order."""
    add = tr(1, "Product Added", T0, product_id="a", price=1)
    order = tr(2, "Order Completed", T0, total=1)
    assert fold([add, order]).cart() == fold([order, add]).cart() == {}


def test_live_items_do_not_expire_when_more_are_added_days_later() -> None:
    st = fold([tr(1, "Product Added", T0, product_id="a", price=1), tr(2, "Product Added", T0 + 72 * H, product_id="b", price=2)])
    assert st.cart() == {"a": (1, 100), "b": (1, 200)}


def test_a_late_order_keeps_an_abandoned_remainder_abandoned() -> None:
    """Abandoned once: a late order that takes part of the cart does not re-arm the timer."""
    st = fold([tr(1, "Product Added", T0, product_id="a", price=1), tr(2, "Product Added", T0 + 10 * 60_000, product_id="b", price=2)])
    assert st.check_abandoned(T0 + 2 * H, H) is not None
    st.apply(tr(3, "Order Completed", T0 + 5 * 60_000, total=1), DD)
    assert st.cart() == {"b": (1, 200)} and to_fields(st)["cart_abandoned"] == "1"
    assert st.abandon_deadline(H) is None and st.check_abandoned(T0 + 9 * H, H) is None


def test_merge_of_carts() -> None:
    def abandoned(uid: str, pid: str) -> ProfileState:
        st = ProfileState(uid)
        st.apply(tr(ord(pid), "Product Added", T0, product_id=pid, price=1), DD)
        assert st.check_abandoned(T0 + H, H) is not None
        return st

    both = abandoned("u1", "a")
    both.merge(abandoned("anon-1", "b"), DD)
    assert both.cart_abandoned and both.abandon_deadline(H) is None  # both were: no second trigger
    one = abandoned("u1", "a")
    live = ProfileState("anon-2")
    live.apply(tr(5, "Product Added", T0 + 30 * 60_000, product_id="c", price=3), DD)
    one.merge(live, DD)
    assert not one.cart_abandoned and one.abandon_deadline(H) == T0 + 90 * 60_000  # re-decided
    assert one.check_abandoned(T0 + 90 * 60_000, H) is not None
    assert one.cart() == {"a": (1, 100), "c": (1, 300)}


def test_merge_of_long_histories_compacts_and_keeps_the_net_cart() -> None:
    def history(uid: str, pid: str, n: int) -> ProfileState:
        st = ProfileState(uid)
        st.apply(tr(0, "Product Added", T0, product_id=pid, price=1, quantity=5), DD)
        for i in range(n):
            st.apply(tr(2 * i + 1, "Product Added", T0 + 2 * i + 1, product_id="x", price=2), DD)
            st.apply(tr(2 * i + 2, "Product Removed", T0 + 2 * i + 2, product_id="x", price=2), DD)
        return st

    a, b = history("u1", "a", 60), history("anon-1", "b", 60)
    assert len(a.cart_ops) + len(b.cart_ops) > _MAX_CART_OPS
    a.merge(b, DD)
    assert len(a.cart_ops) <= _MAX_CART_OPS
    assert a.cart() == {"a": (5, 100), "b": (5, 100)}


def test_recent_ops_drops_whole_products_by_their_newest_operation() -> None:
    ops = [(10, "a", 1, 5), (4, "a", -1, 5), (3, "b", 2, 7), (9, "b", -1, 7), (2, "c", 1, 1), (1, "c", -1, 1)]
    # newest: a 10, b 9, c 2 (operations out of time order); nets a 0, b 1, c 0
    assert _recent_ops(ops, since=9) == ops[:4]  # the boundary is kept
    assert _recent_ops(ops, since=10) == ops[:2]
    assert _recent_ops(ops, since=11, held=True) == ops[2:4]  # b is in the cart: kept at any age
    assert _recent_ops(ops, since=0) is ops
    assert _recent_ops([(1, "d", 2, 1), (5, "d", -1, 1)], since=9, held=True) == [(1, "d", 2, 1), (5, "d", -1, 1)]


def test_compact_folds_the_older_half_per_product() -> None:
    ops = [(1, "a", 2, 100), (2, "b", 1, 100), (3, "a", -2, 100), (4, "b", 1, 250), (5, "c", -1, 9),
           (6, "d", 1, 1), (7, "d", 1, 1), (8, "d", 1, 1), (9, "d", 1, 1), (10, "d", 1, 1)]  # fmt: skip
    # older half: a nets 0 (gone), b nets 2 at its newest time with the newest add's price,
    # c keeps its removal; the newer half is kept as is
    assert _compact(ops) == [(4, "b", 2, 250), (5, "c", -1, 9), *ops[5:]]
    assert _compact(list(reversed(ops))) == _compact(ops)
