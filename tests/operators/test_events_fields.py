"""parse_event field by field: names, times, ids, products, limits and the messages a dead
letter shows (mutmut survivors of operators/events.py)."""

from __future__ import annotations

import pytest

from operators.events import Event, Limits, Rejected, norm_category, parse_event, validate_email
from operators.timeutil import parse_ts

REC = "2024-05-01T12:00:00.000Z"
R = parse_ts(REC)
LIM = Limits()


def ok(**kw: object) -> Event:
    body = {"type": "track", "event": "E", "userId": "u1", "messageId": "m1", "receivedAt": REC, **kw}
    e = parse_event({k: v for k, v in body.items() if v is not None}, LIM)
    assert isinstance(e, Event), e
    return e


def bad(**kw: object) -> Rejected:
    body = {"type": "track", "event": "E", "userId": "u1", "messageId": "m1", "receivedAt": REC, **kw}
    r = parse_event({k: v for k, v in body.items() if v is not None}, LIM)
    assert isinstance(r, Rejected), r
    return r


def test_page_and_screen_names() -> None:
    assert ok(type="page", event=None, name="Home").name == "Home"
    assert ok(type="screen", event=None, name="S" * 300).name == "S" * 256
    assert ok(type="page", event=None).name == "" and ok(type="page", event=None, name=5).name == ""
    assert ok(type="identify", event=None, name="x").name == ""
    assert ok(event="  Spaced  ").name == "Spaced"


def test_times_original_timestamp_and_bounds() -> None:
    e = ok(originalTimestamp="2024-05-01T11:00:00Z")
    assert e.ts == parse_ts("2024-05-01T11:00:00Z") and e.original_timestamp == "2024-05-01T11:00:00Z"
    e = ok(originalTimestamp="2024-05-01T11:00:00Z", sentAt="2024-05-01T11:00:10Z")
    assert e.ts == R - 10_000 and e.original_timestamp == "2024-05-01T11:00:00Z"
    e = ok(timestamp="2024-05-01T11:00:00Z", sentAt="2024-05-01T11:00:10Z")
    assert e.original_timestamp == "2024-05-01T11:00:00.000Z"  # the device time, as ISO
    assert ok(timestamp="2024-05-01T11:00:00Z").original_timestamp is None
    assert ok(timestamp="2024-05-01T11:00:00Z", originalTimestamp=5).original_timestamp is None
    assert ok(timestamp=(R + 3_600_000) / 1000).ts == R + 3_600_000  # exactly receipt + skew: accepted
    assert bad(timestamp=(R + 3_600_001) / 1000).reason == "timestamp_in_future"
    assert ok(timestamp=(R - 400 * 86_400_000) / 1000).ts == R - 400 * 86_400_000  # the oldest accepted
    assert bad(timestamp=(R - 400 * 86_400_000 - 1) / 1000).reason == "timestamp_too_old"
    assert ok().received_at == R and ok().ts == R
    r = parse_event({"type": "track", "event": "E", "userId": "u1"}, LIM)
    assert isinstance(r, Rejected) and (r.reason, r.message) == ("invalid_timestamp", "receivedAt is missing")


def test_ids() -> None:
    assert ok(messageId="m" * 256).message_id == "m" * 256
    r = bad(messageId="m" * 257)
    assert (r.reason, r.message) == ("invalid_message_id", "messageId must be a string of at most 256 characters")
    assert ok(userId=42).uid == "42" and ok(userId="  u2 ").uid == "u2"
    assert ok(userId="u" * 256).uid == "u" * 256
    r = bad(userId="u" * 257)
    assert (r.reason, r.message) == ("invalid_identity", "userId is longer than 256 characters")
    assert bad(anonymousId=True).message == "anonymousId must be a string"
    assert bad(userId=[1]).message == "userId must be a string, got list"
    assert bad(type="alias", previousId=["x"]).message == "previousId must be a string, got list"
    assert bad(userId=None, anonymousId="").message == "userId or anonymousId is required"
    a = ok(type="alias", event=None, previousId=" a1 ")
    assert a.previous_id == "a1" and a.uid == "u1"
    r = bad(type="alias", event=None, userId=None, anonymousId="x", previousId="a1")
    assert (r.reason, r.message) == ("missing_identity", "alias calls need userId")
    assert bad(type="alias", event=None).message == "alias calls need previousId"
    assert bad(event=" ").message == "track calls need a non-empty string `event`"
    assert ok(type="identify", event=None).previous_id is None


