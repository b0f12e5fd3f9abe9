"""Sessions and behavioural (bot) features of one user, in event time.

Contract
--------
``Behaviour.observe(cfg, event)`` folds an event into the user's session
tracker and feature accumulators and returns the sessions it closed (an event
more than ``gap`` after the current session's last event closes it).
``Behaviour.close_if_idle(cfg, clock)`` closes the current session when the
stream clock has passed its end + gap (the live-traffic timer path). Closed
sessions carry the features the purchase-propensity model learns from,
counted *before the session's first order* so that the label does not leak
into them, and the label ``converted``.

``features()`` is the vector the anomaly model scores (see
:data:`FEATURE_LIMITS` for its fixed ranges); ``rule_suspect()`` is the
fixed-limit bot rule that also keeps bot activity out of the interest state.
Sessions are tracked without Bytewax's ``SessionWindower`` (it leaks per-key
state, guide §12.2).

Machine opens: an ``Email Opened`` made by a mail client's proxy rather than the person —
Apple Mail Privacy Protection fetches every message's images through Apple's proxy when the
message arrives, opened or not. It is one if the ESP marked it or its user agent is Apple's
proxy agent (:func:`marked_machine_open`), or if it came less than :data:`MACHINE_OPEN_MS`
after the delivery of the same email (``email_id``, else ``campaign_id``). Machine opens never
enter the email features (``fast_email_ratio``, ``email_latency_log``); an open whose delivery
has not arrived is not counted there either, so the features do not depend on arrival order.
:mod:`operators.profile` counts them apart from human opens.

Abuse a shop's own data holds (card testing, identity bombs) is seen in per-user, not
per-session, features over bounded logs of event time: the newest :data:`ABUSE_LOG_MAX` orders
(time, value) and the newest :data:`ABUSE_LOG_MAX` distinct emails the user identified with
(crc32 of the lower-cased address, first time seen). ``order_burst`` is the number of kept orders
within :data:`ORDER_BURST_MS` (1 h) of the newest, ``small_order_burst`` those of them under
:data:`SMALL_ORDER_CENTS`; ``identities_day`` / ``identities_30d`` are the distinct emails first
seen within a day / 30 days of the newest. They depend on the set of events only, not on their
arrival order (as long as a user's logs do not overflow). A user is scored again when one of them
grows past 1 (a second order within the hour, a second email), and the fixed-limit rule flags
:data:`ORDER_BURST_SUSPECT` / :data:`SMALL_ORDER_BURST_SUSPECT` orders or
:data:`IDENTITIES_DAY_SUSPECT` / :data:`IDENTITIES_30D_SUSPECT` emails.
"""

from __future__ import annotations

import bisect
import math
import re
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from operators.events import Event
from operators.names import (
    CHECKOUT_STARTED,
    EMAIL_DELIVERED,
    EMAIL_LINK_CLICKED,
    EMAIL_OPENED,
    ORDER_COMPLETED,
    PRODUCT_ADDED,
    PRODUCT_REMOVED,
    PRODUCT_VIEWED,
)
from operators.snapshot import is_packed, pack_defaults, restore

__all__ = [
    "SessionConfig",
    "Session",
    "ClosedSession",
    "Behaviour",
    "FEATURE_LIMITS",
    "PROPENSITY_FEATURES",
    "MACHINE_OPEN_MS",
    "is_proxy_user_agent",
    "marked_machine_open",
    "email_key",
    "ABUSE_LOG_MAX",
    "ORDER_BURST_MS",
    "SMALL_ORDER_CENTS",
]

#: an open sooner than this after its email's delivery is a machine open (a person cannot)
MACHINE_OPEN_MS = 5_000
#: Apple's image proxy (Mail Privacy Protection) announces itself as a bare WebKit agent: no
#: browser, version or device token after ``(KHTML, like Gecko)``, or just ``Mozilla/5.0``
_APPLE_PROXY_UA = re.compile(r"^Mozilla/5\.0(?: \(Macintosh; Intel Mac OS X 10_15_7\) AppleWebKit/605\.1\.15 \(KHTML, like Gecko\))?$")


