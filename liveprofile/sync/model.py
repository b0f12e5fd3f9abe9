"""Change-feed entries and the per-user items a destination receives (pure logic).

A :class:`Change` is one entry of ``{p}:profile-changes`` (fields ``user_id``,
``version``, ``changed`` JSON, ``updated_at``, optional ``event`` JSON and
``deleted`` = ``"1"`` with ``identities`` JSON: the email and anonymous ids
the erased profile held; ``audiences_entered`` / ``audiences_exited``: JSON arrays of audience
names, with ``event_at``, the ISO time of the event that caused them, SPEC §6 and the shared
contract 3) or of a destination's redrive stream (field ``item``: a dead-lettered :class:`Item`
as JSON).

:func:`collapse` folds the changes of one batch into one :class:`Item` per
user, in version order: the ``changed`` dicts merge (later versions win),
trigger events accumulate in order (each gets an ``id`` of
``{user_id}:{version}`` unless it has one: the vendors' event dedupe key), audience transitions
accumulate in version order (:class:`Transition`: exited before entered within one entry), and a deletion is sticky — once a user is
deleted inside a batch, its later changes in that batch are dropped (a
forgotten user is suppressed from then on anyway). An item carries the range
``from_version..version`` it covers; ``{user_id}:{version}`` is its
idempotency key.

Invariants: within one batch, each user appears in exactly one item; items
are returned in order of each user's first appearance; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from liveprofile.store.keys import Keys

__all__ = ["Change", "Item", "Transition", "net_transitions", "MalformedChange", "parse_change", "collapse", "SyncKeys"]


class MalformedChange(ValueError):
    """A change-feed entry that cannot be read (it is dead-lettered, never retried)."""


#: one audience transition of an item: ``{"audience": name, "change": "entered" | "exited",
#: "version": the change's version, "at": its ``event_at`` (ISO, may be "")}``
Transition = dict[str, Any]


def _names(fields: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = fields.get(key)
    if not raw:
        return ()
    v = orjson.loads(raw)
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        msg = f"`{key}` is not a JSON array of audience names"
        raise MalformedChange(msg)
    return tuple(v)


def net_transitions(transitions: Iterable[Transition]) -> dict[str, str]:
    """The net change per audience of a run of transitions (the last one wins): what a vendor that
    holds membership *state* (a list, a subscription group, an array attribute) is told.

    >>> net_transitions([{"audience": "a", "change": "entered"}, {"audience": "a", "change": "exited"},
    ...                  {"audience": "b", "change": "entered"}])
    {'a': 'exited', 'b': 'entered'}
    """
    out: dict[str, str] = {}
    for t in transitions:
        out.pop(t["audience"], None)
        out[t["audience"]] = t["change"]
    return out


@dataclass(frozen=True, slots=True)
class Change:
    """One change-feed (or redrive) entry; ``ref`` = (stream key, entry id)."""

    ref: tuple[str, str]
    user_id: str
    version: int
    changed: dict[str, str]
    event: dict[str, Any] | None = None
    deleted: bool = False
    redrive: Item | None = None
    #: a deletion's identities (``email``, ``anonymous_ids``...): how a vendor may name the erased profile
    identities: dict[str, Any] = field(default_factory=dict)
    #: an anonymous visitor's profile (``anonymous=1``): never pushed as a known profile
    anonymous: bool = False
    #: audiences entered / exited by this change, and the event time that caused it (ISO)
    entered: tuple[str, ...] = ()
    exited: tuple[str, ...] = ()
    event_at: str = ""

    @property
    def ms(self) -> int:
        """Time the entry was appended (from its stream id), epoch ms."""
        return int(self.ref[1].split("-", 1)[0])


@dataclass(slots=True)
class Item:
    """What one destination is sent for one user in one batch."""

    user_id: str
    version: int
    from_version: int
    changed: dict[str, str] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    entries: int = 0
    #: re-driven from the dead letters: values are re-read from the profile
    redrive: bool = False
    #: push every profile field, not only the changed ones (consent granted)
    full: bool = False
    #: a deletion's identities (from its change entry): what vendors that cannot delete by user id take
    identities: dict[str, Any] = field(default_factory=dict)
    #: audience transitions in version order (:data:`Transition`)
    transitions: list[Transition] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Idempotency key: user id and the newest profile version covered."""
        return f"{self.user_id}:{self.version}"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Item:
        d = orjson.loads(raw)
        return cls(**{k: d[k] for k in cls.__slots__ if k in d})  # type: ignore[attr-defined]

    def empty(self) -> bool:
        return not (self.changed or self.events or self.deleted or self.full or self.redrive or self.transitions)


