"""Parse, validate and normalize one Segment-spec event.

Contract
--------
``parse_event(raw, limits)`` takes the JSON bytes (or an already decoded dict)
of one event as the collector stamped it (with ``receivedAt``) and returns
either an :class:`Event` (valid, normalized: UTC epoch-ms times with clock skew
corrected, money in integer cents, categories normalized, products extracted)
or a :class:`Rejected` carrying a stable reason code, a readable message and
the raw event. It never raises on bad input and never reads the clock.

Reason codes (stable, used in dead letters and metrics): see :data:`REASONS`.

Two implementations, one answer: JSON bytes go first through a typed fast path (msgspec
decodes them in C into a struct of the top-level fields; the common shapes are checked on it)
that only ever returns an Event; anything else, every bad event included, goes to
:func:`parse_event_reference` (orjson and the dict checks), which writes every dead letter.
``tests/operators/test_events_fast.py`` holds them equal, type-strictly, on every input it
generates; ``bench/parse.py`` times both on the same buffer entries.

Trust (SPEC 2, 5): every event in the buffer came in with a server write key
(``LIVEPROFILE_WRITE_KEYS``, or a signed way in: pixel, webhooks, imports) or a
browser write key (``LIVEPROFILE_BROWSER_WRITE_KEYS``, public). The envelope check
(:func:`liveprofile.buffer.ingest.prepare`) removes any :data:`TRUST_FIELD` a client sent
and, for a browser key, stamps ``"_trust": "browser"``; ``Event.trusted`` is ``False``
whenever the field is present. Untrusted events may not report email engagement
(:data:`ENGAGEMENT_EVENTS`: rejected here as ``untrusted_engagement``, so the collector
answers a single-event call 400 and a batch keeps its other events) and may not merge two
known users (decided by the per-user step, which knows whether ``previousId`` is a known
user: ``untrusted_merge``).
"""

from __future__ import annotations

import hashlib
import re
import sys
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final

import msgspec
import orjson
from mypy_extensions import mypyc_attr

from operators.money import MoneyError, to_cents
from operators.names import ORDER_CANCELLED, ORDER_COMPLETED, ORDER_REFUNDED
from operators.snapshot import set_slots_state, slots_state
from operators.timeutil import (
    TimestampError,
    _parse_ts_str,
    iso,
    iso_as_given,
    parse_ts,
    read_ts_str,
)
from operators.traits import RESERVED, TraitError, parse_traits
from operators.wire import TRUST_FIELD as _WIRE_TRUST_FIELD
from operators.wire import Wire, decode_wire

__all__ = [
    "Event",
    "Limits",
    "Product",
    "Rejected",
    "REASONS",
    "Reason",
    "EVENT_TYPES",
    "MONEY_FIELDS",
    "TRUST_FIELD",
    "BROWSER_TRUST",
    "ENGAGEMENT_EVENTS",
    "parse_event",
    "parse_event_reference",
    "parse_consent",
    "validate_email",
    "norm_category",
    "identity_of",
]

EVENT_TYPES: Final = frozenset({"track", "identify", "page", "screen", "group", "alias"})

#: Properties whose values are money (numeric, non-negative).
MONEY_FIELDS = ("revenue", "total", "price", "value", "subtotal", "tax", "shipping", "discount")

#: the reserved top-level field carrying a browser key's trust level (see the module doc)
TRUST_FIELD = _WIRE_TRUST_FIELD
BROWSER_TRUST = "browser"
#: email engagement events only server keys and the signed pixel may report
ENGAGEMENT_EVENTS: Final = frozenset({"Email Delivered", "Email Opened", "Email Link Clicked"})


class Reason(StrEnum):
    """Why an event was rejected: the dead letter's ``reason`` (part of the dead-letter contract).
    Each member's :attr:`meaning` is what :data:`REASONS` maps its code to."""

    MALFORMED_JSON = "malformed_json"
    NOT_OBJECT = "not_object"
    EVENT_TOO_LARGE = "event_too_large"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_IDENTITY = "missing_identity"
    INVALID_IDENTITY = "invalid_identity"
    INVALID_MESSAGE_ID = "invalid_message_id"
    MISSING_EVENT = "missing_event"
    MISSING_PREVIOUS_ID = "missing_previous_id"
    INVALID_FIELD_TYPE = "invalid_field_type"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    INVALID_MONEY = "invalid_money"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_EMAIL = "invalid_email"
    MISSING_ORDER = "missing_order"
    INVALID_TEXT = "invalid_text"
    INVALID_NUMBER = "invalid_number"
    UNTRUSTED_ENGAGEMENT = "untrusted_engagement"
    UNTRUSTED_MERGE = "untrusted_merge"
    MERGE_CYCLE = "merge_cycle"
    INVALID_ROW = "invalid_row"
    ORDER_ROWS_NOT_ADJACENT = "order_rows_not_adjacent"
    WEBHOOK_UNMAPPED = "webhook_unmapped"
    WEBHOOK_MAPPING_FAILED = "webhook_mapping_failed"
    TOO_MANY_TRAITS = "too_many_traits"
    TRAIT_TOO_LARGE = "trait_too_large"

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS: dict[str, str] = {
    "malformed_json": "the event is not valid JSON",
    "not_object": "the event is not a JSON object",
    "event_too_large": "the event is larger than the per-event limit",
    "unknown_type": "type is missing or not one of track/identify/page/screen/group/alias",
    "missing_identity": "neither userId nor anonymousId is present",
    "invalid_identity": "userId/anonymousId/previousId is not a short string",
    "invalid_message_id": "messageId is not a short string",
    "missing_event": "a track call without an event name",
    "missing_previous_id": "an alias call without previousId",
    "invalid_field_type": "properties/traits/context/products has the wrong JSON type",
    "invalid_timestamp": "a timestamp field cannot be parsed",
    "timestamp_too_old": "event time is before LIVEPROFILE_TIMESTAMP_MIN",
    "timestamp_in_future": "event time is beyond receipt + LIVEPROFILE_MAX_FUTURE_SKEW",
    "invalid_money": "a money field is not a finite non-negative number",
    "invalid_quantity": "a quantity is not a positive integer",
    "invalid_email": "identify traits.email is not a syntactically valid address",
    "missing_order": "an Order Cancelled without order_id, or an Order Refunded with neither order_id nor an amount",
    "invalid_text": "a string (or key) is not valid Unicode text: a lone surrogate such as JavaScript's slice() leaves of an emoji, or bytes that are not UTF-8",
    "invalid_number": "a number that cannot be stored: NaN, Infinity, or outside the range of a double (1e400)",
    "untrusted_engagement": "Email Delivered/Opened/Link Clicked sent with a browser write key (only server keys and the signed pixel report engagement)",
    "untrusted_merge": "an alias of a known user (previousId) sent with a browser write key: merging two known users needs a server key",
    "merge_cycle": "an alias whose userId is already merged into previousId (the merge would make a cycle)",
    "invalid_row": "a row of an imported file that its mapping cannot read (a bad date, number or yes/no value, an empty order key)",
    "order_rows_not_adjacent": "an imported order's row that comes after other orders' rows (an order's rows must be adjacent)",
    "webhook_unmapped": "a webhook delivery whose topic its source's mapping does not know (or names no topic)",
    "webhook_mapping_failed": "a webhook payload missing a value its mapping requires, or of the wrong type for an expression",
    "too_many_traits": "an event with more traits (identify traits and context.traits, or a group's traits) than LIVEPROFILE_MAX_TRAITS",
    "trait_too_large": "a trait value whose JSON is longer than LIVEPROFILE_MAX_TRAIT_BYTES",
}

