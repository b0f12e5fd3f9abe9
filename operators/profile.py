"""Per-user profile state: counters, purchases, live cart, abandonment, email engagement.

Contract
--------
``ProfileState.apply(event, dedupe, abandon_ms)`` folds one valid
:class:`~operators.events.Event` into the state and returns ``True`` if it was
applied (``False`` for a duplicate ``messageId``). Every fold is
order-insensitive for events inside the dedupe window: bounds are min/max,
sums commute, the email is the one with the newest event time, and the cart is
the net of the add/remove operations *after* the newest order in event time.

``seq`` counts the input items applied (events and identity merges). It is a
pure function of the input, so a replayed write is recognisable as stale
(the sink refuses a ``seq`` lower than the stored one). Timer-driven changes
(cart abandonment when no further event arrives) do not advance it.

Cart abandonment, in event time: a cart holding items is abandoned once
``abandon_ms`` passes after its newest add/remove without an order. It is
decided either by the user's next event (correct during fast replays) or by
``check_abandoned(clock)`` from a timer (live traffic with no further event).
An abandonment returns the ``Cart Abandoned`` trigger once.

Refunds and cancellations (SPEC §1, §4) leave the gross fields (``purchase_count``,
``revenue_total``) as they are and move ``refund_total``, ``cancelled_total`` and
``revenue_net`` = gross − refunded − cancelled. They are kept as records per ``order_id`` and
resolved when rendering, so the result does not depend on arrival order:

* an order's refunded amount is the sum of its refunds, at most the order's value; a refund
  naming no amount refunds the whole order; refunds count once per ``refund_id`` (else per
  event: the ``messageId`` dedupe drops a redelivery);
* a cancelled order's cancelled amount is what its refunds left of it (so refunded +
  cancelled never exceed the order);
* a refund or cancellation that arrives before its order waits for it: its explicit amount
  counts at once (uncapped), a whole-order refund or a cancellation counts nothing until the
  order arrives, and then the order caps them as if it had come first. One whose order never
  arrives (placed before the stream began) stays so: ``revenue_net`` can then be negative;
* records are kept for the newest :data:`_MAX_ORDERS` orders; an older order's resolved
  amounts are frozen, and a later refund of it counts as one of an unknown order.

An order event already on record is a redelivery, not applied (``apply`` returns ``False``) even
outside the dedupe window, so a re-imported history changes nothing: an ``Order Completed`` of an
``order_id`` recorded with the same event time and value, an ``Order Refunded`` whose refund key
is recorded for its order, an ``Order Cancelled`` of an order cancelled at the same time.

``Unsubscribed`` sets ``email_unsubscribed`` (and ``unsubscribed_at``, its earliest time).
Consent (``Event.consent``) is kept per category, last writer by event time (a tie: denied).
Machine opens (a mail client's proxy, e.g. Apple Mail Privacy Protection) count in
``email_opens_machine``, not in ``email_opens`` / ``last_email_open_at``: an open the event
itself marks (:func:`operators.behaviour.marked_machine_open`), or one less than
:data:`~operators.behaviour.MACHINE_OPEN_MS` after the ``Email Delivered`` of the same email.
For the latter, the opens and deliveries of the newest :data:`_MAX_EMAILS` emails (by event
time) are kept and resolved when rendering, so a delivery arriving after its open still makes
it a machine open; an older email's opens are frozen as they were resolved.

``to_fields(state)`` renders the SPEC §4 hash fields as strings (``version``
and ``updated_at`` are the sink's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from operators.behaviour import MACHINE_OPEN_MS, email_key, marked_machine_open
from operators.dedupe import DedupeConfig, SeenIds
from operators.events import Event
from operators.money import format_cents
from operators.names import (
    CART_ABANDONED,
    EMAIL_DELIVERED,
    EMAIL_LINK_CLICKED,
    EMAIL_OPENED,
    ORDER_CANCELLED,
    ORDER_COMPLETED,
    ORDER_REFUNDED,
    PRODUCT_ADDED,
    PRODUCT_REMOVED,
    UNSUBSCRIBED,
)
from operators.schema import Owner, owned_by
from operators.snapshot import pack_defaults, restore
from operators.timeutil import iso
from operators.traits import TraitMap, merge_into
from operators.traits import fold as fold_traits
from operators.traits import render as render_traits

__all__ = ["ProfileState", "to_fields", "CART_ADD", "CART_REMOVE", "ORDER_EVENTS", "PROFILE_FIELDS"]

CART_ADD = PRODUCT_ADDED
CART_REMOVE = PRODUCT_REMOVED
ORDER_EVENTS = frozenset({ORDER_COMPLETED})
#: fields this module renders (its rows of :data:`operators.schema.FIELDS`)
PROFILE_FIELDS = owned_by(Owner.CORE)
_CART_NAMES = frozenset({CART_ADD, CART_REMOVE})
_MAX_CART_OPS = 200
#: how long a removal whose product is not in the cart waits for its add (events arrive
#: out of order within the dedupe window; 48 h, its default)
_ORPHAN_KEEP_MS = 48 * 3_600_000
_MAX_KEY = 256
_NONE = -(2**62)
#: order records kept per user for refunds and cancellations to refer to (newest by event time)
_MAX_ORDERS = 500
#: emails whose deliveries and opens are kept to tell machine opens apart (newest by event time)
_MAX_EMAILS = 16
_MAX_OPENS_PER_EMAIL = 32
#: a refund that names no amount: the whole order
WHOLE = -1


@dataclass(slots=True)
class ProfileState:
    """Everything the core profile needs for one user. Picklable, small."""

    uid: str
    seq: int = 0
    event_count: int = 0
    first_seen: int = _NONE
    last_seen: int = _NONE
    purchase_count: int = 0
    revenue_cents: int = 0
    first_purchase: int = _NONE
    last_purchase: int = _NONE
    last_order_ts: int = _NONE
    # (event time, product id, signed quantity, unit price cents); only ops after last_order_ts
    cart_ops: list[tuple[int, str, int, int]] = field(default_factory=list)
    cart_info: dict[str, tuple[str, str]] = field(default_factory=dict)  # pid -> (name, category)
    cart_abandoned: bool = False
    # no live cart: cart_ops net to nothing (or less) and are kept only for late events that
    # may still fold into them, as if they had come first (see check_abandoned)
    cart_orphans: bool = False
    email: str = ""
    email_ts: int = _NONE
    email_opens: int = 0
    email_clicks: int = 0
    last_email_open: int = _NONE
    last_received: int = 0
    aliases: list[str] = field(default_factory=list)  # anonymous ids linked to this user (newest last)
    seen: SeenIds = field(default_factory=SeenIds)
    # -- snapshot version 2 (append only: older snapshots restore with the defaults) --------
    orders: dict[str, tuple[int, int]] = field(default_factory=dict)  # order id -> (event time, value cents)
    refunds: dict[str, dict[str, int]] = field(default_factory=dict)  # order id -> {refund key: cents or WHOLE}
    cancelled: dict[str, int] = field(default_factory=dict)  # order id -> event time of its cancellation
    frozen_refund: int = 0  # resolved amounts of order records let go (see _MAX_ORDERS)
    frozen_cancel: int = 0
    unsubscribed: int = _NONE  # earliest Unsubscribed event time
    consent: dict[str, tuple[int, bool]] = field(default_factory=dict)  # category -> (event time, granted)
    email_opens_machine: int = 0  # resolved machine opens (frozen); see machine_human_opens
    email_sent: dict[str, int] = field(default_factory=dict)  # email key -> delivery time
    email_open_log: dict[str, list[int]] = field(default_factory=dict)  # email key -> open times
    # -- snapshot version 3 ---------------------------------------------------------------
    traits: TraitMap = field(default_factory=dict)  # trait -> (event time, value or None: unset); operators.traits
    groups: dict[str, int] = field(default_factory=dict)  # group (account) id -> newest group call time

    def __getstate__(self) -> tuple[Any, ...]:
        """The pickled state: :func:`operators.snapshot.pack` ed (snapshot version 9: no field
        names, fields at their defaults left out)."""
        return _pack_ProfileState(self)

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout: fields it lacks get their defaults
        (snapshot version 1 had none of the version-2 fields)."""
        restore(self, state)

    # -- folding -------------------------------------------------------------------
    def apply(self, ev: Event, dedupe: DedupeConfig, abandon_ms: int = 3_600_000, max_traits: int = 100) -> bool:
        """Fold ``ev`` in; ``False`` (and no change) when it is a duplicate.

        >>> from operators.events import parse_event, Limits
        >>> st = ProfileState("u1")
        >>> e = parse_event({"type": "track", "event": "Order Completed", "userId": "u1",
        ...     "messageId": "m1", "receivedAt": "2024-01-01T00:00:00Z",
        ...     "properties": {"total": 10.1}}, Limits())
        >>> st.apply(e, DedupeConfig()), st.apply(e, DedupeConfig())
        (True, False)
        >>> st.purchase_count, st.revenue_cents, st.seq
        (1, 1010, 1)
        """
        ts = ev.ts
        if not self.seen.first_sight(dedupe, ev.message_id, ts):
            return False
        if ev.order_id is not None and ev.type == "track" and self._on_record(ev):
            return False
        self.seq += 1
        self.event_count += 1
        if self.first_seen == _NONE or ts < self.first_seen:
            self.first_seen = ts
        if ts > self.last_seen:
            self.last_seen = ts
        if ev.received_at > self.last_received:
            self.last_received = ev.received_at
        if ev.email is not None and ts >= self.email_ts:
            self.email = ev.email
            self.email_ts = ts
        anon = ev.previous_id if ev.type == "alias" else ev.anonymous_id
        if anon is not None and anon != self.uid and anon not in self.aliases:
            self.add_alias(anon)
        if ev.consent:
            for cat, granted in ev.consent:
                cur = self.consent.get(cat)
                if cur is None or ts > cur[0] or (ts == cur[0] and not granted):
                    self.consent[cat] = (ts, granted)
        if ev.user_traits is not None:
            fold_traits(self.traits, ts, ev.user_traits, max_traits)
        if ev.type != "track":
            if ev.group_id is not None and ts > self.groups.get(ev.group_id, _NONE):
                self.groups[ev.group_id] = ts
                _bound_groups(self.groups)
            return True
        name = ev.name
        if name in ORDER_EVENTS:
            if ev.order_id is not None:
                old = self.orders.get(ev.order_id)
                # the same order id twice (a resent order): one record, its larger value
                self.orders[ev.order_id] = (max(ts, old[0]) if old else ts, max(ev.value_cents, old[1]) if old else ev.value_cents)
                if len(self.orders) > _MAX_ORDERS:
                    self._let_go_oldest_order()
            self.purchase_count += 1
            self.revenue_cents += ev.value_cents
            if self.first_purchase == _NONE or ts < self.first_purchase:
                self.first_purchase = ts
            if ts > self.last_purchase:
                self.last_purchase = ts
            if ts > self.last_order_ts:
                self.last_order_ts = ts
                self._prune_cart()
        elif name in _CART_NAMES:
            if ts > self.last_order_ts:
                # products the cart does not hold (removed as much as or more than added)
                # wait for late events only within the window, whether or not other
                # products are in the cart
                kept = _recent_ops(self.cart_ops, ts - _ORPHAN_KEEP_MS, held=True)
                if kept is not self.cart_ops:
                    self._set_cart_ops(kept)
                sign = 1 if name == CART_ADD else -1
                for p in ev.products:
                    self.cart_ops.append((ts, p.product_id, sign * p.quantity, p.price_cents))
                    if p.name or p.category:
                        self.cart_info[p.product_id] = (p.name, p.category)
                if len(self.cart_ops) > _MAX_CART_OPS:
                    self.cart_ops = _compact(self.cart_ops)
                self.cart_abandoned = False
                self.cart_orphans = False
        elif name == ORDER_REFUNDED:
            oid = ev.order_id or ""
            rkey = _refund_key(ev)
            recs = self.refunds.setdefault(oid, {})
            recs.setdefault(rkey, WHOLE if ev.refund_cents is None else ev.refund_cents)
        elif name == ORDER_CANCELLED:
            if ev.order_id is not None:
                self.cancelled[ev.order_id] = min(ts, self.cancelled.get(ev.order_id, ts))
        elif name == UNSUBSCRIBED:
            if self.unsubscribed == _NONE or ts < self.unsubscribed:
                self.unsubscribed = ts
        elif name == EMAIL_DELIVERED:
            ekey = email_key(ev)
            if ekey is not None:
                self.email_sent[ekey] = min(ts, self.email_sent.get(ekey, ts))
                self._bound_emails()
        elif name == EMAIL_OPENED:
            key = email_key(ev)
            if marked_machine_open(ev):
                self.email_opens_machine += 1
            elif key is None:
                self._human_open(ts)
            else:
                log = self.email_open_log.setdefault(key, [])
                log.append(ts)
                if len(log) > _MAX_OPENS_PER_EMAIL:  # resolve the oldest now (bounded state)
                    log.sort()
                    self._freeze_opens(key, [log.pop(0)])
                self._bound_emails()
        elif name == EMAIL_LINK_CLICKED:
            self.email_clicks += 1
        return True

    def _on_record(self, ev: Event) -> bool:
        """Whether an order event is one already folded in, whatever its ``messageId`` and
        however long ago (a re-imported history, a redelivery outside the dedupe window): the
        same order at the same event time and value, the same refund (``refund_id``, else
        ``messageId``) of the same order, the same cancellation time of the same order."""
        oid = ev.order_id
        assert oid is not None
        if ev.name in ORDER_EVENTS:
            return self.orders.get(oid) == (ev.ts, ev.value_cents)
        if ev.name == ORDER_REFUNDED:
            return _refund_key(ev) in self.refunds.get(oid, {})
        if ev.name == ORDER_CANCELLED:
            return self.cancelled.get(oid) == ev.ts
        return False

    def _human_open(self, ts: int) -> None:
        self.email_opens += 1
        if ts > self.last_email_open:
            self.last_email_open = ts

    def _is_machine(self, key: str, ts: int) -> bool:
        sent = self.email_sent.get(key)
        return sent is not None and 0 <= ts - sent < MACHINE_OPEN_MS

    def _freeze_opens(self, key: str, opens: list[int]) -> None:
        for t in opens:
            if self._is_machine(key, t):
                self.email_opens_machine += 1
            else:
                self._human_open(t)

    def _bound_emails(self) -> None:
        """Keep the newest :data:`_MAX_EMAILS` emails; freeze what an older one's opens resolve to."""
        keys = self.email_sent.keys() | self.email_open_log.keys()
        while len(keys) > _MAX_EMAILS:
            def newest(k: str) -> tuple[int, str]:
                return (max([self.email_sent.get(k, _NONE), *self.email_open_log.get(k, ())]), k)

            old = min(keys, key=newest)
            self._freeze_opens(old, self.email_open_log.pop(old, []))
            self.email_sent.pop(old, None)
            keys = self.email_sent.keys() | self.email_open_log.keys()

    def opens(self) -> tuple[int, int, int]:
        """(human opens, machine opens, newest human open time) with the kept emails resolved."""
        human, machine, last = self.email_opens, self.email_opens_machine, self.last_email_open
        for key, log in self.email_open_log.items():
            for t in log:
                if self._is_machine(key, t):
                    machine += 1
                else:
                    human += 1
                    last = max(last, t)
        return human, machine, last

    def _let_go_oldest_order(self) -> None:
        """Drop the oldest order record, freezing what its refunds and cancellation resolved to."""
        oid = min(self.orders, key=lambda k: (self.orders[k][0], k))
        r, c = self._resolve(oid)
        self.frozen_refund += r
        self.frozen_cancel += c
        del self.orders[oid]
        self.refunds.pop(oid, None)
        self.cancelled.pop(oid, None)

    def _resolve(self, oid: str) -> tuple[int, int]:
        """(refunded, cancelled) cents of order ``oid`` from its records (module docstring)."""
        recs = self.refunds.get(oid, {})
        explicit = sum(v for v in recs.values() if v != WHOLE)
        order = self.orders.get(oid) if oid else None
        if order is None:
            return explicit, 0
        value = order[1]
        refunded = value if WHOLE in recs.values() else min(value, explicit)
        return refunded, (value - refunded) if oid in self.cancelled else 0

    def refunded_cancelled(self) -> tuple[int, int]:
        """(refund_total, cancelled_total) in cents."""
        r, c = self.frozen_refund, self.frozen_cancel
        for oid in self.refunds.keys() | self.cancelled.keys():
            dr, dc = self._resolve(oid)
            r += dr
            c += dc
        return r, c

    def net_revenue_cents(self) -> int:
        """``revenue_net`` in cents: gross revenue less refunds and cancellations."""
        r, c = self.refunded_cancelled()
        return self.revenue_cents - r - c

    def add_alias(self, anonymous_id: str) -> None:
        """Remember an anonymous id of this user (at most 20, newest kept)."""
        if anonymous_id in self.aliases:
            return
        self.aliases.append(anonymous_id)
        if len(self.aliases) > 20:
            del self.aliases[0]

    def _prune_cart(self) -> None:
        t = self.last_order_ts
        self._set_cart_ops([op for op in self.cart_ops if op[0] > t])
        if not self.cart_ops:
            self.cart_abandoned = False
        if self.cart_orphans and self.cart():
            # a late order took the removals that had emptied the cart: what is left after
            # it is a live cart again, with a deadline (else it could never be abandoned)
            self.cart_orphans = False

    def _set_cart_ops(self, ops: list[tuple[int, str, int, int]]) -> None:
        """Replace the cart operations, keeping product info only for products they mention."""
        self.cart_ops = ops
        live = {op[1] for op in ops}
        self.cart_info = {k: v for k, v in self.cart_info.items() if k in live}

    def last_cart_ts(self) -> int:
        """Event time of the newest cart operation after the last order (or ``_NONE``)."""
        return max((op[0] for op in self.cart_ops), default=_NONE)

    def abandon_deadline(self, abandon_ms: int) -> int | None:
        """Event time at which the live cart counts as abandoned, if it can be."""
        if self.cart_abandoned or self.cart_orphans or not self.cart_ops:
            return None
        return self.last_cart_ts() + abandon_ms

    def check_abandoned(self, clock: int, abandon_ms: int) -> dict[str, Any] | None:
        """Mark the cart abandoned if ``clock`` passed its deadline; return the trigger once."""
        deadline = self.abandon_deadline(abandon_ms)
        if deadline is None or clock < deadline:
            return None
        cart = self.cart()
        if not cart:
            # they net to nothing: no cart, no deadline. The operations are kept a while (all
            # of them, not only removals of products the cart does not hold): a late add may
            # still cancel a removal, a late add of an older price must not become the price,
            # a late order may still split them, exactly as if it had come first.
            self._set_cart_ops(_recent_ops(self.cart_ops, clock - _ORPHAN_KEEP_MS))
            self.cart_orphans = bool(self.cart_ops)
            return None
        self.cart_abandoned = True
        return {
            "name": CART_ABANDONED,
            "id": f"cart-abandoned:{self.uid}:{deadline}",
            "ts": iso(deadline),
            "properties": {
                "cart_value": format_cents(sum(q * c for q, c in cart.values())),
                "products": self.cart_lines(),
            },
        }

    def merge(self, other: ProfileState, dedupe: DedupeConfig, max_traits: int = 100) -> None:
        """Fold another user's state in (identity merge): the result does not depend on
        which side is which, except ``uid``; ``seq`` advances by one (one input item)."""
        self.seq += 1
        self.event_count += other.event_count
        for a in ("first_seen", "first_purchase"):
            o = getattr(other, a)
            if o != _NONE and (getattr(self, a) == _NONE or o < getattr(self, a)):
                setattr(self, a, o)
        for a in ("last_seen", "last_purchase", "last_email_open", "last_received"):
            setattr(self, a, max(getattr(self, a), getattr(other, a)))
        self.purchase_count += other.purchase_count
        self.revenue_cents += other.revenue_cents
        self.email_opens += other.email_opens
        self.email_clicks += other.email_clicks
        if other.email and other.email_ts >= self.email_ts:
            self.email, self.email_ts = other.email, other.email_ts
        for a in [other.uid, *other.aliases]:
            if a != self.uid:
                self.add_alias(a)
        self.cart_ops = sorted(self.cart_ops + other.cart_ops)
        self.cart_info = {**other.cart_info, **self.cart_info}
        self.last_order_ts = max(self.last_order_ts, other.last_order_ts)
        self.cart_abandoned = self.cart_abandoned and other.cart_abandoned
        self.cart_orphans = False  # re-decided at the next deadline
        self._prune_cart()
        if len(self.cart_ops) > _MAX_CART_OPS:
            self.cart_ops = _compact(self.cart_ops)
        self.seen.merge(dedupe, other.seen)
        for oid, (t, v) in other.orders.items():
            mine = self.orders.get(oid)
            self.orders[oid] = (max(t, mine[0]), max(v, mine[1])) if mine else (t, v)
        for oid, recs in other.refunds.items():
            into = self.refunds.setdefault(oid, {})
            for k, v in recs.items():
                into.setdefault(k, v)
        for oid, t in other.cancelled.items():
            self.cancelled[oid] = min(t, self.cancelled.get(oid, t))
        self.frozen_refund += other.frozen_refund
        self.frozen_cancel += other.frozen_cancel
        while len(self.orders) > _MAX_ORDERS:
            self._let_go_oldest_order()
        if other.unsubscribed != _NONE and (self.unsubscribed == _NONE or other.unsubscribed < self.unsubscribed):
            self.unsubscribed = other.unsubscribed
        for cat, (t, given) in other.consent.items():
            cur = self.consent.get(cat)
            if cur is None or t > cur[0] or (t == cur[0] and not given):
                self.consent[cat] = (t, given)
        self.email_opens_machine += other.email_opens_machine
        merge_into(self.traits, other.traits, max_traits)
        for g, t in other.groups.items():
            self.groups[g] = max(t, self.groups.get(g, t))
        _bound_groups(self.groups)
        for k, t in other.email_sent.items():
            self.email_sent[k] = min(t, self.email_sent.get(k, t))
        for k, log in other.email_open_log.items():
            self.email_open_log.setdefault(k, []).extend(log)
        self._bound_emails()

    # -- reading -------------------------------------------------------------------
    def cart(self) -> dict[str, tuple[int, int]]:
        """Live cart: product id -> (quantity, unit price cents), net of removals.

        The price is the one of the newest add of that product.
        """
        qty: dict[str, int] = {}
        price: dict[str, tuple[int, int]] = {}
        for ts, pid, dq, cents in self.cart_ops:
            qty[pid] = qty.get(pid, 0) + dq
            if dq > 0 and (pid not in price or ts >= price[pid][0]):
                price[pid] = (ts, cents)
        return {pid: (q, price.get(pid, (0, 0))[1]) for pid, q in sorted(qty.items()) if q > 0}

    def cart_lines(self) -> list[dict[str, Any]]:
        """The live cart as line items (for templates and ESP triggers)."""
        out = []
        for pid, (q, cents) in self.cart().items():
            name, cat = self.cart_info.get(pid, ("", ""))
            out.append({"product_id": pid, "name": name, "category": cat, "price": format_cents(cents), "quantity": q})
        return out


