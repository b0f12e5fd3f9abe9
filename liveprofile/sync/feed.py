"""Reading one destination's change feed: batches in, the items worth pushing out, entries acknowledged.

**Consumer groups.** Each destination has its own consumer group
``sync:{dest}`` on the change feed ``{p}:profile-changes`` (and on its
redrive stream ``{p}:sync-redrive:{dest}``), so destinations never wait for
each other: a throttled or failing one just stops reading its group while the
others read theirs. :meth:`FeedReader.ensure_groups` creates a group at the
oldest retained change (a new destination gets the retained history).

**Pending first.** After the lease is taken (:meth:`FeedReader.reclaim`), the
next read takes over every pending entry of the group with ``XAUTOCLAIM``
(entries a dead holder read but never acknowledged; they precede everything
unread, so order is kept), then new entries are read with ``XREADGROUP``.
The pending entries come as *one* batch, however many there are (at most the
one batch a holder died with, as every holder acknowledges a batch before it
reads the next): a dead holder may have
sent a user's newest version, collapsed from several entries, without
committing it, and a batch cut between that user's entries would send an
older version after it — the receiver would keep the stale values.

**Batches** (:meth:`FeedReader.next_batch`). Entries are read until
``batch_size`` or until the oldest has waited ``flush_interval`` seconds, and
only while the lease says so (:attr:`~liveprofile.sync.lease.Lease.serving`).
Each entry is parsed (:func:`~liveprofile.sync.model.parse_change`); an
unreadable one, or one trimmed while pending, comes back apart as a bad entry
``(stream, entry id, fields)`` for the caller to dead-letter as ``malformed``.

**Selection** (:meth:`FeedReader.select`). Entries at or below the
destination's watermark for their user (HASH ``{p}:sync-watermark:{dest}``:
the highest version durably taken, delivered or dead-lettered) are skipped —
this makes redeliveries after a crash no-ops; re-driven entries always pass.
The rest collapse to one item per user
(:func:`~liveprofile.sync.model.collapse`). Entries of anonymous profiles (``anonymous=1``: the
profile-anon family, their tombstones included) are acknowledged and never sent (skipped
``anonymous``): an anonymous visitor is no contact. Items of suppressed users (SET
``{p}:suppressed``; deletions excepted) and of users without consent for the
destination's channel (:func:`consent_allows`) are not pushed. When an item
grants consent the user's whole profile is pushed (the fields that
:mod:`operators.schema` marks pushed, and fields outside the table), not only
the changed fields; a re-driven item is pushed with the profile's current
values of its fields. Each skip here is counted in ``liveprofile_sync_skipped_total``.

**Acknowledging** (:meth:`FeedReader.ack`). Entries are acknowledged
(``XACK``; re-driven ones also deleted) only once the caller has committed the
whole batch (:mod:`liveprofile.sync.delivery`). A deletion entry (``deleted=1``, written by
``liveprofile forget`` with the email the platforms may know the user by) is then deleted from
the feed by the destination that acknowledges it last (every consumer group on the feed has
read and acknowledged it: the ``erasure_scrub`` script), and a deletion's commit removes the
user's watermark field: once every destination has the deletion, the feed names the user no more.

**Redis Cluster** (``keys.cluster``): the change feed is one stream per user
group (:mod:`liveprofile.store.keys`), and so are the destination's watermark,
dead-letter and redrive keys (hash-tagged with the group:
:class:`~liveprofile.sync.model.SyncKeys`). The reader reads *every* group's
feed — a :class:`GroupFeed` is (change stream, redrive stream, watermark, dead
letters, suppressed set) of one group, all in one slot — with the same consumer
group ``sync:{dest}`` on each: pending entries are claimed feed by feed, new
ones are read by polling all feeds in one pipelined round of ``XREADGROUP``s
(one per feed; a cluster cannot block on streams of several slots; an idle
destination polls every 50 ms), and a batch mixes users of all groups (as many
entries as ``batch_size``, plus at most one per group). A user lives in one
group, so per-user order and the watermark argument above hold unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from liveprofile.store.keys import Keys
from liveprofile.store.scripts import ERASURE_SCRUB_LUA
from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.lease import Lease
from liveprofile.sync.metrics import SyncMetrics
from liveprofile.sync.model import Change, Item, MalformedChange, SyncKeys, collapse, parse_change
from operators.schema import BY_NAME, PUSHED

__all__ = ["FeedReader", "GroupFeed", "BadEntry", "consent_allows"]

#: bookkeeping the platforms never get (operators.schema: ``pushed=False``); fields outside the table go out
_NOT_PUSHED = frozenset(BY_NAME) - PUSHED

#: seconds between polls of an idle destination's feeds (Redis Cluster layout only)
_POLL_S = 0.05

#: an entry that could not be parsed: (stream, entry id, its fields; ``{}`` when trimmed while pending)
BadEntry = tuple[str, str, dict[str, str]]


def _audiences(raw: str | None) -> frozenset[str]:
    """A profile's ``audiences`` field (JSON array of names) as a set (``{}`` when unreadable)."""
    try:
        v = orjson.loads(raw) if raw else []
    except orjson.JSONDecodeError:
        return frozenset()
    return frozenset(x for x in v if isinstance(x, str)) if isinstance(v, list) else frozenset()


