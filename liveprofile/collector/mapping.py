"""Declarative webhook mappings: a platform's payloads to Segment events, without Python.

A mapping is a YAML (or JSON) document, loaded and checked once at the collector's start
(:func:`load_mapping`; ``liveprofile webhooks check FILE`` checks one). Format, version 1::

    version: 1
    topic: {header: X-Shopify-Topic}      # where the topic is: a request header, or
                                          # {path: type} (a JMESPath into the payload)
    topics:
      orders/create:                      # topic -> a list of outputs
        - type: track                     # track | identify | page | screen | group
          event: Order Completed          # literal event name (track)
          require: [id, customer.id]      # JMESPath expressions that must not be null
          when: "financial_status != 'voided'"   # optional: emit only when truthy
          userId: to_string(customer.id)  # every other value is a JMESPath expression
          anonymousId: ...
          messageId: id                   # optional; default: the delivery id
          timestamp: created_at
          properties: {order_id: to_string(id), revenue: total_price}
          traits: {email: "customer.email || email"}
          products:                       # properties.products, one per list item
            each: line_items
            fields: {product_id: to_string(product_id), price: price, quantity: quantity}
          remember: {index: orders, key: to_decimal_string(id), value: to_decimal_string(customer.id)}
      refunds/create:
        - type: track
          lookup: {customer: {index: orders, key: to_decimal_string(order_id)}}
          userId: _lookup.customer        # what orders/create remembered for this order
        - action: forget                  # an erasure request for userId (no event)
          userId: to_string(customer.id)
        - action: record                  # answered 200 and recorded, no event

Expressions are JMESPath (jmespath.org) with three extra functions: ``money_sum(array)`` — the
exact decimal sum of money strings or numbers, as a string (``"12.50"``) —,
``minor_units(amount, currency)`` — an integer amount in the currency's minor unit (Stripe's
``amount_total``) as a decimal string (``1999, 'usd'`` -> ``"19.99"``; zero-decimal currencies
such as JPY unscaled) — and ``to_decimal_string(x)``: an integer id as its decimal string. A value that evaluates to null is
left out of the event (so an optional field may be absent); ``require`` names the ones that must
be present. ``remember`` keeps ``value`` under ``key`` in a named index of the source (in Redis,
for ``LIVEPROFILE_WEBHOOK_INDEX_TTL``) and ``lookup`` reads it back for a later payload as
``_lookup.<name>`` (null when nothing was remembered): a payload that names only its order (a
Shopify refund) finds the order's customer that way. The event's ``messageId`` is a digest of the source, the mapping's message id (its
``messageId`` expression, else the platform's delivery id) and the output's position, so a
redelivery yields the same ids and the dataflow's de-duplication counts it once.

:func:`apply_mapping` never raises for a payload: a topic the mapping does not know
(``webhook_unmapped``), a missing required value or an expression error
(``webhook_mapping_failed``) is a :class:`MappingFailure` the caller dead-letters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath import functions

__all__ = [
    "Mapping", "Output", "Mapped", "MappingFailure", "MappingError", "load_mapping", "parse_mapping",
    "apply_mapping", "wanted_lookups", "check_file", "add_commands", "message_id", "shipped_mapping_path", "SHIPPED", "EVENT_TYPES", "ACTIONS",
]  # fmt: skip

EVENT_TYPES = ("track", "identify", "page", "screen", "group")
ACTIONS = ("forget", "record")
_MAPPINGS_DIR = Path(__file__).resolve().parent / "mappings"
#: mappings shipped as package data (``liveprofile/collector/mappings/<name>.yaml``)
SHIPPED = ("shopify", "stripe")
_EXPR_FIELDS = ("userId", "anonymousId", "messageId", "timestamp", "groupId", "name")
_MAP_FIELDS = ("properties", "traits", "context")


class MappingError(ValueError):
    """A mapping document that is not valid (raised at load time, never for a payload)."""


class _Functions(functions.Functions):
    @functions.signature({"types": ["array", "null"]})
    def _func_money_sum(self, values: list[Any] | None) -> str | None:
        if values is None:
            return None
        total = Decimal(0)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise jmespath.exceptions.JMESPathError(f"money_sum: {v!r} is not an amount")
            try:
                total += Decimal(str(v))
            except InvalidOperation:
                raise jmespath.exceptions.JMESPathError(f"money_sum: {v!r} is not an amount") from None
        return f"{total:.2f}" if total == total.quantize(Decimal("0.01")) else str(total)

    @functions.signature({"types": ["number", "null"]}, {"types": ["string", "null"]})
    def _func_minor_units(self, amount: Any, currency: str | None) -> str | None:
        if amount is None:
            return None
        if isinstance(amount, float) and not amount.is_integer():
            raise jmespath.exceptions.JMESPathError(f"minor_units: {amount!r} is not a whole number of minor units")
        exp = 0 if (currency or "").lower() in _ZERO_DECIMAL else 2
        return str(Decimal(int(amount)).scaleb(-exp))

    @functions.signature({"types": ["number", "string", "null"]})
    def _func_to_decimal_string(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, float):
            if not value.is_integer():
                raise jmespath.exceptions.JMESPathError(f"to_decimal_string: {value!r} is not an integer")
            value = int(value)
        return str(value)


#: Stripe's zero-decimal currencies (docs.stripe.com/currencies#zero-decimal)
_ZERO_DECIMAL = frozenset(["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"])
_OPTIONS = jmespath.Options(custom_functions=_Functions())


def _compile(expr: object, where: str) -> Any:
    if not isinstance(expr, str) or not expr.strip():
        raise MappingError(f"{where}: a JMESPath expression (a non-empty string) is required")
    try:
        return jmespath.compile(expr)
    except jmespath.exceptions.JMESPathError as exc:
        raise MappingError(f"{where}: not a JMESPath expression ({exc})") from None


@dataclass(frozen=True)
class Output:
    """One output of a topic: an event of ``type`` (``event`` its name), or an ``action``."""

    type: str | None
    action: str | None
    event: str | None
    fields: dict[str, Any]
    maps: dict[str, dict[str, Any]]
    products: tuple[Any, dict[str, Any]] | None
    require: tuple[tuple[str, Any], ...]
    when: Any | None
    remember: tuple[str, Any, Any] | None = None
    lookup: tuple[tuple[str, str, Any], ...] = ()


@dataclass(frozen=True)
class Mapping:
    """A checked mapping document (see the module doc)."""

    name: str
    topic_header: str | None
    topic_path: Any | None
    topics: dict[str, tuple[Output, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Mapped:
    """A payload mapped: the events to append, the user ids to erase, the recorded topics."""

    events: list[dict[str, Any]]
    forget: list[str]
    recorded: bool
    topic: str = ""
    #: (index, key, value) pairs to remember
    remember: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class MappingFailure:
    """A payload the mapping cannot turn into events: ``reason`` is a dead-letter code."""

    reason: str
    message: str


def _map_of(doc: object, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict) or not doc:
        raise MappingError(f"{where}: a mapping of names to JMESPath expressions is required")
    out: dict[str, Any] = {}
    for k, v in doc.items():
        if not isinstance(k, str) or not k:
            raise MappingError(f"{where}: names must be non-empty strings")
        out[k] = _map_of(v, f"{where}.{k}") if isinstance(v, dict) else _compile(v, f"{where}.{k}")
    return out


def _output(doc: object, where: str) -> Output:
    if not isinstance(doc, dict):
        raise MappingError(f"{where}: each output is a mapping with a type or an action")
    known = {"type", "action", "event", "require", "when", "products", "remember", "lookup", *_EXPR_FIELDS, *_MAP_FIELDS}
    extra = sorted(set(doc) - known)
    if extra:
        raise MappingError(f"{where}: unknown keys {extra} (known: {sorted(known)})")
    typ, action = doc.get("type"), doc.get("action")
    if (typ is None) == (action is None):
        raise MappingError(f"{where}: give exactly one of type ({'|'.join(EVENT_TYPES)}) or action ({'|'.join(ACTIONS)})")
    if typ is not None and typ not in EVENT_TYPES:
        raise MappingError(f"{where}: type must be one of {EVENT_TYPES}, got {typ!r}")
    if action is not None and action not in ACTIONS:
        raise MappingError(f"{where}: action must be one of {ACTIONS}, got {action!r}")
    event = doc.get("event")
    if typ == "track" and (not isinstance(event, str) or not event):
        raise MappingError(f"{where}: a track output needs an event name")
    if action == "forget" and "userId" not in doc:
        raise MappingError(f"{where}: a forget action needs userId")
    if typ is not None and "userId" not in doc and "anonymousId" not in doc:
        raise MappingError(f"{where}: an event needs userId or anonymousId")
    fields = {k: _compile(doc[k], f"{where}.{k}") for k in _EXPR_FIELDS if k in doc}
    maps = {k: _map_of(doc[k], f"{where}.{k}") for k in _MAP_FIELDS if k in doc}
    products = None
    if "products" in doc:
        p = doc["products"]
        if not isinstance(p, dict) or set(p) != {"each", "fields"}:
            raise MappingError(f"{where}.products: needs exactly `each` (a list expression) and `fields`")
        products = (_compile(p["each"], f"{where}.products.each"), _map_of(p["fields"], f"{where}.products.fields"))
    req = doc.get("require", [])
    if not isinstance(req, list):
        raise MappingError(f"{where}.require: a list of JMESPath expressions")
    require = tuple((r, _compile(r, f"{where}.require")) for r in req)
    when = _compile(doc["when"], f"{where}.when") if "when" in doc else None
    remember = None
    if "remember" in doc:
        r = doc["remember"]
        if not isinstance(r, dict) or set(r) != {"index", "key", "value"} or not _is_name(r["index"]):
            raise MappingError(f"{where}.remember: needs exactly index (a name), key and value (expressions)")
        remember = (r["index"], _compile(r["key"], f"{where}.remember.key"), _compile(r["value"], f"{where}.remember.value"))
    lookup: list[tuple[str, str, Any]] = []
    if "lookup" in doc:
        lk = doc["lookup"]
        if not isinstance(lk, dict) or not lk:
            raise MappingError(f"{where}.lookup: a mapping of names to {{index, key}}")
        for name, spec in lk.items():
            if not _is_name(name) or not isinstance(spec, dict) or set(spec) != {"index", "key"} or not _is_name(spec["index"]):
                raise MappingError(f"{where}.lookup.{name}: needs exactly index (a name) and key (an expression)")
            lookup.append((name, spec["index"], _compile(spec["key"], f"{where}.lookup.{name}.key")))
    return Output(typ, action, event, fields, maps, products, require, when, remember, tuple(lookup))


def _is_name(v: object) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 64 and v.replace("_", "a").replace("-", "a").isalnum()


def parse_mapping(doc: object, name: str) -> Mapping:
    """Check a decoded mapping document; :class:`MappingError` names the first problem."""
    if not isinstance(doc, dict):
        raise MappingError(f"{name}: a mapping document is a YAML/JSON object")
    if doc.get("version") != 1:
        raise MappingError(f"{name}: version: 1 is required")
    extra = sorted(set(doc) - {"version", "topic", "topics", "description"})
    if extra:
        raise MappingError(f"{name}: unknown keys {extra}")
    topic = doc.get("topic")
    if not isinstance(topic, dict) or len(topic) != 1 or not ({"header"} >= set(topic) or {"path"} >= set(topic)):
        raise MappingError(f"{name}: topic must be {{header: NAME}} or {{path: EXPRESSION}}")
    header = topic.get("header")
    if header is not None and (not isinstance(header, str) or not header):
        raise MappingError(f"{name}: topic.header must be a header name")
    path = _compile(topic["path"], f"{name}.topic.path") if "path" in topic else None
    topics = doc.get("topics")
    if not isinstance(topics, dict) or not topics:
        raise MappingError(f"{name}: topics must map each topic to a list of outputs")
    out: dict[str, tuple[Output, ...]] = {}
    for t, outputs in topics.items():
        if not isinstance(t, str) or not t:
            raise MappingError(f"{name}: topic names are non-empty strings")
        if not isinstance(outputs, list) or not outputs:
            raise MappingError(f"{name}.topics.{t}: a non-empty list of outputs")
        out[t] = tuple(_output(o, f"{name}.topics.{t}[{i}]") for i, o in enumerate(outputs))
    return Mapping(name, header.lower() if header else None, path, out)


def shipped_mapping_path(name: str) -> Path:
    """The file of a shipped mapping (``shopify``, ``stripe``)."""
    return _MAPPINGS_DIR / f"{name}.yaml"


def load_mapping(ref: str, mappings_dir: str = "") -> Mapping:
    """The mapping ``ref``: a path to a file, or a name — a file ``<name>.yaml|.yml|.json`` in
    ``mappings_dir`` (``LIVEPROFILE_WEBHOOK_MAPPINGS``), else a shipped one."""
    import yaml

    path = Path(ref)
    if "/" not in ref and not ref.endswith((".yaml", ".yml", ".json")):
        candidates = [Path(mappings_dir) / f"{ref}{ext}" for ext in (".yaml", ".yml", ".json")] if mappings_dir else []
        candidates.append(shipped_mapping_path(ref))
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise MappingError(f"no webhook mapping named {ref!r} (shipped: {', '.join(SHIPPED)}; or a file in LIVEPROFILE_WEBHOOK_MAPPINGS)")
        path = found[0]
    try:
        text = path.read_text()
    except OSError as exc:
        raise MappingError(f"cannot read the webhook mapping {str(path)!r} ({type(exc).__name__})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML/JSON ({str(exc)[:200]})") from None
    return parse_mapping(doc, path.stem)


def _eval(expr: Any, data: Any) -> Any:
    return expr.search(data, options=_OPTIONS)


def _eval_map(m: dict[str, Any], data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in m.items():
        val = _eval_map(v, data) if isinstance(v, dict) else _eval(v, data)
        if val is not None and val != {}:
            out[k] = val
    return out


def message_id(source: str, base: str, index: int) -> str:
    """The ``messageId`` of output ``index`` of a delivery whose mapping id is ``base``.

    >>> message_id("shopify", "id:w1", 0) == message_id("shopify", "id:w1", 0) != message_id("shopify", "id:w1", 1)
    True
    """
    h = hashlib.blake2b(f"{source}\x00{base}\x00{index}".encode("utf-8", "surrogatepass"), digest_size=16)
    return f"wh-{h.hexdigest()}"


def _topic_of(mapping: Mapping, headers: dict[bytes, bytes], payload: Any) -> str | None:
    if mapping.topic_header is not None:
        raw = headers.get(mapping.topic_header.encode())
        return raw.decode("utf-8", "replace").strip() if raw else None
    val = _eval(mapping.topic_path, payload)
    return val if isinstance(val, str) else None


def wanted_lookups(mapping: Mapping, headers: dict[bytes, bytes], payload: Any) -> list[tuple[str, str]]:
    """The ``(index, key)`` pairs the outputs of ``payload``'s topic look up (to fetch before
    :func:`apply_mapping`); a key expression that fails or is null is skipped."""
    topic = _topic_of(mapping, headers, payload)
    out: list[tuple[str, str]] = []
    for o in mapping.topics.get(topic or "", ()) if topic is not None else ():
        for _name, index, expr in o.lookup:
            try:
                key = _eval(expr, payload)
            except jmespath.exceptions.JMESPathError:
                continue
            if isinstance(key, str | int) and not isinstance(key, bool):
                out.append((index, str(key)))
    return out


def apply_mapping(mapping: Mapping, source: str, delivery_id: str, headers: dict[bytes, bytes], payload: Any,
                  looked_up: dict[tuple[str, str], str] | None = None) -> Mapped | MappingFailure:  # fmt: skip
    """The events (and erasures) ``payload`` maps to, or why it cannot be mapped.

    >>> m = parse_mapping({"version": 1, "topic": {"path": "type"}, "topics": {"user.created": [
    ...     {"type": "identify", "userId": "to_string(data.id)", "traits": {"email": "data.email"}}]}}, "demo")
    >>> r = apply_mapping(m, "demo", "d1", {}, {"type": "user.created", "data": {"id": 7, "email": "a@b.co"}})
    >>> r.events[0]["userId"], r.events[0]["traits"]
    ('7', {'email': 'a@b.co'})
    >>> apply_mapping(m, "demo", "d1", {}, {"type": "user.deleted"}).reason
    'webhook_unmapped'
    """
    topic = _topic_of(mapping, headers, payload)
    if topic is None:
        return MappingFailure("webhook_unmapped", f"{mapping.name}: the delivery names no topic")
    outputs = mapping.topics.get(topic)
    if outputs is None:
        return MappingFailure("webhook_unmapped", f"{mapping.name}: no mapping for topic {topic[:128]!r}")
    events: list[dict[str, Any]] = []
    forget: list[str] = []
    remember: list[tuple[str, str, str]] = []
    recorded = False
    data = payload
    try:
        for i, out in enumerate(outputs):
            if out.lookup and isinstance(payload, dict):
                found = {}
                for name, index, expr in out.lookup:
                    key = _eval(expr, payload)
                    found[name] = (looked_up or {}).get((index, str(key))) if key is not None else None
                data = {**payload, "_lookup": found}
            else:
                data = payload
            if out.when is not None and not _eval(out.when, data):
                continue
            if out.remember is not None:
                index, kexpr, vexpr = out.remember
                k, v = _eval(kexpr, data), _eval(vexpr, data)
                if isinstance(k, str | int) and isinstance(v, str | int) and not isinstance(k, bool) and not isinstance(v, bool):
                    remember.append((index, str(k), str(v)))
            for text, expr in out.require:
                if _eval(expr, data) is None:
                    return MappingFailure("webhook_mapping_failed", f"{mapping.name}: topic {topic!r}: required value {text!r} is missing")
            vals = {k: _eval(e, data) for k, e in out.fields.items()}
            if out.action == "record":
                recorded = True
                continue
            if out.action == "forget":
                uid = vals.get("userId")
                if not isinstance(uid, str) or not uid:
                    return MappingFailure("webhook_mapping_failed", f"{mapping.name}: topic {topic!r}: the user to forget is missing")
                forget.append(uid)
                recorded = True
                continue
            ev: dict[str, Any] = {"type": out.type}
            if out.event is not None:
                ev["event"] = out.event
            for k, v in vals.items():
                if v is not None and k != "messageId":
                    ev[k] = v
            if "userId" not in ev and "anonymousId" not in ev:
                return MappingFailure("webhook_mapping_failed", f"{mapping.name}: topic {topic!r}: neither userId nor anonymousId has a value")
            for k, m in out.maps.items():
                ev[k] = _eval_map(m, data)
            if out.products is not None:
                each, fields = out.products
                items = _eval(each, data)
                if not isinstance(items, list):
                    return MappingFailure("webhook_mapping_failed", f"{mapping.name}: topic {topic!r}: the products list is not a list")
                ev.setdefault("properties", {})["products"] = [_eval_map(fields, it) for it in items]
            base = vals.get("messageId")
            ev["messageId"] = message_id(source, f"{topic}\x00{base}" if base is not None else delivery_id, i)
            events.append(ev)
    except jmespath.exceptions.JMESPathError as exc:
        return MappingFailure("webhook_mapping_failed", f"{mapping.name}: topic {topic!r}: {str(exc)[:200]}")
    return Mapped(events, forget, recorded, topic, remember)


def check_file(path: str) -> str:
    """``liveprofile webhooks check FILE``: a summary of a valid mapping, or :class:`MappingError`."""
    m = load_mapping(path)
    where = f"header {m.topic_header}" if m.topic_header else "a payload path"
    lines = [f"{path}: valid mapping {m.name!r}, topic from {where}"]
    for t, outs in m.topics.items():
        lines.append(f"  {t}: " + ", ".join(o.event or o.type or f"action {o.action}" for o in outs))
    return "\n".join(lines)


def _cmd_check(args: Any, settings: Any) -> int:
    import sys

    try:
        print(check_file(args.file))
    except MappingError as exc:
        print(f"liveprofile webhooks check: {exc}", file=sys.stderr)
        return 1
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``webhooks check FILE`` on the ``liveprofile`` CLI."""
    p = subparsers.add_parser("webhooks", help="webhook mapping tools")
    wsub = p.add_subparsers(dest="webhooks_cmd", required=True)
    c = wsub.add_parser("check", help="validate a webhook mapping file")
    c.add_argument("file")
    c.set_defaults(func=_cmd_check)
