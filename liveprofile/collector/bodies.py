"""Request bodies in, answer bodies out: what the collector's JSON endpoints share.

Contract (SPEC §2; :mod:`liveprofile.collector.openapi` documents it):

* :func:`read_body` — the whole body, refused with :class:`~liveprofile.asgi.HTTPError` before
  anything is kept: over ``limit`` bytes by ``Content-Length`` or as received (413
  ``request_too_large``), a client gone before the end (400 ``client_disconnected``), an encoding
  other than gzip or identity (415 ``unsupported_encoding``); gzip is inflated with the *inflated*
  size bounded by ``limit`` too (413), a corrupt or truncated stream is 400 ``malformed_gzip``.
* :func:`decode_object` — the body as a JSON object (400 ``malformed_json`` / ``not_object``); a
  body orjson refuses only for values one event may hold (a lone surrogate, non-UTF-8 bytes in a
  string, ``NaN``, ``Infinity``, ``1e400``) is decoded by :func:`liveprofile.buffer.ingest.lenient_loads`
  instead, and those events are dead-lettered (``invalid_text``/``invalid_number``), not the batch;
  a batch with an event nested deeper than either decoder goes is split element by element
  (:func:`liveprofile.buffer.ingest.split_batch`) and that event dead-lettered
  (``invalid_field_type``).
* :func:`events_of` — the events of a body: ``{"batch": [...], "sentAt"?, "context"?,
  "integrations"?}`` (400 ``missing_batch`` without a ``batch`` array, 413 ``too_many_events``
  over the per-request limit; the three other keys become each event's defaults) or one event.
* :func:`ok_body` — ``{"success": true}``, plus ``accepted`` and the ``rejected`` list
  (``messageId``, ``reason``, ``message``) when an event was dead-lettered;
  :func:`error_body` — ``{"success": false, "error": code, "code": code, "message": text}``
  (``code`` repeats ``error`` because the Segment and RudderStack server SDKs read
  ``payload["code"]`` from an error answer: without it rudder-sdk-python raises ``KeyError``
  and retries a 4xx it should give up on).

May import: :mod:`liveprofile.buffer`, :mod:`liveprofile.asgi`.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from liveprofile.asgi import HTTPError, Receive
from liveprofile.buffer.ingest import Prepared, lenient_loads, split_batch

__all__ = ["read_body", "gunzip", "decode_object", "events_of", "ok_body", "error_body", "BATCH_DEFAULTS"]

#: the batch keys that become defaults of each of its events
BATCH_DEFAULTS = ("sentAt", "context", "integrations")


async def read_body(headers: dict[bytes, bytes], receive: Receive, limit: int) -> bytes:
    """The request body, at most ``limit`` bytes before and after gzip (see the module doc)."""
    clen = headers.get(b"content-length")
    if clen is not None and clen.isdigit() and int(clen) > limit:
        raise HTTPError(413, "request_too_large", f"request body is {int(clen)} bytes, the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise HTTPError(400, "client_disconnected", "the client went away before the body was complete")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "request_too_large", f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        more = msg.get("more_body", False)
    body = b"".join(chunks)
    enc = headers.get(b"content-encoding", b"").strip().lower()
    if enc == b"gzip":
        body = gunzip(body, limit)
    elif enc not in (b"", b"identity"):
        raise HTTPError(415, "unsupported_encoding", f"Content-Encoding {enc[:40].decode(errors='replace')!r} is not supported; use gzip")
    return body


def gunzip(body: bytes, limit: int) -> bytes:
    """Inflate a gzip body of at most ``limit`` inflated bytes.

    >>> import gzip
    >>> gunzip(gzip.compress(b"{}"), 10)
    b'{}'
    >>> gunzip(gzip.compress(b"x" * 11), 10)
    Traceback (most recent call last):
    ...
    liveprofile.asgi.HTTPError: the inflated body is over the limit of 10 bytes
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, "malformed_gzip", f"the gzip body cannot be inflated: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise HTTPError(413, "request_too_large", f"the inflated body is over the limit of {limit} bytes")
    if not d.eof:
        raise HTTPError(400, "malformed_gzip", "the gzip body is truncated")
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (leniently decoded where orjson refuses an event's value only).

    >>> decode_object(b'{"a": 1}')
    {'a': 1}
    >>> decode_object(b'{"batch": [{"a": NaN}]}')
    {'batch': [{'a': NaN}]}
    >>> decode_object(b"[1]")
    Traceback (most recent call last):
    ...
    liveprofile.asgi.HTTPError: the body must be a JSON object
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            doc = lenient_loads(body)
        except RecursionError:
            try:  # one event nested too deeply must not cost its batch: decode element by element
                doc = split_batch(body)
            except ValueError:
                raise HTTPError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
        except ValueError:
            raise HTTPError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise HTTPError(400, "not_object", "the body must be a JSON object")
    return doc


def events_of(doc: dict[str, Any], batch_shape: bool, max_batch_events: int) -> tuple[list[Any], dict[str, Any]]:
    """(events, batch defaults) of a body: ``{"batch": [...], ...}`` or one event.

    >>> events_of({"batch": [{"type": "track"}], "sentAt": "t", "other": 1}, True, 10)
    ([{'type': 'track'}], {'sentAt': 't'})
    >>> events_of({"type": "track"}, False, 10)
    ([{'type': 'track'}], {})
    """
    if batch_shape:
        batch = doc.get("batch")
        if not isinstance(batch, list):
            raise HTTPError(400, "missing_batch", "a batch body needs a `batch` array")
        if len(batch) > max_batch_events:
            raise HTTPError(
                413, "too_many_events",
                f"the batch has {len(batch)} events, the limit is {max_batch_events} per request",
            )  # fmt: skip
        return batch, {k: doc[k] for k in BATCH_DEFAULTS if k in doc}
    return [doc], {}


def ok_body(prep: Prepared) -> bytes:
    """The 200 answer: ``{"success": true}``, with what was dead-lettered if anything was.

    >>> ok_body(Prepared(accepted=2))
    b'{"success":true}'
    """
    if not prep.rejected:
        return b'{"success":true}'
    return orjson.dumps({
        "success": True,
        "accepted": prep.accepted,
        "rejected": [{"messageId": r.message_id, "reason": r.reason, "message": r.message} for r in prep.rejected],
    })


def error_body(code: str, message: str) -> bytes:
    """A refusal's answer.

    >>> error_body("unauthorized", "unknown write key")
    b'{"success":false,"error":"unauthorized","code":"unauthorized","message":"unknown write key"}'
    """
    return orjson.dumps({"success": False, "error": code, "code": code, "message": message})