def consent_allows(consent: str | None, channel: str | None, require: bool) -> bool:
    """Whether a profile's ``consent`` JSON lets us push on ``channel``.

    >>> consent_allows('{"email": true}', "email", True), consent_allows(None, "email", True)
    (True, False)
    >>> consent_allows('{"email": false}', "email", False), consent_allows(None, "email", False)
    (False, True)
    >>> consent_allows('{"sms": false}', None, True)
    True
    """
    if channel is None:
        return True
    v: object = None
    if consent:
        try:
            doc = orjson.loads(consent)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            v = doc.get(channel)
    if isinstance(v, str):
        v = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(v.lower())
    if v is True:
        return True
    if v is False:
        return False
    return not require


@dataclass(slots=True, eq=False)
class GroupFeed:
    """One group's change feed and the destination's keys for that group (one slot in a cluster)."""

    g: int
    changes: str
    redrive: str
    watermark: str
    dead_letter: str
    suppressed: str
    streams: tuple[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.streams = (self.changes, self.redrive)


class FeedReader:
    """Reads destination ``cfg.name``'s feeds as ``consumer`` while ``lease`` is serving (see module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        cfg: DestinationConfig,
        *,
        consumer: str,
        lease: Lease,
        metrics: SyncMetrics,
    ) -> None:
        self.r = client
        self.keys = keys
        self.cfg = cfg
        self.sk = sk = SyncKeys(keys.prefix, cfg.name, keys.cluster_groups)
        self.consumer = consumer
        self.lease = lease
        self.metrics = metrics
        self._claim = True
        self.feeds = [
            GroupFeed(g, keys.changes_in(g), sk.redrive_in(g), sk.watermark_in(g), sk.dead_letter_in(g), keys.suppressed_in(g))
            for g in keys.groups
        ]
        self._feed_of = {s: f for f in self.feeds for s in f.streams}
        self._redrives = {f.redrive for f in self.feeds}
        self._scrub = client.register_script(ERASURE_SCRUB_LUA)

    def reclaim(self) -> None:
        """Take over the group's pending entries at the next read (after taking the lease,
        after trouble, or when the group was recreated)."""
        self._claim = True

    def of_stream(self, stream: str) -> GroupFeed:
        """The feed a change or redrive stream belongs to."""
        return self._feed_of[stream]

    def of_user(self, user_id: str) -> GroupFeed:
        """The feed of the user's group (a user's changes and redrives are all there)."""
        return self.feeds[self.keys.group(user_id)]

    async def ensure_groups(self) -> None:
        """Create the consumer group on every stream read, at the oldest retained entry."""
        for stream in self._feed_of:
            try:
                await self.r.xgroup_create(stream, self.sk.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # -- reading ---------------------------------------------------------------
    def _parse(self, stream: str, entries: Sequence[tuple[str, dict[str, str]]] | None,
               out: list[Change], bad: list[BadEntry]) -> None:  # fmt: skip
        for entry_id, fields in entries or ():
            if fields is None:  # trimmed while pending
                bad.append((stream, entry_id, {}))
                continue
            try:
                out.append(parse_change(stream, entry_id, fields))
            except MalformedChange:
                bad.append((stream, entry_id, fields))

    async def next_batch(self) -> tuple[list[Change], list[BadEntry]]:
        """The next batch: pending entries first (after :meth:`reclaim`), then new ones."""
        size = self.cfg.batch_size
        out: list[Change] = []
        bad: list[BadEntry] = []
        if self._claim:
            for stream in self._feed_of:  # every pending entry, in one batch (module docstring)
                start = "0-0"
                while True:
                    res = await self.r.xautoclaim(stream, self.sk.group, self.consumer, 0, start, count=size)
                    nxt, claimed = res[0], res[1]
                    for entry_id in res[2] if len(res) > 2 else ():
                        bad.append((stream, entry_id, {}))
                    self._parse(stream, claimed, out, bad)
                    if nxt in ("0-0", b"0-0"):
                        break
                    start = nxt
            self._claim = False
            if out or bad:
                return out, bad
        if len(self.feeds) > 1:
            return await self._poll_batch(out, bad)
        streams = self.feeds[0].streams
        deadline: float | None = None
        while len(out) + len(bad) < size and self.lease.serving:
            if deadline is None:
                block = 500
            else:
                left = deadline - time.time()
                if left <= 0:
                    break
                block = max(1, int(left * 1000))
            res = await self.r.xreadgroup(self.sk.group, self.consumer, dict.fromkeys(streams, ">"),
                                          count=size - len(out) - len(bad), block=block)  # fmt: skip
            if not res:
                if deadline is None:
                    return out, bad
                break
            for stream, entries in res:
                self._parse(stream, entries, out, bad)
            if deadline is None and (out or bad):
                oldest = min((c.ms for c in out), default=int(time.time() * 1000))
                deadline = oldest / 1000 + self.cfg.flush_interval
        return out, bad

    async def _poll_batch(self, out: list[Change], bad: list[BadEntry]) -> tuple[list[Change], list[BadEntry]]:
        """Several feeds (Redis Cluster): read new entries of all of them in pipelined
        non-blocking rounds until ``batch_size`` or the flush deadline (see module docstring)."""
        size = self.cfg.batch_size
        deadline: float | None = None
        active = self.feeds
        while len(out) + len(bad) < size and self.lease.serving:
            per_feed = -(-(size - len(out) - len(bad)) // len(active))
            pipe = self.r.pipeline(transaction=False)
            for f in active:
                pipe.xreadgroup(self.sk.group, self.consumer, dict.fromkeys(f.streams, ">"), count=per_feed)
            counts = []
            for res in await pipe.execute():
                n = 0
                for stream, entries in res or ():
                    n += len(entries)
                    self._parse(stream, entries, out, bad)
                counts.append(n)
            if sum(counts):
                if deadline is None:
                    oldest = min((c.ms for c in out), default=int(time.time() * 1000))
                    deadline = oldest / 1000 + self.cfg.flush_interval
                full = [f for f, n in zip(active, counts, strict=True) if n >= per_feed]
                if full:  # these feeds have more waiting now (a backlog): read it at once
                    active = full
                    continue
                active = self.feeds
                if time.time() >= deadline:
                    break
                continue
            active = self.feeds
            if deadline is None:
                await self.lease.wait(_POLL_S)
                return out, bad
            left = deadline - time.time()
            if left <= 0:
                break
            await self.lease.wait(min(_POLL_S, left))
        return out, bad

    # -- selecting -------------------------------------------------------------
    async def select(self, changes: list[Change]) -> list[Item]:
        """Watermark, suppression and consent filters; current values where needed (see module docstring)."""
        name = self.cfg.name
        known = [c for c in changes if not c.anonymous]
        if len(known) < len(changes):  # anonymous profiles (and their tombstones) are no contacts
            self.metrics.skipped.labels(name, "anonymous").inc(len(changes) - len(known))
            changes = known
        if not changes:
            return []
        users = list(dict.fromkeys(c.user_id for c in changes))
        by_feed: dict[GroupFeed, list[str]] = {}
        for u in users:  # a user's changes and redrives are all in the feed of the user's group
            by_feed.setdefault(self.of_user(u), []).append(u)
        pipe = self.r.pipeline(transaction=False)
        for f, us in by_feed.items():
            pipe.hmget(f.watermark, us)
            pipe.smismember(f.suppressed, us)
        if self.cfg.channel is not None:
            for u in users:
                pipe.hget(self.keys.profile(u), "consent")
        res = await pipe.execute()
        wm: dict[str, int] = {}
        suppressed: set[str] = set()
        for i, us in enumerate(by_feed.values()):
            wm.update((u, int(v)) for u, v in zip(us, res[2 * i], strict=True) if v)
            suppressed.update(u for u, s in zip(us, res[2 * i + 1], strict=True) if s)
        consent = dict(zip(users, res[2 * len(by_feed) :], strict=True)) if self.cfg.channel is not None else {}

        fresh = [c for c in changes if c.redrive is not None or c.version > wm.get(c.user_id, 0)]
        if len(fresh) < len(changes):
            self.metrics.skipped.labels(name, "stale").inc(len(changes) - len(fresh))
        items: list[Item] = []
        for it in collapse(fresh):
            if not it.deleted and it.user_id in suppressed:
                self.metrics.skipped.labels(name, "suppressed").inc(it.entries)
                continue
            if not it.deleted and not consent_allows(consent.get(it.user_id), self.cfg.channel, self.cfg.require_consent):
                self.metrics.skipped.labels(name, "no_consent").inc(it.entries)
                continue
            if "consent" in it.changed and self.cfg.channel is not None and consent_allows(it.changed["consent"], self.cfg.channel, True):
                it.full = True
            items.append(it)

        # an unsubscribe names the address (Klaviyo unsubscribes by email): add the current one
        need_email = [it for it in items if not it.deleted and not it.full and not it.redrive
                      and it.changed.get("email_unsubscribed") == "1" and "email" not in it.changed]  # fmt: skip
        if need_email:
            pipe = self.r.pipeline(transaction=False)
            for it in need_email:
                pipe.hget(self.keys.profile(it.user_id), "email")
            for it, email in zip(need_email, await pipe.execute(), strict=True):
                if email:
                    it.changed["email"] = email
        reread = [it for it in items if not it.deleted and (it.full or it.redrive)]
        if reread:
            pipe = self.r.pipeline(transaction=False)
            for it in reread:
                pipe.hgetall(self.keys.profile(it.user_id))
            for it, prof in zip(reread, await pipe.execute(), strict=True):
                if not prof:
                    continue
                if it.full:
                    it.changed = {k: v for k, v in prof.items() if k not in _NOT_PUSHED}
                else:  # redrive: never push stale values, push what the profile holds now
                    it.changed = {k: prof.get(k, "") for k in it.changed}
                if it.redrive and it.transitions:
                    now_in = _audiences(prof.get("audiences"))
                    it.transitions = [t for t in it.transitions if (t["change"] == "entered") == (t["audience"] in now_in)]
        return items

    # -- acknowledging ---------------------------------------------------------
    async def ack(self, changes: list[Change], bad: list[BadEntry]) -> None:
        """Acknowledge a committed batch (re-driven entries are also deleted from their stream)."""
        pipe = self.r.pipeline(transaction=False)
        refs: dict[str, list[str]] = {}
        for c in changes:
            refs.setdefault(c.ref[0], []).append(c.ref[1])
        for stream, entry_id, _ in bad:
            refs.setdefault(stream, []).append(entry_id)
        for stream, ids in refs.items():
            pipe.xack(stream, self.sk.group, *ids)
            if stream in self._redrives:
                pipe.xdel(stream, *ids)
        await pipe.execute()
        deletions: dict[str, list[str]] = {}
        for c in changes:
            if c.deleted and c.redrive is None:
                deletions.setdefault(c.ref[0], []).append(c.ref[1])
        for stream, ids in deletions.items():  # the last destination to take a deletion scrubs it
            await self._scrub(keys=[stream], args=ids)
