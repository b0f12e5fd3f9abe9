"""User and account traits: parsing (names, bounds, deny list) and the per-trait fold.

Contract
--------
Parsing (:func:`parse_traits`, called by :func:`operators.events.parse_event`):

* The user's traits of an event are ``context.traits`` (any call: RudderStack sends identify
  traits only there) overlaid with ``traits`` of an ``identify`` call (SPEC §1). A ``group``
  call's ``traits`` are the account's (:attr:`operators.events.Event.group_traits`).
* Segment's reserved traits get one snake_case name each (:data:`RESERVED`: ``firstName`` and
  ``first_name`` are both ``first_name``; ``createdAt`` is ``created_at``); the reserved objects
  ``address`` and ``company`` have their documented keys normalized the same way
  (``postalCode`` → ``postal_code``, ``employeeCount`` → ``employee_count``). Any other name is
  a custom trait and keeps its spelling. When an event holds both spellings of one reserved
  trait, the snake_case one wins.
* ``email`` is not a trait here: it is the profile's own validated ``email`` field (SPEC §4),
  so it is never stored twice with two rules.
* Names in the deny list (``LIVEPROFILE_TRAITS_DENY``, compared case-insensitively after
  normalization, e.g. ``password``, ``ssn``) are dropped at parse: they reach no profile, change
  feed, platform or dead letter the dataflow writes (a rejected event's stored raw copy has
  them removed too).
* Bounds: more than ``max_traits`` traits in one event is the dead letter ``too_many_traits``;
  a value whose JSON is longer than ``max_trait_bytes`` is the dead letter ``trait_too_large``
  (the whole event: a trait is never silently cut). A trait name longer than 128 characters
  or a value nested deeper than 8 levels is ``invalid_field_type``, and so is a value JSON cannot
  hold (an integer beyond 64 bits, a non-string key: only a decoded event given as a dict can).

Folding (:func:`fold`, :func:`merge_into`): a trait map is ``name -> (event time, value)``;
``value`` ``None`` is a tombstone (the trait was unset by a JSON ``null``), kept with its time
so an older value arriving later cannot resurrect it. Per trait the write with the newest
event time wins; a tie goes to the larger JSON encoding of the value (``null`` included), so
the result does not depend on arrival order. A map holds at most ``max_traits`` names (live
or tombstones): past it, the names whose newest write is oldest (then by name) are let go, a
documented truncation that is itself order-insensitive (a let-go name's older writes rank
below every kept one and are let go again).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["RESERVED", "TraitMap", "TraitError", "parse_traits", "fold", "merge_into", "live", "render"]

#: Segment's reserved identify traits (Spec: Identify, "Traits"), every accepted spelling -> its name
RESERVED: dict[str, str] = {
    "address": "address", "age": "age", "avatar": "avatar", "birthday": "birthday",
    "company": "company", "createdAt": "created_at", "created_at": "created_at",
    "description": "description", "firstName": "first_name", "first_name": "first_name",
    "gender": "gender", "id": "id", "lastName": "last_name", "last_name": "last_name",
    "name": "name", "phone": "phone", "title": "title", "username": "username", "website": "website",
}  # fmt: skip
#: documented keys of the reserved objects, normalized the same way
_SUBKEYS: dict[str, dict[str, str]] = {
    "address": {"postalCode": "postal_code", "postal_code": "postal_code", "street": "street", "city": "city",
                "state": "state", "country": "country"},
    "company": {"employeeCount": "employee_count", "employee_count": "employee_count", "name": "name",
                "id": "id", "industry": "industry", "plan": "plan"},
}  # fmt: skip
_NOT_TRAITS = frozenset({"email"})
_MAX_NAME = 128
_MAX_DEPTH = 8
#: the integers orjson writes (what a trait value must be to be folded and stored)
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1

#: name -> (event time ms, value; ``None``: unset)
TraitMap = dict[str, tuple[int, Any]]


class TraitError(ValueError):
    """A trait bound was passed: ``reason`` is the :class:`operators.events.Reason` code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _depth(v: Any, d: int = 0) -> int:
    if d > _MAX_DEPTH:
        return d
    if isinstance(v, dict):
        return max((_depth(x, d + 1) for x in v.values()), default=d + 1)
    if isinstance(v, list):
        return max((_depth(x, d + 1) for x in v), default=d + 1)
    return d