def is_proxy_user_agent(ua: object) -> bool:
    """Whether ``ua`` is the user agent Apple's Mail Privacy Protection proxy fetches with.

    >>> is_proxy_user_agent("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)")
    True
    >>> is_proxy_user_agent("Mozilla/5.0"), is_proxy_user_agent(None)
    (True, False)
    >>> is_proxy_user_agent("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15")
    False
    """
    return isinstance(ua, str) and _APPLE_PROXY_UA.match(ua.strip()) is not None


def marked_machine_open(ev: Event) -> bool:
    """Whether the event itself says it is a proxy's open: the ESP marked it
    (``properties.machine_open``, SendGrid's ``sg_machine_open``) or its ``context.userAgent`` is
    Apple's proxy agent."""
    p = ev.properties
    return p.get("machine_open") is True or p.get("sg_machine_open") is True or is_proxy_user_agent(ev.context.get("userAgent"))


def email_key(ev: Event) -> str | None:
    """The email an email event is about: ``properties.email_id``, else ``campaign_id``."""
    eid = ev.properties.get("email_id") or ev.properties.get("campaign_id")
    return str(eid)[:256] if isinstance(eid, str | int) and not isinstance(eid, bool) else None

#: Fixed ranges of the anomaly features (HalfSpaceTrees ``limits``); values are clipped.
FEATURE_LIMITS: dict[str, tuple[float, float]] = {
    "velocity": (0.0, 120.0),  # events per minute in the current session
    "regularity": (0.0, 1.0),  # 1 - coefficient of variation of inter-arrival gaps
    "breadth_products": (0.0, 300.0),  # distinct products in the session
    "breadth_categories": (0.0, 12.0),  # distinct categories in the session
    "view_cart_ratio": (0.0, 1.0),  # adds / views in the session
    "order_z": (-5.0, 5.0),  # last order value vs the user's own history (z-score)
    "fast_email_ratio": (0.0, 1.0),  # email opens/clicks < 5 s after delivery, share
    "email_latency_log": (0.0, 12.0),  # log1p(mean seconds delivery -> open/click)
    "order_burst": (0.0, 32.0),  # orders within an hour of the user's newest order
    "small_order_burst": (0.0, 32.0),  # of them, orders under SMALL_ORDER_CENTS (card testing)
    "identities_day": (0.0, 32.0),  # distinct emails identified with within a day of the newest
    "identities_30d": (0.0, 32.0),  # ... within 30 days (identity bombs, slow or fast)
}
#: orders and distinct emails kept per user for the abuse features (bounded memory)
ABUSE_LOG_MAX = 32
#: the order-burst window (event time)
ORDER_BURST_MS = 3_600_000
#: an order below this value (cents) is small: card testers charge 1-3 USD
SMALL_ORDER_CENTS = 500
_DAY_MS = 86_400_000
_IDENTITY_WINDOW_MS = 30 * _DAY_MS
#: the fixed-limit rule's abuse limits (no shopper orders 12 times an hour or keeps 6 emails)
ORDER_BURST_SUSPECT = 12
SMALL_ORDER_BURST_SUSPECT = 8
IDENTITIES_DAY_SUSPECT = 4
IDENTITIES_30D_SUSPECT = 6
#: Inputs of the purchase-propensity model.
PROPENSITY_FEATURES = (
    "views", "adds", "removes", "checkouts", "categories", "duration_min", "events",
    "email_clicks", "past_orders", "cart_ops",
)  # fmt: skip
_MAX_SET = 300
#: Session intervals kept explicitly (for order-insensitive counting) within this much
#: event time of the newest event; older ones are only counted.
SPAN_KEEP_MS = 3 * 86_400_000
SPAN_KEEP_MAX = 12
_NONE = -(2**62)


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Inactivity gap (ms) that ends a session."""

    gap_ms: int = 30 * 60_000

    def __post_init__(self) -> None:
        if self.gap_ms <= 0:
            msg = "session gap must be positive"
            raise ValueError(msg)


@dataclass(slots=True)
class Session:
    """The open session: bounds and counters (pre-order counters for propensity)."""

    start: int
    last: int
    events: int = 0
    views: int = 0
    adds: int = 0
    removes: int = 0
    checkouts: int = 0
    email_clicks: int = 0
    converted: bool = False
    pre_order: dict[str, float] | None = None
    products: set[str] = field(default_factory=set)
    categories: set[str] = field(default_factory=set)
    gap_n: int = 0
    gap_sum: float = 0.0
    gap_sq: float = 0.0
    prev_ts: int = _NONE

    def __getstate__(self) -> tuple[Any, ...]:
        """The pickled state: :func:`operators.snapshot.pack` ed (snapshot version 9), ``pre_order``
        as the tuple of its values when its keys are :meth:`counters`' (in that order)."""
        st = _pack_Session(self)
        po = self.pre_order
        if po is not None and tuple(po) == _COUNTER_KEYS:
            st = tuple(tuple(v.values()) if v is po else v for v in st)
        return st

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout."""
        if is_packed(state):  # a tuple in it is pre_order's values (no other field holds one)
            state = tuple(dict(zip(_COUNTER_KEYS, v, strict=True)) if i and type(v) is tuple else v for i, v in enumerate(state))
        restore(self, state)

    def counters(self, past_orders: int, cart_ops: int) -> dict[str, float]:
        return {
            "views": float(self.views),
            "adds": float(self.adds),
            "removes": float(self.removes),
            "checkouts": float(self.checkouts),
            "categories": float(len(self.categories)),
            "duration_min": (self.last - self.start) / 60_000,
            "events": float(self.events),
            "email_clicks": float(self.email_clicks),
            "past_orders": float(past_orders),
            "cart_ops": float(cart_ops),
        }


#: the keys of :meth:`Session.counters`, in its order
_COUNTER_KEYS = ("views", "adds", "removes", "checkouts", "categories", "duration_min", "events", "email_clicks", "past_orders", "cart_ops")


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class ClosedSession:
    """A finished session: when, its propensity features, and whether it converted."""

    start: int
    end: int
    features: dict[str, float]
    converted: bool


@dataclass(slots=True)
class Behaviour:
    """Session tracker plus bot-feature accumulators of one user."""

    session: Session | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)  # recent sessions (start, end), sorted
    older_sessions: int = 0  # sessions that ended more than SPAN_KEEP_MS before the newest event
    past_orders: int = 0
    order_n: int = 0
    order_mean: float = 0.0
    order_m2: float = 0.0
    order_z: float = 0.0
    # newest 8 deliveries as flat (crc32(email id), delivery time) pairs: an array of 16
    # int64s costs ~190 bytes where the dict it replaced cost ~840 once full
    delivered: array = field(default_factory=lambda: array("q"))
    email_n: int = 0
    email_fast: int = 0
    email_latency_s: float = 0.0
    last_session: tuple[float, ...] | None = None  # features of the last closed session (_SESSION_KEYS order)
    scored_events: int = 0  # session events at the last scoring
    scored_email: int = 0  # email interactions at the last scoring
    # abuse logs (None until the first order / email: most users never need both) as flat
    # (time, cents) and (crc32(email), first seen) int64 pairs, the newest ABUSE_LOG_MAX of each
    orders_log: array | None = None
    emails_log: array | None = None
    order_burst: int = 0
    small_order_burst: int = 0
    identities_day: int = 0
    identities_30d: int = 0
    abuse_n: int = 0  # growths of the abuse features past 1
    scored_abuse: int = 0  # abuse_n at the last scoring

    def __getstate__(self) -> tuple[Any, ...]:
        """The pickled state: :func:`operators.snapshot.pack` ed (snapshot version 9) without the
        abuse counts (derived from the logs again when restored), the int64 arrays as their bytes
        (~35 B smaller each than a pickled array)."""
        return tuple(v.tobytes() if type(v) is array else v for v in _pack_Behaviour(self))

    def __setstate__(self, state: Any) -> None:
        """Restore a pickle of this or an earlier layout: fields it lacks get their defaults
        (snapshot version 2 had none of the abuse fields), the abuse counts are recounted."""
        restore(self, state)
        for k in _ARRAYS:  # packed: the arrays' bytes; older layouts: logs pickled as bytes
            v = getattr(self, k)
            if type(v) is bytes:
                object.__setattr__(self, k, array("q", v))
        n = self.abuse_n
        self._order_counts()
        self._identity_counts()
        self.abuse_n = n

    @property
    def sessions(self) -> int:
        """Number of sessions: event-time clusters separated by more than the gap.

        Kept as intervals, merged on insert, so the count does not depend on the
        order events arrive in (within :data:`SPAN_KEEP_MS` of the newest event).

        >>> b, cfg = Behaviour(), SessionConfig(gap_ms=10)
        >>> for t in (0, 100, 50, 5, 95, 60):
        ...     b._span(cfg, t)
        >>> b.sessions, b.spans
        (3, [(0, 5), (50, 60), (95, 100)])
        """
        return self.older_sessions + len(self.spans)

    def _span(self, cfg: SessionConfig, ts: int) -> None:
        spans = self.spans
        gap = cfg.gap_ms
        i = bisect.bisect_left(spans, (ts, ts))
        lo, hi = ts, ts
        # merge with every span within the gap on either side
        j = i
        while j > 0 and spans[j - 1][1] + gap >= ts:
            j -= 1
        k = i
        while k < len(spans) and spans[k][0] - gap <= ts:
            k += 1
        for a, b in spans[j:k]:
            lo, hi = min(lo, a), max(hi, b)
        spans[j:k] = [(lo, hi)]
        newest = spans[-1][1]
        while len(spans) > 1 and (spans[0][1] < newest - SPAN_KEEP_MS or len(spans) > SPAN_KEEP_MAX):
            spans.pop(0)
            self.older_sessions += 1

    def _span_range(self, cfg: SessionConfig, a: int, b: int) -> None:
        """Insert a whole interval (identity merge): spans within the gap of it fuse,
        exactly as if its events had arrived one by one.

        >>> x, cfg = Behaviour(), SessionConfig(gap_ms=10)
        >>> x._span(cfg, 0); x._span_range(cfg, 8, 30); x._span_range(cfg, 100, 120)
        >>> x.spans
        [(0, 30), (100, 120)]
        """
        spans = sorted([*self.spans, (a, b)])
        out: list[tuple[int, int]] = []
        for lo, hi in spans:
            if out and lo <= out[-1][1] + cfg.gap_ms:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        self.spans = out

    def observe(self, cfg: SessionConfig, ev: Event, cart_ops: int) -> list[ClosedSession]:
        """Fold ``ev`` in; return sessions it closed (0 or 1)."""
        closed: list[ClosedSession] = []
        ts = ev.ts
        self._span(cfg, ts)
        if ev.email:
            self._identity(ev.email, ts)
        if ev.type == "track" and ev.name == ORDER_COMPLETED:
            self._order_log(ts, ev.value_cents)  # late orders too: the counts are order-insensitive
        s = self.session
        if s is not None and ts > s.last + cfg.gap_ms:
            closed.append(self._close(cart_ops))
            s = None
        if s is None:
            s = self.session = Session(start=ts, last=ts)
            self.scored_events = 0
        elif ts < s.start - cfg.gap_ms:
            # a late event from an earlier, already closed session: totals only
            self._email(ev)
            return closed
        s.start = min(s.start, ts)
        if ts > s.last:
            s.last = ts
        if s.prev_ts != _NONE and ts >= s.prev_ts:
            g = (ts - s.prev_ts) / 1000.0
            s.gap_n += 1
            s.gap_sum += g
            s.gap_sq += g * g
        s.prev_ts = max(s.prev_ts, ts)
        s.events += 1
        if ev.category and len(s.categories) < _MAX_SET:
            s.categories.add(ev.category)
        if ev.type == "track":
            name = ev.name
            if name == PRODUCT_VIEWED:
                s.views += 1
            elif name == PRODUCT_ADDED:
                s.adds += 1
            elif name == PRODUCT_REMOVED:
                s.removes += 1
            elif name == CHECKOUT_STARTED:
                s.checkouts += 1
            elif name == EMAIL_LINK_CLICKED:
                s.email_clicks += 1
            elif name == ORDER_COMPLETED:
                if not s.converted:
                    s.pre_order = s.counters(self.past_orders, cart_ops)
                s.converted = True
                self._order(ev.value_cents)
            for p in ev.products:
                if p.product_id and len(s.products) < _MAX_SET:
                    s.products.add(p.product_id)
            self._email(ev)
        return closed

    def close_if_idle(self, cfg: SessionConfig, clock: int, cart_ops: int) -> list[ClosedSession]:
        """Close the open session if the stream clock is past its end + gap."""
        s = self.session
        if s is not None and clock > s.last + cfg.gap_ms:
            return [self._close(cart_ops)]
        return []

    def deadline(self, cfg: SessionConfig) -> int | None:
        """Event time at which the open session ends if nothing else happens."""
        return None if self.session is None else self.session.last + cfg.gap_ms

    def _close(self, cart_ops: int) -> ClosedSession:
        s = self.session
        assert s is not None
        feats = s.pre_order if s.pre_order is not None else s.counters(self.past_orders, cart_ops)
        out = ClosedSession(s.start, s.last, feats, s.converted)
        f = _session_features(s)
        self.last_session = tuple(f[k] for k in _SESSION_KEYS)
        if s.converted:
            self.past_orders += 1
        self.session = None
        return out

    def _order(self, cents: int) -> None:
        x = math.log1p(cents / 100)
        if self.order_n >= 2:
            sd = math.sqrt(self.order_m2 / (self.order_n - 1))
            self.order_z = (x - self.order_mean) / sd if sd > 1e-9 else 0.0
        self.order_n += 1
        d = x - self.order_mean
        self.order_mean += d / self.order_n
        self.order_m2 += d * (x - self.order_mean)

    def _order_log(self, ts: int, cents: int) -> None:
        log = self.orders_log
        if log is None:
            log = self.orders_log = array("q")
        _push(log, ts, cents, time_at=0)
        self._order_counts()

    def _order_counts(self) -> None:
        log = self.orders_log
        if not log:
            return
        newest = max(log[0::2])
        burst = small = 0
        for i in range(0, len(log), 2):
            if log[i] > newest - ORDER_BURST_MS:
                burst += 1
                small += log[i + 1] < SMALL_ORDER_CENTS
        if burst > max(self.order_burst, 1):
            self.abuse_n += 1
        self.order_burst, self.small_order_burst = burst, small

    def _identity(self, email: str, ts: int) -> None:
        self._identity_key(zlib.crc32(email.strip().lower().encode()), ts)

    def _identity_key(self, key: int, ts: int) -> None:
        log = self.emails_log
        if log is None:
            log = self.emails_log = array("q")
        for i in range(0, len(log), 2):
            if log[i] == key:
                if ts < log[i + 1]:
                    log[i + 1] = ts  # first seen earlier (a late event)
                    self._identity_counts()
                return
        _push(log, key, ts, time_at=1)
        self._identity_counts()

    def _identity_counts(self) -> None:
        log = self.emails_log
        if not log:
            return
        firsts = log[1::2]
        newest = max(firsts)
        day = sum(1 for t in firsts if t > newest - _DAY_MS)
        month = sum(1 for t in firsts if t > newest - _IDENTITY_WINDOW_MS)
        if month > max(self.identities_30d, 1) or day > max(self.identities_day, 1):
            self.abuse_n += 1
        self.identities_day, self.identities_30d = day, month

    def _email(self, ev: Event) -> None:
        if ev.type != "track":
            return
        name = ev.name
        if name not in (EMAIL_DELIVERED, EMAIL_OPENED, EMAIL_LINK_CLICKED):
            return
        eid = ev.properties.get("email_id") or ev.properties.get("campaign_id")
        if not isinstance(eid, str | int):
            return
        key = zlib.crc32(str(eid).encode())  # 32-bit key: a small int, not a 40-byte id string
        if name == EMAIL_DELIVERED:
            _put(self.delivered, key, ev.ts)
            if len(self.delivered) > 16:
                j = min(range(1, len(self.delivered), 2), key=self.delivered.__getitem__)  # the oldest delivery
                del self.delivered[j - 1 : j + 1]
            return
        sent = _get(self.delivered, key)
        if sent is None or ev.ts < sent:
            return
        if name == EMAIL_OPENED and (ev.ts - sent < MACHINE_OPEN_MS or marked_machine_open(ev)):
            return  # a machine open: not the person's engagement, not a bot signal either
        lat = (ev.ts - sent) / 1000.0
        self.email_n += 1
        if lat < 5.0:
            self.email_fast += 1
        self.email_latency_s += (lat - self.email_latency_s) / min(self.email_n, 20)

    def merge(self, other: Behaviour, cfg: SessionConfig) -> None:
        """Fold another user's behaviour in (identity merge): histories add up."""
        for a, b in other.spans:
            self._span_range(cfg, a, b)
        self.older_sessions += other.older_sessions
        self.past_orders += other.past_orders
        self.email_n += other.email_n
        self.email_fast += other.email_fast
        od = other.delivered
        for i in range(0, len(od), 2):
            if _get(self.delivered, od[i]) is None:
                self.delivered.extend(od[i : i + 2])
        if self.session is None and other.session is not None:
            self.session = other.session
        if other.orders_log:
            for i in range(0, len(other.orders_log), 2):
                self._order_log(other.orders_log[i], other.orders_log[i + 1])
        if other.emails_log:
            ol = other.emails_log
            for i in range(0, len(ol), 2):
                self._identity_key(ol[i], ol[i + 1])

    def due_for_scoring(self) -> bool:
        """Whether the anomaly model should score this user now.

        Scoring every event would cost one HalfSpaceTrees pass per event; the
        features are session aggregates that move slowly, so a user is scored
        when the session's event count reaches 8, 32, 128 and every 128 after
        that, and after every new email interaction (the
        link-scanner signal); the models step also sees every closed session.
        Sessions of fewer than 8 events say too little to score on their own.

        >>> b = Behaviour()
        >>> b.session = Session(0, 0)
        >>> due = []
        >>> for n in range(1, 700):
        ...     b.session.events = n
        ...     if b.due_for_scoring():
        ...         b.mark_scored()
        ...         due.append(n)
        >>> due
        [8, 32, 128, 256, 384, 512, 640]
        """
        if self.email_n != self.scored_email or self.abuse_n != self.scored_abuse:
            return True
        s = self.session
        if s is None:
            return False
        n = s.events
        last = self.scored_events
        return n >= 4 * last or n - last >= 128 if last else n >= 8

    def mark_scored(self) -> None:
        self.scored_events = self.session.events if self.session is not None else 0
        self.scored_email = self.email_n
        self.scored_abuse = self.abuse_n

    def _session_part(self) -> dict[str, float] | None:
        """Session features of the open session once it has 8 events, else of the last
        closed session (so a user scored after a session ends is judged by that session)."""
        s = self.session
        if s is None or (s.events < 8 and self.last_session is not None):
            return None if self.last_session is None else dict(zip(_SESSION_KEYS, self.last_session, strict=True))
        return _session_features(s)

    def features(self) -> dict[str, float]:
        """The anomaly feature vector (clipped to :data:`FEATURE_LIMITS`)."""
        x = dict(self._session_part() or _EMPTY_SESSION)
        del x["events"]
        x["order_z"] = self.order_z
        x["fast_email_ratio"] = self.email_fast / self.email_n if self.email_n else 0.0
        x["email_latency_log"] = math.log1p(self.email_latency_s) if self.email_n else FEATURE_LIMITS["email_latency_log"][1]
        x["order_burst"] = float(self.order_burst)
        x["small_order_burst"] = float(self.small_order_burst)
        x["identities_day"] = float(self.identities_day)
        x["identities_30d"] = float(self.identities_30d)
        return {k: min(max(v, FEATURE_LIMITS[k][0]), FEATURE_LIMITS[k][1]) for k, v in x.items()}

    def rule_suspect(self) -> bool:
        """Fixed-limit bot rule (deterministic; gates interest updates).

        Fires on machine-like sessions (30+ events and very fast, very regular or
        very broad), on email engagement almost always seconds after delivery, on order
        bursts (card testing) and on many identities (identity bombs).
        """
        if self.email_n >= 8 and self.email_fast / self.email_n > 0.8:
            return True
        if (
            self.order_burst >= ORDER_BURST_SUSPECT
            or self.small_order_burst >= SMALL_ORDER_BURST_SUSPECT
            or self.identities_day >= IDENTITIES_DAY_SUSPECT
            or self.identities_30d >= IDENTITIES_30D_SUSPECT
        ):
            return True
        s = self.session
        if s is not None and s.events >= 8:
            if s.events < 30:  # cheap exit on the hot path: short sessions never fire
                return False
            x = _session_features(s)
        elif self.last_session is not None and self.last_session[5] >= 30:
            x = dict(zip(_SESSION_KEYS, self.last_session, strict=True))
        else:
            return False
        return x["velocity"] > 40 or x["breadth_products"] >= 80 or x["regularity"] > 0.9


