"""End to end (issue 13 item 5): ``liveprofile import`` of a Shopify-style orders export (its
published header, multi-row orders, a refunded and a cancelled order, bad rows) through the real
CLI into a real Redis, then the real dataflow process: exact purchase counts and revenue per
customer; a second import of the same file (gzip, by its magic bytes) changes nothing, though the
customers' orders lie months apart (outside the dedupe window); bad rows are dead letters with
their line numbers. NDJSON and the customers export are checked on the buffer entries.

Failed on main (ef1568b): there is no ``import`` command; with the command and without the
profile change, the second import counted again the orders of a customer whose dedupe state had
forgotten their ids (Dan's 40 orders over 40 days)."""

from __future__ import annotations

import csv
import gzip
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from liveprofile.cli import main
from tests.e2e.helpers import K, dead_letters
from tests.procs import base_env, start_dataflow

#: Shopify's orders export header (Admin > Orders > Export, CSV)
SHOPIFY_ORDERS_HEADER = [
    "Name", "Email", "Financial Status", "Paid at", "Fulfillment Status", "Fulfilled at", "Accepts Marketing",
    "Currency", "Subtotal", "Shipping", "Taxes", "Total", "Discount Code", "Discount Amount", "Shipping Method",
    "Created at", "Lineitem quantity", "Lineitem name", "Lineitem price", "Lineitem compare at price",
    "Lineitem sku", "Lineitem requires shipping", "Lineitem taxable", "Lineitem fulfillment status",
    "Billing Name", "Billing Street", "Billing Address1", "Billing Address2", "Billing Company", "Billing City",
    "Billing Zip", "Billing Province", "Billing Country", "Billing Phone", "Shipping Name", "Shipping Street",
    "Shipping Address1", "Shipping Address2", "Shipping Company", "Shipping City", "Shipping Zip",
    "Shipping Province", "Shipping Country", "Shipping Phone", "Notes", "Note Attributes", "Cancelled at",
    "Payment Method", "Payment Reference", "Refunded Amount", "Vendor", "Outstanding Balance", "Employee",
    "Location", "Device ID", "Id", "Tags", "Risk Level", "Source", "Lineitem discount", "Tax 1 Name",
    "Tax 1 Value", "Tax 2 Name", "Tax 2 Value", "Tax 3 Name", "Tax 3 Value", "Tax 4 Name", "Tax 4 Value",
    "Tax 5 Name", "Tax 5 Value", "Phone", "Receipt Number", "Duties", "Billing Province Name",
    "Shipping Province Name", "Payment ID", "Payment Terms Name", "Next Payment Due At", "Payment References",
]  # fmt: skip

#: Shopify's customers export header (Admin > Customers > Export, CSV)
SHOPIFY_CUSTOMERS_HEADER = [
    "Customer ID", "First Name", "Last Name", "Email", "Accepts Email Marketing", "Default Address Company",
    "Default Address Address1", "Default Address Address2", "Default Address City",
    "Default Address Province Code", "Default Address Country Code", "Default Address Zip",
    "Default Address Phone", "Phone", "Accepts SMS Marketing", "Total Spent", "Total Orders", "Note",
    "Tax Exempt", "Tags",
]  # fmt: skip


def _order_row(name: str, email: str = "", created: str = "", qty: str = "1", item: str = "", price: str = "",
               sku: str = "", **order: str) -> dict[str, str]:  # fmt: skip
    """One export row: the line item, plus the order's fields when given (the first row's)."""
    row = {"Name": name, "Email": email, "Created at": created, "Lineitem quantity": qty, "Lineitem name": item,
           "Lineitem price": price, "Lineitem sku": sku, "Lineitem requires shipping": "true",
           "Lineitem taxable": "true", "Vendor": "Acme"}  # fmt: skip
    names = {"status": "Financial Status", "currency": "Currency", "subtotal": "Subtotal", "shipping": "Shipping",
             "taxes": "Taxes", "total": "Total", "id": "Id", "cancelled": "Cancelled at",
             "refunded": "Refunded Amount", "notes": "Notes", "paid": "Paid at"}  # fmt: skip
    row.update({names[k]: v for k, v in order.items()})
    return row


