"""Envelope checks shared by every way in (HTTP collector, JSONL replay, webhooks).

``prepare(events, ...)`` stamps ``receivedAt`` (unless the event already has
one and ``keep_received`` is set, as for historical imports), applies batch
defaults, enforces the per-event size limit, validates with
:func:`operators.events.parse_event` the JSON bytes that will be appended (so the verdict is
the dataflow's on the same bytes, and the typed fast path applies), and returns the buffer appends for the
valid events plus the dead-letter appends for the rest. Nothing is written
here; the caller appends both lists in one go, so the dead letters are as
durable as the events.

With ``mask_ip`` (``LIVEPROFILE_TRUNCATE_IP=on``) ``context.ip`` is truncated by
:func:`truncate_ip` before the event is serialized, so neither the buffer nor
the dead letters ever hold the full address; a value that is not an IP address
is dropped.

Trust: ``trust`` is the write key's level (:data:`SERVER` or :data:`BROWSER`). Any
``_trust`` field (:data:`operators.events.TRUST_FIELD`) a client put in an event is removed
first; a browser key's events are then stamped ``"_trust": "browser"``, so the dataflow knows
the level and no client can forge a server one. ``trust=None`` keeps a stored stamp as it is
(re-driving the service's own dead letters).

``prepare`` never raises on decoded JSON: an event that cannot be serialized
again is dead-lettered, its reason naming the first value at fault (with its
path in the message): ``invalid_text`` for a string or key that is not valid
Unicode (a lone surrogate — what JavaScript's ``slice()`` leaves of an emoji —
or bytes that are not UTF-8), ``invalid_number`` for NaN, ±Infinity or a number
beyond a double (an :class:`Unstorable` from :func:`lenient_loads`, or an
integer beyond 64 bits from an in-process caller), ``invalid_field_type`` for
the rest (nesting deeper than orjson writes, non-string keys). Its ``raw`` is
then ASCII-only JSON (lone surrogates as ``\\uXXXX`` escapes, an unstorable
number as the string of its text), cut at ``LIVEPROFILE_MAX_EVENT_BYTES``, so
the dead letter itself can always be stored and read back.

:func:`lenient_loads` decodes a body orjson refuses because of such values, so
that one bad event costs only itself (SPEC §2: event-level problems never fail
a batch); a body it cannot decode either is malformed as a whole.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from liveprofile.buffer.streams import Append
from liveprofile.store.deadletter import Stage, dead_letter_fields
from liveprofile.store.keys import Keys
from operators.events import (
    BROWSER_TRUST,
    TRUST_FIELD,
    Limits,
    Reason,
    Rejected,
    identity_of,
    parse_event,
)
from operators.identity import anon_uid
from operators.routing import shard_of

__all__ = ["Prepared", "prepare", "truncate_ip", "lenient_loads", "Unstorable", "TooDeep", "split_batch", "SERVER", "BROWSER",
           "suppression_members", "suppression_lists", "drop_suppressed", "drop_appends"]

#: the trust levels of a write key (see the module doc)
SERVER = "server"
BROWSER = BROWSER_TRUST


class Unstorable:
    """A number :func:`lenient_loads` decoded that no buffer entry may hold (``NaN``,
    ``Infinity``, ``-Infinity``, ``1e400``): :func:`prepare` dead-letters its event."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _lenient_int(s: str) -> int | float | Unstorable:
    # as orjson: integers of 64 bits stay integers, longer ones become doubles
    if len(s) <= 20:
        v = int(s)
        if -(2**63) <= v < 2**64:
            return v
    return _lenient_float(s)


def _lenient_float(s: str) -> float | Unstorable:
    f = float(s)
    return f if math.isfinite(f) else Unstorable(s)


def lenient_loads(body: bytes) -> Any:
    """Decode JSON that orjson refuses only because of values one event may hold: lone
    surrogates and non-UTF-8 bytes in strings (kept as lone surrogates, which :func:`prepare`
    dead-letters as ``invalid_text``), ``NaN``/``Infinity`` and numbers beyond a double (as
    :class:`Unstorable`). Raises ``ValueError`` (or ``RecursionError``) for anything else that
    is not JSON.

    >>> doc = lenient_loads(b'{"a": "\\ud83d", "b": NaN, "c": 1e400, "d": 1.5, "e": 7}')
    >>> doc["a"] == "\\ud83d", doc["b"], doc["c"], doc["d"], doc["e"]
    (True, NaN, 1e400, 1.5, 7)
    """
    text = body.decode("utf-8", "surrogateescape")
    return json.loads(text, parse_float=_lenient_float, parse_int=_lenient_int, parse_constant=Unstorable)