def _refund_key(ev: Event) -> str:
    """What one refund is counted once by: its ``refund_id``, else its ``messageId``."""
    key = ev.properties.get("refund_id")
    return str(key)[:_MAX_KEY] if isinstance(key, str | int) and not isinstance(key, bool) and str(key) else "m:" + ev.message_id


#: group (account) ids kept per user (newest by event time)
_MAX_GROUPS = 50


def _bound_groups(groups: dict[str, int]) -> None:
    if len(groups) > _MAX_GROUPS:
        for g in sorted(groups, key=lambda g: (groups[g], g))[: len(groups) - _MAX_GROUPS]:
            del groups[g]


def _recent_ops(ops: list[tuple[int, str, int, int]], since: int, held: bool = False) -> list[tuple[int, str, int, int]]:
    """The operations of products whose newest operation is at or after ``since`` (and, if
    ``held``, of products in the cart, whatever their age): whole products go, so the net
    quantity of a product kept is unchanged.

    >>> ops = [(5, "a", -1, 100), (1, "b", 1, 50), (7, "b", -1, 50), (1, "c", -1, 9), (2, "d", 1, 9)]
    >>> _recent_ops(ops, since=3)
    [(5, 'a', -1, 100), (1, 'b', 1, 50), (7, 'b', -1, 50)]
    >>> _recent_ops(ops, since=3, held=True)
    [(5, 'a', -1, 100), (1, 'b', 1, 50), (7, 'b', -1, 50), (2, 'd', 1, 9)]
    """
    newest: dict[str, int] = {}
    net: dict[str, int] = {}
    for ts, pid, dq, _ in ops:
        if ts > newest.get(pid, _NONE):
            newest[pid] = ts
        net[pid] = net.get(pid, 0) + dq
    if all(t >= since for t in newest.values()):
        return ops  # the same list: nothing to drop
    return [op for op in ops if newest[op[1]] >= since or (held and net[op[1]] > 0)]