ROWS = [
    # line 2-3: Ann's #1001, two line items (2 x 10.00 + 1 x 12.50, shipping 5.00)
    _order_row("#1001", "Ann@Example.com", "2024-01-10 09:15:00 -0500", "2", "Mug", "10.00", "MUG-1", status="paid",
               currency="USD", subtotal="32.50", shipping="5.00", taxes="0.00", total="37.50", id="5001",
               paid="2024-01-10 09:15:02 -0500"),
    _order_row("#1001", "Ann@Example.com", "2024-01-10 09:15:00 -0500", "1", "Tea", "12.50", "TEA-1"),
    # line 4-6: Bob's #1002, three line items, refunded in full
    _order_row("#1002", "bob@example.com", "2024-02-01 12:00:00 +0100", "1", "Pot", "30.00", "POT-1",
               status="refunded", currency="USD", subtotal="60.00", shipping="0.00", taxes="0.00", total="60.00",
               id="5002", refunded="60.00"),
    _order_row("#1002", "bob@example.com", "2024-02-01 12:00:00 +0100", "2", "Cup", "10.00", "CUP-1"),
    _order_row("#1002", "bob@example.com", "2024-02-01 12:00:00 +0100", "1", "Lid", "10.00", "LID-1"),
    # line 7-8 (a note with a line break): Ann's #1003, months later
    _order_row("#1003", "ann@example.com", "2024-04-02 18:30:00 -0400", "1", "Mug", "20.00", "MUG-1", status="paid",
               currency="USD", subtotal="20.00", shipping="0.00", taxes="0.00", total="20.00", id="5003",
               notes="gift\nwrap please"),
    # line 9: Bob's #1004, cancelled the next day
    _order_row("#1004", "bob@example.com", "2024-05-01 08:00:00 +0000", "1", "Tray", "15.00", "TRAY-1",
               status="voided", currency="USD", subtotal="15.00", total="15.00", id="5004",
               cancelled="2024-05-02 08:00:00 +0000"),
    # line 10: a date that is not one
    _order_row("#1005", "carol@example.com", "yesterday", "1", "Mug", "10.00", "MUG-1", currency="USD",
               total="10.00", id="5005"),
    # line 11-12: an order whose second row's quantity is not a number
    _order_row("#1006", "carol@example.com", "2024-03-03 10:00:00 +0000", "1", "Mug", "10.00", "MUG-1",
               currency="USD", total="20.00", id="5006"),
    _order_row("#1006", "carol@example.com", "2024-03-03 10:00:00 +0000", "two", "Tea", "5.00", "TEA-1"),
    # line 13: a row of #1001 after other orders' rows
    _order_row("#1001", "ann@example.com", "2024-01-10 09:15:00 -0500", "1", "Spoon", "3.00", "SPOON-1"),
    # lines 14-53: Dan's 40 orders a day apart (enough for the dedupe state to forget the old ids)
    *(_order_row(f"#{2000 + i}", "dan@example.com", f"2024-06-{1 + i % 30:02d} 10:00:00 +0000" if i < 30 else
                 f"2024-07-{i - 29:02d} 10:00:00 +0000", "1", "Mug", f"{1 + i}.00", "MUG-1", status="paid",
                 currency="USD", total=f"{1 + i}.00", id=f"{6000 + i}") for i in range(40)),
]  # fmt: skip


def _csv(header: list[str], rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({h: row.get(h, "") for h in header})
    return buf.getvalue().encode()


def _import(env: dict[str, str], *args: str, rc: int = 0) -> dict:
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "import", *args], env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert out.returncode == rc, (out.stdout, out.stderr)
    return orjson.loads(out.stdout) if rc == 0 else {"stderr": out.stderr}


def _profile(r: redis.Redis, uid: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(K.profile(uid)).items()}


def _buffer(r: redis.Redis, shards: int = 4) -> list[dict]:
    return [orjson.loads(f[b"e"]) for i in range(shards) for _, f in r.xrange(K.events(i))]


def _run_dataflow(env: dict[str, str], tmp: Path, rec: Path, name: str) -> None:
    df = start_dataflow(env, tmp, recovery=rec, flow="dataflows.profiles:get_flow(stop_at_end=True)", name=name)
    assert df.wait(120) == 0, df.output()


