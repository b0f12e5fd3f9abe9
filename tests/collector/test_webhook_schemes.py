"""The platforms' webhook signature schemes and the declarative mappings, without processes.

Signatures are made with the platforms' own published code: Standard Webhooks' reference
library ``standardwebhooks`` and Stripe's ``stripe`` package (``WebhookSignature``, whose
``verify_header`` also has to accept what the collector accepts); Shopify publishes only the
algorithm (base64 HMAC-SHA256 of the raw body), written out here as its docs show it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook as StandardWebhook

from liveprofile.collector.config import parse_webhook_sources
from liveprofile.collector.mapping import (
    MappingError,
    MappingFailure,
    apply_mapping,
    load_mapping,
    parse_mapping,
    wanted_lookups,
)
from liveprofile.collector.signing import WebhookAuthError, standard_secret_key, verify_platform
from liveprofile.settings import ConfigError

FIX = Path(__file__).parent / "fixtures"
T0 = 1_700_000_000
STD_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-key-0123456789").decode()
STRIPE_SECRET = "whsec_stripe_test_0123456789abcdef"
SHOPIFY_SECRET = "shopify-app-client-secret-0123456789"


def fixture(name: str) -> bytes:
    return (FIX / name).read_bytes()


def shopify_hmac(secret: str, body: bytes) -> bytes:
    """Shopify's published verification algorithm (base64 of the HMAC-SHA256 digest)."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest())


def stripe_header(secret: str, body: bytes, t: int, extra_v1: tuple[str, ...] = ()) -> str:
    sig = stripe.WebhookSignature._compute_signature(f"{t}.{body.decode()}", secret)
    return ",".join([f"t={t}", *(f"v1={v}" for v in extra_v1), f"v1={sig}", "v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"])


def std_headers(secret: str, msg_id: str, t: int, body: bytes) -> dict[bytes, bytes]:
    sig = StandardWebhook(secret).sign(msg_id, datetime.fromtimestamp(t, tz=UTC), body.decode())
    return {b"webhook-id": msg_id.encode(), b"webhook-timestamp": str(t).encode(), b"webhook-signature": sig.encode()}


# ------------------------------------------------------------------ signatures


def test_standard_webhooks_reference_signatures_verify_and_tampering_does_not() -> None:
    body = b'{"type":"user.created","data":{"id":7}}'
    key = [standard_secret_key(STD_SECRET)]
    h = std_headers(STD_SECRET, "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", T0, body)
    d = verify_platform("standard", "svix", h, body, key, now=T0 + 10, tolerance_s=300)
    assert (d.delivery_id, d.redelivery_ok, d.ts) == ("id:msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", True, T0)
    # several signatures, space-separated (key rotation): one matching is enough
    other = StandardWebhook("whsec_" + base64.b64encode(b"another-key-0123456789abcdef").decode()).sign("m", datetime.fromtimestamp(T0, tz=UTC), "x")
    h2 = {**h, b"webhook-signature": other.encode() + b" " + h[b"webhook-signature"]}
    assert verify_platform("standard", "svix", h2, body, key, now=T0, tolerance_s=300).ts == T0
    for headers, b, now, code in [
        (h, body + b" ", T0, "invalid_signature"),  # body changed
        ({**h, b"webhook-id": b"msg_other"}, body, T0, "invalid_signature"),  # id is signed
        ({**h, b"webhook-timestamp": str(T0 + 1).encode()}, body, T0, "invalid_signature"),  # time is signed
        (h, body, T0 + 301, "stale_signature"),
        (h, body, T0 - 301, "stale_signature"),
        ({k: v for k, v in h.items() if k != b"webhook-signature"}, body, T0, "missing_signature"),
        ({k: v for k, v in h.items() if k != b"webhook-id"}, body, T0, "missing_signature"),
        ({**h, b"webhook-signature": b"v2," + h[b"webhook-signature"][3:]}, body, T0, "invalid_signature"),
    ]:
        with pytest.raises(WebhookAuthError) as exc:
            verify_platform("standard", "svix", headers, b, key, now=now, tolerance_s=300)
        assert exc.value.code == code


