"""parse_event: validation reasons, normalization, and property tests."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.events import REASONS, Event, Limits, Rejected, parse_event
from operators.money import format_cents
from operators.timeutil import iso, parse_ts

REC = "2024-05-01T12:00:00.000Z"
LIM = Limits()


def ev(**kw: object) -> dict:
    base = {"type": "track", "event": "Product Viewed", "userId": "u1", "messageId": "m1", "receivedAt": REC}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ev(type="purchase"), "unknown_type"),
        (ev(type=None), "unknown_type"),
        (ev(userId=None), "missing_identity"),
        (ev(userId="", anonymousId="  "), "missing_identity"),
        (ev(userId={"a": 1}), "invalid_identity"),
        (ev(userId="x" * 300), "invalid_identity"),
        (ev(event=None), "missing_event"),
        (ev(event="   "), "missing_event"),
        (ev(event=5), "missing_event"),
        (ev(messageId=["x"]), "invalid_message_id"),
        (ev(type="alias", previousId=None), "missing_previous_id"),
        (ev(properties=[1, 2]), "invalid_field_type"),
        (ev(context="ctx"), "invalid_field_type"),
        (ev(timestamp="yesterday"), "invalid_timestamp"),
        (ev(timestamp=True), "invalid_timestamp"),
        (ev(timestamp="2019-01-01T00:00:00Z"), "timestamp_too_old"),
        (ev(timestamp="2024-05-03T00:00:00Z"), "timestamp_in_future"),
        (ev(properties={"revenue": -1}), "invalid_money"),
        (ev(properties={"price": "abc"}), "invalid_money"),
        (ev(properties={"total": True}), "invalid_money"),
        (ev(properties={"price": 1e300}), "invalid_money"),
        (ev(properties={"product_id": "p", "price": 2, "quantity": 0}), "invalid_quantity"),
        (ev(properties={"product_id": "p", "price": 2, "quantity": 1.5}), "invalid_quantity"),
        (ev(properties={"quantity": "2"}), "invalid_quantity"),
        (ev(properties={"products": [{"price": 1, "quantity": -2}]}), "invalid_quantity"),
        (ev(properties={"products": "nope"}), "invalid_field_type"),
        (ev(properties={"products": [3]}), "invalid_field_type"),
        (ev(type="identify", event=None, traits={"email": "not-an-email"}), "invalid_email"),
        (ev(type="identify", event=None, traits={"email": "a@b"}), "invalid_email"),
        (ev(type="identify", event=None, traits={"email": 42}), "invalid_email"),
    ],
)
def test_rejections_carry_a_reason(event: dict, reason: str) -> None:
    res = parse_event(orjson.dumps(event), LIM)
    assert isinstance(res, Rejected), res
    assert res.reason == reason
    assert res.reason in REASONS
    assert res.message
    assert orjson.loads(res.raw) == event


def test_malformed_and_non_object_and_too_large() -> None:
    assert parse_event(b'{"type":', LIM).reason == "malformed_json"
    assert parse_event(b"[1,2]", LIM).reason == "not_object"
    assert parse_event(b'"str"', LIM).reason == "not_object"
    big = orjson.dumps(ev(properties={"x": "y" * 40000}))
    assert parse_event(big, LIM).reason == "event_too_large"
    assert parse_event(b"\xff\xfe{}", LIM).reason == "malformed_json"
    assert parse_event(b'{"a": NaN}', LIM).reason == "malformed_json"


def test_clock_skew_correction_and_original_timestamp() -> None:
    e = parse_event(ev(timestamp="2024-05-01T11:00:00Z", sentAt="2024-05-01T11:00:30Z"), LIM)
    assert isinstance(e, Event)
    # device clock is 1h behind: event happened 30 s before receipt
    assert iso(e.ts) == "2024-05-01T11:59:30.000Z"
    assert e.original_timestamp == "2024-05-01T11:00:00.000Z"
    no_sent = parse_event(ev(timestamp="2024-05-01T11:00:00+02:00"), LIM)
    assert isinstance(no_sent, Event) and iso(no_sent.ts) == "2024-05-01T09:00:00.000Z"
    no_ts = parse_event(ev(), LIM)
    assert isinstance(no_ts, Event) and no_ts.ts == parse_ts(REC)


def test_timestamp_min_allows_old_history() -> None:
    old = ev(timestamp="2016-03-01T00:00:00Z")
    assert parse_event(old, LIM).reason == "timestamp_too_old"  # type: ignore[union-attr]
    lim = Limits(timestamp_min_ms=parse_ts("2010-01-01T00:00:00Z"))
    assert isinstance(parse_event(old, lim), Event)


def test_order_value_rules() -> None:
    prods = [{"product_id": "a", "price": 10.10, "quantity": 3}, {"product_id": "b", "price": 0.1}]
    base = {"event": "Order Completed"}
    assert parse_event(ev(**base, properties={"revenue": 5, "total": 7, "products": prods}), LIM).value_cents == 500  # type: ignore[union-attr]
    assert parse_event(ev(**base, properties={"total": 7.01, "products": prods}), LIM).value_cents == 701  # type: ignore[union-attr]
    assert parse_event(ev(**base, properties={"products": prods}), LIM).value_cents == 3040  # type: ignore[union-attr]


def test_missing_message_id_is_derived_deterministically() -> None:
    a = parse_event(ev(messageId=None), LIM)
    b = parse_event(ev(messageId=None, receivedAt="2024-05-01T12:00:01Z", sentAt=REC), LIM)
    assert isinstance(a, Event) and isinstance(b, Event)
    assert a.message_id == b.message_id and a.message_id.startswith("lp-")


def test_categories_and_identity_normalized() -> None:
    e = parse_event(ev(userId=123, properties={"category": "  Home > Kitchen", "product_id": 9, "price": "3.50"}), LIM)
    assert isinstance(e, Event)
    assert (e.uid, e.category, e.products[0].product_id, e.products[0].price_cents) == ("123", "home", "9", 350)
    anon = parse_event(ev(userId=None, anonymousId="a-1"), LIM)
    assert isinstance(anon, Event) and anon.uid == "a-1" and anon.user_id is None


json_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4), max_leaves=20)
FIELDS = ["type", "event", "userId", "anonymousId", "messageId", "timestamp", "sentAt", "receivedAt",
          "originalTimestamp", "properties", "traits", "context", "previousId"]  # fmt: skip
field_values = {
    "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "x"]) | json_value,
    "timestamp": st.datetimes().map(lambda d: d.isoformat()) | json_value,
    "properties": st.fixed_dictionaries({}, optional={
        "price": json_value, "revenue": json_value, "quantity": json_value, "total": json_value,
        "products": st.lists(st.dictionaries(st.sampled_from(["price", "quantity", "category", "product_id"]), json_value), max_size=3) | json_value,
        "category": json_value,
    }) | json_value,
}  # fmt: skip
event_strategy = st.fixed_dictionaries({}, optional={f: field_values.get(f, json_value) for f in FIELDS})


@settings(max_examples=600, deadline=None)
@given(event_strategy)
def test_parse_never_raises_and_always_classifies(event: dict) -> None:
    res = parse_event(orjson.dumps(event), LIM, received_at=parse_ts(REC))
    assert isinstance(res, Event | Rejected)
    if isinstance(res, Rejected):
        assert res.reason in REASONS
    else:
        assert res.uid and res.message_id
        assert res.value_cents >= 0 and all(p.quantity > 0 and p.price_cents >= 0 for p in res.products)
        assert parse_event(orjson.dumps(event), LIM, received_at=parse_ts(REC)) == res  # deterministic


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    assert isinstance(parse_event(data, LIM, received_at=0), Event | Rejected)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False), max_size=50))
def test_money_sums_exactly(amounts: list[Decimal]) -> None:
    """Order values sent as JSON numbers (floats on the wire) come out as exact integer
    cents, so thousands of them sum without drift: the rendered total is the decimal sum."""
    total = 0
    for a in amounts:
        e = parse_event(orjson.dumps(ev(event="Order Completed", properties={"revenue": float(a)})), LIM)
        assert isinstance(e, Event)
        assert type(e.value_cents) is int and e.value_cents == int(a * 100)
        total += e.value_cents
    assert format_cents(total) == str(sum(amounts, Decimal("0.00")))


def test_derived_message_id_fixed_vector() -> None:
    """A missing messageId is derived from the event body (stable across processes:
    collector retries of one event get one id), without the receipt/sending stamps."""
    body = {"type": "track", "event": "X", "userId": "u1", "properties": {"b": 1, "a": [1, 2]}}
    want = "lp-" + hashlib.blake2b(b'{"event":"X","properties":{"a":[1,2],"b":1},"type":"track","userId":"u1"}',
                                   digest_size=16).hexdigest()  # fmt: skip
    assert want == "lp-7925a32a1cdf2d2d8badc33ea2d3b5cb"
    for extra in ({}, {"receivedAt": REC}, {"sentAt": REC, "writeKey": "k", "receivedAt": "2024-05-01T12:00:09Z"}):
        e = parse_event({**body, **extra}, LIM, received_at=parse_ts(REC))
        assert isinstance(e, Event) and e.message_id == want
    empty = [parse_event({**body, "messageId": ""}, LIM, received_at=t) for t in (0, 1)]
    assert empty[0].message_id == empty[1].message_id != want  # type: ignore[union-attr]  # "" is part of the body
    assert empty[0].message_id.startswith("lp-")  # type: ignore[union-attr]
    other = parse_event({**body, "properties": {"b": 2, "a": [1, 2]}}, LIM, received_at=parse_ts(REC))
    assert isinstance(other, Event) and other.message_id != want
    assert parse_event({**body, "messageId": 42}, LIM, received_at=0).message_id == "42"  # type: ignore[union-attr]


def test_rejected_raw_of_a_decoded_event() -> None:
    """A dict that fails validation is kept as JSON in the dead letter, non-string keys too,
    or as its repr when it cannot be JSON at all."""
    r = parse_event({"type": "nope", 1: 2}, LIM)
    assert isinstance(r, Rejected) and r.raw == b'{"type":"nope","1":2}' and r.reason == "unknown_type"
    r = parse_event({"type": "nope", "x": {1, 2}}, LIM)
    assert isinstance(r, Rejected) and r.raw == b"{'type': 'nope', 'x': {1, 2}}"
    r = parse_event({"type": "nope", "x": {1}, "y": "z" * 5000}, LIM)
    assert isinstance(r, Rejected) and len(r.raw) == 4096


def test_identify_email_from_context_traits_as_rudderstack_sends_it() -> None:
    """RudderStack's SDKs (JS and Python) send identify traits only in ``context.traits``: the
    email there is the profile email; ``traits.email`` wins when both are sent; an invalid one is
    the identify's dead letter as with ``traits``; on other calls ``context.traits.email`` never
    costs the event."""
    rudder = parse_event(ev(type="identify", event=None, context={"traits": {"email": " Ann@Example.com "}}), LIM)
    assert isinstance(rudder, Event) and rudder.email == "Ann@Example.com"  # trimmed, as traits.email is
    both = parse_event(ev(type="identify", event=None, traits={"email": "t@example.com"}, context={"traits": {"email": "c@example.com"}}), LIM)
    assert isinstance(both, Event) and both.email == "t@example.com"
    bad = parse_event(ev(type="identify", event=None, context={"traits": {"email": "nope"}}), LIM)
    assert isinstance(bad, Rejected) and bad.reason == "invalid_email"
    track = parse_event(ev(context={"traits": {"email": "nope"}}), LIM)
    assert isinstance(track, Event) and track.email is None