def parse_change(stream: str, entry_id: str, fields: Mapping[str, str]) -> Change:
    """Read one stream entry (decoded field map) into a :class:`Change`.

    >>> c = parse_change("lp:profile-changes", "5-0", {"user_id": "u1", "version": "3", "changed": '{"email": "a@b.co"}'})
    >>> c.user_id, c.version, c.changed, c.deleted, c.ms
    ('u1', 3, {'email': 'a@b.co'}, False, 5)
    >>> parse_change("s", "6-0", {"user_id": "u1", "version": "4", "deleted": "1",
    ...                           "identities": '{"email": "a@b.co", "anonymous_ids": "[]"}'}).identities["email"]
    'a@b.co'
    """
    try:
        if "item" in fields:
            item = Item.from_json(fields["item"])
            return Change((stream, entry_id), item.user_id, item.version, dict(item.changed), None, item.deleted, item)
        user_id = fields["user_id"]
        version = int(fields["version"])
        changed = orjson.loads(fields.get("changed") or "{}")
        if not isinstance(changed, dict):
            msg = "`changed` is not a JSON object"
            raise MalformedChange(msg)
        event = orjson.loads(fields["event"]) if fields.get("event") else None
        if event is not None and not isinstance(event, dict):
            msg = "`event` is not a JSON object"
            raise MalformedChange(msg)
        identities = orjson.loads(fields["identities"]) if fields.get("identities") else {}
        if not isinstance(identities, dict):
            msg = "`identities` is not a JSON object"
            raise MalformedChange(msg)
        entered, exited = _names(fields, "audiences_entered"), _names(fields, "audiences_exited")
        event_at = str(fields.get("event_at") or "")
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
        if isinstance(exc, MalformedChange):
            raise
        msg = f"unreadable change entry {entry_id}: {type(exc).__name__}: {exc}"
        raise MalformedChange(msg) from None
    return Change(
        (stream, entry_id), user_id, version, {str(k): "" if v is None else str(v) for k, v in changed.items()},
        event, fields.get("deleted") == "1", identities=identities, anonymous=fields.get("anonymous") == "1",
        entered=entered, exited=exited, event_at=event_at,
    )  # fmt: skip


def collapse(changes: Iterable[Change]) -> list[Item]:
    """One item per user, merging changes in version order (see module docstring).

    >>> a = Change(("s", "1-0"), "u", 5, {"x": "1", "y": "1"})
    >>> b = Change(("s", "2-0"), "u", 7, {"x": "2"}, {"name": "Cart Abandoned"})
    >>> (it,) = collapse([b, a])
    >>> it.from_version, it.version, it.changed, [e["name"] for e in it.events], it.entries
    (5, 7, {'x': '2', 'y': '1'}, ['Cart Abandoned'], 2)
    """
    by_user: dict[str, list[Change]] = {}
    for c in changes:
        by_user.setdefault(c.user_id, []).append(c)
    items: list[Item] = []
    for uid, cs in by_user.items():
        cs.sort(key=lambda c: (c.version, c.redrive is None))
        it = Item(uid, cs[0].version, cs[0].version)
        for c in cs:
            if it.deleted:
                break  # sticky deletion: later changes of this batch are dropped
            it.entries += 1
            it.version = max(it.version, c.version)
            if c.redrive is not None:
                it.redrive = True
                it.events.extend(c.redrive.events)
                it.changed.update(c.redrive.changed)
                it.full = it.full or c.redrive.full
                it.identities = it.identities or c.redrive.identities
                it.transitions.extend(c.redrive.transitions)
            if c.deleted:
                it.deleted = True
                it.identities = it.identities or c.identities
                it.changed.clear()
                it.events.clear()
                it.transitions.clear()  # the vendor deletes the whole profile, its memberships with it
                continue
            if c.redrive is None:
                it.changed.update(c.changed)
                if c.event is not None:
                    ev = dict(c.event)
                    ev.setdefault("id", f"{uid}:{c.version}")
                    it.events.append(ev)
                for change, names in (("exited", c.exited), ("entered", c.entered)):
                    it.transitions += [{"audience": a, "change": change, "version": c.version, "at": c.event_at}
                                       for a in names]  # fmt: skip
        items.append(it)
    return items