def test_stripe_signatures_made_by_stripes_library_verify_like_stripes_own_verifier() -> None:
    body = fixture("stripe/customer_created.json")
    hdr = stripe_header(STRIPE_SECRET, body, T0, extra_v1=("00" * 32,))
    stripe.WebhookSignature.verify_header(body, hdr, STRIPE_SECRET, tolerance=None)  # Stripe accepts it
    d = verify_platform("stripe", "stripe", {b"stripe-signature": hdr.encode()}, body, [STRIPE_SECRET.encode()], now=T0 + 299, tolerance_s=300)
    assert d.ts == T0 and not d.redelivery_ok and d.delivery_id.startswith("sig:")
    tampered = body.replace(b"Jenny", b"Jonny")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(tampered, hdr, STRIPE_SECRET, tolerance=None)
    for b, h, now, code in [
        (tampered, hdr, T0, "invalid_signature"),
        (body, stripe_header("whsec_another_secret_0123456789", body, T0), T0, "invalid_signature"),
        (body, hdr, T0 + 301, "stale_signature"),
        (body, f"t={T0}", T0, "invalid_signature"),
        (body, "", T0, "missing_signature"),
    ]:
        with pytest.raises(WebhookAuthError) as exc:
            verify_platform("stripe", "stripe", {b"stripe-signature": h.encode()}, b, [STRIPE_SECRET.encode()], now=now, tolerance_s=300)
        assert exc.value.code == code
    # the liveprofile header is not Stripe's
    with pytest.raises(WebhookAuthError, match="Stripe-Signature"):
        verify_platform("stripe", "stripe", {b"x-liveprofile-signature": hdr.encode()}, body, [STRIPE_SECRET.encode()], now=T0, tolerance_s=300)


def test_shopify_hmac_over_the_raw_body_and_the_webhook_id_is_the_delivery() -> None:
    body = fixture("shopify/orders_create.json")
    h = {b"x-shopify-hmac-sha256": shopify_hmac(SHOPIFY_SECRET, body), b"x-shopify-topic": b"orders/create",
         b"x-shopify-webhook-id": b"b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"}  # fmt: skip
    d = verify_platform("shopify", "shopify", h, body, [b"old-secret-0123456789abc", SHOPIFY_SECRET.encode()], now=T0, tolerance_s=300)
    assert (d.delivery_id, d.redelivery_ok, d.topic) == ("id:b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", True, "orders/create")
    reformatted = orjson.dumps(orjson.loads(body))  # same JSON, other bytes: the raw body is what is signed
    for headers, b, code in [
        (h, reformatted, "invalid_signature"),
        ({**h, b"x-shopify-hmac-sha256": shopify_hmac("another-secret-0123456789", body)}, body, "invalid_signature"),
        ({k: v for k, v in h.items() if k != b"x-shopify-hmac-sha256"}, body, "missing_signature"),
        ({k: v for k, v in h.items() if k != b"x-shopify-webhook-id"}, body, "missing_signature"),
        ({**h, b"x-shopify-hmac-sha256": hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).hexdigest().encode()}, body, "invalid_signature"),
    ]:
        with pytest.raises(WebhookAuthError) as exc:
            verify_platform("shopify", "shopify", headers, b, [SHOPIFY_SECRET.encode()], now=T0, tolerance_s=300)
        assert exc.value.code == code


_HEADER_NAMES = [b"x-shopify-hmac-sha256", b"x-shopify-webhook-id", b"x-shopify-topic", b"stripe-signature",
                 b"x-liveprofile-signature", b"webhook-id", b"webhook-timestamp", b"webhook-signature"]  # fmt: skip
