"""GDPR erasure: ``liveprofile forget USER_ID`` / ``forget --email ADDRESS`` and ``liveprofile unsuppress USER_ID``.

``forget(...)`` erases a user everywhere liveprofile keeps them and keeps them erased.
*Who*: the user id (trimmed, as :func:`operators.events.identity_of` normalizes ids), or every
user whose profile or anonymous profile has the email (:func:`users_with_email`), plus every
known user merged into one of them (tombstones whose ``merged_into`` names them, transitively),
and their anonymous ids (the profiles' ``anonymous_ids``). Then:

1. each user id, and each anonymous id as :func:`operators.identity.anon_uid`, joins the
   suppressed set of its key group first (the *suppression record*): the collector drops their
   later events (2xx, nothing kept), the profile script refuses them, the API records no
   exposure, the ESP sync never pushes them;
2. the profiles go (known and anonymous), with segment memberships and the RFM index entry;
   one change-feed entry ``deleted=1`` per known profile (with the email and anonymous ids)
   tells the email platforms to delete: the sync deletes that entry from the feed once every
   destination has acknowledged it, and a deletion leaves no sync watermark (with no
   destination reading the feed it goes at once: :data:`~liveprofile.store.scripts.ERASURE_SCRUB_LUA`);
3. everything else that names them is deleted: buffered events (matched by their normalized
   ids) and internal buffer entries, dead letters of every stage (``{p}:dead-letter`` and
   ``:redriven``; by their ``user_id``/``anonymous_id`` fields, their raw event's ids, or the ids or
   email as a substring of a raw cut short), anomaly records, the source debugger's tap
   (``{p}:debug-events``: each request's entry that holds one of their events, by its ``uid``/``aid``/``pid``), older change-feed entries,
   experiment exposures, and per sync destination the watermark fields, dead letters and
   redrive entries and the items of recorded vendor jobs (``{p}:sync-jobs:{dest}``) — all but
   pending deletion requests, which still have to reach the platform;
4. a :attr:`~liveprofile.store.envelope.EntryKind.FORGET` control entry per user in their buffer
   shard makes the dataflow drop the user's state and ignore their later events (it names the
   user until the buffer is trimmed past it: a suppression record for the dataflow).

``unsuppress`` lifts a user id's suppression (and tells the dataflow with an
``_unsuppress`` control entry): later events build a new profile; the anonymous ids stay
suppressed (the device ids of a forgotten person).
Scanning costs O(buffer + dead letters + profiles, with --email or to find merged users);
erasure requests are rare.

Keys come from :class:`~liveprofile.store.keys.Keys`: with a Redis Cluster, each id's
profile, suppressed set, segments, RFM index and change feed are those of its
own group (the user and their anonymous ids may be in different groups).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from liveprofile.buffer.writers import RawWriter, raw_writer
from liveprofile.settings import Settings
from liveprofile.store import debugtap
from liveprofile.store.connection import connect
from liveprofile.store.envelope import EntryKind, encode_control, kind_of
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import ERASURE_SCRUB_LUA, PROFILE_LUA, ProfileMode, profile_argv
from operators.events import identity_of
from operators.identity import anon_uid
from operators.routing import shard_of
from operators.timeutil import iso

__all__ = ["forget", "unsuppress", "add_commands", "scan_stream", "users_with_email"]

_PAGE = 2000


def scan_stream(client: redis.Redis, stream: str, page: int = _PAGE) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of ``stream``, oldest first, fetched a page at a time."""
    lo: bytes = b"-"
    while True:
        entries = client.xrange(stream, min=lo, max="+", count=page)
        if not entries:
            return
        yield from entries
        lo = b"(" + entries[-1][0]


