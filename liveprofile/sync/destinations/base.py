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

Types: :mod:`~liveprofile.sync.destinations.webhook`, :mod:`~liveprofile.sync.destinations.braze`,
:mod:`~liveprofile.sync.destinations.klaviyo`; :func:`make_destination` picks one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.model import Item
from operators.schema import Kind, names

__all__ = ["Request", "Destination", "typed", "pack", "traits_of", "INT_FIELDS", "FLOAT_FIELDS", "JSON_FIELDS"]

# value typing for the platforms, from the profile schema (operators.schema)
INT_FIELDS = names(Kind.INT, Kind.FLAG)
FLOAT_FIELDS = names(Kind.MONEY, Kind.FLOAT)
JSON_FIELDS = names(Kind.JSON)


@dataclass(slots=True)
class Request:
    """One HTTP request to a destination and the items it carries."""

    kind: str
    url: str
    body: bytes
    items: list[Item]
    idempotency_key: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)


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

    # -- shaping -------------------------------------------------------------
    def fields_of(self, item: Item) -> dict[str, str]:
        """The item's fields this destination takes (allow-list; never ``user_id``)."""
        allow = self.cfg.fields
        return {k: v for k, v in item.changed.items() if k != "user_id" and (allow is None or k in allow)}

    def events_of(self, item: Item) -> list[dict[str, Any]]:
        return item.events if self.cfg.events else []

    def sendable(self, item: Item) -> bool:
        """Whether anything of ``item`` is left to send to this destination."""
        return item.deleted or bool(self.fields_of(item)) or bool(self.events_of(item)) or self.unsubscribes(item)

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
    def lookup(self, item: Item) -> str | None:
        """URL of a GET that finds how the vendor names ``item`` before it can be sent, or None."""
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
