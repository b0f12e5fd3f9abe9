"""Shopify and Stripe webhooks end to end: real collector, real dataflow, real redis-server.

Issue 13's Done-when: a Shopify order, its redelivery with the same webhook id, a partial refund
and a new customer give exactly one order, the refund and the customer's identify; a Stripe
event's retry (signed anew) counts once; a customers/redact ends, after
``liveprofile privacy-requests --apply``, with the customer's profile erased.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import redis

from liveprofile.store.keys import Keys
from tests.collector.test_webhook_platforms import CUSTOMER, OLD_EXAMPLES, shopify
from tests.collector.test_webhook_schemes import (
    SHOPIFY_SECRET,
    STRIPE_SECRET,
    fixture,
    stripe_header,
)
from tests.e2e.helpers import wait_caught_up
from tests.procs import base_env, start_collector, start_dataflow, wait_for

K = Keys("lp")


def profile(r: redis.Redis, uid: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(K.profile(uid)).items()}


def test_shopify_and_stripe_deliveries_become_exactly_the_right_profile(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    env = base_env(redis_url, LIVEPROFILE_WEBHOOK_SECRETS=orjson.dumps({"shopify": SHOPIFY_SECRET, "stripe": STRIPE_SECRET}).decode(), **OLD_EXAMPLES)
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path)
    try:
        order = fixture("shopify/orders_create.json")
        assert shopify(url, "orders/create", order, "w-order-1").status_code == 200
        assert shopify(url, "orders/create", order, "w-order-1").json()["duplicate"] is True  # the redelivery
        assert shopify(url, "refunds/create", fixture("shopify/refunds_create.json"), "w-refund-1").status_code == 200
        assert shopify(url, "customers/create", fixture("shopify/customers_create.json"), "w-customer-1").status_code == 200
        body = fixture("stripe/checkout_session_completed.json")
        t = int(time.time())
        for attempt in range(2):  # Stripe retries the same event with a new signature
            resp = httpx.post(f"{url}/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": stripe_header(STRIPE_SECRET, body, t + attempt)})
            assert resp.status_code == 200
        wait_caught_up(r)
        wait_for(lambda: profile(r, CUSTOMER).get("refund_total") not in (None, "0", "0.00"), 60, 0.2, "the refund on the profile")
        p = profile(r, CUSTOMER)
        assert (p["purchase_count"], p["revenue_total"], p["refund_total"], p["email"]) == ("1", "403.00", "50.00", "john@test.com"), p
        wait_for(lambda: profile(r, "706405506930370084").get("email") == "bob@biller.com", 60, 0.2, "the new customer's profile")
        # the customer's identify traits reach the profile (issue 13: first_name from any source)
        assert orjson.loads(profile(r, "706405506930370084")["traits"]).get("first_name") == "Bob"
        wait_for(lambda: profile(r, "cus_NffrFeUfNV2Hib").get("purchase_count") == "1", 60, 0.2, "the Stripe order")
        assert profile(r, "cus_NffrFeUfNV2Hib")["revenue_total"] == "21.98"

        # customers/redact for this customer (the published payload, naming our customer)
        redact = orjson.loads(fixture("shopify/customers_redact.json"))
        redact["customer"] = {"id": int(CUSTOMER), "email": "john@test.com", "phone": None}
        assert shopify(url, "customers/redact", orjson.dumps(redact), "w-redact-1").status_code == 200
        out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "privacy-requests", "--apply"], env=env, capture_output=True, text=True, check=True)
        (row,) = [orjson.loads(line) for line in out.stdout.splitlines()]
        assert (row["kind"], row["user_id"], row["forgotten"]["profiles"]) == ("forget", CUSTOMER, 1)
        assert profile(r, CUSTOMER) == {} and r.sismember(K.suppressed_for(CUSTOMER), CUSTOMER)
        again = subprocess.run([sys.executable, "-m", "liveprofile.cli", "privacy-requests", "--apply"], env=env, capture_output=True, text=True, check=True)
        assert again.stdout.strip() == ""  # each request is handled once
    finally:
        coll.stop()
        df.stop()