#: Reason code -> what it means (:class:`Reason`'s codes).
REASONS: dict[str, str] = {r.value: r.meaning for r in Reason}

_MAX_ID_LEN: Final = 256
_MAX_CONSENT_CATEGORIES = 64
#: events whose ``order_id`` is kept (refunds and cancellations refer to an order by it)
_ORDER_ID_EVENTS: Final = frozenset({ORDER_COMPLETED, ORDER_REFUNDED, ORDER_CANCELLED})
_MAX_QTY: Final = 1_000_000
# Practical address syntax (what ESPs accept): no spaces, one @, dotted domain.
_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
_WS_RE = re.compile(r"\s+")


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Limits:
    """Validation bounds.

    ``timestamp_min_ms`` is an absolute lower bound (``LIVEPROFILE_TIMESTAMP_MIN``);
    when ``None`` the bound is ``receivedAt - max_age_ms``. ``max_future_skew_ms``
    is ``LIVEPROFILE_MAX_FUTURE_SKEW``. ``max_traits``, ``max_trait_bytes`` and ``traits_deny``
    (lower-case names) bound the traits (:mod:`operators.traits`).
    """

    timestamp_min_ms: int | None = None
    max_age_ms: int = 400 * 86_400_000
    max_future_skew_ms: int = 3_600_000
    max_event_bytes: int = 32 * 1024
    max_traits: int = 100
    max_trait_bytes: int = 2048
    traits_deny: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.max_future_skew_ms < 0 or self.max_age_ms <= 0 or self.max_event_bytes <= 0 or self.max_traits <= 0 or self.max_trait_bytes <= 0:
            msg = "Limits must be positive"
            raise ValueError(msg)


@dataclass(slots=True)
class Product:
    """A product line as it appears in product and order events."""

    product_id: str
    name: str
    category: str
    price_cents: int
    quantity: int

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """Pickled as a plain slots class pickles (and did before compiling): ``(None, slots)``."""
        return slots_state(self)

    def __setstate__(self, state: Any) -> None:
        set_slots_state(self, state)


@dataclass(slots=True)
class Event:
    """A valid, normalized event. Times are epoch ms UTC.

    Not frozen only because frozen dataclasses are slow to build on this hot
    path; treat instances as immutable.
    """

    message_id: str
    type: str
    name: str
    uid: str
    user_id: str | None
    anonymous_id: str | None
    ts: int
    received_at: int
    properties: dict[str, Any] = field(repr=False)
    traits: dict[str, Any] = field(repr=False)
    context: dict[str, Any] = field(repr=False)
    previous_id: str | None = None
    email: str | None = None
    category: str = ""
    products: tuple[Product, ...] = ()
    value_cents: int = 0
    original_timestamp: str | None = None
    #: ``properties.order_id`` of an order, refund or cancellation (``None``: none given)
    order_id: str | None = None
    #: the amount an ``Order Refunded`` names: ``total``, else ``revenue``, else the products'
    #: sum; ``None`` when it names none (then it refunds the whole order)
    refund_cents: int | None = None
    #: consent categories this event states (Segment's ``context.consent.categoryPreferences``,
    #: RudderStack's ``context.consentManagement``): ``((category, granted), ...)``, sorted
    consent: tuple[tuple[str, bool], ...] = ()
    trusted: bool = True
    #: the user's traits this event states (``identify`` traits over ``context.traits``), normalized
    #: by :func:`operators.traits.parse_traits`; ``None`` unsets a trait; ``None`` here: none stated
    user_traits: dict[str, Any] | None = field(default=None, repr=False)
    #: a ``group`` call's ``groupId`` and account traits (normalized like the user's)
    group_id: str | None = None
    group_traits: dict[str, Any] | None = field(default=None, repr=False)

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """Pickled as a plain slots class pickles (and did before compiling): ``(None, slots)``."""
        return slots_state(self)

    def __setstate__(self, state: Any) -> None:
        set_slots_state(self, state)


def _new_event(
    message_id: str, type_: str, name: str, uid: str, user_id: str | None, anonymous_id: str | None,
    ts: int, received_at: int, properties: dict[str, Any], traits: dict[str, Any], context: dict[str, Any],
    previous_id: str | None, email: str | None, category: str, products: tuple[Product, ...],
    value_cents: int, original_timestamp: str | None, order_id: str | None, refund_cents: int | None,
    consent: tuple[tuple[str, bool], ...], trusted: bool, user_traits: dict[str, Any] | None,
    group_id: str | None, group_traits: dict[str, Any] | None,
) -> Event:
    """``Event(...)`` with every field given, in :class:`Event`'s field order (the fast path's
    constructor): the same object, built without the dataclass's ``__init__``.

    That ``__init__`` is generated Python code even in the compiled build (it sets the 24 fields
    one by one through their descriptors); here the instance comes from ``Event.__new__`` (which
    runs no ``__init__``: what unpickling runs too) and compiled code writes the fields straight
    into it. Event keeps the generated ``__init__`` (a written one would make mypyc's
    ``__new__`` call it, and unpickling, which calls ``Event.__new__(Event)``, would fail).
    ``tests/operators/test_events_fast.py`` holds this to ``Event(...)`` field by field.
    """
    ev = _EVENT_NEW(Event)
    ev.message_id = message_id
    ev.type = type_
    ev.name = name
    ev.uid = uid
    ev.user_id = user_id
    ev.anonymous_id = anonymous_id
    ev.ts = ts
    ev.received_at = received_at
    ev.properties = properties
    ev.traits = traits
    ev.context = context
    ev.previous_id = previous_id
    ev.email = email
    ev.category = category
    ev.products = products
    ev.value_cents = value_cents
    ev.original_timestamp = original_timestamp
    ev.order_id = order_id
    ev.refund_cents = refund_cents
    ev.consent = consent
    ev.trusted = trusted
    ev.user_traits = user_traits
    ev.group_id = group_id
    ev.group_traits = group_traits
    return ev