_header_value = st.one_of(
    st.binary(max_size=80),
    st.text(alphabet="tv01=, .;abcdef", max_size=60).map(str.encode),
    st.builds(lambda n, s: b"t=%d,v1=%s" % (n, s), st.integers(-10, 10**13), st.binary(max_size=70)),
    st.builds(lambda s: b"v1," + base64.b64encode(s), st.binary(max_size=40)),
    st.binary(min_size=1000, max_size=1200),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(["liveprofile", "stripe", "shopify", "standard"]),
       headers=st.dictionaries(st.sampled_from(_HEADER_NAMES), _header_value, max_size=8), body=st.binary(max_size=64))  # fmt: skip
def test_malformed_signature_headers_never_crash_they_are_refused(scheme: str, headers: dict[bytes, bytes], body: bytes) -> None:
    """Whatever the headers hold: a WebhookAuthError (401), never another exception, never a pass."""
    with pytest.raises(WebhookAuthError) as exc:
        verify_platform(scheme, "src", headers, body, [b"k" * 32], now=T0, tolerance_s=300)
    assert exc.value.code in {"missing_signature", "invalid_signature", "stale_signature"}


# -------------------------------------------------------------------- config


def test_sources_config_is_backward_compatible_and_names_scheme_and_mapping(tmp_path: Path) -> None:
    (tmp_path / "svix.yaml").write_text("version: 1\ntopic: {path: type}\ntopics:\n  user.created:\n    - type: identify\n      userId: data.id\n")
    src = parse_webhook_sources(orjson.dumps({
        "esp": "0123456789abcdef0",  # plain secret: liveprofile scheme, Segment bodies (as before)
        "shopify": SHOPIFY_SECRET,  # built in: SPEC §2
        "billing": {"scheme": "stripe", "secrets": [STRIPE_SECRET]},
        "svix": {"scheme": "standard", "secret": STD_SECRET, "mapping": "svix"},
    }).decode(), str(tmp_path))  # fmt: skip
    assert {n: (s.scheme, s.mapping.name if s.mapping else None) for n, s in src.items()} == {
        "esp": ("liveprofile", None), "shopify": ("shopify", "shopify"), "billing": ("stripe", "stripe"), "svix": ("standard", "svix")}  # fmt: skip
    assert src["svix"].secrets == (b"standard-webhooks-key-0123456789",)
    for bad, match in [
        ({"x": {"scheme": "paypal", "secret": SHOPIFY_SECRET}}, "scheme must be one of"),
        ({"x": {"scheme": "standard", "secret": "whsec_!!notbase64"}}, "base64"),
        ({"x": {"scheme": "standard", "secret": "whsec_" + base64.b64encode(b"short").decode()}}, "at least 16 bytes"),
        ({"x": {"secret": SHOPIFY_SECRET, "mapping": "nope"}}, "no webhook mapping named 'nope'"),
        ({"x": {"secret": SHOPIFY_SECRET, "maping": "shopify"}}, "unknown keys"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_webhook_sources(orjson.dumps(bad).decode(), str(tmp_path))


# ------------------------------------------------------------------- mappings


def shopify_map(topic: str, name: str, delivery: str = "id:w1", looked_up: dict | None = None):  # type: ignore[no-untyped-def]
    m = load_mapping("shopify")
    return apply_mapping(m, "shopify", delivery, {b"x-shopify-topic": topic.encode()}, orjson.loads(fixture(name)), looked_up)


def test_shopify_order_maps_as_spec_section_2_says() -> None:
    res = shopify_map("orders/create", "shopify/orders_create.json")
    assert not isinstance(res, MappingFailure)
    ident, order = res.events
    assert ident["type"] == "identify" and ident["userId"] == "115310627314723954"
    assert ident["traits"] == {"email": "john@test.com", "first_name": "John", "last_name": "Smith"}
    assert order == {
        "type": "track", "event": "Order Completed", "userId": "115310627314723954", "timestamp": "2019-06-04T13:53:06-04:00",
        "properties": {"order_id": "820982911946154508", "revenue": "403.00", "currency": "USD", "products": [
            {"product_id": "632910392", "sku": "IPOD2008PINK", "name": "IPod Nano - 8GB", "price": "199.00", "quantity": 1}] * 2},
        "messageId": order["messageId"],
    }  # fmt: skip
    assert res.remember == [("orders", "820982911946154508", "115310627314723954")]
    # the same delivery id gives the same messageIds: a redelivery is one order downstream
    again = shopify_map("orders/create", "shopify/orders_create.json")
    assert [e["messageId"] for e in again.events] == [e["messageId"] for e in res.events]  # type: ignore[union-attr]
    assert len({e["messageId"] for e in res.events}) == 2
    # the order's email when the customer has none
    doc = orjson.loads(fixture("shopify/orders_create.json"))
    del doc["customer"]["email"]
    r2 = apply_mapping(load_mapping("shopify"), "shopify", "id:w2", {b"x-shopify-topic": b"orders/create"}, doc)
    assert r2.events[0]["traits"]["email"] == "jon@doe.ca"  # type: ignore[union-attr]


def test_shopify_refund_sums_its_successful_transactions_for_the_remembered_customer() -> None:
    m = load_mapping("shopify")
    payload = orjson.loads(fixture("shopify/refunds_create.json"))
    assert wanted_lookups(m, {b"x-shopify-topic": b"refunds/create"}, payload) == [("orders", "820982911946154508")]
    res = shopify_map("refunds/create", "shopify/refunds_create.json", looked_up={("orders", "820982911946154508"): "115310627314723954"})
    assert not isinstance(res, MappingFailure)
    (ev,) = res.events
    assert (ev["event"], ev["userId"], ev["properties"]) == ("Order Refunded", "115310627314723954", {"order_id": "820982911946154508", "total": "50.00", "currency": "USD"})
    unknown = shopify_map("refunds/create", "shopify/refunds_create.json")  # an order never seen: no customer
    assert isinstance(unknown, MappingFailure) and unknown.reason == "webhook_mapping_failed"


def test_shopify_customer_compliance_and_failures() -> None:
    res = shopify_map("customers/create", "shopify/customers_create.json")
    assert res.events[0]["userId"] == "706405506930370084"  # type: ignore[union-attr]
    assert res.events[0]["traits"] == {"email": "bob@biller.com", "first_name": "Bob", "last_name": "Biller"}  # type: ignore[union-attr]
    red = shopify_map("customers/redact", "shopify/customers_redact.json")
    assert not isinstance(red, MappingFailure) and (red.events, red.forget, red.recorded) == ([], ["191167"], True)
    for topic, name in [("customers/data_request", "shopify/customers_data_request.json"), ("shop/redact", "shopify/shop_redact.json")]:
        rec = shopify_map(topic, name)
        assert not isinstance(rec, MappingFailure) and (rec.events, rec.forget, rec.recorded) == ([], [], True)
    unmapped = shopify_map("products/create", "shopify/customers_create.json")
    assert isinstance(unmapped, MappingFailure) and unmapped.reason == "webhook_unmapped" and "products/create" in unmapped.message
    doc = orjson.loads(fixture("shopify/orders_create.json"))
    del doc["total_price"]
    missing = apply_mapping(load_mapping("shopify"), "shopify", "id:w", {b"x-shopify-topic": b"orders/create"}, doc)
    assert isinstance(missing, MappingFailure) and missing.reason == "webhook_mapping_failed" and "total_price" in missing.message
    doc = orjson.loads(fixture("shopify/refunds_create.json"))
    doc["transactions"][0]["amount"] = {"not": "money"}
    wrong = apply_mapping(load_mapping("shopify"), "shopify", "id:w", {b"x-shopify-topic": b"refunds/create"}, doc, {("orders", "820982911946154508"): "1"})
    assert isinstance(wrong, MappingFailure) and wrong.reason == "webhook_mapping_failed"


def test_stripe_events_map_with_the_event_id_as_message_basis() -> None:
    m = load_mapping("stripe")
    co = apply_mapping(m, "stripe", "sig:x", {}, orjson.loads(fixture("stripe/checkout_session_completed.json")))
    (ev,) = co.events  # type: ignore[union-attr]
    assert (ev["event"], ev["userId"], ev["timestamp"]) == ("Order Completed", "cus_NffrFeUfNV2Hib", 1686089970)
    assert ev["properties"] == {"order_id": "cs_test_a11YYufWQzNY63zpQ6QSNRQhkUpVph4WRmzW0zWJO2znZKdVujZ0N0S22u", "revenue": "21.98", "currency": "usd"}
    again = apply_mapping(m, "stripe", "sig:another-signature", {}, orjson.loads(fixture("stripe/checkout_session_completed.json")))
    assert again.events[0]["messageId"] == ev["messageId"]  # type: ignore[union-attr]  # a redelivery: same event id
    (rf,) = apply_mapping(m, "stripe", "sig:y", {}, orjson.loads(fixture("stripe/charge_refunded.json"))).events  # type: ignore[union-attr]
    assert (rf["event"], rf["properties"]["total"], rf["properties"]["order_id"]) == ("Order Refunded", "10.00", "pi_3MtwBwLkdIwHu7ix28a3tqPa")
    (cu,) = apply_mapping(m, "stripe", "sig:z", {}, orjson.loads(fixture("stripe/customer_created.json"))).events  # type: ignore[union-attr]
    assert cu["traits"] == {"email": "jennyrosen@example.com", "name": "Jenny Rosen"}


def test_mapping_documents_are_checked_at_load() -> None:
    ok = {"version": 1, "topic": {"path": "type"}, "topics": {"a": [{"type": "track", "event": "A", "userId": "id"}]}}
    parse_mapping(ok, "ok")
    for bad, match in [
        ({**ok, "version": 2}, "version: 1"),
        ({**ok, "topic": {"cookie": "x"}}, "topic must be"),
        ({**ok, "topics": {"a": [{"type": "track", "userId": "id"}]}}, "needs an event name"),
        ({**ok, "topics": {"a": [{"type": "track", "event": "A"}]}}, "userId or anonymousId"),
        ({**ok, "topics": {"a": [{"type": "track", "event": "A", "userId": "id[?"}]}}, "not a JMESPath expression"),
        ({**ok, "topics": {"a": [{"type": "alias", "userId": "id"}]}}, "type must be one of"),
        ({**ok, "topics": {"a": [{"type": "track", "event": "A", "userId": "id", "propertys": {}}]}}, "unknown keys"),
        ({**ok, "topics": {"a": [{"action": "forget"}]}}, "needs userId"),
    ]:
        with pytest.raises(MappingError, match=match):
            parse_mapping(bad, "bad")


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["id", "customer", "email", "line_items", "transactions", "amount",
        "status", "kind", "order_id", "total_price", "created_at", "token", "price", "quantity", "data", "object", "type"]), inner, max_size=6),  # fmt: skip
    max_leaves=25,
)


_SHIPPED = {name: load_mapping(name) for name in ("shopify", "stripe")}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=st.sampled_from(["orders/create", "refunds/create", "checkouts/update", "carts/create", "customers/update", "customers/redact", "x"]),
       payload=st.dictionaries(st.sampled_from(["id", "customer", "email", "line_items", "transactions", "order_id", "total_price",
                                                "created_at", "token", "data", "type"]), _json, max_size=8))  # fmt: skip
def test_a_mapping_never_raises_for_a_payload(topic: str, payload: dict) -> None:
    """Whatever a (signed) platform sends: events, or a MappingFailure to dead-letter; never an exception."""
    for name, mapping in _SHIPPED.items():
        res = apply_mapping(mapping, name, "id:w", {b"x-shopify-topic": topic.encode()}, payload, {("orders", "1"): "u"})
        if not isinstance(res, MappingFailure):
            # (an unstorable value, e.g. an integer beyond 64 bits, is the collector's dead letter)
            assert all(("userId" in e or "anonymousId" in e) and e["messageId"].startswith("wh-") for e in res.events)