def test_shopify_orders_export_imports_exactly_once(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2020-01-01T00:00:00Z")
    plain = tmp_path / "orders_export.csv"
    plain.write_bytes(_csv(SHOPIFY_ORDERS_HEADER, ROWS))
    assert plain.read_bytes().count(b"\n") == 53  # a header and 52 lines (one row spans two)
    zipped = tmp_path / "again" / "orders_export.csv"  # gzip without a .gz suffix: found by its magic bytes
    zipped.parent.mkdir()
    zipped.write_bytes(gzip.compress(plain.read_bytes(), mtime=0))

    first = _import(env, str(plain), "--preset", "shopify-orders")
    # #1001 #1002(+refund) #1003 #1004(+cancel), Dan's 40; 3 dead letters
    assert first == {"rows": 51, "events": 46, "accepted": 46, "dead_letters": 3}
    got = sorted((d["source"], d["reason"], d["stage"]) for d in dead_letters(r))
    assert got == [
        ("import:orders_export.csv:10", "invalid_row", "import"),
        ("import:orders_export.csv:11", "invalid_row", "import"),
        ("import:orders_export.csv:13", "order_rows_not_adjacent", "import"),
    ]
    msgs = {d["source"].rsplit(":", 1)[1]: d["message"] for d in dead_letters(r)}
    assert "Created at" in msgs["10"] and "line 12" in msgs["11"] and "Lineitem quantity" in msgs["11"]

    orders = {e["properties"]["order_id"]: e for e in _buffer(r) if e["event"] == "Order Completed"}
    assert sorted(orders) == ["5001", "5002", "5003", "5004", *(str(6000 + i) for i in range(40))]
    assert [(p["sku"], p["quantity"], p["price"]) for p in orders["5001"]["properties"]["products"]] == [
        ("MUG-1", 2, "10.00"), ("TEA-1", 1, "12.50")]  # fmt: skip
    assert len(orders["5002"]["properties"]["products"]) == 3
    assert orders["5001"]["timestamp"] == "2024-01-10T14:15:00.000Z"

    rec = tmp_path / "rec"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True)
    _run_dataflow(env, tmp_path, rec, "dataflow-1")
    ann, bob = _profile(r, "ann@example.com"), _profile(r, "bob@example.com")
    fields = ("purchase_count", "revenue_total", "refund_total", "cancelled_total", "revenue_net", "event_count",
              "first_purchase_at", "last_purchase_at")  # fmt: skip
    assert {k: ann.get(k) for k in fields} == {
        "purchase_count": "2", "revenue_total": "57.50", "refund_total": "0.00", "cancelled_total": "0.00",
        "revenue_net": "57.50", "event_count": "2", "first_purchase_at": "2024-01-10T14:15:00.000Z",
        "last_purchase_at": "2024-04-02T22:30:00.000Z",
    }  # fmt: skip
    assert {k: bob.get(k) for k in fields} == {
        "purchase_count": "2", "revenue_total": "75.00", "refund_total": "60.00", "cancelled_total": "15.00",
        "revenue_net": "0.00", "event_count": "4", "first_purchase_at": "2024-02-01T11:00:00.000Z",
        "last_purchase_at": "2024-05-01T08:00:00.000Z",
    }  # fmt: skip
    assert _profile(r, "carol@example.com") == {}
    dan = _profile(r, "dan@example.com")
    assert (dan["purchase_count"], dan["revenue_total"], dan["event_count"]) == ("40", "820.00", "40")

    second = _import(env, str(zipped), "--preset", "shopify-orders", "--quiet")
    assert second == first
    _run_dataflow(env, tmp_path, rec, "dataflow-2")
    assert _profile(r, "ann@example.com") == ann
    assert _profile(r, "bob@example.com") == bob
    assert _profile(r, "dan@example.com") == dan
    assert len(dead_letters(r)) == 6  # the same three bad rows again, nothing else