def _normalize(raw: dict[str, Any], out: dict[str, Any], deny: frozenset[str]) -> None:
    """Reserved names to snake_case (a snake_case spelling in the event wins), deny list out."""
    for k, v in raw.items():
        if not isinstance(k, str) or k in _NOT_TRAITS:
            continue
        name = RESERVED.get(k, k)
        if deny and name.lower() in deny:
            continue
        if name in out and name != k and name in raw:
            continue  # both spellings: the snake_case one wins, whatever the key order
        sub = _SUBKEYS.get(name)
        if sub is not None and isinstance(v, dict):
            v = {sub.get(sk, sk): sv for sk, sv in v.items() if sk not in sub or sub[sk] == sk or sub[sk] not in v}
        out[name] = v


def parse_traits(sources: list[dict[str, Any]], max_traits: int, max_bytes: int, deny: frozenset[str]) -> dict[str, Any]:
    """The normalized traits of ``sources`` (later sources win), bounded (module docstring).

    >>> parse_traits([{"firstName": "Ann", "plan": "pro", "password": "x"}, {"lastName": None}], 10, 100,
    ...              frozenset({"password"}))
    {'first_name': 'Ann', 'plan': 'pro', 'last_name': None}
    >>> parse_traits([{"a": 1, "b": 2}], 1, 100, frozenset())
    Traceback (most recent call last):
    ...
    operators.traits.TraitError: 2 traits in one event, the limit is 1
    """
    out: dict[str, Any] = {}
    for src in sources:
        if src:
            _normalize(src, out, deny)
    if len(out) > max_traits:
        raise TraitError("too_many_traits", f"{len(out)} traits in one event, the limit is {max_traits}")
    for k, v in out.items():
        if len(k) > _MAX_NAME or not k:
            raise TraitError("invalid_field_type", f"a trait name must be 1 to {_MAX_NAME} characters")
        if isinstance(v, int) and not isinstance(v, bool) and not _MIN_INT <= v <= _MAX_INT:
            raise TraitError("invalid_field_type", f"trait {k[:40]!r} is an integer beyond 64 bits")
        if v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) * 4 <= max_bytes):
            continue
        if _depth(v) > _MAX_DEPTH:
            raise TraitError("invalid_field_type", f"trait {k[:40]!r} is nested deeper than {_MAX_DEPTH} levels")
        try:
            n = len(orjson.dumps(v))
        except (orjson.JSONEncodeError, TypeError):  # only a decoded dict can hold these (not JSON bytes)
            raise TraitError(
                "invalid_field_type", f"trait {k[:40]!r} cannot be written as JSON (an integer beyond 64 bits, a non-string key or invalid text)"
            ) from None
        if n > max_bytes:
            raise TraitError("trait_too_large", f"trait {k[:40]!r} is {n} bytes of JSON, the limit is {max_bytes}")
    return out


def _wins(new: tuple[int, Any], cur: tuple[int, Any] | None) -> bool:
    if cur is None or new[0] > cur[0]:
        return True
    if new[0] < cur[0]:
        return False
    return orjson.dumps(new[1], option=orjson.OPT_SORT_KEYS) > orjson.dumps(cur[1], option=orjson.OPT_SORT_KEYS)


def _bound(m: TraitMap, max_traits: int) -> None:
    if len(m) > max_traits:
        for k in sorted(m, key=lambda k: (m[k][0], k))[: len(m) - max_traits]:
            del m[k]


def fold(m: TraitMap, ts: int, traits: dict[str, Any], max_traits: int) -> bool:
    """Fold one event's traits (at event time ``ts``) into ``m``; whether anything changed.

    >>> m: TraitMap = {}
    >>> fold(m, 10, {"plan": "pro"}, 5), fold(m, 5, {"plan": "free"}, 5), fold(m, 20, {"plan": None}, 5)
    (True, False, True)
    >>> fold(m, 15, {"plan": "team"}, 5), live(m)
    (False, {})
    """
    changed = False
    for k, v in traits.items():
        new = (ts, v)
        if _wins(new, m.get(k)):
            m[k] = new
            changed = True
    if changed:
        _bound(m, max_traits)
    return changed


def merge_into(m: TraitMap, other: TraitMap, max_traits: int) -> None:
    """Fold another trait map into ``m`` by the same per-trait rule (identity merges)."""
    for k, tv in other.items():
        if _wins(tv, m.get(k)):
            m[k] = tv
    _bound(m, max_traits)


def live(m: TraitMap) -> dict[str, Any]:
    """The set traits (tombstones left out), sorted by name."""
    return {k: tv[1] for k, tv in sorted(m.items()) if tv[1] is not None}


def render(m: TraitMap) -> str:
    """The profile's ``traits`` field: a JSON object of the set traits."""
    return orjson.dumps(live(m)).decode() if m else "{}"