#: abuse fields a pickle leaves out: recounted from the logs
_DERIVED = frozenset({"order_burst", "small_order_burst", "identities_day", "identities_30d"})
#: abuse fields a pickle leaves out while at their defaults
_ABUSE_FIELDS = frozenset({"orders_log", "emails_log", "abuse_n", "scored_abuse"})
#: the int64 array fields (pickled as their bytes)
_ARRAYS = ("delivered", "orders_log", "emails_log")


def _get(pairs: array, key: int) -> int | None:
    """The value of ``key`` in a flat (key, value) pair array, or None.

    >>> _get(array("q", [7, 100, 9, 200]), 9), _get(array("q"), 9)
    (200, None)
    """
    for i in range(0, len(pairs), 2):
        if pairs[i] == key:
            return pairs[i + 1]
    return None


def _push(pairs: array, a: int, b: int, time_at: int) -> None:
    """Append the pair ``(a, b)``; past :data:`ABUSE_LOG_MAX` pairs drop the one whose time
    (element ``time_at`` of a pair) is the oldest.

    >>> log = array("q")
    >>> for t in range(ABUSE_LOG_MAX + 2):
    ...     _push(log, 1000 - t, t, time_at=1)
    >>> len(log) // 2, min(log[1::2])
    (32, 2)
    """
    pairs.append(a)
    pairs.append(b)
    if len(pairs) > 2 * ABUSE_LOG_MAX:
        j = min(range(time_at, len(pairs), 2), key=pairs.__getitem__) - time_at
        del pairs[j : j + 2]