@dataclass
class _Doomed:
    """Who one erasure is about: known user ids (the user and every known user merged into them),
    their anonymous ids and their emails (as stored: trimmed)."""

    users: set[str] = field(default_factory=set)
    anons: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    _patterns: list[re.Pattern[bytes]] = field(default_factory=list)

    def ids(self) -> set[str]:
        """Every id a stored field may name them by (user ids, anonymous ids and their per-user keys)."""
        return self.users | self.anons | {anon_uid(a) for a in self.anons}

    def owns(self, user_id: str | None, anonymous_id: str | None, previous_id: str | None = None) -> bool:
        """Whether an event with these (normalized) ids is theirs."""
        return user_id in self.users or anonymous_id in self.anons or previous_id in self.users or previous_id in self.anons

    def in_text(self, raw: bytes, *, ids: bool = True) -> bool:
        """Substring search: one of the emails (any case) and, with ``ids`` (for a raw event that is
        not JSON: cut short), one of the ids as a JSON string (padding allowed)."""
        if not self._patterns:
            alts = [re.escape(orjson.dumps(i)[1:-1]) for i in sorted(self.users | self.anons)]
            self._patterns.append(re.compile(b"|".join(re.escape(orjson.dumps(e)[1:-1]) for e in sorted(self.emails)) or b"(?!)", re.IGNORECASE))
            self._patterns.append(re.compile(rb'"\s*(?:' + b"|".join(alts) + rb')\s*"' if alts else b"(?!)"))
        return any(p.search(raw) for p in (self._patterns if ids else self._patterns[:1]))

    def event(self, raw: bytes) -> bool:
        """Whether the raw event (buffer entry, dead letter, ...) is theirs: by its ids as the
        dataflow normalizes them (:func:`operators.events.identity_of`) or their email anywhere in
        it; a raw that is not JSON (cut short) by :meth:`in_text` with the ids."""
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self.in_text(raw)
        if isinstance(ev, dict) and self.owns(*identity_of(ev)):
            return True
        return self.in_text(raw, ids=not isinstance(ev, dict))


def _s(v: bytes | None) -> str:
    return v.decode("utf-8", "replace") if v is not None else ""


def _scan_hash_fields(client: redis.Redis, pattern: str, fields: list[str]) -> Iterator[tuple[bytes, list[bytes | None]]]:
    """(key, values of ``fields``) of every hash matching ``pattern``, a SCAN page at a time."""
    for keys_ in _pages(client.scan_iter(match=pattern, count=1000, _type="HASH"), 500):
        pipe = client.pipeline(transaction=False)
        for k in keys_:
            pipe.hmget(k, fields)
        yield from zip(keys_, pipe.execute(), strict=True)


