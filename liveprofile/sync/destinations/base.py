"""The destination contract: turn a batch of :class:`~liveprofile.sync.model.Item` into HTTP requests.

An adapter is pure: :meth:`Destination.build` packs items into
:class:`Request` objects that respect the vendor's limits (objects per
request, bytes per request), and :meth:`Destination.headers` gives the headers
of one attempt (auth, signatures with a fresh timestamp). The sync's
delivery (:mod:`liveprofile.sync.delivery`) sends them, paces, retries and commits.

Every item lands in at least one request; an item is delivered when all the
requests holding it succeeded. Requests of one batch hold disjoint users per
``kind``, so they may be sent concurrently without breaking per-user order.
A request refused as a whole with 400/413/422 is split in two with
:meth:`Destination.rebuild` until the bad item is alone (then dead-lettered).

**Unsubscribes.** An item whose ``email_unsubscribed`` became ``"1"`` (:meth:`Destination.unsubscribes`)
is also sent through the platform's own unsubscribe mechanism — whatever the destination's field
allow-list and ``events`` setting say: Klaviyo's bulk unsubscribe job, Braze's
``email_subscribe`` attribute, an ``Unsubscribed`` event for webhooks
(:meth:`Destination.unsubscribe_event`). The feed adds the profile's current ``email`` to such
an item (Klaviyo unsubscribes by address).

Per-item outcomes the vendor reports apart from the status are dead-lettered per
item, never the whole request: :meth:`Destination.lookup` / :meth:`Destination.found`
(a GET that finds how the vendor names an item before it can be sent, e.g. a
Klaviyo profile id), :meth:`Destination.refusal` (an item the vendor's
API cannot express, e.g. a deletion with no identifier the vendor takes: never
sent), :meth:`Destination.rejected` (objects refused inside an accepted answer,
e.g. Braze's ``errors`` in a 201) and asynchronous jobs
(:meth:`Destination.job_id` names the job an accepted request started;
:meth:`Destination.job_poll` / :meth:`Destination.job_errors` read its result
later, see :mod:`liveprofile.sync.delivery`).

**Computed traits and audiences** (the shared contract 4). The ``computed`` field (a JSON object) is
never sent as one field: :meth:`Destination.computed_of` flattens it, each trait a property under its
own name (a name that collides with a profile field or a trait: the computed one wins); the
``audiences`` field is never sent as a field. Audience transitions (:attr:`Item.transitions
<liveprofile.sync.model.Item.transitions>`) go through each vendor's own membership mechanism, to
the targets of :attr:`Destination.audiences` (:mod:`liveprofile.sync.audiences`);
:meth:`Destination.membership` is the net change per audience of an item (what a vendor holding
membership state is told), :meth:`Destination.transitions_of` every transition in order (events).
A deletion carries none (the vendor deletes the profile, its memberships with it).

**Request classes.** :meth:`Destination.rate_class` names the vendor's own rate limit of a request
(Klaviyo's list endpoints: 150/min steady): the delivery paces each class on top of the destination's rate.

Types: :mod:`~liveprofile.sync.destinations.webhook`, :mod:`~liveprofile.sync.destinations.braze`,
:mod:`~liveprofile.sync.destinations.klaviyo`; :func:`make_destination` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from liveprofile.sync.audiences import AudienceTargets
from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.model import Item, Transition, net_transitions
from operators.schema import Kind, names

__all__ = ["Request", "Destination", "typed", "pack", "traits_of", "INT_FIELDS", "FLOAT_FIELDS", "JSON_FIELDS"]

# value typing for the platforms, from the profile schema (operators.schema)
INT_FIELDS = names(Kind.INT, Kind.FLAG)
FLOAT_FIELDS = names(Kind.MONEY, Kind.FLOAT)
JSON_FIELDS = names(Kind.JSON)
#: never sent as profile fields (contract 4): the computed object is flattened, audiences are memberships
_NOT_FIELDS = frozenset({"user_id", "computed", "audiences"})


@dataclass(slots=True)
class Request:
    """One HTTP request to a destination and the items it carries."""

    kind: str
    url: str
    body: bytes
    items: list[Item]
    idempotency_key: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"


def typed(name: str, value: str) -> Any:
    """A profile field's stored string as a typed vendor value ("" clears: None).

    >>> typed("revenue_total", "12.50"), typed("purchase_count", "3"), typed("consent", '{"email": true}')
    (12.5, 3, {'email': True})
    >>> typed("email", ""), typed("email", "a@b.co"), typed("cart_items", "x")
    (None, 'a@b.co', 'x')
    """
    if value == "":
        return None
    try:
        if name in INT_FIELDS:
            return int(value)
        if name in FLOAT_FIELDS:
            return float(Decimal(value))
        if name in JSON_FIELDS:
            return orjson.loads(value)
    except (ValueError, InvalidOperation, orjson.JSONDecodeError):
        return value
    return value


def traits_of(value: str) -> dict[str, Any]:
    """The profile's ``traits`` field (a JSON object, :mod:`operators.traits`) as a dict; ``{}``
    when empty or not an object. The platforms get each trait under their own names (Klaviyo's
    and Braze's adapters); the webhook sends the field as stored.

    >>> traits_of('{"first_name": "Ann"}'), traits_of(""), traits_of("[1]")
    ({'first_name': 'Ann'}, {}, {})
    """
    try:
        t = orjson.loads(value) if value else {}
    except orjson.JSONDecodeError:
        return {}
    return t if isinstance(t, dict) else {}


def pack(objs: Iterable[tuple[Item, int, int]], max_count: int, max_bytes: int) -> list[list[Item]]:
    """Greedy packing of (item, object count, bytes) into chunks under both bounds.

    An item larger than a bound on its own gets a chunk of its own.

    >>> its = [Item(str(i), 1, 1) for i in range(5)]
    >>> [len(c) for c in pack([(it, 2, 10) for it in its], max_count=5, max_bytes=1000)]
    [2, 2, 1]
    """
    chunks: list[list[Item]] = []
    cur: list[Item] = []
    n = size = 0
    for item, count, nbytes in objs:
        if cur and (n + count > max_count or size + nbytes > max_bytes):
            chunks.append(cur)
            cur, n, size = [], 0, 0
        cur.append(item)
        n += count
        size += nbytes
    if cur:
        chunks.append(cur)
    return chunks


class Destination:
    """Base adapter. Subclasses implement :meth:`build` and :meth:`rebuild`."""

    def __init__(self, cfg: DestinationConfig, clock: Callable[[], float] | None = None) -> None:
        import time

        self.cfg = cfg
        self.clock = clock or time.time
        #: where each audience's membership goes here (the worker loads it at start)
        self.audiences = AudienceTargets(cfg.type)

    # -- shaping -------------------------------------------------------------
    def fields_of(self, item: Item) -> dict[str, str]:
        """The item's fields this destination takes (allow-list; never ``user_id``, ``computed``
        (flattened: :meth:`computed_of`) or ``audiences`` (membership: :meth:`membership`))."""
        allow = self.cfg.fields
        return {k: v for k, v in item.changed.items()
                if k not in _NOT_FIELDS and (allow is None or k in allow)}  # fmt: skip

    def computed_of(self, item: Item) -> dict[str, Any]:
        """The item's computed traits, flattened: name -> value (``null``: no value, e.g. an empty
        ``avg``). The allow-list admits them all with ``computed`` or each by its name.

        >>> d = Destination(DestinationConfig("w", "webhook", "http://x", secret="s"))
        >>> d.computed_of(Item("u", 2, 2, {"computed": '{"views_7d": 3, "avg_order": null}'}))
        {'views_7d': 3, 'avg_order': None}
        >>> d.computed_of(Item("u", 2, 2, {"computed": "[1]"})), d.computed_of(Item("u", 2, 2, {}))
        ({}, {})
        """
        raw = item.changed.get("computed")
        if not raw or item.deleted:
            return {}
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
        if not isinstance(doc, dict):
            return {}
        allow = self.cfg.fields
        return {str(k): v for k, v in doc.items() if allow is None or "computed" in allow or k in allow}

    def transitions_of(self, item: Item) -> list[tuple[Transition, dict[str, str]]]:
        """Every transition of ``item`` this destination delivers, in order, with its target."""
        if item.deleted:
            return []
        out = []
        for t in item.transitions:
            target = self.audiences.target(t["audience"], t["change"])
            if target is not None:
                out.append((t, target))
        return out

    def membership(self, item: Item) -> dict[str, tuple[str, dict[str, str]]]:
        """The net change per audience of ``item`` (audience -> (``entered``/``exited``, target))."""
        if item.deleted:
            return {}
        out = {}
        for a, change in net_transitions(item.transitions).items():
            target = self.audiences.target(a, change)
            if target is not None:
                out[a] = (change, target)
        return out

    def events_of(self, item: Item) -> list[dict[str, Any]]:
        return item.events if self.cfg.events else []

    def sendable(self, item: Item) -> bool:
        """Whether anything of ``item`` is left to send to this destination."""
        return (item.deleted or bool(self.fields_of(item)) or bool(self.events_of(item)) or self.unsubscribes(item)
                or bool(self.computed_of(item)) or bool(self.membership(item)))  # fmt: skip

    @staticmethod
    def unsubscribes(item: Item) -> bool:
        """Whether ``item`` unsubscribes the user from email (``email_unsubscribed`` became ``1``)."""
        return not item.deleted and item.changed.get("email_unsubscribed") == "1"

    @staticmethod
    def unsubscribe_event(item: Item) -> dict[str, Any]:
        """The ``Unsubscribed`` event of an unsubscribing item (Segment's email spec name); its
        ``id`` is stable per user and unsubscribe time, so a redelivery is recognisable."""
        at = item.changed.get("unsubscribed_at", "")
        return {"name": "Unsubscribed", "id": f"{item.user_id}:unsubscribed:{at}", "ts": at or None,
                "properties": {"channel": "email"}}  # fmt: skip

    # -- requests ------------------------------------------------------------
    def build(self, items: list[Item]) -> list[Request]:
        raise NotImplementedError

    def rebuild(self, kind: str, items: list[Item]) -> Request:
        """The request of ``kind`` for a subset of items (used to split refused requests)."""
        raise NotImplementedError

    def headers(self, req: Request) -> dict[str, str]:
        """Headers of one attempt of ``req``."""
        raise NotImplementedError

    def rate_class(self, req: Request) -> tuple[str, float] | None:
        """(name, requests per second) of the vendor's own rate limit for ``req``, if it has one."""
        return None

    def skipped_clears(self, items: list[Item]) -> int:
        """Cleared fields of ``items`` this destination cannot clear (and skips)."""
        return 0

    def unsubscribe_skipped(self, items: list[Item]) -> int:
        """Unsubscribing items this destination cannot pass on (and skips)."""
        return 0

    def accepted(self, req: Request, status: int, body: bytes) -> bool:
        """Whether a response means the vendor took the request (default: 2xx)."""
        return 200 <= status < 300

    # -- per-item outcomes ---------------------------------------------------
    def lookup(self, item: Item) -> str | Request | None:
        """How to find how the vendor names ``item`` before it can be sent: the URL of a GET, a
        request (sent as it is, e.g. Klaviyo's profile-import that answers the profile id), or None."""
        return None

    def found(self, item: Item, body: bytes) -> bool:
        """Read a lookup's answer into ``item``; False: the vendor holds nothing of it (nothing to send)."""
        raise NotImplementedError

    def refusal(self, item: Item) -> str | None:
        """Why ``item`` cannot be sent to this vendor at all (its dead-letter reason), or None."""
        return None

    def rejected(self, req: Request, status: int, body: bytes) -> list[tuple[Item, str]]:
        """Items of an accepted request the vendor refused one by one, with the vendor's reason."""
        return []

    def job_id(self, req: Request, status: int, body: bytes) -> str | None:
        """The asynchronous job an accepted request started, whose per-item results come later (or None)."""
        return None

    def job_items(self, req: Request) -> list[Item]:
        """The items of ``req`` in the order the job's error pointers index them."""
        return list(req.items)

    def job_url(self, job_id: str) -> str:
        """Where the job's status is read (GET)."""
        raise NotImplementedError

    def job_poll(self, job_id: str, body: bytes) -> tuple[str, str | None]:
        """A status answer as (``"pending"`` | ``"done"`` | ``"cancelled"``, the URL of its errors or None)."""
        raise NotImplementedError

    def job_errors(self, body: bytes) -> tuple[list[tuple[str | None, int | None, str]], str | None]:
        """One page of a job's errors: [(user id or None, index or None, reason)], the next page's URL or None."""
        raise NotImplementedError