def _compact(ops: list[tuple[int, str, int, int]]) -> list[tuple[int, str, int, int]]:
    """Fold the older half of the cart operations into one net entry per product.

    Net quantities (and so the cart) are unchanged; only the per-operation times
    of the folded half are lost, which matters only if an order older than them
    arrives later, out of order.

    >>> ops = [(1, "a", 5, 100)] + [(2 + i, "b", (-1) ** i, 50) for i in range(9)]
    >>> folded = _compact(ops)
    >>> len(folded) < len(ops), sum(q for _, p, q, _ in folded if p == "a"), sum(q for _, p, q, _ in folded if p == "b")
    (True, 5, 1)
    """
    ops = sorted(ops)
    half = len(ops) // 2
    net: dict[str, list[int]] = {}  # pid -> [newest ts, net qty, newest add price]
    for ts, pid, dq, cents in ops[:half]:
        cur = net.setdefault(pid, [ts, 0, cents])
        cur[0] = max(cur[0], ts)
        cur[1] += dq
        if dq > 0:
            cur[2] = cents
    folded = [(ts, pid, q, cents) for pid, (ts, q, cents) in net.items() if q != 0]
    return sorted(folded + ops[half:])


def _t(ms: int) -> str:
    return "" if ms == _NONE else iso(ms)