class TooDeep:
    """A batch element nested deeper than either JSON decoder goes (orjson: 1024 levels, the
    standard library: the recursion limit), kept as its raw bytes: :func:`prepare` dead-letters it
    (``invalid_field_type``) and the batch's other events are taken (SPEC 2)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{},:]')


def _decode_element(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return lenient_loads(raw)
    except RecursionError:
        return TooDeep(raw)


def split_batch(body: bytes) -> dict[str, Any]:
    """Decode ``{"batch": [...], ...}`` whose elements may be nested too deeply to decode: each
    element on its own, a too-deep one as :class:`TooDeep`. Raises ``ValueError`` when the body is
    not such an object or is not JSON for any other reason (a request-level 400). Iterative: the
    scan over the body's strings and brackets has no recursion.

    >>> deep = b"[" * 1100 + b"]" * 1100
    >>> doc = split_batch(b'{"sentAt": "t", "batch": [{"a": 1}, ' + deep + b', {"b": [2]}]}')
    >>> doc["sentAt"], doc["batch"][0], type(doc["batch"][1]).__name__, doc["batch"][2]
    ('t', {'a': 1}, 'TooDeep', {'b': [2]})
    >>> split_batch(b'{"batch": [1, }')
    Traceback (most recent call last):
    ...
    ValueError: not a JSON object with a batch array
    """
    depth = 0
    key: bytes | None = None
    expect_key = False
    start = end = -1
    spans: list[tuple[int, int]] = []
    elem = -1
    for m in _TOKENS.finditer(body):
        tok = m.group()
        c = tok[:1]
        if c == b'"':
            if depth == 1 and expect_key:
                key, expect_key = tok, False
            continue
        if c in b"[{":
            depth += 1
            if depth == 1 and c == b"{":
                expect_key = True
            elif depth == 2 and c == b"[" and key == b'"batch"' and start < 0:
                start = elem = m.end()
        elif c in b"]}":
            if depth == 2 and start >= 0 and end < 0 and c == b"]":
                if body[elem:m.start()].strip():
                    spans.append((elem, m.start()))
                end = m.start()
            depth -= 1
            if depth < 0:
                break
        elif c == b",":
            if depth == 1:
                expect_key = True
            elif depth == 2 and start >= 0 and end < 0:
                spans.append((elem, m.start()))
                elem = m.end()
    if start < 0 or end < 0 or depth != 0:
        msg = "not a JSON object with a batch array"
        raise ValueError(msg)
    try:
        doc = orjson.loads(body[: start - 1] + b"[]" + body[end + 1 :])
        batch = [_decode_element(body[a:b]) for a, b in spans]
    except (ValueError, RecursionError):
        msg = "not a JSON object with a batch array"
        raise ValueError(msg) from None
    if not isinstance(doc, dict) or doc.get("batch") != []:
        msg = "not a JSON object with a batch array"
        raise ValueError(msg)
    doc["batch"] = batch
    return doc


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable(ev: object) -> tuple[Reason, str]:
    """(reason, message) of the first value orjson cannot write in ``ev`` (depth first)."""
    stack: list[tuple[object, str, int]] = [(ev, "", 0)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, Unstorable):
            return Reason.INVALID_NUMBER, f"{path or 'the event'} is {v.text[:40]}, which is not a storable number"
        if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
            return Reason.INVALID_NUMBER, f"{path or 'the event'} is an integer beyond 64 bits"
        if isinstance(v, str):
            if not _is_text(v):
                return Reason.INVALID_TEXT, f"{path or 'the event'} is not valid Unicode text (a lone surrogate or non-UTF-8 bytes)"
        elif isinstance(v, dict):
            if depth > 200:
                break
            for k, item in reversed(list(v.items())):
                name = k if isinstance(k, str) else repr(k)
                shown = name.encode("ascii", "backslashreplace").decode()[:60]
                if isinstance(k, str) and not _is_text(k):
                    return Reason.INVALID_TEXT, f"a key of {path or 'the event'} ({shown}) is not valid Unicode text"
                if not isinstance(k, str):
                    return Reason.INVALID_FIELD_TYPE, f"a key of {path or 'the event'} is not a string"
                stack.append((item, f"{path}.{shown}" if path else shown, depth + 1))
        elif isinstance(v, list | tuple):
            if depth > 200:
                break
            for i in range(len(v) - 1, -1, -1):
                stack.append((v[i], f"{path}[{i}]", depth + 1))
    return Reason.INVALID_FIELD_TYPE, "the event cannot be serialized as JSON (nesting too deep, invalid text or keys)"


@dataclass
class Prepared:
    """Appends to make, and what was rejected (in input order)."""

    appends: list[Append] = field(default_factory=list)
    accepted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    #: per append, the ``(userId, anonymousId)`` it belongs to (normalized as the dataflow does:
    #: :func:`operators.events.identity_of`): what suppression checks (:func:`drop_suppressed`)
    owners: list[tuple[str | None, str | None]] = field(default_factory=list)
    #: events refused because their user is suppressed (forgotten): nothing of them is kept
    suppressed: int = 0


def prepare(
    events: Iterable[object],
    *,
    keys: Keys,
    shards: int,
    limits: Limits,
    received_at: str,
    source: str,
    stage: Stage = Stage.COLLECTOR,
    force_type: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    keep_received: bool = False,
    mask_ip: bool = False,
    trust: str | None = SERVER,
) -> Prepared:
    """Turn decoded events into buffer and dead-letter appends (see module doc)."""
    out = Prepared()
    max_event = limits.max_event_bytes
    streams = [keys.events(i) for i in range(shards)]
    dl = keys.dead_letter
    for ev in events:
        if isinstance(ev, TooDeep):
            rej = Rejected(Reason.INVALID_FIELD_TYPE, "event nesting is too deep to decode", ev.raw[:max_event])
            ev = None
        elif not isinstance(ev, dict):
            raw = _dumps_or_none(ev, orjson.OPT_NON_STR_KEYS)
            rej = Rejected(Reason.NOT_OBJECT, "an event must be a JSON object", (raw if raw is not None else _fallback_raw(ev))[:max_event])
        else:
            ev.pop("writeKey", None)
            if trust is not None:
                ev.pop(TRUST_FIELD, None)
                if trust == BROWSER:
                    ev[TRUST_FIELD] = BROWSER
            if force_type is not None:
                ev["type"] = force_type
            if defaults:
                for k, v in defaults.items():
                    ev.setdefault(k, v)
            if not (keep_received and ev.get("receivedAt")):
                ev["receivedAt"] = received_at
            if mask_ip:
                _mask_context_ip(ev)
            mid = ev.get("messageId")
            try:
                raw: bytes | None = orjson.dumps(ev)
            except orjson.JSONEncodeError:
                raw = None
            if raw is None:
                reason, message = _unstorable(ev)
                rej = Rejected(
                    reason, message, _fallback_raw(ev)[:max_event], None,
                    mid if isinstance(mid, str) and _is_text(mid) else None,
                )  # fmt: skip
            elif len(raw) > max_event:
                rej = Rejected(
                    Reason.EVENT_TOO_LARGE, f"event is {len(raw)} bytes, the limit is {max_event}",
                    raw[:max_event], None, mid if isinstance(mid, str) else None,
                )  # fmt: skip
            else:
                # the bytes the buffer will hold, not the dict: parse_event's typed fast path
                # (msgspec) takes bytes, and the verdict is the one the dataflow reaches on them
                res = parse_event(raw, limits)
                if not isinstance(res, Rejected):
                    out.appends.append((streams[shard_of(res.uid, shards)], {"e": raw}))
                    out.owners.append((res.user_id, res.anonymous_id))
                    out.accepted += 1
                    continue
                rej = Rejected(res.reason, res.message, raw, res.received_at, res.message_id)
        out.rejected.append(rej)
        out.appends.append((dl, dead_letter_fields(rej, stage, source, ev if isinstance(ev, dict) else None)))
        out.owners.append(identity_of(ev)[:2])
    return out


def suppression_members(prep: Prepared, keys: Keys) -> dict[str, list[str]]:
    """Suppressed-set key -> the members to look up for ``prep`` (distinct, in first-seen order):
    each append's ``userId`` as is and its ``anonymousId`` as
    :func:`operators.identity.anon_uid` (how :func:`liveprofile.admin.privacy.forget` records a
    forgotten anonymous id), each in the set of its own key group.

    >>> p = Prepared(appends=[("lp:events:0", {}), ("lp:dead-letter", {})], owners=[("u1", "a1"), (None, "a1")])
    >>> suppression_members(p, Keys("lp"))
    {'lp:suppressed': ['u1', ' anon:a1']}
    """
    out: dict[str, dict[str, None]] = {}
    for user_id, anonymous_id in prep.owners:
        if user_id is not None:
            out.setdefault(keys.suppressed_for(user_id), {})[user_id] = None
        if anonymous_id is not None:
            out.setdefault(keys.suppressed_for(anonymous_id), {})[anon_uid(anonymous_id)] = None
    return {k: list(v) for k, v in out.items()}


def suppression_lists(prep: Prepared) -> list[list[str]]:
    """Per append of ``prep``, the suppressed-set members it belongs to (what the atomic append
    checks: :data:`~liveprofile.store.scripts.APPEND_LUA`).

    >>> suppression_lists(Prepared(appends=[("s", {}), ("s", {})], owners=[("u1", "a1"), (None, None)]))
    [['u1', ' anon:a1'], []]
    """
    out: list[list[str]] = []
    for user_id, anonymous_id in prep.owners:
        ms = [user_id] if user_id is not None else []
        if anonymous_id is not None:
            ms.append(anon_uid(anonymous_id))
        out.append(ms)
    return out


def drop_suppressed(prep: Prepared, keys: Keys, suppressed: set[str]) -> Prepared:
    """``prep`` without the appends (events and dead letters) of members in ``suppressed``
    (see :func:`suppression_members`); :attr:`Prepared.suppressed` counts the dropped ones.

    >>> p = Prepared(appends=[("lp:events:0", {"e": "1"}), ("lp:events:0", {"e": "2"})], accepted=2, owners=[("u1", None), ("u2", None)])
    >>> q = drop_suppressed(p, Keys("lp"), {"u1"})
    >>> q.appends, q.accepted, q.suppressed
    ([('lp:events:0', {'e': '2'})], 1, 1)
    """
    if not suppressed:
        return prep
    drop = {i for i, (u, a) in enumerate(prep.owners) if u in suppressed or (a is not None and anon_uid(a) in suppressed)}
    return drop_appends(prep, keys, drop)


def drop_appends(prep: Prepared, keys: Keys, drop: set[int]) -> Prepared:
    """``prep`` without the appends at the positions ``drop`` (left out as suppressed, counted
    in :attr:`Prepared.suppressed`), with its accepted count and rejected list to match."""
    if not drop:
        return prep
    out = Prepared(suppressed=prep.suppressed)
    rejected = iter(prep.rejected)
    dl = keys.dead_letter
    owners = prep.owners if len(prep.owners) == len(prep.appends) else [(None, None)] * len(prep.appends)
    for i, (append, owner) in enumerate(zip(prep.appends, owners, strict=True)):
        rej = next(rejected) if append[0] == dl else None
        if i in drop:
            out.suppressed += 1
            continue
        out.appends.append(append)
        out.owners.append(owner)
        if rej is None:
            out.accepted += 1
        else:
            out.rejected.append(rej)
    return out


def _dumps_or_none(value: object, option: int) -> bytes | None:
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        return None


def _fallback_raw(value: object) -> bytes:
    """Best-effort text of an event orjson cannot write (for the dead letter)."""
    try:
        return json.dumps(value, ensure_ascii=True, default=repr, check_circular=False).encode()
    except (RecursionError, ValueError, TypeError, OverflowError):
        return b""


def _mask_context_ip(ev: dict[str, Any]) -> None:
    ctx = ev.get("context")
    if not isinstance(ctx, dict) or "ip" not in ctx:
        return
    ip = ctx["ip"]
    masked = truncate_ip(ip) if isinstance(ip, str) else None
    if masked == ip or ip is None:
        return
    ctx = dict(ctx)  # batch defaults share one context object: never edit it in place
    if masked is None:
        del ctx["ip"]
    else:
        ctx["ip"] = masked
    ev["context"] = ctx


def truncate_ip(value: str) -> str | None:
    """``value`` with the host part zeroed (IPv4 to /24, IPv6 to /48), or ``None`` if not an IP.

    Accepts what trackers and proxies send: surrounding spaces, ``[v6]``, a
    ``:port`` suffix, an IPv6 zone, IPv4-mapped IPv6 (truncated as IPv4).

    >>> truncate_ip("203.0.113.77"), truncate_ip("2001:db8:abcd:12:1:2:3:4"), truncate_ip("[2001:db8::1]:443")
    ('203.0.113.0', '2001:db8:abcd::', '2001:db8::')
    >>> truncate_ip("::ffff:198.51.100.9"), truncate_ip("198.51.100.9:8080"), truncate_ip("not an ip")
    ('198.51.100.0', '198.51.100.0', None)
    """
    if len(value) > 64:
        return None
    return _truncate_ip(value.strip())


@lru_cache(maxsize=4096)
def _truncate_ip(s: str) -> str | None:
    if s.startswith("["):
        s = s[1 : s.find("]")] if "]" in s else s[1:]
    elif s.count(":") == 1:  # IPv4 with a port
        s = s.split(":", 1)[0]
    s = s.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        else:
            return str(ipaddress.IPv6Network((addr, 48), strict=False).network_address)
    return str(ipaddress.IPv4Network((addr, 24), strict=False).network_address)