#: ``Event.__new__`` (looked up once: compiled, ``Event.__new__`` is a method lookup per call)
_EVENT_NEW: Final = Event.__new__


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Rejected:
    """An event that failed validation: goes to the dead letters."""

    reason: str
    message: str
    raw: bytes
    received_at: int | None = None
    message_id: str | None = None


class _Invalid(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def validate_email(value: object) -> str:
    """Return the address trimmed, or raise ``ValueError``.

    >>> validate_email(" Ann@Example.com ")
    'Ann@Example.com'
    >>> validate_email("not an email")
    Traceback (most recent call last):
    ...
    ValueError: not a valid email address: 'not an email'
    """
    if isinstance(value, str):
        s = value.strip()
        if len(s) <= 254 and _EMAIL_RE.match(s):
            return s
    msg = f"not a valid email address: {str(value)[:80]!r}"
    raise ValueError(msg)


def norm_category(value: object) -> str:
    """Normalize a category: top level of a path, lowercased, single-spaced.

    Results are cached (a shop has few categories) and interned, so every
    profile holding a category shares one string object.

    >>> norm_category("  Men's  Shoes > Running"), norm_category("Books/Fiction"), norm_category(None)
    ("men's shoes", 'books', '')
    """
    if not isinstance(value, str):
        return ""
    if len(value) > 256:  # do not fill the cache with junk
        return _normalize_category(value)
    return _cached_category(value)


def _normalize_category(value: str) -> str:
    s = value
    for sep in (">", "/", "|"):
        if sep in s:
            s = s.split(sep, 1)[0]
    return sys.intern(_WS_RE.sub(" ", s).strip().lower()[:64])


_cached_category = lru_cache(maxsize=4096)(_normalize_category)


def _ident(value: object, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Invalid(Reason.INVALID_IDENTITY, f"{what} must be a string")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise _Invalid(Reason.INVALID_IDENTITY, f"{what} must be a string, got {type(value).__name__}")
    s = value.strip()
    if len(s) > _MAX_ID_LEN:
        raise _Invalid(Reason.INVALID_IDENTITY, f"{what} is longer than {_MAX_ID_LEN} characters")
    return s or None


def identity_of(ev: object) -> tuple[str | None, str | None, str | None]:
    """``(userId, anonymousId, previousId)`` of a decoded event as :func:`parse_event` normalizes
    them (trimmed, integers as text), ``None`` for one that is absent or invalid (not a string, too
    long, not valid Unicode text: no stored event can hold it); never raises. The one way erasure
    and suppression name an event's user (:mod:`liveprofile.admin.privacy`).

    >>> identity_of({"userId": " carol ", "anonymousId": 7, "previousId": True}), identity_of([1])
    (('carol', '7', None), (None, None, None))
    >>> identity_of({"userId": chr(0xD83D), "anonymousId": "a"})  # a lone surrogate
    (None, 'a', None)
    """
    if not isinstance(ev, dict):
        return None, None, None
    out: list[str | None] = []
    for k in ("userId", "anonymousId", "previousId"):
        try:
            v = _ident(ev.get(k), k)
            if v is not None:
                v.encode("utf-8")
            out.append(v)
        except (_Invalid, UnicodeEncodeError):
            out.append(None)
    return out[0], out[1], out[2]


def _obj(ev: dict[str, Any], key: str) -> dict[str, Any]:
    v = ev.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _Invalid(Reason.INVALID_FIELD_TYPE, f"{key} must be an object, got {type(v).__name__}")
    return v


def _ts(ev: dict[str, Any], key: str) -> int | None:
    v = ev.get(key)
    if v is None:
        return None
    try:
        return parse_ts(v)
    except TimestampError as exc:
        raise _Invalid(Reason.INVALID_TIMESTAMP, f"{key}: {exc}") from None


def _cents(value: object, where: str) -> int:
    try:
        return to_cents(value)
    except MoneyError as exc:
        raise _Invalid(Reason.INVALID_MONEY, f"{where} {exc}") from None


def _qty(value: object, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= _MAX_QTY:
        raise _Invalid(Reason.INVALID_QUANTITY, f"{where} must be a positive integer, got {str(value)[:40]!r}")
    return value


def _product(p: dict[str, Any], where: str) -> Product:
    price = _cents(p["price"], f"{where}.price") if p.get("price") is not None else 0
    qty = _qty(p["quantity"], f"{where}.quantity") if p.get("quantity") is not None else 1
    pid = p.get("product_id", p.get("sku", p.get("id")))
    name = p.get("name")
    return Product(
        product_id=sys.intern(str(pid)[:_MAX_ID_LEN]) if pid is not None and not isinstance(pid, dict | list) else "",
        name=name[:200] if isinstance(name, str) else "",
        category=norm_category(p.get("category")),
        price_cents=price,
        quantity=qty,
    )


def _order_id(props: dict[str, Any], strict: bool) -> str | None:
    """``properties.order_id`` trimmed. Not a string or integer: ``None`` for an order (it still
    counts; nothing can refer to it), a dead letter for a refund or cancellation (``strict``),
    which means nothing without the order it names."""
    v = props.get("order_id")
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        if not strict:
            return None
        raise _Invalid(Reason.INVALID_FIELD_TYPE, f"properties.order_id must be a string, got {type(v).__name__}")
    s = v.strip()
    if len(s) > _MAX_ID_LEN:
        if not strict:
            return None
        raise _Invalid(Reason.INVALID_FIELD_TYPE, f"properties.order_id is longer than {_MAX_ID_LEN} characters")
    return s or None


def _consent_id(v: object, where: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v.strip() or len(v) > 128:
        raise _Invalid(Reason.INVALID_FIELD_TYPE, f"{where} must hold consent category names (short strings)")
    return v.strip()


def parse_consent(context: dict[str, Any]) -> tuple[tuple[str, bool], ...]:
    """The consent categories an event's ``context`` states, as sorted ``(category, granted)``.

    * Segment (Consent Management): ``context.consent.categoryPreferences`` = ``{category: bool}``.
    * RudderStack (JS/mobile SDKs v3): ``context.consentManagement`` = ``{"provider": ...,
      "allowedConsentIds": [...], "deniedConsentIds": [...], "resolutionStrategy": ...}``: each
      allowed id is granted, each denied id is not.

    A category both granted and denied in one event counts as denied. A shape that is not
    these raises ``_Invalid`` (``invalid_field_type``): consent is never guessed.

    >>> parse_consent({"consent": {"categoryPreferences": {"Marketing": True, "Analytics": False}}})
    (('Analytics', False), ('Marketing', True))
    >>> parse_consent({"consentManagement": {"provider": "oneTrust", "allowedConsentIds": ["C0001"],
    ...     "deniedConsentIds": ["C0004"]}})
    (('C0001', True), ('C0004', False))
    >>> parse_consent({"page": {}})
    ()
    """
    out: dict[str, bool] = {}
    seg = context.get("consent")
    if seg is not None:
        if not isinstance(seg, dict):
            raise _Invalid(Reason.INVALID_FIELD_TYPE, "context.consent must be an object")
        prefs = seg.get("categoryPreferences")
        if prefs is not None:
            if not isinstance(prefs, dict) or not all(isinstance(g, bool) for g in prefs.values()):
                raise _Invalid(Reason.INVALID_FIELD_TYPE, "context.consent.categoryPreferences must map categories to true/false")
            for k, g in prefs.items():
                c = _consent_id(k, "context.consent.categoryPreferences")
                out[c] = out.get(c, True) and g
    cm = context.get("consentManagement")
    if cm is not None:
        if not isinstance(cm, dict):
            raise _Invalid(Reason.INVALID_FIELD_TYPE, "context.consentManagement must be an object")
        for key, granted in (("allowedConsentIds", True), ("deniedConsentIds", False)):
            ids = cm.get(key)
            if ids is None:
                continue
            where = f"context.consentManagement.{key}"
            if not isinstance(ids, list):
                raise _Invalid(Reason.INVALID_FIELD_TYPE, f"{where} must be an array")
            for v in ids:
                c = _consent_id(v, where)
                out[c] = out.get(c, True) and granted
    if len(out) > _MAX_CONSENT_CATEGORIES:
        raise _Invalid(Reason.INVALID_FIELD_TYPE, f"more than {_MAX_CONSENT_CATEGORIES} consent categories")
    return tuple(sorted(out.items()))


def _derive_message_id(ev: dict[str, Any]) -> str:
    body = {k: v for k, v in ev.items() if k not in ("receivedAt", "sentAt", "writeKey", TRUST_FIELD)}
    try:
        text = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # orjson writes at most 255 levels of nesting
        raise _Invalid(Reason.INVALID_FIELD_TYPE, "the event is nested too deeply") from None
    return "lp-" + hashlib.blake2b(text, digest_size=16).hexdigest()


def _dump(ev: object) -> bytes:
    """The event as JSON for a dead letter, whatever it holds."""
    try:
        return orjson.dumps(ev, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):
        return repr(ev)[:4096].encode("utf-8", "replace")


def _redact(ev: dict[str, Any], deny: frozenset[str]) -> dict[str, Any]:
    """``ev`` without its deny-listed traits (``traits``, ``context.traits``), or ``ev`` itself
    when it holds none: a dead letter never stores what the deny list names."""

    def clean(t: object) -> object:
        if not isinstance(t, dict):
            return t
        kept = {k: v for k, v in t.items() if not (isinstance(k, str) and RESERVED.get(k, k).lower() in deny)}
        return t if len(kept) == len(t) else kept

    out = ev
    t = clean(ev.get("traits"))
    if t is not ev.get("traits"):
        out = {**out, "traits": t}
    ctx = ev.get("context")
    if isinstance(ctx, dict):
        ct = clean(ctx.get("traits"))
        if ct is not ctx.get("traits"):
            out = {**out, "context": {**ctx, "traits": ct}}
    return out


def _check(ev: dict[str, Any], limits: Limits, received_default: int | None) -> Event:
    etype = ev.get("type")
    if not isinstance(etype, str) or etype not in EVENT_TYPES:
        raise _Invalid(Reason.UNKNOWN_TYPE, f"type must be one of {sorted(EVENT_TYPES)}, got {str(etype)[:40]!r}")
    user_id = _ident(ev.get("userId"), "userId")
    anon_id = _ident(ev.get("anonymousId"), "anonymousId")
    if user_id is None and anon_id is None:
        raise _Invalid(Reason.MISSING_IDENTITY, "userId or anonymousId is required")
    mid = ev.get("messageId")
    if mid is None or mid == "":
        message_id = _derive_message_id(ev)
    elif isinstance(mid, str) and len(mid) <= _MAX_ID_LEN:
        message_id = mid
    elif isinstance(mid, int) and not isinstance(mid, bool):
        message_id = str(mid)
    else:
        raise _Invalid(Reason.INVALID_MESSAGE_ID, f"messageId must be a string of at most {_MAX_ID_LEN} characters")

    name = ""
    previous_id = None
    trusted = ev.get(TRUST_FIELD) is None
    if etype == "track":
        raw_name = ev.get("event")
        if not isinstance(raw_name, str) or not raw_name.strip():
            raise _Invalid(Reason.MISSING_EVENT, "track calls need a non-empty string `event`")
        name = raw_name.strip()[:_MAX_ID_LEN]
        if not trusted and name in ENGAGEMENT_EVENTS:
            raise _Invalid(Reason.UNTRUSTED_ENGAGEMENT, f"{name!r} from a browser write key: email engagement is reported by server keys and the signed pixel only")
    elif etype in ("page", "screen"):
        n = ev.get("name")
        name = n[:_MAX_ID_LEN] if isinstance(n, str) else ""
    elif etype == "alias":
        previous_id = _ident(ev.get("previousId"), "previousId")
        if previous_id is None:
            raise _Invalid(Reason.MISSING_PREVIOUS_ID, "alias calls need previousId")
        if user_id is None:
            raise _Invalid(Reason.MISSING_IDENTITY, "alias calls need userId")

    props = _obj(ev, "properties")
    traits = _obj(ev, "traits")
    context = _obj(ev, "context")

    received = _ts(ev, "receivedAt")
    if received is None:
        if received_default is None:
            raise _Invalid(Reason.INVALID_TIMESTAMP, "receivedAt is missing")
        received = received_default
    client_ts = _ts(ev, "timestamp")
    original = ev.get("originalTimestamp")
    if client_ts is None:
        client_ts = _ts(ev, "originalTimestamp")
    sent_at = _ts(ev, "sentAt")
    if client_ts is None:
        ts = received
    elif sent_at is not None:
        ts = received - (sent_at - client_ts)
        original = original if isinstance(original, str) else iso(client_ts)
    else:
        ts = client_ts
    lo = limits.timestamp_min_ms if limits.timestamp_min_ms is not None else received - limits.max_age_ms
    if ts < lo:
        raise _Invalid(Reason.TIMESTAMP_TOO_OLD, f"event time {iso(ts)} is before the oldest accepted {iso(lo)}")
    hi = received + limits.max_future_skew_ms
    if ts > hi:
        raise _Invalid(Reason.TIMESTAMP_IN_FUTURE, f"event time {iso(ts)} is after receipt + skew {iso(hi)}")

    user_traits = None
    ctx_traits = context.get("traits")
    if ctx_traits is not None and not isinstance(ctx_traits, dict):
        raise _Invalid(Reason.INVALID_FIELD_TYPE, "context.traits must be an object")

    email = None
    if etype == "identify":
        # Only identify calls set the profile email (SPEC §4): ``traits.email``, else
        # ``context.traits.email`` (RudderStack's SDKs send identify traits only there); an
        # email-ish property on another event (an ESP's bounce address, say) must not cost that event.
        raw_email = traits.get("email")
        if raw_email in (None, "") and ctx_traits:
            raw_email = ctx_traits.get("email")
        if raw_email not in (None, ""):
            try:
                email = validate_email(raw_email)
            except ValueError as exc:
                raise _Invalid(Reason.INVALID_EMAIL, str(exc)) from None
    own = traits if etype == "identify" else None
    group_id = None
    group_traits = None
    try:
        if own or ctx_traits:
            user_traits = parse_traits([ctx_traits or {}, own or {}], limits.max_traits, limits.max_trait_bytes, limits.traits_deny)
        if etype == "group":
            group_id = _ident(ev.get("groupId"), "groupId")
            if group_id is not None and traits:
                group_traits = parse_traits([traits], limits.max_traits, limits.max_trait_bytes, limits.traits_deny)
    except TraitError as exc:
        raise _Invalid(Reason(exc.reason), str(exc)) from None

    money: dict[str, int] = {}
    for key in MONEY_FIELDS:
        v = props.get(key)
        if v is not None:
            money[key] = _cents(v, f"properties.{key}")

    products: tuple[Product, ...] = ()
    value_cents = 0
    category = ""
    raw_products = props.get("products")
    if raw_products is not None:
        if not isinstance(raw_products, list):
            raise _Invalid(Reason.INVALID_FIELD_TYPE, "properties.products must be an array")
        if len(raw_products) > 1000:
            raise _Invalid(Reason.INVALID_FIELD_TYPE, "properties.products has more than 1000 items")
        plist = []
        for i, p in enumerate(raw_products):
            if not isinstance(p, dict):
                raise _Invalid(Reason.INVALID_FIELD_TYPE, f"properties.products[{i}] must be an object")
            plist.append(_product(p, f"properties.products[{i}]"))
        products = tuple(plist)
    elif etype == "track" and ("product_id" in props or "sku" in props or "price" in props):
        products = (_product(props, "properties"),)
    elif props.get("quantity") is not None:
        _qty(props["quantity"], "properties.quantity")

    if "revenue" in money:
        value_cents = money["revenue"]
    elif "total" in money:
        value_cents = money["total"]
    elif products:
        value_cents = sum(p.price_cents * p.quantity for p in products)
    elif "value" in money:
        value_cents = money["value"]

    order_id = _order_id(props, strict=name != ORDER_COMPLETED) if etype == "track" and name in _ORDER_ID_EVENTS else None
    refund_cents: int | None = None
    if name == ORDER_REFUNDED:
        # SPEC 1: the refund's amount is total, else revenue, else the products' sum (else the
        # whole order, decided by the profile, which knows the order)
        if "total" in money:
            refund_cents = money["total"]
        elif "revenue" in money:
            refund_cents = money["revenue"]
        elif products:
            refund_cents = sum(p.price_cents * p.quantity for p in products)
    if name in (ORDER_REFUNDED, ORDER_CANCELLED) and order_id is None and (refund_cents is None or name == ORDER_CANCELLED):
        raise _Invalid(Reason.MISSING_ORDER, f"{name} names no properties.order_id" + (" and no amount" if name == ORDER_REFUNDED else ""))

    if props.get("category") is not None:
        category = norm_category(props.get("category"))
    if not category and products:
        category = products[0].category

    return Event(
        message_id=message_id,
        type=etype,
        name=name,
        uid=user_id if user_id is not None else anon_id,  # type: ignore[arg-type]
        user_id=user_id,
        anonymous_id=anon_id,
        ts=ts,
        received_at=received,
        properties=props,
        traits=traits,
        context=context,
        previous_id=previous_id,
        email=email,
        category=category,
        products=products,
        value_cents=value_cents,
        original_timestamp=original if isinstance(original, str) else None,
        order_id=order_id,
        refund_cents=refund_cents,
        consent=parse_consent(context) if ("consent" in context or "consentManagement" in context) else (),
        trusted=trusted,
        user_traits=user_traits or None,
        group_id=group_id,
        group_traits=group_traits,
    )


def parse_event_reference(
    raw: bytes | str | dict[str, Any],
    limits: Limits,
    received_at: int | None = None,
) -> Event | Rejected:
    """:func:`parse_event` without its typed fast path: ``orjson.loads`` and the dict-based
    checks (``_check``) for every input. What :func:`parse_event` falls back to whenever its
    fast path does not produce an :class:`Event` (so every dead letter's reason and message
    come from here), and the reference the tests and ``bench/parse.py`` compare it with.

    Same arguments and results as :func:`parse_event` (its examples hold here too):

    >>> parse_event_reference(b'{"type":"track","userId":"u1"}', Limits(), received_at=0).reason
    <Reason.MISSING_EVENT: 'missing_event'>
    """
    if isinstance(raw, dict):
        ev: Any = raw
        raw_bytes: bytes | None = None
    else:
        raw_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        if len(raw_bytes) > limits.max_event_bytes:
            return Rejected(Reason.EVENT_TOO_LARGE, f"event is {len(raw_bytes)} bytes, the limit is {limits.max_event_bytes}", raw_bytes[: limits.max_event_bytes], received_at)
        try:
            ev = orjson.loads(raw_bytes)
        except orjson.JSONDecodeError as exc:
            return Rejected(Reason.MALFORMED_JSON, f"invalid JSON: {exc}", raw_bytes, received_at)
    if not isinstance(ev, dict):
        return Rejected(Reason.NOT_OBJECT, f"an event must be a JSON object, got {type(ev).__name__}", raw_bytes or _dump(ev), received_at)
    try:
        return _check(ev, limits, received_at)
    except _Invalid as exc:
        if limits.traits_deny:
            redacted = _redact(ev, limits.traits_deny)
            if redacted is not ev:
                ev, raw_bytes = redacted, None
        if raw_bytes is None:
            raw_bytes = _dump(ev)
        rec = ev.get("receivedAt")
        try:
            rec_ms = parse_ts(rec) if rec is not None else received_at
        except TimestampError:
            rec_ms = received_at
        mid = ev.get("messageId")
        return Rejected(exc.reason, exc.message, raw_bytes, rec_ms, mid if isinstance(mid, str) else None)
    except RecursionError:
        return Rejected(Reason.INVALID_FIELD_TYPE, "event nesting is too deep", raw_bytes or b"", received_at)


# -- the typed fast path ------------------------------------------------------------------------
# JSON bytes decode (msgspec, in C) straight into _Wire: the top-level fields _check reads, typed
# only as far as msgspec's rules are exactly today's (a JSON string is a str, an object is a dict,
# null is None); everything else is Any and checked as _check checks it. Unknown top-level fields
# are not skipped: msgspec skips an unknown field without the checks orjson applies to every value
# (``1e400`` there is malformed JSON to orjson, found by the property test), so the SDKs' other
# envelope fields are decoded as Any (checked like every value) and any other top-level field
# takes the slow path (forbid_unknown_fields). Where the two decoders read the same text
# differently (an integer outside int64/uint64, nesting past orjson's 1024 levels) a walk of the
# decoded values (_unlike_orjson) sends the event to the slow path.
# _fast_check then runs _check's rules on the struct for the common shapes and returns None,
# never an answer of its own, whenever anything is off: the event is then decoded and checked
# again by parse_event_reference, which writes every dead letter. So the fast path can only
# ever produce Events, and only those _check produces for the same bytes
# (tests/operators/test_events_fast.py checks this against parse_event_reference).


# _Wire lives in operators/wire.py, which mypyc leaves out: a msgspec Struct must stay a Python
# class (its metaclass builds it) and its msgspec.field defaults are typed None to mypy
_Wire = Wire
_decode_wire: Final = decode_wire
_MSGSPEC_ERRORS = (msgspec.DecodeError, RecursionError)  # ValidationError is a DecodeError
#: the decoded struct as a tuple in field order (one C call; a compiled attribute read of a
#: msgspec field goes through the generic getattr); the fields _fast_check reads, by position:
_astuple: Final = msgspec.structs.astuple
_READ_FIELDS = (
    "type", "messageId", "userId", "anonymousId", "timestamp", "context", "event", "name",
    "properties", "traits", "receivedAt", "sentAt", "originalTimestamp", "previousId", "groupId", "trust",
)  # fmt: skip
_TYPE: Final = 0
_MESSAGE_ID: Final = 1
_USER_ID: Final = 2
_ANONYMOUS_ID: Final = 3
_TIMESTAMP: Final = 4
_CONTEXT: Final = 5
_EVENT: Final = 6
_NAME: Final = 7
_PROPERTIES: Final = 8
_TRAITS: Final = 9
_RECEIVED_AT: Final = 10
_SENT_AT: Final = 11
_ORIGINAL_TIMESTAMP: Final = 12
_PREVIOUS_ID: Final = 13
_GROUP_ID: Final = 14
_TRUST: Final = 15
if tuple(_Wire.__struct_fields__[: len(_READ_FIELDS)]) != _READ_FIELDS:  # the positions above
    raise ImportError("operators.wire.Wire's first fields must be " + ", ".join(_READ_FIELDS))
#: orjson reads an integer outside int64/uint64 as a float, msgspec as an int: a decoded value
#: holding one takes the slow path (:func:`_unlike_orjson`). Its only difference in numbers:
#: both read every float correctly rounded, and both refuse 1e400.
_I64_MIN: Final = -(2**63)
_U64_MAX: Final = 2**64 - 1
_SHORT: Final = 2**62 - 1  # below it in magnitude an int is in range (mypyc compares it inline)
#: orjson reads at most 1024 levels of nesting, msgspec as many as the interpreter's recursion
#: limit allows (Hypothesis, for one, raises it): from 1024 levels on the slow path has it. The
#: levels a top-level field's value may hold (the event itself is the first level):
_FIELD_LEVELS: Final = 1024 - 2
_MONEY_SET: Final = frozenset(MONEY_FIELDS)
#: the order event names as this module's constants (compiled: statics, not global lookups)
_COMPLETED: Final = ORDER_COMPLETED
_REFUNDED: Final = ORDER_REFUNDED
_CANCELLED: Final = ORDER_CANCELLED
_PRODUCT_KEYS = ("product_id", "sku", "price")
_TRIVIAL_CONTEXT = frozenset({"traits", "consent", "consentManagement"})


def _remember(memo: dict[Any, Any], limit: int, key: Any, value: Any) -> Any:
    """Put ``key -> value`` in one of the fast path's memos (emptied first when it holds
    ``limit`` entries, so hostile input cannot grow it) and return ``value``."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value


#: receivedAt/sentAt text -> ms, the fast path's memo of ``parse_ts`` (a batch repeats them): a
#: dict read in compiled code, where the lru_cache wrapper is a call through ``tp_call``
_TS: Final[dict[str, int]] = {}


def _fast_ts(v: object) -> int:
    """``parse_ts`` (a string through the memo)."""
    if type(v) is str:
        ms = _TS.get(v)
        if ms is None:
            ms = _remember(_TS, 8192, v, _parse_ts_str(v))
        return ms
    return parse_ts(v)


def _fast_own_ts(v: object) -> int:
    """``parse_ts`` of an event's own time (``timestamp``, ``originalTimestamp``): unique per
    event, so not through the cache (a miss costs more than the reading it saves)."""
    return read_ts_str(v) if type(v) is str else parse_ts(v)


#: float -> cents, the fast path's memo of ``to_cents`` (a catalogue repeats its prices). Only
#: floats: ``True == 1 == 1.0`` share a dict slot, and ``True`` is no amount.
_CENTS: Final[dict[float, int]] = {}


def _fast_cents(v: object) -> int:
    """``to_cents(v)`` (raises ``MoneyError`` as it does)."""
    if type(v) is float:
        c = _CENTS.get(v)
        if c is None:
            c = _remember(_CENTS, 4096, v, to_cents(v))
        return c
    return to_cents(v)


#: category text -> :func:`norm_category` of it (the same interned string), the fast path's memo
_CATEGORIES: Final[dict[str, str]] = {}


def _fast_category(v: object) -> str:
    """``norm_category(v)``."""
    if type(v) is str and len(v) <= 256:
        c = _CATEGORIES.get(v)
        if c is None:
            c = _remember(_CATEGORIES, 4096, v, norm_category(v))
        return c
    return norm_category(v)


#: product id -> ``sys.intern`` of it (the same object), the fast path's memo
_PIDS: Final[dict[str, str]] = {}


def _intern_pid(s: str) -> str:
    """``sys.intern(s)``."""
    i = _PIDS.get(s)
    if i is None:
        i = sys.intern(s)
        _remember(_PIDS, 8192, i, i)  # keyed by the interned string itself, not by s
    return i


_PRODUCT_NEW: Final = Product.__new__


def _new_product(product_id: str, name: str, category: str, price_cents: int, quantity: int) -> Product:
    """``Product(...)`` without the dataclass's generated (interpreted) ``__init__``: see
    :func:`_new_event`. ``tests/operators/test_events_fast.py`` holds it to ``Product(...)``."""
    p = _PRODUCT_NEW(Product)
    p.product_id = product_id
    p.name = name
    p.category = category
    p.price_cents = price_cents
    p.quantity = quantity
    return p


def _fast_product(p: dict[str, Any]) -> Product:
    """``_product(p, where)`` for the fast path (a bad line raises; the slow path says why)."""
    v = p.get("price")
    price = 0 if v is None else _fast_cents(v)
    q = p.get("quantity")
    if q is None:
        qty = 1
    elif type(q) is int and 0 < q <= _MAX_QTY:
        qty = q
    else:
        qty = _qty(q, "")
    if "product_id" in p:
        pid = p["product_id"]
    elif "sku" in p:
        pid = p["sku"]
    else:
        pid = p.get("id")
    if type(pid) is str:
        pid = _intern_pid(pid[:_MAX_ID_LEN])
    else:
        pid = _intern_pid(str(pid)[:_MAX_ID_LEN]) if pid is not None and not isinstance(pid, dict | list) else ""
    name = p.get("name")
    return _new_product(pid, name[:200] if isinstance(name, str) else "", _fast_category(p.get("category")), price, qty)


def _unlike_orjson(v: object, levels: int) -> bool:
    """Whether orjson would read ``v`` (a decoded JSON value) otherwise than msgspec did, or
    might: it holds an integer outside int64/uint64 (orjson reads a float), or containers
    nested more than ``levels`` deep (orjson stops at 1024 levels). Never raises but
    ``RecursionError`` (the pure build, past the interpreter's limit: the slow path too).
    (``type(x) is dict or ...``: msgspec builds exact dicts and lists; compiled,
    ``isinstance(x, dict | list)`` would build and drop the union at every value.)"""
    if isinstance(v, dict):
        if levels <= 0:
            return True
        for x in v.values():
            if type(x) is str or x is None:
                continue
            if isinstance(x, int):
                if (x > _SHORT or x < -_SHORT) and not _I64_MIN <= x <= _U64_MAX:
                    return True
            elif (type(x) is dict or type(x) is list) and _unlike_orjson(x, levels - 1):
                return True
        return False
    if isinstance(v, list):
        if levels <= 0:
            return True
        for x in v:
            if type(x) is str or x is None:
                continue
            if isinstance(x, int):
                if (x > _SHORT or x < -_SHORT) and not _I64_MIN <= x <= _U64_MAX:
                    return True
            elif (type(x) is dict or type(x) is list) and _unlike_orjson(x, levels - 1):
                return True
        return False
    if isinstance(v, int):
        return (v > _SHORT or v < -_SHORT) and not _I64_MIN <= v <= _U64_MAX
    return False


def _fast_check(f: tuple[Any, ...], limits: Limits, received_default: int | None) -> Event | None:
    """``_check`` on a decoded :class:`_Wire`'s fields (``_astuple``, read by position: see
    :data:`_READ_FIELDS`): the same Event, or ``None`` (take the slow path)."""
    etype: str = f[_TYPE]  # typed fields (the struct's types): a cast, then str/dict primitives
    if etype not in EVENT_TYPES:
        return None
    user_id: str | None = f[_USER_ID]
    if user_id is not None:
        user_id = user_id.strip()
        if len(user_id) > _MAX_ID_LEN:
            return None
        user_id = user_id or None
    anon_id: str | None = f[_ANONYMOUS_ID]
    if anon_id is not None:
        anon_id = anon_id.strip()
        if len(anon_id) > _MAX_ID_LEN:
            return None
        anon_id = anon_id or None
    if user_id is None and anon_id is None:
        return None
    message_id: str = f[_MESSAGE_ID]
    if not message_id or len(message_id) > _MAX_ID_LEN:
        return None  # a derived id hashes the whole body: the slow path has it

    name = ""
    previous_id = None
    trusted = f[_TRUST] is None
    if etype == "track":
        raw_name = f[_EVENT]
        if type(raw_name) is not str or not (name := raw_name.strip()):
            return None
        name = name[:_MAX_ID_LEN]
        if not trusted and name in ENGAGEMENT_EVENTS:
            return None
    elif etype == "page" or etype == "screen":
        n = f[_NAME]
        name = n[:_MAX_ID_LEN] if isinstance(n, str) else ""
    elif etype == "alias":
        previous_id = _ident(f[_PREVIOUS_ID], "previousId")
        if previous_id is None or user_id is None:
            return None

    props: dict[str, Any] | None = f[_PROPERTIES]
    if props is None:
        props = {}
    traits: dict[str, Any] | None = f[_TRAITS]
    if traits is None:
        traits = {}
    context: dict[str, Any] | None = f[_CONTEXT]
    if context is None:
        context = {}

    rv = f[_RECEIVED_AT]
    if rv is None:
        if received_default is None:
            return None
        received = received_default
    else:
        received = _fast_ts(rv)
    original = f[_ORIGINAL_TIMESTAMP]
    cv = f[_TIMESTAMP]
    if cv is not None:
        client_ts: int | None = _fast_own_ts(cv)
    elif original is not None:
        client_ts = _fast_own_ts(original)
    else:
        client_ts = None
    sv = f[_SENT_AT]
    if client_ts is None:
        ts = received
        if sv is not None:
            _fast_ts(sv)  # _check reads it, and rejects a bad one
    elif sv is not None:
        ts = received - (_fast_ts(sv) - client_ts)
        original = original if isinstance(original, str) else iso_as_given(cv, client_ts) if cv is not None else iso(client_ts)
    else:
        ts = client_ts
    lo = limits.timestamp_min_ms
    if lo is None:
        lo = received - limits.max_age_ms
    if ts < lo or ts > received + limits.max_future_skew_ms:
        return None

    email = None
    user_traits = None
    group_id = None
    group_traits = None
    ctx_traits = context.get("traits") if context else None
    if ctx_traits is not None and type(ctx_traits) is not dict:
        return None
    if etype == "identify":
        raw_email = traits.get("email")
        if (raw_email is None or raw_email == "") and ctx_traits:
            raw_email = ctx_traits.get("email")
        if raw_email is not None and raw_email != "":
            email = validate_email(raw_email)
        if traits or ctx_traits:
            user_traits = parse_traits([ctx_traits or {}, traits], limits.max_traits, limits.max_trait_bytes, limits.traits_deny)
    else:
        if ctx_traits:
            user_traits = parse_traits([ctx_traits, {}], limits.max_traits, limits.max_trait_bytes, limits.traits_deny)
        if etype == "group":
            group_id = _ident(f[_GROUP_ID], "groupId")
            if group_id is not None and traits:
                group_traits = parse_traits([traits], limits.max_traits, limits.max_trait_bytes, limits.traits_deny)

    products: tuple[Product, ...] = ()
    value_cents = 0
    category = ""
    order_id = None
    refund_cents: int | None = None
    if props:
        # the money fields (each checked); of their amounts only these three are read
        has_money = False
        revenue: int | None = None
        total: int | None = None
        value: int | None = None
        for key, v in props.items():
            if v is not None and key in _MONEY_SET:
                cents = _fast_cents(v)
                has_money = True
                if key == "revenue":
                    revenue = cents
                elif key == "total":
                    total = cents
                elif key == "value":
                    value = cents
        raw_products = props.get("products")
        if raw_products is not None:
            if type(raw_products) is not list or len(raw_products) > 1000:
                return None
            plist = []
            for p in raw_products:
                if type(p) is not dict:
                    return None
                plist.append(_fast_product(p))
            products = tuple(plist)
        elif etype == "track" and ("product_id" in props or "sku" in props or "price" in props):
            products = (_fast_product(props),)
        else:
            q = props.get("quantity")
            if q is not None:
                _qty(q, "properties.quantity")
        if has_money:
            if revenue is not None:
                value_cents = revenue
            elif total is not None:
                value_cents = total
            elif products:
                value_cents = sum(p.price_cents * p.quantity for p in products)
            elif value is not None:
                value_cents = value
        elif products:
            value_cents = sum(p.price_cents * p.quantity for p in products)
        if etype == "track" and name in _ORDER_ID_EVENTS:
            order_id = _order_id(props, strict=name != _COMPLETED)
            if name == _REFUNDED:
                if total is not None:
                    refund_cents = total
                elif revenue is not None:
                    refund_cents = revenue
                elif products:
                    refund_cents = sum(p.price_cents * p.quantity for p in products)
        c = props.get("category")
        if c is not None:
            category = _fast_category(c)
    if name in (_REFUNDED, _CANCELLED) and (etype != "track" or order_id is None and (refund_cents is None or name == _CANCELLED)):
        return None  # a page named so, or a refund/cancellation naming no order: the slow path
    if not category and products:
        category = products[0].category

    return _new_event(
        message_id, etype, name,
        user_id if user_id is not None else anon_id,  # type: ignore[arg-type]
        user_id, anon_id, ts, received, props, traits, context, previous_id, email, category,
        products, value_cents, original if isinstance(original, str) else None, order_id,
        refund_cents,
        parse_consent(context) if context and ("consent" in context or "consentManagement" in context) else (),
        trusted, user_traits or None, group_id, group_traits,
    )  # fmt: skip


def _fast(raw: bytes, limits: Limits, received_at: int | None) -> Event | None:
    """The typed fast path of :func:`parse_event` for JSON bytes: an Event, or ``None``."""
    try:
        f = _astuple(_decode_wire(raw))
        for i in range(_TIMESTAMP, len(f)):  # the first 4 are typed str (or None): no number, no nesting
            v = f[i]
            if v is not None and type(v) is not str and _unlike_orjson(v, _FIELD_LEVELS):
                return None
    except _MSGSPEC_ERRORS:
        return None
    try:
        return _fast_check(f, limits, received_at)
    except (_Invalid, TimestampError, MoneyError, TraitError, ValueError, RecursionError):
        return None


def parse_event(
    raw: bytes | str | dict[str, Any],
    limits: Limits,
    received_at: int | None = None,
) -> Event | Rejected:
    """Validate and normalize one event; bad input comes back as :class:`Rejected`.

    ``received_at`` (epoch ms) is used only when the event carries no
    ``receivedAt`` of its own. Returns exactly what :func:`parse_event_reference` returns for
    the same input (the tests hold it to that): JSON bytes or text first go through a typed
    fast path (msgspec decodes them into a struct in C, the common shapes are checked without
    building the whole dict), and anything it does not accept outright (every bad event,
    and unusual good ones) is decoded and checked again by the reference, which writes the
    dead letter. A decoded dict goes straight to the reference.

    >>> lim = Limits()
    >>> ev = parse_event(b'{"type":"track","event":"Order Completed","userId":"u1",'
    ...     b'"messageId":"m1","timestamp":"2024-05-01T12:00:00Z","sentAt":"2024-05-01T12:00:10Z",'
    ...     b'"receivedAt":"2024-05-01T12:00:05Z","properties":{"revenue":"19.99"}}', lim)
    >>> ev.uid, iso(ev.ts), ev.value_cents
    ('u1', '2024-05-01T11:59:55.000Z', 1999)
    >>> parse_event(b'{"type":"track","userId":"u1"}', lim, received_at=0).reason
    <Reason.MISSING_EVENT: 'missing_event'>
    >>> parse_event(b'{"type": "track", ', lim).reason
    <Reason.MALFORMED_JSON: 'malformed_json'>
    """
    if not isinstance(raw, dict):
        raw_bytes = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
        if len(raw_bytes) <= limits.max_event_bytes:
            ev = _fast(raw_bytes, limits, received_at)
            if ev is not None:
                return ev
        raw = raw_bytes
    return parse_event_reference(raw, limits, received_at)