def test_products_and_values() -> None:
    for key in ("product_id", "sku", "id"):
        e = ok(properties={key: "p1", "price": 2})
        assert [p.product_id for p in e.products] == (["p1"] if key != "id" else ["p1"])
    assert ok(properties={"sku": "s1"}).products[0].product_id == "s1"
    assert ok(properties={"price": 3}).products[0].price_cents == 300  # a price alone is a product line
    assert ok(properties={"name": "n"}).products == ()
    assert ok(type="page", event=None, properties={"product_id": "p"}).products == ()  # only track events
    e = ok(properties={"product_id": {"a": 1}, "name": ["x"], "price": 1})
    assert (e.products[0].product_id, e.products[0].name) == ("", "")
    assert ok(properties={"product_id": "p", "name": "N" * 300, "price": 1}).products[0].name == "N" * 200
    assert ok(properties={"value": 4}).value_cents == 400  # no revenue/total/products: the value
    assert ok(properties={"value": 4, "price": 1}).value_cents == 100
    assert ok().value_cents == 0 and ok().category == "" and ok().products == ()
    assert ok(properties={"products": [{}] * 1000}).products[999].quantity == 1
    r = bad(properties={"products": [{}] * 1001})
    assert (r.reason, r.message) == ("invalid_field_type", "properties.products has more than 1000 items")
    assert bad(properties={"products": [{}, 3]}).message == "properties.products[1] must be an object"
    assert bad(properties={"products": "x"}).message == "properties.products must be an array"
    assert bad(properties={"products": [{}, {"price": "x"}]}).message == "properties.products[1].price not a number: 'x'"
    assert bad(properties={"price": -1}).message == "properties.price must not be negative: -1"
    assert bad(properties={"tax": "x"}).message == "properties.tax not a number: 'x'"
    assert bad(properties={"product_id": "p", "quantity": 0}).message == "properties.quantity must be a positive integer, got '0'"
    assert bad(properties={"products": [{"quantity": 2.5}]}).message == (
        "properties.products[0].quantity must be a positive integer, got '2.5'")
    assert ok(properties={"product_id": "p", "quantity": 2.0}).products[0].quantity == 2
    assert ok(properties={"product_id": "p", "quantity": 1_000_000}).products[0].quantity == 1_000_000
    assert bad(properties={"product_id": "p", "quantity": 1_000_001}).reason == "invalid_quantity"
    assert bad(properties={"quantity": True}).reason == "invalid_quantity"
    assert bad(properties=[1]).message == "properties must be an object, got list"
    assert bad(context="c").message == "context must be an object, got str"
    assert bad(type="identify", event=None, traits=3).message == "traits must be an object, got int"


def test_categories() -> None:
    assert ok(properties={"category": "A > B"}).category == "a"
    assert ok(properties={"products": [{"category": "Toys|Lego"}, {"category": "Books"}]}).category == "toys"
    assert ok(properties={"category": "Garden", "products": [{"category": "Toys"}]}).category == "garden"
    assert [norm_category(s) for s in ("Books/Fiction", "Toys|Lego", "  Big \t  Shoes  > x", 5, "")] == [
        "books", "toys", "big shoes", "", ""]  # fmt: skip
    assert norm_category("x" * 100) == "x" * 64
    long = "Y" * 300 + " > z"
    assert norm_category(long) == "y" * 64  # over 256 characters: not cached, same rules


def test_email() -> None:
    local = "a" * 65
    addr = f"{local}@" + ".".join(["b" * 61] * 3) + ".cc"
    assert len(addr) == 254 and validate_email(addr) == addr
    with pytest.raises(ValueError, match="not a valid email address"):
        validate_email(addr[:1] + addr)  # 255 characters
    with pytest.raises(ValueError, match=r"^not a valid email address: 'None'$"):
        validate_email(None)
    e = ok(type="identify", event=None, traits={"email": " Ann@Example.com "})
    assert e.email == "Ann@Example.com"
    assert ok(type="identify", event=None, traits={"email": ""}).email is None
    assert ok(properties={"email": "not-an-email"}).email is None  # only identify traits count
    assert bad(type="identify", event=None, traits={"email": "x"}).message == "not a valid email address: 'x'"


@pytest.mark.parametrize(
    "kw", [{"max_future_skew_ms": -1}, {"max_age_ms": 0}, {"max_age_ms": -5}, {"max_event_bytes": 0}]
)
def test_limits_must_be_positive(kw: dict) -> None:
    with pytest.raises(ValueError, match="^Limits must be positive$"):
        Limits(**kw)
    assert Limits(max_future_skew_ms=0, max_age_ms=1, max_event_bytes=1).max_event_bytes == 1


def test_rejected_carries_receipt_and_message_id() -> None:
    r = bad(type="x")
    assert (r.received_at, r.message_id) == (R, "m1")
    r = parse_event({"type": "x", "receivedAt": "junk", "messageId": 5}, LIM, received_at=7)
    assert isinstance(r, Rejected) and (r.received_at, r.message_id) == (7, None)
    r = parse_event(b'{"type": "x"}', LIM, received_at=9)
    assert isinstance(r, Rejected) and r.received_at == 9 and r.raw == b'{"type": "x"}'
    big = b'{"a": "' + b"x" * 40000 + b'"}'
    r = parse_event(big, LIM, received_at=3)
    assert isinstance(r, Rejected) and r.raw == big[: LIM.max_event_bytes] and r.received_at == 3
    assert r.message == f"event is {len(big)} bytes, the limit is {LIM.max_event_bytes}"