def to_fields(st: ProfileState) -> dict[str, str]:
    """Render the profile hash fields (all strings), except ``version`` and ``updated_at``.

    >>> sorted(to_fields(ProfileState("u9")).items())[2:6]
    [('cart', '[]'), ('cart_abandoned', '0'), ('cart_items', '0'), ('cart_value', '0.00')]
    """
    cart = st.cart()
    refunded, cancelled = st.refunded_cancelled()
    human_opens, machine_opens, last_open = st.opens()
    return {
        "user_id": st.uid,
        "email": st.email,
        "event_count": str(st.event_count),
        "first_seen_at": _t(st.first_seen),
        "last_seen_at": _t(st.last_seen),
        "purchase_count": str(st.purchase_count),
        "revenue_total": format_cents(st.revenue_cents),
        "refund_total": format_cents(refunded),
        "cancelled_total": format_cents(cancelled),
        "revenue_net": format_cents(st.revenue_cents - refunded - cancelled),
        "first_purchase_at": _t(st.first_purchase),
        "last_purchase_at": _t(st.last_purchase),
        "cart_value": format_cents(sum(q * c for q, c in cart.values())),
        "cart_items": str(sum(q for q, _ in cart.values())),
        "cart": orjson.dumps(st.cart_lines()).decode() if cart else "[]",
        "cart_abandoned": "1" if st.cart_abandoned and cart else "0",
        "email_opens": str(human_opens),
        "email_clicks": str(st.email_clicks),
        "last_email_open_at": _t(last_open),
        "email_opens_machine": str(machine_opens),
        "email_unsubscribed": "0" if st.unsubscribed == _NONE else "1",
        "unsubscribed_at": _t(st.unsubscribed),
        "consent": orjson.dumps({c: g for c, (_, g) in sorted(st.consent.items())}).decode() if st.consent else "{}",
        "anonymous_ids": orjson.dumps(sorted(st.aliases)).decode() if st.aliases else "[]",
        "traits": render_traits(st.traits),
        "groups": orjson.dumps(sorted(st.groups)).decode() if st.groups else "[]",
    }