def test_ndjson_and_customers_export_reach_the_buffer(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2020-01-01T00:00:00Z")
    nd = tmp_path / "history.ndjson.gz"
    lines = [
        orjson.dumps({"type": "track", "event": "Product Viewed", "userId": "u1", "timestamp": "2024-01-01T00:00:00Z"}),
        b"{not json",
        orjson.dumps({"type": "track", "userId": "u1", "timestamp": "2024-01-01T00:00:00Z"}),  # no event name
        orjson.dumps({"type": "page", "userId": "u2", "messageId": "own-id", "timestamp": "2024-01-02T00:00:00Z"}),
    ]
    nd.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    assert _import(env, str(nd)) == {"rows": 4, "events": 3, "accepted": 2, "dead_letters": 2}
    assert sorted((d["source"], d["reason"]) for d in dead_letters(r)) == [
        ("import:history.ndjson.gz:2", "malformed_json"), ("import:history.ndjson.gz:3", "missing_event")]
    ids = sorted(e["messageId"] for e in _buffer(r))
    assert "own-id" in ids and ids[0].startswith("imp-")
    r.flushall()
    _import(env, str(nd))
    assert sorted(e["messageId"] for e in _buffer(r)) == ids  # the same events again: the same messageIds

    r.flushall()
    cust = tmp_path / "customers_export.csv"
    cust.write_bytes(_csv(SHOPIFY_CUSTOMERS_HEADER, [
        {"Customer ID": "7001", "First Name": "Ann", "Last Name": "Archer", "Email": "Ann@Example.com",
         "Accepts Email Marketing": "yes", "Default Address City": "Leeds", "Default Address Country Code": "GB",
         "Phone": "+441130000000", "Tags": "vip, wholesale"},
        {"Customer ID": "7002", "First Name": "Bob", "Email": "not an email", "Accepts Email Marketing": "no"},
        {"Customer ID": "7003", "First Name": "Cy", "Email": "cy@example.com", "Accepts Email Marketing": "maybe"},
    ]))  # fmt: skip
    assert _import(env, str(cust), "--preset", "shopify-customers") == {"rows": 3, "events": 2, "accepted": 1,
                                                                         "dead_letters": 2}  # fmt: skip
    assert sorted((d["source"], d["reason"]) for d in dead_letters(r)) == [
        ("import:customers_export.csv:3", "invalid_email"), ("import:customers_export.csv:4", "invalid_row")]
    [ev] = _buffer(r)
    assert ev["type"] == "identify" and ev["userId"] == "ann@example.com"
    assert ev["traits"] == {
        "shopify_customer_id": "7001", "first_name": "Ann", "last_name": "Archer", "phone": "+441130000000",
        "address": {"city": "Leeds", "country": "GB"}, "accepts_email_marketing": True, "tags": ["vip", "wholesale"],
        "email": "Ann@Example.com",
    }  # fmt: skip
    # and the traits reach the profile through the real dataflow (issue 13: first_name from a CSV)
    rec = tmp_path / "rec-customers"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True)
    _run_dataflow(env, tmp_path, rec, "dataflow-customers")
    prof = _profile(r, "ann@example.com")
    traits = orjson.loads(prof["traits"])
    assert prof["email"] == "Ann@Example.com" and traits["first_name"] == "Ann" and traits["last_name"] == "Archer", prof


def test_request_level_problems_exit_non_zero_and_write_nothing(redis_url: str, r: redis.Redis, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """In process (``liveprofile.cli.main``): the same command without a subprocess per case."""
    for k, v in base_env(redis_url).items():
        if k.startswith("LIVEPROFILE_"):
            monkeypatch.setenv(k, v)

    def fails(*args: str) -> str:
        assert main(["import", *args]) == 2
        return capsys.readouterr().err

    f = tmp_path / "orders.csv"
    f.write_bytes(_csv(SHOPIFY_ORDERS_HEADER, ROWS[:2]))
    assert "needs a mapping" in fails(str(f))
    assert "cannot read" in fails(str(tmp_path / "missing.csv"), "--preset", "shopify-orders")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: orders\nuser_id: Email\n")  # no order_key
    assert "order_key" in fails(str(f), "--mapping", str(bad))
    other = tmp_path / "other.csv"
    other.write_bytes(b"a,b\n1,2\n")
    assert "identity columns" in fails(str(other), "--preset", "shopify-orders")
    assert r.dbsize() == 0