def _pages(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    page: list[Any] = []
    for x in it:
        page.append(x)
        if len(page) >= n:
            yield page
            page = []
    if page:
        yield page


def users_with_email(client: redis.Redis, keys: Keys, email: str) -> tuple[set[str], set[str]]:
    """(known user ids, anonymous ids) whose profile has ``email``, compared as the dataflow
    stores it (trimmed: :func:`operators.events.validate_email`) and case-insensitively; an
    anonymous profile merged into a known user names that user. Scans every profile: O(profiles)."""
    want = email.strip().casefold()
    users: set[str] = set()
    anons: set[str] = set()
    known = keys.profile_pattern()
    anonymous = known[: -len("profile:*")] + "profile-anon:*"
    for key, (em,) in _scan_hash_fields(client, known, ["email"]):
        if em is not None and _s(em).strip().casefold() == want:
            users.add(_s(key).split(":profile:", 1)[1])
    for key, (em, into) in _scan_hash_fields(client, anonymous, ["email", "merged_into"]):
        if em is not None and _s(em).strip().casefold() == want:
            anons.add(_s(key).split(":profile-anon:", 1)[1])
            if into:
                users.add(_s(into))
    return users, anons


def _resolve(client: redis.Redis, keys: Keys, users: set[str], anons: set[str]) -> _Doomed:
    """The users, every known user merged into one of them (tombstones with ``merged_into``,
    transitively), their anonymous ids and emails."""
    d = _Doomed(set(users), set(anons))
    merged: dict[str, set[str]] = {}
    for key, (into,) in _scan_hash_fields(client, keys.profile_pattern(), ["merged_into"]):
        if into:
            merged.setdefault(_s(into), set()).add(_s(key).split(":profile:", 1)[1])
    todo = list(d.users)
    while todo:
        for p in merged.get(todo.pop(), ()):
            if p not in d.users:
                d.users.add(p)
                todo.append(p)
    for uid in sorted(d.users):
        em, raw_aliases = client.hmget(keys.profile(uid), ["email", "anonymous_ids"])
        if em:
            d.emails.add(_s(em))
        if raw_aliases:
            d.anons.update(str(a) for a in orjson.loads(raw_aliases))
    for aid in sorted(d.anons):
        em = client.hget(keys.profile_anon(aid), "email")
        if em:
            d.emails.add(_s(em))
    return d


def _xdel_matching(client: redis.Redis, stream: str, doomed: Callable[[dict[bytes, bytes]], bool]) -> int:
    ids = [eid for eid, f in scan_stream(client, stream) if doomed(f)]
    n = 0
    for page in _pages(iter(ids), 1000):
        n += client.xdel(stream, *page)
    return n


def _streams(client: redis.Redis, pattern: str) -> list[bytes]:
    return sorted(client.scan_iter(match=pattern, count=1000, _type="STREAM"))


def forget(client: redis.Redis, keys: Keys, shards: int, user_id: str | None = None, changes_maxlen: int = 1_000_000,
           write: RawWriter | None = None, *, email: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Erase ``user_id`` (or every user whose profile has ``email``; see module docstring);
    returns what was deleted.

    ``write`` appends the control entries to the buffer (default: the Redis shard;
    with the Kafka buffer, the caller passes :func:`liveprofile.buffer.writers.raw_writer`)."""
    users: set[str] = set()
    anons: set[str] = set()
    if user_id is not None:
        if not user_id.strip():
            msg = "forget: the user id is empty"
            raise ValueError(msg)
        users.add(user_id.strip())  # ids are trimmed as the dataflow trims them
    if email is not None:
        u, a = users_with_email(client, keys, email)
        users |= u
        anons |= a
    d = _resolve(client, keys, users, anons)
    if email is not None:
        d.emails.add(email.strip())
    pipe = client.pipeline(transaction=False)
    for uid in d.users:
        pipe.sadd(keys.suppressed_for(uid), uid)
    for aid in d.anons:
        pipe.sadd(keys.suppressed_for(aid), anon_uid(aid))
    pipe.execute()
    script = client.register_script(PROFILE_LUA)
    now = iso(int(time.time() * 1000))
    profiles = 0
    for uid in sorted(d.users):
        if client.exists(keys.profile(uid)):
            script(keys=keys.profile_keys(uid), args=profile_argv(0, now, changes_maxlen, uid, "", keys.script_prefix(uid), ProfileMode.DELETE, ""))
            profiles += 1
    for aid in sorted(d.anons):  # anonymous profiles live in their own key family (never a known user's)
        if client.exists(keys.profile_anon(aid)):
            script(keys=keys.profile_anon_keys(aid), args=profile_argv(0, now, changes_maxlen, aid, "", keys.script_prefix(aid), ProfileMode.DELETE, "", anonymous=True))
            profiles += 1
    ids = d.ids()
    by_group: dict[int, list[str]] = {}
    for i in ids:
        by_group.setdefault(keys.group(i), []).append(i)
    for g, members in by_group.items():
        client.srem(keys.rfm_customers_in(g), *members)
    stats: dict[str, Any] = {"profiles": profiles, "buffered_events": 0, "dead_letters": 0, "anomalies": 0, "change_entries": 0,
                             "exposures": 0, "sync_entries": 0}  # fmt: skip
    for shard in range(shards):
        stats["buffered_events"] += _xdel_matching(client, keys.events(shard), lambda f: _buffer_entry_is(d, f.get(b"e", b"")))

    def dead_letter(f: dict[bytes, bytes]) -> bool:
        if d.owns(_s(f.get(b"user_id")) or None, _s(f.get(b"anonymous_id")) or None):
            return True
        return d.event(f.get(b"raw", b""))

    for stream in (keys.dead_letter, keys.dead_letter_redriven):  # every stage's dead letters
        stats["dead_letters"] += _xdel_matching(client, stream, dead_letter)
    stats["anomalies"] = _xdel_matching(client, keys.anomalies, lambda f: _s(f.get(b"user_id")) in ids)
    stats["debug_events"] = _xdel_matching(  # the source debugger's tap: a request's entry goes when one of its events is theirs
        client, keys.debug_events, lambda f: any(d.owns(e.get("uid") or None, e.get("aid") or None, e.get("pid") or None)
                                                 for e in debugtap.events_of(f)))  # fmt: skip
    deletions: dict[str, list[bytes]] = {}
    for g in sorted(by_group):
        changes = keys.changes_in(g)
        for eid, f in scan_stream(client, changes):
            if _s(f.get(b"user_id")) in ids:
                if f.get(b"deleted") == b"1":
                    deletions.setdefault(changes, []).append(eid)
                else:
                    stats["change_entries"] += client.xdel(changes, eid)
        gp = keys.group_prefix(g)
        members = by_group[g]
        for key in client.scan_iter(match=f"{gp}:experiment:*:exposures", count=1000, _type="HASH"):
            stats["exposures"] += client.hdel(key, *members)
        for key in client.scan_iter(match=f"{gp}:sync-watermark:*", count=1000, _type="HASH"):
            stats["sync_entries"] += client.hdel(key, *members)
        for stream in [*_streams(client, f"{gp}:sync-dead-letter:*"), *_streams(client, f"{gp}:sync-redrive:*")]:
            stats["sync_entries"] += _xdel_matching(client, stream, lambda f: _sync_item_is(d, f.get(b"item", b"")))
    for key in client.scan_iter(match=f"{keys.prefix}:sync-jobs:*", count=1000, _type="HASH"):
        stats["sync_entries"] += _forget_in_jobs(client, key, d)
    scrub = client.register_script(ERASURE_SCRUB_LUA)
    for stream, eids in deletions.items():  # gone at once when no destination reads the feed
        scrub(keys=[stream], args=eids)
    controls = [(shard_of(uid, shards), encode_control(EntryKind.FORGET, uid, now)) for uid in sorted(d.users)]
    if write is None:
        for shard, control in controls:
            client.xadd(keys.events(shard), {"e": control})
    else:
        write(controls)
    stats["users"] = sorted(d.users)
    stats["anonymous_ids"] = sorted(d.anons)
    return stats


def _buffer_entry_is(d: _Doomed, raw: bytes) -> bool:
    """Whether a buffer entry is theirs: an event by :meth:`_Doomed.event`; an internal entry
    (merge, forwarded items, an earlier privacy control) by its ``userId`` / ``from``."""
    if kind_of(raw) is EntryKind.EVENT:
        return d.event(raw)
    try:
        entry = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return d.in_text(raw)
    ids = d.ids()
    return isinstance(entry, dict) and (str(entry.get("userId", "")) in ids or str(entry.get("from", "")) in ids)


def _sync_item_is(d: _Doomed, raw: bytes) -> bool:
    """Whether a sync dead letter's ``item`` (an :class:`~liveprofile.sync.model.Item` as JSON) is
    about one of them; a deletion request (``deleted``) is kept: it is what tells the platform."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return d.in_text(raw)
    if not isinstance(item, dict):
        return d.in_text(raw)
    if item.get("deleted") is True:
        return False
    return str(item.get("user_id", "")) in d.ids() or d.in_text(raw, ids=False)


def _forget_in_jobs(client: redis.Redis, key: bytes, d: _Doomed) -> int:
    """Drop their items from the recorded vendor jobs (``{p}:sync-jobs:{dest}``); a job left
    without items goes. Deletion items stay (the platform is still to confirm them)."""
    n = 0
    for jid, raw in client.hgetall(key).items():
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        items = rec.get("items") if isinstance(rec, dict) else None
        if not isinstance(items, list):
            continue
        keep = [it for it in items if not (isinstance(it, str) and _sync_item_is(d, it.encode()))]
        if len(keep) == len(items):
            continue
        n += len(items) - len(keep)
        if keep:
            client.hset(key, jid, orjson.dumps({**rec, "items": keep}))
        else:
            client.hdel(key, jid)
    return n


def unsuppress(client: redis.Redis, keys: Keys, shards: int, user_id: str, write: RawWriter | None = None) -> bool:
    """Allow ``user_id`` to be profiled again; ``False`` if they were not suppressed.

    The dataflow, which ignores a forgotten user's events, is told through an
    ``_unsuppress`` control entry in the user's buffer shard."""
    was = bool(client.srem(keys.suppressed_for(user_id), user_id))
    control = encode_control(EntryKind.UNSUPPRESS, user_id, iso(int(time.time() * 1000)))
    if write is None:
        client.xadd(keys.events(shard_of(user_id, shards)), {"e": control})
    else:
        write([(shard_of(user_id, shards), control)])
    return was


def _cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    if (args.user_id is None) == (args.email is None):
        print("liveprofile forget: give a USER_ID or --email ADDRESS (one of them)", file=sys.stderr)
        return 2
    client = connect(settings.redis_url, settings.redis_cluster)
    stats = forget(client, Keys.of(settings), settings.shards, args.user_id, settings.changes_maxlen, raw_writer(settings, client), email=args.email)
    print(orjson.dumps({"forgotten": args.user_id if args.user_id is not None else args.email, **stats}).decode())
    return 0


def _cmd_unsuppress(args: argparse.Namespace, settings: Settings) -> int:
    client = connect(settings.redis_url, settings.redis_cluster)
    ok = unsuppress(client, Keys.of(settings), settings.shards, args.user_id, raw_writer(settings, client))
    print(orjson.dumps({"unsuppressed": args.user_id, "was_suppressed": ok}).decode())
    return 0


def add_commands(sub: Any) -> None:
    """Register ``forget`` and ``unsuppress`` on the ``liveprofile`` CLI."""
    f = sub.add_parser("forget", help="erase a user everywhere (GDPR) and keep them erased")
    f.add_argument("user_id", nargs="?", help="the user id (as sent: trimmed as the dataflow trims it)")
    f.add_argument("--email", help="forget every user whose profile (or anonymous profile) has this email")
    f.set_defaults(func=_cmd_forget)
    u = sub.add_parser("unsuppress", help="let a forgotten user be profiled again")
    u.add_argument("user_id")
    u.set_defaults(func=_cmd_unsuppress)
