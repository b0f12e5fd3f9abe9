"""Shopify, Stripe and Standard Webhooks deliveries through a real collector process and redis-server.

Payloads are the platforms' published examples (tests/collector/fixtures/README.md), signed with
the platforms' own algorithms; what is kept is read back from Redis.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import redis
from standardwebhooks.webhooks import Webhook as StandardWebhook

from liveprofile.collector.openapi import DOCUMENT
from liveprofile.store.envelope import EntryKind, decode_control, kind_of
from liveprofile.store.keys import Keys
from operators.routing import shard_of
from tests.collector.test_openapi import check_answer
from tests.collector.test_webhook_schemes import (
    SHOPIFY_SECRET,
    STD_SECRET,
    STRIPE_SECRET,
    fixture,
    shopify_hmac,
    stripe_header,
)

K = Keys("lp")
OLD_EXAMPLES = {"LIVEPROFILE_TIMESTAMP_MIN": "2015-01-01T00:00:00Z"}  # the published examples are years old
CUSTOMER = "115310627314723954"


def entries(r: redis.Redis) -> list[bytes]:
    """Every buffer entry, all shards."""
    out = []
    for key in sorted(r.scan_iter("lp:events:*")):
        out += [f[b"e"] for _, f in r.xrange(key)]
    return out


def events(r: redis.Redis) -> list[dict]:
    return [orjson.loads(e) for e in entries(r) if kind_of(e) is EntryKind.EVENT]


def dead(r: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode("utf-8", "replace") for k, v in f.items()} for _, f in r.xrange(K.dead_letter)]


def kept(r: redis.Redis) -> tuple[int, int, int]:
    return len(entries(r)), r.xlen(K.dead_letter), r.xlen(K.privacy_requests)


def shopify(url: str, topic: str, body: bytes, webhook_id: str, *, secret: str = SHOPIFY_SECRET, hmac_of: bytes | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Webhook-Id": webhook_id,
               "X-Shopify-Shop-Domain": "johns-apparel.myshopify.com", "X-Shopify-API-Version": "2024-07",
               "X-Shopify-Hmac-Sha256": shopify_hmac(secret, body if hmac_of is None else hmac_of).decode()}  # fmt: skip
    return httpx.post(f"{url}/v1/webhooks/shopify", content=body, headers=headers)


def metric(url: str, result: str, source: str) -> float:
    text = httpx.get(url + "/metrics").text
    line = f'liveprofile_collector_webhook_requests_total{{result="{result}",source="{source}"}}'
    alt = f'liveprofile_collector_webhook_requests_total{{source="{source}",result="{result}"}}'
    for ln in text.splitlines():
        if ln.startswith((line, alt)):
            return float(ln.split()[-1])
    return 0.0


def test_shopify_order_redelivery_refund_customer_compliance_and_refusals(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_WEBHOOK_SECRETS=orjson.dumps({"shopify": ["shopify-old-secret-0123456789", SHOPIFY_SECRET]}).decode(), **OLD_EXAMPLES)
    order = fixture("shopify/orders_create.json")
    resp = shopify(url, "orders/create", order, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    assert resp.status_code == 200 and resp.json() == {"success": True}, resp.text
    evs = events(r)
    assert [(e["type"], e.get("event"), e["userId"]) for e in evs] == [("identify", None, CUSTOMER), ("track", "Order Completed", CUSTOMER)]
    assert evs[0]["traits"] == {"email": "john@test.com", "first_name": "John", "last_name": "Smith"}
    assert evs[1]["properties"]["order_id"] == "820982911946154508" and evs[1]["properties"]["revenue"] == "403.00"
    # Shopify redelivers with the same webhook id: answered 200 (so it stops), nothing kept
    before = kept(r)
    again = shopify(url, "orders/create", order, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043")
    assert again.status_code == 200 and again.json() == {"success": True, "duplicate": True}
    check_answer(DOCUMENT, "/v1/webhooks/{source}", "post", again)  # the documented answers
    assert kept(r) == before
    # tampered (the signature of the genuine body), signed with another secret, unsigned: 401, nothing kept
    tampered = order.replace(b'"403.00"', b'"0.01"')
    for resp in (shopify(url, "orders/create", tampered, "w-tampered", hmac_of=order),
                 shopify(url, "orders/create", order, "w-forged", secret="attacker-secret-0123456789"),
                 httpx.post(f"{url}/v1/webhooks/shopify", content=order, headers={"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "w-x"})):  # fmt: skip
        assert resp.status_code == 401 and resp.json()["error"] in {"invalid_signature", "missing_signature"}, resp.text
    assert kept(r) == before
    # the partial refund: the order's customer (remembered from orders/create), successful transactions summed
    assert shopify(url, "refunds/create", fixture("shopify/refunds_create.json"), "w-refund-1").status_code == 200
    refund = events(r)[-1]
    assert (refund["event"], refund["userId"], refund["properties"]["total"]) == ("Order Refunded", CUSTOMER, "50.00")
    # a new customer: an identify with first_name in its traits
    assert shopify(url, "customers/create", fixture("shopify/customers_create.json"), "w-customer-1").status_code == 200
    ident = events(r)[-1]
    assert (ident["type"], ident["userId"], ident["traits"]["first_name"], ident["traits"]["email"]) == ("identify", "706405506930370084", "Bob", "bob@biller.com")
    # a topic the mapping does not know: one dead letter with its reason and source, answered 200
    n = len(entries(r))
    resp = shopify(url, "products/create", b'{"id": 632910392, "title": "IPod Nano - 8GB"}', "w-product-1")
    assert resp.status_code == 200 and resp.json()["rejected"][0]["reason"] == "webhook_unmapped"
    check_answer(DOCUMENT, "/v1/webhooks/{source}", "post", resp)
    (dl,) = dead(r)
    assert (dl["reason"], dl["source"], dl["stage"]) == ("webhook_unmapped", "webhook:shopify", "collector") and "products/create" in dl["message"]
    assert orjson.loads(dl["raw"])["id"] == 632910392 and len(entries(r)) == n
    # a payload missing what the mapping requires: webhook_mapping_failed
    doc = orjson.loads(order)
    doc.pop("total_price")
    resp = shopify(url, "orders/create", orjson.dumps(doc), "w-order-2")
    assert resp.status_code == 200 and dead(r)[-1]["reason"] == "webhook_mapping_failed" and "total_price" in dead(r)[-1]["message"]
    # mandatory compliance topics: customers/redact -> the dataflow's FORGET control + a forget request; the others recorded
    assert shopify(url, "customers/redact", fixture("shopify/customers_redact.json"), "w-redact-1").status_code == 200
    ctrl = [e for e in r.xrange(K.events(shard_of("191167", 4)))][-1][1][b"e"]
    assert kind_of(ctrl) is EntryKind.FORGET and decode_control(ctrl).user_id == "191167"
    for topic, name in (("customers/data_request", "customers_data_request"), ("shop/redact", "shop_redact")):
        assert shopify(url, topic, fixture(f"shopify/{name}.json"), f"w-{name}").status_code == 200
    reqs = [{k.decode(): v.decode() for k, v in f.items() if k != b"payload"} for _, f in r.xrange(K.privacy_requests)]
    assert [(q["kind"], q["user_id"], q["topic"]) for q in reqs] == [("forget", "191167", "customers/redact"), ("record", "", "customers/data_request"), ("record", "", "shop/redact")]
    assert metric(url, "duplicate", "shopify") == 1 and metric(url, "invalid_signature", "shopify") == 2


def test_stripe_events_replays_and_redeliveries(start: Callable[..., str], r: redis.Redis) -> None:
    url = start(LIVEPROFILE_WEBHOOK_SECRETS=orjson.dumps({"stripe": STRIPE_SECRET}).decode(), **OLD_EXAMPLES)

    def post(body: bytes, header: str) -> httpx.Response:
        return httpx.post(f"{url}/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": header, "Content-Type": "application/json"})

    body = fixture("stripe/checkout_session_completed.json")
    t = int(time.time())
    hdr = stripe_header(STRIPE_SECRET, body, t)
    assert post(body, hdr).status_code == 200
    (order,) = events(r)
    assert (order["event"], order["userId"], order["properties"]["revenue"]) == ("Order Completed", "cus_NffrFeUfNV2Hib", "21.98")
    before = kept(r)
    # the same signed request again is a replay (Stripe signs every attempt anew)
    assert post(body, hdr).json()["error"] == "replayed_signature"
    for b, h, code in [
        (body.replace(b"2198", b"1"), hdr, "invalid_signature"),
        (body, stripe_header(STRIPE_SECRET, body, t - 400), "stale_signature"),
        (body, stripe_header("whsec_attacker_0123456789abcdef", body, t), "invalid_signature"),
    ]:
        resp = post(b, h)
        assert resp.status_code == 401 and resp.json()["error"] == code
    assert kept(r) == before
    # Stripe's retry of the same event (new t, new signature): kept, with the same messageId,
    # so the dataflow's de-duplication counts the order once
    assert post(body, stripe_header(STRIPE_SECRET, body, t + 1)).status_code == 200
    first, retry = events(r)
    assert first["messageId"] == retry["messageId"]
    for name in ("charge_refunded", "customer_created"):
        b = fixture(f"stripe/{name}.json")
        assert post(b, stripe_header(STRIPE_SECRET, b, t)).status_code == 200
    refund, customer = events(r)[2:]
    assert (refund["event"], refund["properties"]["total"]) == ("Order Refunded", "10.00")
    assert (customer["type"], customer["traits"]["email"]) == ("identify", "jennyrosen@example.com")


def test_standard_webhooks_source_with_a_users_own_mapping_file(start: Callable[..., str], r: redis.Redis, tmp_path: Path) -> None:
    """A user adds a source by writing a mapping file: no Python."""
    maps = tmp_path / "mappings"
    maps.mkdir()
    (maps / "acme.yaml").write_text(
        "version: 1\n"
        "topic: {path: type}\n"
        "topics:\n"
        "  invoice.paid:\n"
        "    - type: track\n"
        "      event: Order Completed\n"
        "      require: [data.invoice_id, data.total]\n"
        "      userId: data.customer_id\n"
        "      messageId: data.invoice_id\n"
        "      timestamp: timestamp\n"
        "      properties: {order_id: data.invoice_id, revenue: data.total, currency: data.currency}\n"
    )
    url = start(LIVEPROFILE_WEBHOOK_SECRETS=orjson.dumps({"acme": {"scheme": "standard", "secret": STD_SECRET, "mapping": "acme"}}).decode(),
                LIVEPROFILE_WEBHOOK_MAPPINGS=str(maps))  # fmt: skip
    wh = StandardWebhook(STD_SECRET)
    now = datetime.now(tz=UTC)
    payload = orjson.dumps({"type": "invoice.paid", "timestamp": now.isoformat(), "data": {"invoice_id": "in_1", "customer_id": "c-9", "total": "12.50", "currency": "EUR"}})

    def post(body: bytes, msg_id: str, at: datetime, sig: str | None = None) -> httpx.Response:
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
                   "webhook-signature": sig or wh.sign(msg_id, at, body.decode()), "Content-Type": "application/json"}  # fmt: skip
        return httpx.post(f"{url}/v1/webhooks/acme", content=body, headers=headers)

    assert post(payload, "msg_1", now).json() == {"success": True}
    (ev,) = events(r)
    assert (ev["event"], ev["userId"], ev["properties"]) == ("Order Completed", "c-9", {"order_id": "in_1", "revenue": "12.50", "currency": "EUR"})
    before = kept(r)
    # a retry: same webhook-id, signed anew later -> 200 duplicate, nothing kept
    assert post(payload, "msg_1", datetime.fromtimestamp(now.timestamp() + 5, tz=UTC)).json() == {"success": True, "duplicate": True}
    other = "v1," + base64.b64encode(b"\x00" * 32).decode()
    for resp in (post(payload.replace(b"12.50", b"0.01"), "msg_2", now, wh.sign("msg_2", now, payload.decode())),
                 post(payload, "msg_3", now, other),
                 post(payload, "msg_4", datetime.fromtimestamp(now.timestamp() - 600, tz=UTC))):  # fmt: skip
        assert resp.status_code == 401, resp.text
    assert kept(r) == before
    assert post(b'{"type": "invoice.paid", "data": {"customer_id": "c-9"}}', "msg_5", now).status_code == 200
    assert dead(r)[-1]["reason"] == "webhook_mapping_failed" and dead(r)[-1]["source"] == "webhook:acme"