def _put(pairs: array, key: int, value: int) -> None:
    """Set ``key`` to ``value`` in a flat pair array (in place; a new key goes last)."""
    for i in range(0, len(pairs), 2):
        if pairs[i] == key:
            pairs[i + 1] = value
            return
    pairs.append(key)
    pairs.append(value)


_SESSION_KEYS = ("velocity", "regularity", "breadth_products", "breadth_categories", "view_cart_ratio", "events")
_EMPTY_SESSION = {"velocity": 0.0, "regularity": 0.0, "breadth_products": 0.0, "breadth_categories": 0.0, "view_cart_ratio": 0.0, "events": 0.0}


def _session_features(s: Session) -> dict[str, float]:
    minutes = max((s.last - s.start) / 60_000, 1.0)
    regularity = 0.0
    if s.gap_n >= 3:
        mean = s.gap_sum / s.gap_n
        var = max(s.gap_sq / s.gap_n - mean * mean, 0.0)
        cv = math.sqrt(var) / mean if mean > 0 else 1.0
        regularity = max(0.0, 1.0 - cv)
    return {
        "velocity": s.events / minutes,
        "regularity": regularity,
        "breadth_products": float(len(s.products)),
        "breadth_categories": float(len(s.categories)),
        "view_cart_ratio": s.adds / s.views if s.views else 0.0,
        "events": float(s.events),
    }


