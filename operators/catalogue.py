"""The product catalogue built from the stream: what product events say about products.

Contract (docs/content.md, "The catalogue"):

* **Input**: valid events (:class:`operators.events.Event`). ``Product Viewed`` and ``Product Added``
  name one product (the event's properties), ``Order Completed`` a list (``properties.products``).
  Other events say nothing about the catalogue. A product line without a ``product_id`` (or ``sku``)
  is ignored.
* **Attributes**: ``name``, ``category`` (normalized, :func:`operators.events.norm_category`),
  ``price`` (decimal string, 2 places), ``brand``, ``sku``, ``url``, ``image_url``. Per attribute
  a value from a server write key beats any value from a browser (public) key, whatever their
  times (anyone holding the public key could otherwise rename a product or point its link
  elsewhere in every recommendation email); among values of the same trust the newest event time
  wins (a tie: the later event in the stream); an event that does not name an attribute leaves it
  alone. ``url`` and ``image_url`` must be absolute ``http(s)`` URLs (anything else is ignored: the
  content API redirects to ``url``); the output's ``url_trusted`` (``1``/``0``) says whether
  ``url`` came from a server key (the API redirects to an untrusted ``url`` only on an allowed
  host: ``LIVEPROFILE_CONTENT_REDIRECT_HOSTS``).
* **Popularity** of a product: ``1 × views + 2 × adds-to-cart + 5 × units purchased``, all time,
  counted once per event line: a line is identified by the event's ``messageId`` and its index in
  the event, and a line already counted (a client's retry, a re-read) counts nothing again. The
  de-duplication window is the last :data:`SEEN_IDS` lines of the product (retries arrive close to
  the original).
* **State** is one :class:`ProductState` per product id; :func:`apply` folds sightings into it and
  returns whether it changed. Outputs are absolute (the whole attribute set and the popularity), so
  writing one twice is harmless.

Pure: no engine, no I/O, no clock (times come in the events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mypy_extensions import mypyc_attr

from operators.events import Event, norm_category
from operators.money import format_cents
from operators.snapshot import set_slots_state, slots_state

__all__ = ["Sighting", "ProductState", "CatalogueOut", "WEIGHTS", "SEEN_IDS", "sightings", "keyed_sightings", "apply", "output"]

#: popularity weight of one sighting kind
WEIGHTS = {"view": 1, "add": 2, "purchase": 5}
#: the event names that feed the catalogue, and the sighting kind each is
KINDS = {"Product Viewed": "view", "Product Added": "add", "Order Completed": "purchase"}
#: line ids remembered per product for de-duplication
SEEN_IDS = 256
_MAX_ATTR = 2048


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class Sighting:
    """One product line of one event: its id, kind, weight (units for a purchase), time and attributes."""

    product_id: str
    line_id: str
    kind: str
    units: int
    ts: int
    attrs: tuple[tuple[str, str], ...]
    trusted: bool = True


@dataclass(slots=True)
class ProductState:
    """What the stream said about one product: attribute -> (rank, value) where rank is
    ``2 * event time + trusted`` compared as ``(trusted, time)``: see :func:`rank`; and the counts."""

    attrs: dict[str, tuple[tuple[int, int], str]] = field(default_factory=dict)
    views: int = 0
    adds: int = 0
    units: int = 0
    seen: list[str] = field(default_factory=list)

    @property
    def popularity(self) -> int:
        """``1 × views + 2 × adds + 5 × units purchased``."""
        return WEIGHTS["view"] * self.views + WEIGHTS["add"] * self.adds + WEIGHTS["purchase"] * self.units

    @property
    def category(self) -> str:
        return self.attrs.get("category", ((0, 0), ""))[1]

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """Pickled as a plain slots class pickles (and did before compiling): ``(None, slots)``."""
        return slots_state(self)

    def __setstate__(self, state: Any) -> None:
        set_slots_state(self, state)


@mypyc_attr(native_class=False)  # frozen and pickled: a Python class (operators/__init__.py)
@dataclass(frozen=True, slots=True)
class CatalogueOut:
    """Absolute catalogue write of one product: its attributes, category, popularity, and the
    category it left (``""``: none) so its ranking drops it."""

    product_id: str
    fields: dict[str, str]
    category: str
    popularity: int
    left_category: str = ""


def _url(v: object) -> str:
    """An absolute http(s) URL, else ``""``.

    >>> _url("https://shop.example/p/1"), _url("javascript:alert(1)"), _url("//x"), _url(3)
    ('https://shop.example/p/1', '', '', '')
    """
    if not isinstance(v, str):
        return ""
    s = v.strip()
    if len(s) > _MAX_ATTR or not s.lower().startswith(("http://", "https://")) or len(s) <= len("https://") or any(c in s for c in "\r\n\t <>\"'"):
        return ""
    return s


def _text(v: object) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        v = str(v)
    return v.strip()[:200] if isinstance(v, str) else ""


def _attrs(raw: dict[str, Any], name: str, category: str, price_cents: int, has_price: bool) -> tuple[tuple[str, str], ...]:
    out = {
        "name": name,
        "category": category,
        "price": format_cents(price_cents) if has_price else "",
        "brand": _text(raw.get("brand")),
        "sku": _text(raw.get("sku")),
        "url": _url(raw.get("url")),
        "image_url": _url(raw.get("image_url")),
    }
    return tuple((k, v) for k, v in out.items() if v)


def sightings(ev: Event) -> list[Sighting]:
    """The product lines of one event that feed the catalogue (empty for other events).

    >>> from operators.events import Limits, parse_event
    >>> lim = Limits(timestamp_min_ms=0)
    >>> ev = parse_event({"type": "track", "event": "Product Viewed", "userId": "u", "messageId": "m1",
    ...     "timestamp": "2024-05-01T10:00:00Z", "receivedAt": "2024-05-01T10:00:00Z",
    ...     "properties": {"product_id": "p1", "name": "Trail Shoe", "category": "Shoes", "price": 89.5,
    ...                    "url": "https://shop.example/p1"}}, lim)
    >>> s, = sightings(ev)
    >>> s.product_id, s.kind, s.units, dict(s.attrs)["price"], dict(s.attrs)["category"], dict(s.attrs)["url"]
    ('p1', 'view', 1, '89.50', 'shoes', 'https://shop.example/p1')
    """
    kind = KINDS.get(ev.name) if ev.type == "track" else None
    if kind is None or not ev.products:
        return []
    props = ev.properties
    raw_lines = props.get("products")
    lines: list[dict[str, Any]] = [p for p in raw_lines if isinstance(p, dict)] if isinstance(raw_lines, list) else [props]
    out = []
    for i, p in enumerate(ev.products):
        if not p.product_id:
            continue
        raw = lines[i] if i < len(lines) else {}
        units = p.quantity if kind == "purchase" else 1
        attrs = _attrs(raw, p.name, p.category or norm_category(raw.get("category")), p.price_cents, raw.get("price") is not None)
        out.append(Sighting(p.product_id, f"{ev.message_id}#{i}", kind, max(units, 0), ev.ts, attrs, ev.trusted))
    return out


def keyed_sightings(items: list[Any]) -> list[tuple[str, Sighting]]:
    """The sightings of a batch of routed items, keyed by product id, in order: ``items`` are
    ``(route, key, item)`` triples (the flow's parse output); an item that is no
    :class:`~operators.events.Event` says nothing about the catalogue. One call per batch (the
    flow's ``catalogue_in``): :func:`sightings` of each event, without a Python call per item.

    >>> from operators.events import Limits, parse_event
    >>> ev = parse_event({"type": "track", "event": "Product Added", "userId": "u", "messageId": "m1",
    ...     "timestamp": "2024-05-01T10:00:00Z", "receivedAt": "2024-05-01T10:00:00Z",
    ...     "properties": {"product_id": "p1"}}, Limits(timestamp_min_ms=0))
    >>> [(k, s.kind) for k, s in keyed_sightings([("u", "u", ev), ("g", "g", object())])]
    [('p1', 'add')]
    """
    out: list[tuple[str, Sighting]] = []
    for x in items:
        ev = x[2]
        if type(ev) is Event and ev.products:
            for s in sightings(ev):
                out.append((s.product_id, s))
    return out


def rank(s: Sighting) -> tuple[int, int]:
    """How strongly a sighting's attributes hold: server keys over browser keys, then event time.

    >>> rank(Sighting("p", "m#0", "view", 1, 50, (), trusted=False)) < rank(Sighting("p", "m#1", "view", 1, 10, ()))
    True
    """
    return (int(s.trusted), s.ts)


def apply(state: ProductState | None, seen: list[Sighting]) -> tuple[ProductState, str, bool]:
    """Fold sightings of one product into its state: (new state, category before, changed).

    >>> s1 = Sighting("p1", "m1#0", "view", 1, 10, (("name", "Old"), ("category", "shoes")))
    >>> s2 = Sighting("p1", "m2#0", "purchase", 2, 5, (("name", "Older"), ("price", "9.00")))
    >>> st, before, changed = apply(None, [s1, s2, s1])
    >>> st.popularity, st.attrs["name"][1], st.attrs["price"][1], before, changed
    (11, 'Old', '9.00', '', True)
    >>> apply(st, [s1])[2]
    False
    >>> forged = Sighting("p1", "m3#0", "view", 1, 99, (("name", "FREE PHONE"),), trusted=False)
    >>> apply(st, [forged])[0].attrs["name"][1]  # newer, but from a browser key
    'Old'
    """
    st = state if state is not None else ProductState()
    before = st.category
    changed = False
    seen_ids = set(st.seen)
    for s in seen:
        if s.line_id in seen_ids:
            continue
        seen_ids.add(s.line_id)
        st.seen.append(s.line_id)
        if s.kind == "view":
            st.views += 1
        elif s.kind == "add":
            st.adds += 1
        else:
            st.units += s.units
        r: Any = rank(s)  # one tuple object for all its attributes (compiled too: the same pickled bytes)
        for k, v in s.attrs:
            old = st.attrs.get(k)
            if old is None or r >= old[0]:
                st.attrs[k] = (r, v)
        changed = True
    if len(st.seen) > SEEN_IDS:
        del st.seen[: len(st.seen) - SEEN_IDS]
    return st, before, changed


def output(product_id: str, st: ProductState, before: str) -> CatalogueOut:
    """The absolute write of a product after :func:`apply`.

    >>> st = ProductState({"name": ((1, 1), "Shoe"), "category": ((1, 1), "shoes")}, views=3)
    >>> output("p1", st, "boots")
    CatalogueOut(product_id='p1', fields={'name': 'Shoe', 'category': 'shoes', 'popularity': '3'}, category='shoes', popularity=3, left_category='boots')
    """
    fields = {k: v for k, (_, v) in st.attrs.items()}
    if "url" in st.attrs:
        fields["url_trusted"] = str(st.attrs["url"][0][0])
    fields["popularity"] = str(st.popularity)
    cat = st.category
    return CatalogueOut(product_id, fields, cat, st.popularity, before if before and before != cat else "")
