"""Import mappings: how the rows of a CSV (or flat NDJSON) file become Segment events.

Contract
--------
A mapping is a small JSON or YAML document (the format is documented in ``docs/sources/csv.md``)::

    kind: identify | orders
    id: my-crm              # names the mapping in every messageId (default: the file's stem)
    user_id: {column: Email, transform: lower}
    email: Email            # a field is a column name, or {column: NAME | [NAME, ...], transform: T}
    timestamp: {column: Created at, transform: datetime}
    traits: {first_name: First Name, ...}            # identify traits (both kinds)
    # orders only
    order_key: Name                                  # rows of one order share it
    order: {order_id: ..., revenue: ..., currency: ...}   # order properties, from the order's first row
    product: {product_id: ..., name: ..., price: ..., quantity: ...}  # one product per row
    refund: {amount: {column: Refunded Amount, transform: money}}     # optional Order Refunded
    cancel: {at: {column: Cancelled at, transform: datetime}}          # optional Order Cancelled

A list (of column names or ``{column, transform}`` objects) means "the first non-empty of these";
a trait name with a dot (``address.city``) is a nested trait. Transforms: ``text`` (the
default: stripped), ``lower``, ``int``, ``money`` (a decimal string, kept exact), ``bool``
(``yes/true/1/y/subscribed`` or ``no/false/0/n/unsubscribed``), ``datetime`` (ISO 8601, Shopify's
``2024-01-15 10:23:45 -0500``, ``2024-01-15 10:23:45`` taken as UTC, a bare date), ``list``
(comma-separated). An empty cell is left out of the event (it never unsets a trait).

:class:`RowMapper` turns rows into events, streaming: :meth:`RowMapper.feed` takes any chunk of
``(line, row)`` pairs and returns what is complete (:class:`Output`), :meth:`RowMapper.finish`
the rest, so the events do not depend on how the rows were chunked (a property test).

``identify``: one ``identify`` per row. ``orders``: rows are grouped by ``order_key``; the order
fields, the user and the time come from the group's first row, one product from each row (a row
whose product fields are all empty adds none). Shopify's orders export keeps an order's rows
adjacent; an order whose rows are *not* adjacent is detected (the keys of the orders already
closed are remembered as 8-byte digests) and each of its late rows is dead-lettered with
``order_rows_not_adjacent``: its first group was imported, the late rows are not merged into it.

Idempotence: every event's ``messageId`` is a digest of the mapping's ``id``, the event's role
and, for orders, the order key (for identify, the row's mapped content), never of the file's name
or the row's position: the same rows always give the same events.

A row the mapping cannot read (a bad date, a non-integer quantity, an empty order key) is an
:class:`Output` with a :class:`~operators.events.Rejected` of reason ``invalid_row``; everything
else about an event (identity, email, money) is checked by the envelope checks afterwards.
Nothing here touches Redis or reads the clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from operators.events import Reason, Rejected
from operators.timeutil import iso, ms_from_datetime

__all__ = ["MappingError", "ImportMapping", "Output", "RowMapper", "load_mapping", "PRESETS", "message_id"]

#: the presets shipped as package data (``liveprofile/admin/presets/NAME.json``)
PRESETS = ("shopify-customers", "shopify-orders", "klaviyo-profiles", "mailchimp-members")

_TRANSFORMS = ("text", "lower", "int", "money", "bool", "datetime", "list")
_TRUE = frozenset({"yes", "y", "true", "t", "1", "subscribed", "opted_in", "opted in", "confirmed"})
_FALSE = frozenset({"no", "n", "false", "f", "0", "unsubscribed", "not_subscribed", "cleaned", "opted_out"})
_TZ_SUFFIX = re.compile(r"^(.*\d)\s*([+-]\d{2}):?(\d{2})$")
_MONEY = re.compile(r"^-?\d+(\.\d+)?$")


class MappingError(ValueError):
    """A mapping that cannot be used (a request-level problem: the import does not start)."""


class RowError(ValueError):
    """One row the mapping cannot read (that row is dead-lettered)."""


@dataclass(frozen=True)
class Field:
    """One mapped value: the first non-empty of ``parts`` (column, transform), transformed."""

    parts: tuple[tuple[str, str], ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.parts)

    def get(self, row: Mapping[str, Any]) -> Any:
        """The value of ``row`` (``None`` when every column is empty or absent)."""
        for c, transform in self.parts:
            v = row.get(c)
            if v is None:
                continue
            if not isinstance(v, str):
                v = str(v) if not isinstance(v, bool) else ("true" if v else "false")
            v = v.strip()
            if v:
                try:
                    return _apply(transform, v)
                except ValueError as exc:
                    raise RowError(f"column {c!r}: {exc}") from None
        return None


def _apply(transform: str, v: str) -> Any:
    if transform == "text":
        return v
    if transform == "lower":
        return v.lower()
    if transform == "int":
        try:
            return int(float(v)) if re.fullmatch(r"-?\d+(\.0+)?", v) else int(v)
        except ValueError:
            raise ValueError(f"not an integer: {v[:40]!r}") from None
    if transform == "money":
        s = v.replace(",", "") if v.count(",") and v.count(".") else v.replace(",", ".")
        s = s.lstrip("$€£")
        if not _MONEY.match(s):
            raise ValueError(f"not an amount: {v[:40]!r}")
        return s
    if transform == "bool":
        low = v.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"not a yes/no value: {v[:40]!r}")
    if transform == "datetime":
        return iso(parse_datetime(v))
    if transform == "list":
        return [p.strip() for p in v.split(",") if p.strip()]
    raise ValueError(f"unknown transform {transform!r}")


def parse_datetime(v: str) -> int:
    """Milliseconds since the epoch of the dates exports write (naive times are UTC).

    >>> iso(parse_datetime("2024-01-15 10:23:45 -0500")), iso(parse_datetime("2024-01-15T15:23:45Z"))
    ('2024-01-15T15:23:45.000Z', '2024-01-15T15:23:45.000Z')
    >>> iso(parse_datetime("2024-01-15")), iso(parse_datetime("2024-01-15 10:23:45"))
    ('2024-01-15T00:00:00.000Z', '2024-01-15T10:23:45.000Z')
    """
    s = v.strip()
    m = _TZ_SUFFIX.match(s)
    if m and len(m.group(1)) > 10:
        s = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"not a date: {v[:40]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return ms_from_datetime(dt)


def _part(spec: object, where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(spec, str):
        return ((spec, "text"),)
    if isinstance(spec, dict):
        cols = spec.get("column")
        tr = spec.get("transform", "text")
        if isinstance(cols, str):
            cols = [cols]
        if not (isinstance(cols, list) and cols and all(isinstance(c, str) for c in cols)):
            raise MappingError(f"{where}: 'column' must be a column name or a list of them")
        if tr not in _TRANSFORMS:
            raise MappingError(f"{where}: unknown transform {tr!r} (one of {', '.join(_TRANSFORMS)})")
        unknown = set(spec) - {"column", "transform"}
        if unknown:
            raise MappingError(f"{where}: unknown keys {sorted(unknown)}")
        return tuple((c, tr) for c in cols)
    raise MappingError(f"{where}: a field is a column name, a list of them, or {{column, transform}}")


def _field(spec: object, where: str) -> Field:
    if isinstance(spec, list) and spec:
        return Field(tuple(p for item in spec for p in _part(item, where)))
    return Field(_part(spec, where))


def _fields(spec: object, where: str) -> dict[str, Field]:
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise MappingError(f"{where}: must be an object of name -> field")
    return {str(k): _field(v, f"{where}.{k}") for k, v in spec.items()}


@dataclass(frozen=True)
class ImportMapping:
    """A validated mapping (see the module doc)."""

    id: str
    kind: str
    user_id: Field | None
    anonymous_id: Field | None
    email: Field | None
    timestamp: Field | None
    traits: dict[str, Field]
    order_key: Field | None = None
    order: dict[str, Field] = field(default_factory=dict)
    product: dict[str, Field] = field(default_factory=dict)
    refund_amount: Field | None = None
    cancel_at: Field | None = None

    @classmethod
    def from_doc(cls, doc: object, default_id: str) -> ImportMapping:
        """Validate a decoded mapping document; raises :class:`MappingError`."""
        if not isinstance(doc, dict):
            raise MappingError("a mapping is an object")
        known = {"kind", "id", "user_id", "anonymous_id", "email", "timestamp", "traits", "order_key", "order",
                 "product", "refund", "cancel", "description"}  # fmt: skip
        unknown = set(doc) - known
        if unknown:
            raise MappingError(f"unknown mapping keys {sorted(unknown)}")
        kind = doc.get("kind")
        if kind not in ("identify", "orders"):
            raise MappingError("kind must be 'identify' or 'orders'")

        def opt(name: str) -> Field | None:
            return _field(doc[name], name) if doc.get(name) is not None else None

        user_id, anon = opt("user_id"), opt("anonymous_id")
        if user_id is None and anon is None:
            raise MappingError("a mapping needs user_id or anonymous_id")
        refund, cancel = doc.get("refund") or {}, doc.get("cancel") or {}
        if not isinstance(refund, dict) or not isinstance(cancel, dict):
            raise MappingError("refund and cancel are objects")
        m = cls(
            id=str(doc.get("id") or default_id), kind=kind, user_id=user_id, anonymous_id=anon,
            email=opt("email"), timestamp=opt("timestamp"), traits=_fields(doc.get("traits"), "traits"),
            order_key=opt("order_key"), order=_fields(doc.get("order"), "order"),
            product=_fields(doc.get("product"), "product"),
            refund_amount=_field(refund["amount"], "refund.amount") if refund.get("amount") else None,
            cancel_at=_field(cancel["at"], "cancel.at") if cancel.get("at") else None,
        )  # fmt: skip
        if kind == "orders" and m.order_key is None:
            raise MappingError("an orders mapping needs order_key")
        if kind == "identify" and (m.order or m.product or m.order_key):
            raise MappingError("order, product and order_key belong to kind 'orders'")
        return m

    def columns(self) -> set[str]:
        """Every column the mapping reads."""
        fs = [self.user_id, self.anonymous_id, self.email, self.timestamp, self.order_key, self.refund_amount,
              self.cancel_at, *self.traits.values(), *self.order.values(), *self.product.values()]  # fmt: skip
        return {c for f in fs if f is not None for c in f.columns}

    def identity_columns(self) -> set[str]:
        """The columns of which the header must hold at least one (identity, order key)."""
        fs = [f for f in (self.user_id, self.anonymous_id) if f is not None]
        return {c for f in fs for c in f.columns}


def load_mapping(preset: str | None = None, path: str | None = None) -> ImportMapping:
    """A preset by name, or a mapping file (``.json``, ``.yaml``/``.yml``); raises :class:`MappingError`."""
    if (preset is None) == (path is None):
        raise MappingError("give a preset or a mapping file")
    if preset is not None:
        if preset not in PRESETS:
            raise MappingError(f"unknown preset {preset!r} (one of {', '.join(PRESETS)})")
        text = resources.files("liveprofile.admin").joinpath(f"presets/{preset}.json").read_bytes()
        return ImportMapping.from_doc(orjson.loads(text), preset)
    assert path is not None
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read the mapping {path}: {exc.strerror}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            doc = yaml.safe_load(raw)
        else:
            doc = orjson.loads(raw)
    except Exception as exc:  # noqa: BLE001 - any parse error is the mapping's problem
        raise MappingError(f"the mapping {path} is not valid: {exc}") from None
    return ImportMapping.from_doc(doc, Path(path).stem)


def message_id(mapping_id: str, role: str, key: str) -> str:
    """The stable messageId of one event an import makes.

    >>> message_id("shopify-orders", "order", "#1001") == message_id("shopify-orders", "order", "#1001")
    True
    >>> message_id("shopify-orders", "order", "#1001")[:4]
    'imp-'
    """
    h = hashlib.blake2b(f"{mapping_id}\0{role}\0{key}".encode("utf-8", "surrogatepass"), digest_size=16)
    return "imp-" + h.hexdigest()


@dataclass
class Output:
    """What one row (identify) or one order's rows became: events, or a rejection."""

    line: int
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: Rejected | None = None
    reason_line: int | None = None