# >>> generated snapshot packers (python -m liveprofile.devtools.packers): do not edit
_PACK_DEFAULTS_Session = pack_defaults(Session)


def _pack_Session(o: Session) -> tuple[Any, ...]:
    """``operators.snapshot.pack(o)``, field by field (generated)."""
    D = _PACK_DEFAULTS_Session
    m = 0
    out: list[Any] = [0]
    v: Any
    d: Any
    v = o.start
    d = D[0]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1
        out.append(v)
    v = o.last
    d = D[1]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2
        out.append(v)
    v = o.events
    d = D[2]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4
        out.append(v)
    v = o.views
    d = D[3]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8
        out.append(v)
    v = o.adds
    d = D[4]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16
        out.append(v)
    v = o.removes
    d = D[5]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 32
        out.append(v)
    v = o.checkouts
    d = D[6]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 64
        out.append(v)
    v = o.email_clicks
    d = D[7]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 128
        out.append(v)
    v = o.converted
    d = D[8]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 256
        out.append(v)
    v = o.pre_order
    d = D[9]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 512
        out.append(v)
    v = o.products
    d = D[10]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1024
        out.append(v)
    v = o.categories
    d = D[11]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2048
        out.append(v)
    v = o.gap_n
    d = D[12]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4096
        out.append(v)
    v = o.gap_sum
    d = D[13]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8192
        out.append(v)
    v = o.gap_sq
    d = D[14]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16384
        out.append(v)
    v = o.prev_ts
    d = D[15]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 32768
        out.append(v)
    out[0] = m
    return tuple(out)