@dataclass(frozen=True, slots=True)
class SyncKeys:
    """Redis keys of the sync layer, per prefix and destination (and layout).

    ==========================================  ======  ==========================================
    ``{p}:sync-watermark:{dest}``               HASH    user -> highest version durably taken
                                                        (delivered or dead-lettered)
    ``{p}:sync-dead-letter:{dest}``             STREAM  ``item`` (JSON), ``reason``, ``status``,
                                                        ``attempts``, ``at``
    ``{p}:sync-redrive:{dest}``                 STREAM  dead letters queued again by ``replay``
    ``{p}:sync-lease:{dest}``                   STRING  consumer holding the destination (PX TTL)
    ``{p}:sync-jobs:{dest}``                    HASH    vendor job id -> JSON ``{"at": ms, "items":
                                                        [...]}``: accepted asynchronous jobs whose
                                                        per-item results are still to be read
    ``{p}:sync-audience-targets:{dest}``        HASH    audience -> JSON target (list id, group id)
                                                        ever used (:mod:`liveprofile.sync.audiences`)
    group ``sync:{dest}``                       group   on the change feed and the redrive stream
    ==========================================  ======  ==========================================

    With a Redis Cluster (``cluster_groups`` G > 0) the watermark, dead-letter and
    redrive keys exist once per user group, hash-tagged like the group's change
    feed (``{p}:{g}:sync-watermark:{dest}``...): the commit script, the re-drive
    script and the read of (change feed, redrive stream) each touch one slot.
    The lease stays one key per destination.

    >>> SyncKeys("lp", "braze").watermark, SyncKeys("lp", "braze", 16).watermark_in(3)
    ('lp:sync-watermark:braze', 'lp:{3}:sync-watermark:braze')
    """

    prefix: str
    dest: str
    cluster_groups: int = 0

    def _in(self, g: int, what: str) -> str:
        return f"{Keys(self.prefix, self.cluster_groups).group_prefix(g)}:{what}:{self.dest}"

    def _single(self, what: str) -> None:
        if self.cluster_groups:
            msg = f"SyncKeys.{what} is per group in the Redis Cluster layout: use {what}_in(g)"
            raise ValueError(msg)

    def watermark_in(self, g: int) -> str:
        return self._in(g, "sync-watermark")

    def dead_letter_in(self, g: int) -> str:
        return self._in(g, "sync-dead-letter")

    def redrive_in(self, g: int) -> str:
        return self._in(g, "sync-redrive")

    @property
    def groups(self) -> range:
        return range(self.cluster_groups or 1)

    @property
    def watermark(self) -> str:
        self._single("watermark")
        return self.watermark_in(0)

    @property
    def dead_letter(self) -> str:
        self._single("dead_letter")
        return self.dead_letter_in(0)

    @property
    def redrive(self) -> str:
        self._single("redrive")
        return self.redrive_in(0)

    @property
    def lease(self) -> str:
        return f"{self.prefix}:sync-lease:{self.dest}"

    @property
    def jobs(self) -> str:
        """One key per destination in every layout (only the poller reads it, never with other keys)."""
        return f"{self.prefix}:sync-jobs:{self.dest}"

    @property
    def audience_targets(self) -> str:
        """One key per destination in every layout (read and written at start only)."""
        return f"{self.prefix}:sync-audience-targets:{self.dest}"

    @property
    def group(self) -> str:
        return f"sync:{self.dest}"