def test_raw_input_shapes_and_their_rejections() -> None:
    text = '{"type":"track","event":"E","userId":"ü","messageId":"m1","receivedAt":"' + REC + '"}'
    e = parse_event(text, LIM)  # a str is read as UTF-8
    assert isinstance(e, Event) and e.uid == "ü"
    r = parse_event(text.replace("ü", "\ud800"), LIM)  # a lone surrogate: rejected, never raised
    assert isinstance(r, Rejected) and r.reason == "malformed_json"
    r = parse_event("[1, 2]", LIM, received_at=5)
    assert isinstance(r, Rejected) and (r.reason, r.message, r.raw, r.received_at) == (
        "not_object", "an event must be a JSON object, got list", b"[1, 2]", 5)  # the bytes as sent
    r = parse_event(b"{x", LIM, received_at=6)
    assert isinstance(r, Rejected) and (r.reason, r.raw, r.received_at) == ("malformed_json", b"{x", 6)
    assert r.message.startswith("invalid JSON: ")
    exact = b'{"type":"page","userId":"u","receivedAt":0,"properties":{"p":"' + b"x" * 100 + b'"}}'
    assert isinstance(parse_event(exact, Limits(max_event_bytes=len(exact))), Event)  # at the limit: read
    assert parse_event(exact, Limits(max_event_bytes=len(exact) - 1)).reason == "event_too_large"  # type: ignore[union-attr]
    r = parse_event({"type": True, "userId": "u"}, LIM)
    assert isinstance(r, Rejected) and r.message == "type must be one of ['alias', 'group', 'identify', 'page', 'screen', 'track'], got 'True'"


def test_deep_nesting_without_message_id() -> None:
    deep: object = 1
    for _ in range(300):
        deep = {"k": deep}
    r = parse_event({"type": "page", "userId": "u", "receivedAt": 0, "properties": deep}, LIM)
    assert isinstance(r, Rejected) and (r.reason, r.message) == ("invalid_field_type", "the event is nested too deeply")
    ok_deep = parse_event({"type": "page", "userId": "u", "messageId": "m", "receivedAt": 0, "properties": deep},
                          Limits(timestamp_min_ms=0))  # fmt: skip
    assert isinstance(ok_deep, Event)  # with an id there is nothing to hash


def test_more_field_details() -> None:
    assert bad(userId=True).reason == "invalid_identity"
    assert ok(properties={"product_id": "p"}).products[0].price_cents == 0  # no price: 0
    r = bad(type="page", event=None, properties={"quantity": 0})
    assert (r.reason, r.message) == ("invalid_quantity", "properties.quantity must be a positive integer, got '0'")
    e = ok(type="identify", event=None, traits={"plan": "pro"}, context={"ip": "1.2.3.0"})
    assert (e.traits, e.context) == ({"plan": "pro"}, {"ip": "1.2.3.0"})
    assert [norm_category(c) for c in ("a>b>c", "a/b/c", "a|b|c", "x > y / z", "b|c>d")] == ["a", "a", "a", "x", "b"]
    assert norm_category("Home   &  Garden") == "home & garden"
    assert norm_category("z" * 256 + ">") == "z" * 64 and norm_category("z" * 257 + ">") == "z" * 64
    with pytest.raises(ValueError) as exc:
        validate_email("q" * 100)
    assert str(exc.value) == f"not a valid email address: {'q' * 80!r}"


@pytest.mark.parametrize(
    ("traits", "message"),
    [
        ({"big": 2**70}, "trait 'big' is an integer beyond 64 bits"),
        ({"neg": -(2**63) - 1}, "trait 'neg' is an integer beyond 64 bits"),
        ({"deep": {"n": 2**64}}, "trait 'deep' cannot be written as JSON (an integer beyond 64 bits, a non-string key or invalid text)"),
        ({"keys": {1: "x"}}, "trait 'keys' cannot be written as JSON (an integer beyond 64 bits, a non-string key or invalid text)"),
        ({"list": [{"a": 2**65}]}, "trait 'list' cannot be written as JSON (an integer beyond 64 bits, a non-string key or invalid text)"),
    ],
)
@pytest.mark.parametrize("where", ["traits", "context"])
def test_unwritable_trait_of_a_decoded_event_is_a_dead_letter(traits: dict, message: str, where: str) -> None:
    """A decoded event (parse_event(dict): backfill, abuse replay) whose trait holds an integer
    beyond 64 bits or a non-string key: a dead letter, never an exception (it crashed before:
    orjson.dumps in parse_traits, or the per-user step's trait fold for a top-level big int)."""
    body: dict = {"type": "identify", "userId": "u1", "messageId": "m1", "receivedAt": REC}
    body.update({"traits": traits} if where == "traits" else {"context": {"traits": traits}})
    r = parse_event(body, LIM)
    assert isinstance(r, Rejected), r
    assert (r.reason, r.message, r.message_id) == ("invalid_field_type", message, "m1")
    assert r.received_at == R


def test_writable_64_bit_trait_integers_are_kept() -> None:
    e = parse_event({"type": "identify", "userId": "u1", "messageId": "m1", "receivedAt": REC,
                     "traits": {"lo": -(2**63), "hi": 2**64 - 1}}, LIM)  # fmt: skip
    assert isinstance(e, Event) and e.user_traits == {"lo": -(2**63), "hi": 2**64 - 1}
