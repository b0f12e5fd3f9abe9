"""A model of how one user's events reach the operators: late, duplicated, with timers.

Used by the order-insensitivity properties. The model is what the dataflow guarantees and
no more (see dataflows/logic.py and dataflows/clock.py):

* each event is delivered at ``ts + delay``, with ``0 <= delay <= LATE_MAX``, and possibly
  delivered again (an at-least-once redelivery, same ``messageId``) with its own delay;
  arrival order is by delivery time. ``LATE_MAX`` is below the dedupe window (48 h), the
  bound inside which the operators promise order insensitivity;
* the stream clock at a delivery is the delivery time (other users' traffic keeps it
  current), and timers fire with the clock somewhere between their deadline and the next
  delivery (``late`` picks the latest point, else the deadline itself);
* before each event the step checks abandonment at the event's own time
  (``operators.user.step``); after the last delivery the timers run to a final clock.

The in-order reference is the same events delivered with no delay, no copies.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from operators.events import Event, Limits, parse_event

__all__ = ["H", "T0", "LATE_MAX", "CART_KINDS", "Spec", "specs", "to_events", "arrivals", "in_order"]

H = 3_600_000
MIN = 60_000
T0 = 1_714_564_800_000  # 2024-05-01T12:00:00Z: fixed, never "now"
LATE_MAX = 26 * H  # 48 h - 21.5 h (see ANCHORS_MIN), well past the abandonment window
LIM = Limits(timestamp_min_ms=0, max_future_skew_ms=10**12)

KINDS = (
    "Product Added", "Product Added", "Product Removed", "Product Removed", "Order Completed",
    "Email Opened", "Email Link Clicked", "Product Viewed", "identify", "page",
)  # fmt: skip
CART_KINDS = ("Product Added", "Product Removed", "Order Completed")
PRODUCTS = ("a", "b", "c")
CATS = {"a": "Shoes", "b": "Books > Fiction", "c": "Garden"}
#: Event times cluster (90 min of jitter) around points further apart than the abandonment
#: window (1 h) and the session gap (30 min), over three days, so carts, timers, orders and
#: sessions interact within and across clusters. The spacing keeps any two events either
#: at most 21.5 h or more than 48 h apart: a removal of a product not in the cart waits
#: 48 h for its add, measured from the newest cart event (or the timer's clock), so an add
#: 48 h - LATE_MAX .. 48 h after such a removal, delivered late, may or may not cancel it
#: (a known gap, see test_profile.py::test_orphan_expiry_does_not_depend_on_lateness).
ANCHORS_MIN = (0, 50, 2 * 60, 20 * 60, 3 * 24 * 60 + 7)
DELAYS = (0, 1, 20 * MIN, 59 * MIN, 61 * MIN, 2 * H, 6 * H, 21 * H, LATE_MAX)


@dataclass(frozen=True)
class Spec:
    """One generated event and how it is delivered."""

    kind: str
    minute: int
    product: str
    qty: int
    price: float
    anon: str | None
    delay: int
    copy_delay: int | None  # None: delivered once


def _delay() -> st.SearchStrategy[int]:
    return st.sampled_from(DELAYS) | st.integers(0, LATE_MAX)


def specs(
    kinds: tuple[str, ...] = KINDS,
    products: tuple[str, ...] = PRODUCTS,
    max_size: int = 30,
    anchors: tuple[int, ...] = ANCHORS_MIN,
) -> st.SearchStrategy[list[Spec]]:
    """Lists of events to deliver (``kinds``/``products``/``anchors`` narrow it)."""
    spec = st.builds(
        Spec,
        kind=st.sampled_from(kinds),
        minute=st.tuples(st.sampled_from(anchors), st.integers(0, 90)).map(sum),
        product=st.sampled_from(products),
        qty=st.integers(1, 3),
        price=st.sampled_from([0.99, 5, 12.5]),
        anon=st.sampled_from([None, None, "anon-1", "anon-2"]),
        delay=_delay(),
        copy_delay=st.none() | _delay(),
    )
    return st.lists(spec, min_size=1, max_size=max_size)


def to_events(items: list[Spec], uid: str = "u1", offset_ms: int = 0) -> list[Event]:
    """The events of ``items``; event times are unique (ties in event time are outside the
    order-insensitivity contract: the newest email, or the price of two adds at one ms)."""
    out = []
    for i, s in enumerate(items):
        t = T0 + s.minute * MIN + offset_ms + i
        raw: dict = {"userId": uid, "messageId": f"{uid}:m{i}", "timestamp": t / 1000, "receivedAt": t / 1000}
        if s.anon is not None:
            raw["anonymousId"] = s.anon
        if s.kind == "identify":
            # one email per product: at most 3 distinct, below the identity-bomb rule's 4 a day
            # (operators.behaviour.IDENTITIES_DAY_SUSPECT): a user the rule flags stops gaining
            # interests from the events that arrive while flagged, which depends on arrival order
            # by design (docs/intelligence.md); these properties are about the profile folds
            raw.update(type="identify", traits={"email": f"{s.product}@example.com"})
        elif s.kind == "page":
            raw.update(type="page", name="Home", properties={"category": CATS[s.product]})
        else:
            props: dict = {"product_id": s.product, "quantity": s.qty, "price": s.price,
                           "name": f"Product {s.product}", "category": CATS[s.product]}  # fmt: skip
            if s.kind == "Order Completed":
                props = {"total": s.price * s.qty, "products": [props]}
            elif s.kind in ("Email Opened", "Email Link Clicked"):
                props = {"email_id": f"e{s.product}"}
            raw.update(type="track", event=s.kind, properties=props)
        e = parse_event(raw, LIM)
        assert isinstance(e, Event), e
        out.append(e)
    return out


def arrivals(items: list[Spec], events: list[Event]) -> list[tuple[int, Event]]:
    """(delivery time, event) for every delivery, copies included, in arrival order."""
    out = []
    for i, (s, e) in enumerate(zip(items, events, strict=True)):
        out.append((e.ts + s.delay, 2 * i, e))
        if s.copy_delay is not None:
            out.append((e.ts + s.copy_delay, 2 * i + 1, e))
    out.sort(key=lambda x: (x[0], x[1]))
    return [(t, e) for t, _, e in out]


def in_order(events: list[Event]) -> list[tuple[int, Event]]:
    """The reference delivery: each event once, at its own time."""
    return sorted(((e.ts, e) for e in events), key=lambda x: x[0])