_PACK_DEFAULTS_Behaviour = pack_defaults(Behaviour)


def _pack_Behaviour(o: Behaviour) -> tuple[Any, ...]:
    """``operators.snapshot.pack(o, _DERIVED)``, field by field (generated)."""
    D = _PACK_DEFAULTS_Behaviour
    m = 0
    out: list[Any] = [0]
    v: Any
    d: Any
    v = o.session
    d = D[0]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1
        out.append(v)
    v = o.spans
    d = D[1]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2
        out.append(v)
    v = o.older_sessions
    d = D[2]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4
        out.append(v)
    v = o.past_orders
    d = D[3]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8
        out.append(v)
    v = o.order_n
    d = D[4]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16
        out.append(v)
    v = o.order_mean
    d = D[5]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 32
        out.append(v)
    v = o.order_m2
    d = D[6]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 64
        out.append(v)
    v = o.order_z
    d = D[7]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 128
        out.append(v)
    v = o.delivered
    d = D[8]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 256
        out.append(v)
    v = o.email_n
    d = D[9]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 512
        out.append(v)
    v = o.email_fast
    d = D[10]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 1024
        out.append(v)
    v = o.email_latency_s
    d = D[11]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2048
        out.append(v)
    v = o.last_session
    d = D[12]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4096
        out.append(v)
    v = o.scored_events
    d = D[13]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 8192
        out.append(v)
    v = o.scored_email
    d = D[14]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 16384
        out.append(v)
    v = o.orders_log
    d = D[15]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 32768
        out.append(v)
    v = o.emails_log
    d = D[16]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 65536
        out.append(v)
    v = o.abuse_n
    d = D[21]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 2097152
        out.append(v)
    v = o.scored_abuse
    d = D[22]
    if not (v is d or (type(v) is type(d) and v == d)):
        m |= 4194304
        out.append(v)
    out[0] = m
    return tuple(out)
# <<< generated snapshot packers
