"""Import mappings (:mod:`liveprofile.admin.mapping`): the row grouping and the messageIds do not
depend on how the rows are chunked (a Hypothesis property), non-adjacent order rows are
dead-lettered, every shipped preset loads and maps its export's header, and an order re-delivered
outside the dedupe window is not counted twice by the profile state."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.admin.mapping import PRESETS, ImportMapping, RowMapper, load_mapping
from operators.dedupe import DedupeConfig
from operators.events import Limits, parse_event
from operators.profile import ProfileState

ORDERS = load_mapping("shopify-orders")


def _rows(orders: list[tuple[str, list[tuple[int, int]]]]) -> list[tuple[int, dict[str, str]]]:
    """Export rows of ``orders`` (name, [(quantity, price cents)]), adjacent, lines from 2."""
    out: list[tuple[int, dict[str, str]]] = []
    for i, (name, items) in enumerate(orders):
        for j, (q, c) in enumerate(items):
            row = {"Name": name, "Email": f"c{i % 3}@example.com", "Created at": f"2024-01-{1 + i % 28:02d} 10:00:00 +0000",
                   "Lineitem quantity": str(q), "Lineitem price": f"{c // 100}.{c % 100:02d}", "Lineitem sku": f"S{j}",
                   "Lineitem name": f"P{j}"}  # fmt: skip
            if j == 0:
                row.update({"Total": f"{sum(q * c for q, c in items) / 100:.2f}", "Currency": "EUR", "Id": f"{9000 + i}"})
            out.append((len(out) + 2, row))
    return out


def _run(m: ImportMapping, rows: list[tuple[int, dict[str, Any]]], cuts: list[int]) -> list[tuple[int, Any, Any]]:
    mapper = RowMapper(m)
    outs = []
    prev = 0
    for c in sorted(set(cuts)) + [len(rows)]:
        outs += mapper.feed(rows[prev:c])
        prev = max(prev, c)
    outs += mapper.finish()
    return [(o.line, o.events, o.rejected) for o in outs]


orders_st = st.lists(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 99_999)), min_size=1, max_size=4),
                     min_size=1, max_size=12)  # fmt: skip


@settings(max_examples=150, deadline=None, derandomize=True)
@given(orders_st, st.lists(st.integers(0, 60), max_size=8))
def test_any_chunking_gives_the_same_events(orders: list[list[tuple[int, int]]], cuts: list[int]) -> None:
    rows = _rows([(f"#{1000 + i}", items) for i, items in enumerate(orders)])
    whole = _run(ORDERS, rows, [])
    assert _run(ORDERS, rows, cuts) == whole
    assert _run(load_mapping("shopify-orders"), rows, cuts) == whole  # a new run: the same messageIds
    events = [e for _, evs, _ in whole for e in evs]
    assert len(events) == len(orders) and len({e["messageId"] for e in events}) == len(orders)
    for e, items in zip(events, orders, strict=True):
        assert [(p["quantity"], p["price"]) for p in e["properties"]["products"]] == [
            (q, f"{c // 100}.{c % 100:02d}") for q, c in items]  # fmt: skip
        ev = parse_event({**e, "receivedAt": "2024-02-01T00:00:00Z"}, Limits(timestamp_min_ms=0))
        assert ev.value_cents == sum(q * c for q, c in items)  # type: ignore[union-attr]


def test_rows_of_an_order_that_come_back_later_are_dead_lettered() -> None:
    rows = _rows([("#1", [(1, 100), (1, 200)]), ("#2", [(1, 300)])])
    late = (99, {**rows[1][1], "Lineitem sku": "LATE"})
    outs = _run(ORDERS, [*rows, late, (100, dict(late[1]))], [])
    assert [(o[0], o[2].reason if o[2] else None) for o in outs] == [
        (2, None), (4, None), (99, "order_rows_not_adjacent"), (100, "order_rows_not_adjacent")]


def test_every_preset_maps_its_export_header() -> None:
    samples = {
        "shopify-customers": {"Customer ID": "1", "First Name": "Ann", "Email": "A@x.io", "Accepts Email Marketing": "yes"},
        "klaviyo-profiles": {"Email": "A@x.io", "First Name": "Ann", "Phone Number": "+1555", "Klaviyo ID": "01H"},
        "mailchimp-members": {"Email Address": "A@x.io", "First Name": "Ann", "MEMBER_RATING": "3",
                              "LAST_CHANGED": "2024-03-01 10:00:00", "TAGS": "a,b"},
        "shopify-orders": {"Name": "#1", "Email": "A@x.io", "Created at": "2024-03-01 10:00:00 -0500", "Total": "1.00"},
    }  # fmt: skip
    assert set(samples) == set(PRESETS)
    for name, row in samples.items():
        [out] = _run(load_mapping(name), [(2, row)], [])
        assert out[2] is None, (name, out)
        [ev] = out[1]
        assert ev["userId"] == "a@x.io", name
        traits = ev.get("traits") or ev["context"]["traits"]
        assert traits["email"] == "A@x.io"
        if name != "shopify-orders":
            assert traits["first_name"] == "Ann"
    [out] = _run(load_mapping("mailchimp-members"), [(2, samples["mailchimp-members"])], [])
    assert out[1][0]["timestamp"] == "2024-03-01T10:00:00.000Z" and out[1][0]["traits"]["mailchimp_rating"] == 3


def test_an_order_redelivered_outside_the_dedupe_window_counts_once() -> None:
    cfg = DedupeConfig(window_ms=3_600_000)
    lim = Limits(timestamp_min_ms=0)

    def ev(name: str, t: str, mid: str, **props: Any) -> Any:
        return parse_event({"type": "track", "event": name, "userId": "u", "messageId": mid, "timestamp": t,
                            "receivedAt": "2024-06-01T00:00:00Z", "properties": props}, lim)  # fmt: skip

    history = [ev("Order Completed", "2024-01-01T00:00:00Z", "o1", order_id="1", total=10),
               ev("Order Refunded", "2024-01-02T00:00:00Z", "r1", order_id="1", total=4),
               ev("Order Completed", "2024-03-01T00:00:00Z", "o2", order_id="2", total=5),
               ev("Order Cancelled", "2024-03-02T00:00:00Z", "c2", order_id="2")]  # fmt: skip
    s = ProfileState("u")
    assert all(s.apply(e, cfg) for e in history)
    for i in range(40):  # later activity: the dedupe state forgets the old ids (it prunes every 32 ids)
        assert s.apply(parse_event({"type": "page", "userId": "u", "messageId": f"p{i}", "timestamp": "2024-05-01T00:00:00Z",
                                    "receivedAt": "2024-06-01T00:00:00Z"}, lim), cfg)  # fmt: skip
    assert len(s.seen) == 40  # the four order events' ids are forgotten
    before = (s.purchase_count, s.revenue_cents, s.event_count, s.refunded_cancelled(), s.seq)
    assert [s.apply(e, cfg) for e in history] == [False] * 4  # ids long out of the window
    assert (s.purchase_count, s.revenue_cents, s.event_count, s.refunded_cancelled(), s.seq) == before
    # a different order event of a known order still counts
    assert s.apply(ev("Order Completed", "2024-03-05T00:00:00Z", "o1b", order_id="1", total=10), cfg)
    assert s.purchase_count == 3