# >>> generated snapshot packers (python -m liveprofile.devtools.packers): do not edit
_PACK_DEFAULTS_ProfileState = pack_defaults(ProfileState)


def _pack_ProfileState(o: ProfileState) -> tuple[Any, ...]:
    """``operators.snapshot.pack(o)``, field by field (generated)."""
    D = _PACK_DEFAULTS_ProfileState
    m = 0
    out: list[Any] = [0]
    v: Any
    d: Any
    v = o.uid
    d = D[0]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1
        out.append(v)
    v = o.seq
    d = D[1]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2
        out.append(v)
    v = o.event_count
    d = D[2]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4
        out.append(v)
    v = o.first_seen
    d = D[3]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8
        out.append(v)
    v = o.last_seen
    d = D[4]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16
        out.append(v)
    v = o.purchase_count
    d = D[5]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 32
        out.append(v)
    v = o.revenue_cents
    d = D[6]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 64
        out.append(v)
    v = o.first_purchase
    d = D[7]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 128
        out.append(v)
    v = o.last_purchase
    d = D[8]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 256
        out.append(v)
    v = o.last_order_ts
    d = D[9]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 512
        out.append(v)
    v = o.cart_ops
    d = D[10]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1024
        out.append(v)
    v = o.cart_info
    d = D[11]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2048
        out.append(v)
    v = o.cart_abandoned
    d = D[12]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4096
        out.append(v)
    v = o.cart_orphans
    d = D[13]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8192
        out.append(v)
    v = o.email
    d = D[14]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16384
        out.append(v)
    v = o.email_ts
    d = D[15]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 32768
        out.append(v)
    v = o.email_opens
    d = D[16]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 65536
        out.append(v)
    v = o.email_clicks
    d = D[17]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 131072
        out.append(v)
    v = o.last_email_open
    d = D[18]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 262144
        out.append(v)
    v = o.last_received
    d = D[19]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 524288
        out.append(v)
    v = o.aliases
    d = D[20]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1048576
        out.append(v)
    v = o.seen
    d = D[21]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2097152
        out.append(v)
    v = o.orders
    d = D[22]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4194304
        out.append(v)
    v = o.refunds
    d = D[23]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8388608
        out.append(v)
    v = o.cancelled
    d = D[24]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16777216
        out.append(v)
    v = o.frozen_refund
    d = D[25]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 33554432
        out.append(v)
    v = o.frozen_cancel
    d = D[26]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 67108864
        out.append(v)
    v = o.unsubscribed
    d = D[27]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 134217728
        out.append(v)
    v = o.consent
    d = D[28]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 268435456
        out.append(v)
    v = o.email_opens_machine
    d = D[29]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 536870912
        out.append(v)
    v = o.email_sent
    d = D[30]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1073741824
        out.append(v)
    v = o.email_open_log
    d = D[31]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2147483648
        out.append(v)
    v = o.traits
    d = D[32]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4294967296
        out.append(v)
    v = o.groups
    d = D[33]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8589934592
        out.append(v)
    out[0] = m
    return tuple(out)
# <<< generated snapshot packers
