"""operators.catalogue: which events feed the catalogue, newest-time-wins attributes, popularity
counted once per event line, and a property test of the fold's invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from operators.catalogue import SEEN_IDS, ProductState, Sighting, apply, output, sightings
from operators.events import Event, Limits, parse_event

LIM = Limits(timestamp_min_ms=0)


def ev(event: str, mid: str, ts: str = "2024-05-01T10:00:00Z", **props: object) -> Event:
    e = parse_event({"type": "track", "event": event, "userId": "u", "messageId": mid, "timestamp": ts,
                     "receivedAt": "2024-05-01T12:00:00Z", "properties": props}, LIM)  # fmt: skip
    assert isinstance(e, Event), e
    return e


def test_order_lines_carry_their_own_attributes_and_units() -> None:
    e = ev("Order Completed", "o1", products=[
        {"product_id": "p1", "name": "Shoe", "category": "Shoes > Trail", "price": 10, "quantity": 3, "url": "https://s.example/p1",
         "image_url": "https://cdn.example/p1.png", "brand": "Acme"},
        {"sku": "p2", "name": "Sock", "price": "2.5", "url": "javascript:alert(1)"},
        {"name": "no id"},
    ])  # fmt: skip
    s = sightings(e)
    assert [(x.product_id, x.kind, x.units, x.line_id) for x in s] == [("p1", "purchase", 3, "o1#0"), ("p2", "purchase", 1, "o1#1")]
    assert dict(s[0].attrs) == {"name": "Shoe", "category": "shoes", "price": "10.00", "url": "https://s.example/p1",
                                "image_url": "https://cdn.example/p1.png", "brand": "Acme"}  # fmt: skip
    assert "url" not in dict(s[1].attrs)  # only absolute http(s) URLs: the API redirects to it


def test_other_events_say_nothing() -> None:
    assert sightings(ev("Product Removed", "r1", product_id="p1")) == []
    assert sightings(ev("Checkout Started", "c1", products=[{"product_id": "p1"}])) == []
    assert [s.kind for s in sightings(ev("Product Added", "a1", product_id="p1"))] == ["add"]


def test_newest_event_time_wins_per_attribute_whatever_the_arrival_order() -> None:
    new = sightings(ev("Product Viewed", "m2", "2024-05-01T11:00:00Z", product_id="p1", name="New name", price=12))
    old = sightings(ev("Product Viewed", "m1", "2024-05-01T09:00:00Z", product_id="p1", name="Old name", price=9,
                       url="https://s.example/p1"))  # fmt: skip
    st_, _, _ = apply(None, [*new, *old])
    out = output("p1", st_, "")
    assert out.fields == {"name": "New name", "price": "12.00", "url": "https://s.example/p1", "url_trusted": "1", "popularity": "2"}


def test_popularity_weights_and_duplicate_lines_count_once() -> None:
    view = sightings(ev("Product Viewed", "v1", product_id="p1", category="Shoes"))
    add = sightings(ev("Product Added", "a1", product_id="p1"))
    buy = sightings(ev("Order Completed", "o1", products=[{"product_id": "p1", "quantity": 2}]))
    st_, _, changed = apply(None, [*view, *add, *buy, *view, *buy])  # a retried view and order
    assert changed and st_.popularity == 1 + 2 + 5 * 2
    st2, _, changed2 = apply(st_, [*add])  # re-read later: already counted
    assert not changed2 and st2.popularity == 13


def test_moving_category_names_the_category_left() -> None:
    a = sightings(ev("Product Viewed", "v1", "2024-05-01T09:00:00Z", product_id="p1", category="Shoes"))
    b = sightings(ev("Product Viewed", "v2", "2024-05-01T10:00:00Z", product_id="p1", category="Boots"))
    st_, before, _ = apply(None, a)
    st_, before, _ = apply(st_, b)
    out = output("p1", st_, before)
    assert (out.category, out.left_category) == ("boots", "shoes")


_kinds = st.sampled_from(["view", "add", "purchase"])
_sight = st.builds(lambda i, k, u, t: Sighting("p", f"m{i}#0", k, u, t, (("name", f"n{t}"),)),
                   st.integers(0, 40), _kinds, st.integers(0, 5), st.integers(0, 10))  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(_sight, max_size=60), st.integers(1, 5))
def test_fold_invariants(seen: list[Sighting], cut: int) -> None:
    """Folding in any batches gives the same state as one fold; a replay of any prefix changes
    nothing; popularity counts each distinct line once; the name is the newest-time one."""
    one, _, _ = apply(None, list(seen))
    st_: ProductState | None = None
    for i in range(0, len(seen), cut):
        st_, _, _ = apply(st_, seen[i : i + cut])
    st_, _, changed = apply(st_, seen[: len(seen) // 2])
    assert st_ is not None and not changed or not seen
    assert st_ is None or (st_.popularity, st_.attrs) == (one.popularity, one.attrs)
    first: dict[str, Sighting] = {}
    for s in seen:
        first.setdefault(s.line_id, s)
    w = {"view": 1, "add": 2, "purchase": 5}
    assert one.popularity == sum(w[s.kind] * (s.units if s.kind == "purchase" else 1) for s in first.values())
    if first:
        assert one.attrs["name"][0][1] == max(s.ts for s in first.values())
    assert len(one.seen) <= SEEN_IDS


def test_browser_key_values_never_override_server_key_values() -> None:
    """Anyone holding the public browser key could otherwise rename a product or repoint its link in
    every recommendation email: a server-key value holds against newer browser-key values, and the
    output says whether ``url`` is trusted."""
    feed = Sighting("p1", "f#0", "purchase", 1, 10, (("name", "Trail Shoe"), ("url", "https://shop.example/p1")))
    forged = Sighting("p1", "x#0", "view", 1, 99, (("name", "FREE PHONE"), ("url", "https://evil.test/"), ("brand", "B")), trusted=False)
    st, before, _ = apply(None, [feed, forged])
    out = output("p1", st, before)
    assert out.fields["name"] == "Trail Shoe" and out.fields["url"] == "https://shop.example/p1" and out.fields["url_trusted"] == "1"
    assert out.fields["brand"] == "B"  # nothing trusted said otherwise
    assert st.popularity == 5 + 1  # browser views still count toward popularity
    alone, b2, _ = apply(None, [forged])
    assert output("p1", alone, b2).fields["url_trusted"] == "0"