def _raw(rows: list[Mapping[str, Any]]) -> bytes:
    return orjson.dumps(rows[0] if len(rows) == 1 else rows, default=str)


def _row_error(line: int, rows: list[Mapping[str, Any]], msg: str, reason: str = "invalid_row") -> Output:
    return Output(line, rejected=Rejected(Reason(reason), f"line {line}: {msg}", _raw(rows)))


class RowMapper:
    """Streaming rows -> events for one mapping (see the module doc)."""

    def __init__(self, mapping: ImportMapping) -> None:
        self.m = mapping
        self._key: str | None = None
        self._rows: list[tuple[int, Mapping[str, Any]]] = []
        self._closed: set[bytes] = set()
        self._late: str | None = None  # the key of an order whose rows came back (being rejected)

    # -- common --------------------------------------------------------------------
    def _base(self, row: Mapping[str, Any], etype: str) -> dict[str, Any]:
        m = self.m
        ev: dict[str, Any] = {"type": etype}
        uid = m.user_id.get(row) if m.user_id else None
        anon = m.anonymous_id.get(row) if m.anonymous_id else None
        if uid is not None:
            ev["userId"] = str(uid)
        if anon is not None:
            ev["anonymousId"] = str(anon)
        ts = m.timestamp.get(row) if m.timestamp else None
        if ts is not None:
            ev["timestamp"] = ts
        return ev

    def _traits(self, row: Mapping[str, Any]) -> dict[str, Any]:
        traits: dict[str, Any] = {}
        for k, f in self.m.traits.items():
            v = f.get(row)
            if v is None:
                continue
            head, dot, tail = k.partition(".")
            if dot:  # "address.city": a nested trait
                sub = traits.setdefault(head, {})
                if isinstance(sub, dict):
                    sub[tail] = v
            else:
                traits[k] = v
        email = self.m.email.get(row) if self.m.email else None
        if email is not None:
            traits["email"] = email
        return traits

    # -- streaming -----------------------------------------------------------------
    def feed(self, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> list[Output]:
        """Map a chunk of ``(line number, row)``; returns the outputs complete so far."""
        out: list[Output] = []
        if self.m.kind == "identify":
            out.extend(self._identify(n, row) for n, row in rows)
            return out
        for n, row in rows:
            try:
                key = self.m.order_key.get(row) if self.m.order_key else None
            except RowError as exc:
                out.append(_row_error(n, [row], str(exc)))
                continue
            if key is None:
                out.append(_row_error(n, [row], "the order key is empty"))
                continue
            key = str(key)
            if key == self._key:
                self._rows.append((n, row))
                continue
            if key == self._late:
                out.append(self._not_adjacent(n, row, key))
                continue
            self._close(out)
            self._late = None
            if _digest(key) in self._closed:
                self._late = key
                out.append(self._not_adjacent(n, row, key))
                continue
            self._key, self._rows = key, [(n, row)]
        return out

    def finish(self) -> list[Output]:
        """The outputs still open (the last order)."""
        out: list[Output] = []
        self._close(out)
        return out

    def _not_adjacent(self, n: int, row: Mapping[str, Any], key: str) -> Output:
        return _row_error(
            n, [row], f"a row of order {key!r} after other orders' rows (an order's rows must be adjacent; "
            "its earlier rows were imported without this one)", "order_rows_not_adjacent",
        )  # fmt: skip

    def _close(self, out: list[Output]) -> None:
        if self._key is None:
            return
        key, rows = self._key, self._rows
        self._closed.add(_digest(key))
        self._key, self._rows = None, []
        out.append(self._order(key, rows))

    # -- kinds ---------------------------------------------------------------------
    def _identify(self, n: int, row: Mapping[str, Any]) -> Output:
        try:
            ev = self._base(row, "identify")
            traits = self._traits(row)
        except RowError as exc:
            return _row_error(n, [row], str(exc))
        ev["traits"] = traits
        content = orjson.dumps({k: v for k, v in ev.items()}, option=orjson.OPT_SORT_KEYS).decode()
        ev["messageId"] = message_id(self.m.id, "identify", content)
        return Output(n, [ev])

    def _order(self, key: str, rows: list[tuple[int, Mapping[str, Any]]]) -> Output:
        m = self.m
        first_line, first = rows[0]
        raws = [r for _, r in rows]
        try:
            base = self._base(first, "track")
            traits = self._traits(first)
            props: dict[str, Any] = {k: v for k, f in m.order.items() if (v := f.get(first)) is not None}
            products = []
            for n, row in rows:
                try:
                    p = {k: v for k, f in m.product.items() if (v := f.get(row)) is not None}
                except RowError as exc:
                    raise RowError(f"line {n}: {exc}") from None
                if p:
                    products.append(p)
            refund = m.refund_amount.get(first) if m.refund_amount else None
            cancelled_at = m.cancel_at.get(first) if m.cancel_at else None
        except RowError as exc:
            return _row_error(first_line, raws, str(exc))
        props.setdefault("order_id", key)
        if products:
            props["products"] = products
        if traits:
            base["context"] = {"traits": traits}
        events = [{**base, "event": "Order Completed", "properties": props, "messageId": message_id(m.id, "order", key)}]
        ref = {k: props[k] for k in ("order_id", "currency") if k in props}
        if refund is not None and refund.lstrip("-0.") != "":
            events.append({**base, "event": "Order Refunded", "properties": {**ref, "total": refund},
                           "messageId": message_id(m.id, "refund", key)})  # fmt: skip
        if cancelled_at is not None:
            events.append({**base, "timestamp": cancelled_at, "event": "Order Cancelled", "properties": ref,
                           "messageId": message_id(m.id, "cancel", key)})  # fmt: skip
        return Output(first_line, events)


def _digest(key: str) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
