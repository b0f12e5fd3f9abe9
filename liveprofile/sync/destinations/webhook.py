"""Generic webhook destination: signed JSON batches.

``POST {url}`` with body::

    {"destination": "hook", "batch_key": "<hex>", "items": [
       {"user_id": "u1", "version": 7, "from_version": 5, "idempotency_key": "u1:7",
        "changed": {"email": "a@b.co"}, "events": [...], "deleted": false}, ...]}

``changed`` holds only the changed fields, values as stored in the profile
(strings; ``""`` = cleared). A forgotten user is an item with
``"deleted": true`` and nothing else to apply. An item that unsubscribes the user from email
carries an ``Unsubscribed`` event (``{"name": "Unsubscribed", "id":
"<user>:unsubscribed:<unsubscribed_at>", "ts": ..., "properties": {"channel": "email"}}``),
whether or not the destination sends trigger events.

Computed traits are in ``changed`` flattened, each under its own name with its JSON value (a
number, string, list or ``null``; not a string like the stored fields), replacing a field of the
same name; the ``computed`` and ``audiences`` fields themselves are never in ``changed``. Each
audience transition is one event, in order, whatever the ``events`` setting says::

    {"name": "Audience Entered", "id": "u1:audience:vip:entered:7", "ts": "<event_at>",
     "properties": {"audience": "vip", "event_at": "<event_at>"}}

(``Audience Exited`` likewise); ``event_at`` is the time of the event that caused it (for a window
exit, the moment the window let it go). The ``id`` is stable per (user, audience, change, version):
receivers de-duplicate on it across redeliveries.

Headers: ``Idempotency-Key`` (the batch key: a digest of the item keys, the
same on every retry and redelivery of the same items), ``X-Liveprofile-Timestamp``
(Unix seconds of this attempt) and ``X-Liveprofile-Signature: v1=<hex>``, the
HMAC-SHA256 with the destination secret of ``"{timestamp}." + body``.
Receivers check it with :func:`verify_signature` (or its three lines) and
reject stale timestamps; they de-duplicate on the per-item key.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import orjson

from liveprofile.sync.destinations.base import Destination, Request, pack
from liveprofile.sync.model import Item, Transition

__all__ = ["WebhookDestination", "audience_event", "sign", "verify_signature", "TIMESTAMP_HEADER", "SIGNATURE_HEADER"]

TIMESTAMP_HEADER = "X-Liveprofile-Timestamp"
SIGNATURE_HEADER = "X-Liveprofile-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``.

    >>> sign("s3cret", 1700000000, b"{}")[:10]
    'v1=9792681'
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300.0,
                     now: float | None = None) -> bool:  # fmt: skip
    """Receiver side: valid signature and a timestamp within ``tolerance`` seconds."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def audience_event(item: Item, t: Transition) -> dict[str, object]:
    """The ``Audience Entered`` / ``Audience Exited`` event of one transition (module docstring)."""
    at = t.get("at") or ""
    return {"name": f"Audience {t['change'].capitalize()}", "id": f"{item.user_id}:audience:{t['audience']}:{t['change']}:{t['version']}",
            "ts": at or None, "properties": {"audience": t["audience"], "event_at": at or None}}  # fmt: skip


def _item_doc(item: Item, fields: dict[str, object], events: list[dict[str, object]]) -> dict[str, object]:
    return {
        "user_id": item.user_id, "version": item.version, "from_version": item.from_version,
        "idempotency_key": item.key, "changed": {} if item.deleted else fields,
        "events": [] if item.deleted else events, "deleted": item.deleted,
    }  # fmt: skip


class WebhookDestination(Destination):
    """Signed JSON batches (see module docstring)."""

    def _events(self, item: Item) -> list[dict[str, object]]:
        evs: list[dict[str, object]] = list(self.events_of(item))
        if self.unsubscribes(item):
            evs.append(self.unsubscribe_event(item))
        evs += [audience_event(item, t) for t, _ in self.transitions_of(item)]
        return evs

    def _changed(self, item: Item) -> dict[str, object]:
        return {**self.fields_of(item), **self.computed_of(item)}

    def _docs(self, items: list[Item]) -> list[tuple[Item, bytes]]:
        return [(it, orjson.dumps(_item_doc(it, self._changed(it), self._events(it)))) for it in items]

    def build(self, items: list[Item]) -> list[Request]:
        docs = self._docs(items)
        sizes = {id(it): len(raw) + 1 for it, raw in docs}
        chunks = pack(((it, 1, sizes[id(it)]) for it, _ in docs), self.cfg.max_items, self.cfg.max_bytes - 200)
        return [self.rebuild("hook", chunk) for chunk in chunks]

    def rebuild(self, kind: str, items: list[Item]) -> Request:
        docs = self._docs(items)
        batch_key = hashlib.sha256("|".join(it.key for it in items).encode()).hexdigest()[:32]
        body = (
            b'{"destination":' + orjson.dumps(self.cfg.name) + b',"batch_key":"' + batch_key.encode()
            + b'","items":[' + b",".join(raw for _, raw in docs) + b"]}"
        )  # fmt: skip
        return Request("hook", self.cfg.url, body, items, batch_key)

    def headers(self, req: Request) -> dict[str, str]:
        ts = int(self.clock())
        return {
            "content-type": "application/json",
            "idempotency-key": req.idempotency_key,
            TIMESTAMP_HEADER: str(ts),
            SIGNATURE_HEADER: sign(self.cfg.secret, ts, req.body),
        }
