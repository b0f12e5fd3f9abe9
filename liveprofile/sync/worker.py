"""One destination's delivery loop: change feed in, vendor requests out, exactly once per (user, version).

**Consumer groups.** Each destination has its own consumer group
``sync:{dest}`` on the change feed ``{p}:profile-changes`` (and on its
redrive stream ``{p}:sync-redrive:{dest}``), so destinations never wait for
each other: a throttled or failing one just stops reading its group while the
others read theirs. A group is created at the oldest retained change (a new
destination gets the retained history).

**One holder per destination.** Per-user order needs one reader per group at
a time, so a process serves a destination only while it holds the lease
``{p}:sync-lease:{dest}`` (``SET NX PX``, renewed every third of
``LIVEPROFILE_SYNC_LEASE_TTL``). Several sync processes may run: each
destination is served by one of them and the others are hot standbys. On
taking a lease the new holder first takes over every pending entry of the
group with ``XAUTOCLAIM`` (entries a dead holder read but never
acknowledged; they precede everything unread, so order is kept), then reads
new entries with ``XREADGROUP``.

**Batches.** Entries are read until ``batch_size`` or until the oldest has
waited ``flush_interval`` seconds. Entries at or below the destination's
watermark for their user (HASH ``{p}:sync-watermark:{dest}``: the highest
version durably taken, delivered or dead-lettered) are skipped — this makes
redeliveries after a crash no-ops. The rest collapse to one item per user
(:func:`~liveprofile.sync.model.collapse`). Items of suppressed users
(SET ``{p}:suppressed``; deletions excepted) and of users without consent for
the destination's channel are not pushed. When an item grants consent the
user's whole profile is pushed, not only the changed fields.

**Delivery.** The adapter packs items into requests (vendor limits); up to
``concurrency`` requests of a batch are in flight (their users are
disjoint). Each request is retried: ``429`` waits for ``Retry-After``,
``RateLimit-*`` headers slow the destination down before it runs out
(:class:`~liveprofile.sync.pacing.Pacer`), 5xx/408/401/403 and timeouts back
off exponentially with jitter; 400/404/413/422 split the request in two until
the offending item is alone. An item that fails for ``max_attempts`` attempts
or ``max_age`` seconds, or is refused alone, goes to the dead-letter stream
``{p}:sync-dead-letter:{dest}``.

**Commit.** As soon as every request holding an item has finished, the item's
watermark is raised and, if it failed, its dead letter appended — in one Lua
script. Only after the whole batch is committed are its entries
acknowledged (``XACK``). A crash anywhere leaves the entries pending; the next
holder claims them and the watermark skips what was already taken, so at most
the requests in flight at the crash are sent again (and those carry the same
idempotency keys).

**Redis Cluster** (``keys.cluster``): the change feed is one stream per user
group (:mod:`liveprofile.store.keys`), and so are the destination's watermark,
dead-letter and redrive keys (hash-tagged with the group:
:class:`~liveprofile.sync.model.SyncKeys`). The worker reads *every* group's
feed — a *feed* here is (change stream, redrive stream, watermark, dead letters,
suppressed set) of one group, all in one slot — with the same consumer group
``sync:{dest}`` on each: pending entries are claimed feed by feed, new ones are
read by polling all feeds in one pipelined round of ``XREADGROUP``s (one per
feed; a cluster cannot block on streams of several slots; an idle destination
polls every 50 ms), a batch mixes users of all groups (as many entries as
``batch_size``, plus at most one per group), and commits go to each group's
watermark. A user lives in one group, so per-user order and the watermark
argument above hold unchanged; the lease stays one per destination.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from liveprofile.store.connection import TROUBLE
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import lua_source
from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.destinations import Destination, Request, make_destination
from liveprofile.sync.metrics import SyncMetrics
from liveprofile.sync.model import Change, Item, MalformedChange, SyncKeys, collapse, parse_change
from liveprofile.sync.pacing import Pacer, backoff
from operators.schema import BY_NAME, PUSHED
from operators.timeutil import iso

__all__ = ["DestinationWorker", "consent_allows", "suppressed_key", "queue_age", "COMMIT_LUA"]

logger = logging.getLogger(__name__)

#: statuses retried with backoff (besides 429, which waits for Retry-After)
RETRYABLE = frozenset({401, 403, 408, 409, 425, 500, 502, 503, 504})
#: statuses that refuse the content: split the request, then dead-letter
SPLITTABLE = frozenset({400, 404, 413, 422})
#: profile fields never pushed in a full snapshot (identity, bookkeeping of the dataflow)
#: bookkeeping the platforms never get (operators.schema: ``pushed=False``); fields outside the table go out
_NOT_PUSHED = frozenset(BY_NAME) - PUSHED

COMMIT_LUA = lua_source("sync_commit")

_ACQUIRE_LUA = lua_source("sync_lease_acquire")

_RELEASE_LUA = lua_source("sync_lease_release")


def suppressed_key(prefix: str) -> str:
    """SET of user ids that must never be pushed (forgotten users), single-Redis layout
    (:meth:`Keys.suppressed_in` in general)."""
    return Keys(prefix).suppressed


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


class _Stop(Exception):
    """The worker must stop now (shutdown or lease lost); the batch stays pending."""


#: seconds between polls of an idle destination's feeds (Redis Cluster layout only)
_POLL_S = 0.05


@dataclass(slots=True, eq=False)
class _Feed:
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


@dataclass(slots=True)
class _Outcome:
    items: list[Item]
    ok: bool
    reason: str = ""
    status: str = ""
    attempts: int = 0


class DestinationWorker:
    """Serves one destination while holding its lease (see module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        cfg: DestinationConfig,
        *,
        consumer: str,
        metrics: SyncMetrics,
        lease_ttl: float = 15.0,
        dead_letter_maxlen: int = 1_000_000,
        destination: Destination | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.r = client
        self.keys = keys
        self.cfg = cfg
        self.sk = SyncKeys(keys.prefix, cfg.name, keys.cluster_groups)
        self.consumer = consumer
        self.metrics = metrics
        self.lease_ttl = lease_ttl
        self.dl_maxlen = dead_letter_maxlen
        self.dest = destination or make_destination(cfg)
        self.http = http
        self.pacer = Pacer(cfg.rate_per_s)
        self.held = False
        self._claim = True
        self._stop = asyncio.Event()
        self._commit = client.register_script(COMMIT_LUA)
        self._acquire_s = client.register_script(_ACQUIRE_LUA)
        self._release_s = client.register_script(_RELEASE_LUA)
        sk = self.sk
        self.feeds = [
            _Feed(g, keys.changes_in(g), sk.redrive_in(g), sk.watermark_in(g), sk.dead_letter_in(g), keys.suppressed_in(g))
            for g in keys.groups
        ]
        self._feed_of = {s: f for f in self.feeds for s in f.streams}
        self._redrives = {f.redrive for f in self.feeds}
        for m in (metrics.delivered, metrics.dead, metrics.queue_age, metrics.lease):
            m.labels(cfg.name)  # export every series from the start, at 0

    # -- lifecycle -------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; never raises for Redis or vendor trouble."""
        self._stop = stop
        own_http = self.http is None
        if self.http is None:
            n = self.cfg.concurrency + 2
            self.http = httpx.AsyncClient(timeout=self.cfg.timeout, limits=httpx.Limits(max_connections=n, max_keepalive_connections=n))
        delay = 0.1
        try:
            while not stop.is_set():
                try:
                    await self._ensure_groups()
                    if not await self._acquire():
                        await self._sleep(max(0.05, self.lease_ttl / 3))
                        continue
                    await self._serve()
                    delay = 0.1
                except _Stop:
                    self._claim = True
                except TROUBLE as exc:
                    logger.warning("sync %s: Redis trouble (%s); retrying in %.1fs", self.cfg.name, exc, delay)
                    self._claim = True
                    await self._sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            self.metrics.lease.labels(self.cfg.name).set(0)
            with contextlib.suppress(*TROUBLE):
                await self._release_s(keys=[self.sk.lease], args=[self.consumer])
            if own_http:
                await self.http.aclose()
                self.http = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _ensure_groups(self) -> None:
        for stream in self._feed_of:
            try:
                await self.r.xgroup_create(stream, self.sk.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _acquire(self) -> bool:
        ok = bool(await self._acquire_s(keys=[self.sk.lease], args=[self.consumer, int(self.lease_ttl * 1000)]))
        if ok and not self.held:
            logger.info("sync %s: serving as %s", self.cfg.name, self.consumer)
            self._claim = True
        self.held = ok
        self.metrics.lease.labels(self.cfg.name).set(1 if ok else 0)
        return ok

    async def _renew_loop(self) -> None:
        last_ok = time.monotonic()
        while self.held:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                if not await self._acquire():
                    logger.warning("sync %s: lease lost", self.cfg.name)
                    return
                last_ok = time.monotonic()
            except TROUBLE:
                if time.monotonic() - last_ok > self.lease_ttl:
                    self.held = False
                    return

    async def _serve(self) -> None:
        renew = asyncio.create_task(self._renew_loop())
        try:
            while not self._stop.is_set() and self.held:
                changes, bad = await self._next_batch()
                if changes or bad:
                    await self._process(changes, bad)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._claim = True  # the stream or group was removed: recreate
        finally:
            renew.cancel()

    # -- reading ---------------------------------------------------------------
    def _parse(self, stream: str, entries: Sequence[tuple[str, dict[str, str]]] | None,
               out: list[Change], bad: list[tuple[str, str, dict[str, str]]]) -> None:  # fmt: skip
        for entry_id, fields in entries or ():
            if fields is None:  # trimmed while pending
                bad.append((stream, entry_id, {}))
                continue
            try:
                out.append(parse_change(stream, entry_id, fields))
            except MalformedChange:
                bad.append((stream, entry_id, fields))

    async def _next_batch(self) -> tuple[list[Change], list[tuple[str, str, dict[str, str]]]]:
        size = self.cfg.batch_size
        out: list[Change] = []
        bad: list[tuple[str, str, dict[str, str]]] = []
        if self._claim:
            for stream in self._feed_of:
                start = "0-0"
                while len(out) + len(bad) < size:
                    res = await self.r.xautoclaim(stream, self.sk.group, self.consumer, 0, start, count=size - len(out) - len(bad))
                    nxt, claimed = res[0], res[1]
                    for entry_id in res[2] if len(res) > 2 else ():
                        bad.append((stream, entry_id, {}))
                    self._parse(stream, claimed, out, bad)
                    if nxt in ("0-0", b"0-0"):
                        break
                    start = nxt
                if len(out) + len(bad) >= size:
                    return out, bad  # more pending: keep claiming next time
            self._claim = False
            if out or bad:
                return out, bad
        if len(self.feeds) > 1:
            return await self._poll_batch(out, bad)
        streams = self.feeds[0].streams
        deadline: float | None = None
        while len(out) + len(bad) < size and not self._stop.is_set() and self.held:
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

    async def _poll_batch(self, out: list[Change], bad: list[tuple[str, str, dict[str, str]]]
                          ) -> tuple[list[Change], list[tuple[str, str, dict[str, str]]]]:  # fmt: skip
        """Several feeds (Redis Cluster): read new entries of all of them in pipelined
        non-blocking rounds until ``batch_size`` or the flush deadline (see module docstring)."""
        size = self.cfg.batch_size
        deadline: float | None = None
        active = self.feeds
        while len(out) + len(bad) < size and not self._stop.is_set() and self.held:
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
                await self._sleep(_POLL_S)
                return out, bad
            left = deadline - time.time()
            if left <= 0:
                break
            await self._sleep(min(_POLL_S, left))
        return out, bad

    def _feed_of_user(self, user_id: str) -> _Feed:
        return self.feeds[self.keys.group(user_id)]

    # -- processing ------------------------------------------------------------
    async def _process(self, changes: list[Change], bad: list[tuple[str, str, dict[str, str]]]) -> None:
        name = self.cfg.name
        now = iso(int(time.time() * 1000))
        if bad:
            per_feed: dict[_Feed, list[object]] = {}
            for stream, entry_id, fields in bad:
                raw = orjson.dumps({"entry_id": entry_id, "raw": fields, "user_id": fields.get("user_id", "")})
                args = per_feed.setdefault(self._feed_of[stream], [self.dl_maxlen, now])
                args += [fields.get("user_id", ""), 0, raw, "malformed", "", 0]
            for f, args in per_feed.items():
                await self._commit(keys=[f.watermark, f.dead_letter], args=args)
            self.metrics.skipped.labels(name, "malformed").inc(len(bad))

        items = await self._select(changes)
        if items:
            await self._deliver(items)

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

    async def _select(self, changes: list[Change]) -> list[Item]:
        """Watermark, suppression and consent filters; current values where needed."""
        name = self.cfg.name
        if not changes:
            return []
        users = list(dict.fromkeys(c.user_id for c in changes))
        by_feed: dict[_Feed, list[str]] = {}
        for u in users:  # a user's changes and redrives are all in the feed of the user's group
            by_feed.setdefault(self._feed_of_user(u), []).append(u)
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
        out = []
        for it in items:
            if self.dest.sendable(it):
                out.append(it)
            else:
                self.metrics.skipped.labels(name, "nothing_to_send").inc(it.entries)
        return out

    async def _deliver(self, items: list[Item]) -> None:
        name = self.cfg.name
        unclearable = self.dest.skipped_clears(items)
        if unclearable:
            self.metrics.skipped.labels(name, "unclearable").inc(unclearable)
        requests = self.dest.build(items)
        pending: dict[int, int] = {}
        failed: dict[int, _Outcome] = {}
        for req in requests:
            for it in req.items:
                pending[id(it)] = pending.get(id(it), 0) + 1
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def one(req: Request) -> None:
            async with sem:
                outcomes = await self._send(req)
            for oc in outcomes:
                if not oc.ok:
                    for it in oc.items:
                        failed.setdefault(id(it), oc)
            done = []
            for it in req.items:
                pending[id(it)] -= 1
                if pending[id(it)] == 0:
                    done.append(it)
            if done:
                await self._commit_items(done, failed)

        tasks = [asyncio.create_task(one(req)) for req in requests]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _commit_items(self, done: list[Item], failed: dict[int, _Outcome]) -> None:
        now = iso(int(time.time() * 1000))
        per_feed: dict[_Feed, list[object]] = {}
        delivered = dead = 0
        for it in done:
            oc = failed.get(id(it))
            args = per_feed.setdefault(self._feed_of_user(it.user_id), [self.dl_maxlen, now])
            if oc is None:
                args += [it.user_id, it.version, "", "", "", 0]
                delivered += it.entries
            else:
                args += [it.user_id, it.version, it.to_json(), oc.reason, oc.status, oc.attempts]
                dead += 1
        for f, args in per_feed.items():
            await self._commit(keys=[f.watermark, f.dead_letter], args=args)
        if delivered:
            self.metrics.delivered.labels(self.cfg.name).inc(delivered)
        if dead:
            self.metrics.dead.labels(self.cfg.name).inc(dead)
            logger.warning("sync %s: %d item(s) dead-lettered", self.cfg.name, dead)

    # -- HTTP ------------------------------------------------------------------
    async def _send(self, req: Request) -> list[_Outcome]:
        """Deliver one request with pacing and retries; the outcome of each part."""
        cfg = self.cfg
        name = cfg.name
        assert self.http is not None
        attempts = 0
        first = time.monotonic()
        while True:
            if self._stop.is_set() or not self.held:
                raise _Stop
            wait = self.pacer.delay()
            if wait > 0:
                await self._sleep(wait)
                continue
            self.pacer.started()
            t0 = time.perf_counter()
            status: int | None = None
            try:
                resp = await self.http.post(req.url, content=req.body, headers=self.dest.headers(req), timeout=cfg.timeout)
                status = resp.status_code
                label = str(status)
            except httpx.TimeoutException:
                label = "timeout"
            except httpx.TransportError:
                label = "error"
            self.metrics.requests.labels(name, label).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)
            if status is not None:
                retry_after = self.pacer.observe(status, resp.headers)
                if self.dest.accepted(req, status, resp.content):
                    return [_Outcome(req.items, True)]
                if status in SPLITTABLE or (400 <= status < 500 and status not in RETRYABLE and status != 429):
                    if len(req.items) > 1:
                        half = len(req.items) // 2
                        return (await self._send(self.dest.rebuild(req.kind, req.items[:half]))
                                + await self._send(self.dest.rebuild(req.kind, req.items[half:])))  # fmt: skip
                    logger.warning("sync %s: %s refused (%d): %s", name, req.kind, status, resp.text[:300])
                    return [_Outcome(req.items, False, f"http_{status}", label, attempts + 1)]
                if status == 429:
                    self.metrics.retries.labels(name, "429").inc()
                    if retry_after is None:
                        self.pacer.pause(backoff(max(1, attempts), cfg.backoff_base, cfg.backoff_max))
                    if time.monotonic() - first > cfg.max_age:
                        return [_Outcome(req.items, False, "max_age", label, attempts)]
                    continue
            attempts += 1
            self.metrics.retries.labels(name, label).inc()
            if attempts >= cfg.max_attempts:
                return [_Outcome(req.items, False, "max_attempts", label, attempts)]
            if time.monotonic() - first > cfg.max_age:
                return [_Outcome(req.items, False, "max_age", label, attempts)]
            await self._sleep(backoff(attempts, cfg.backoff_base, cfg.backoff_max))


async def queue_age(client: aioredis.Redis, stream: str, group: str, now_ms: int | None = None) -> float:
    """Seconds since the oldest change the group has not acknowledged was appended (0: none)."""
    pipe = client.pipeline(transaction=False)
    pipe.xpending(stream, group)
    pipe.xinfo_groups(stream)
    pending, groups = await pipe.execute()
    oldest: list[int] = []
    if pending and pending.get("pending"):
        oldest.append(int(str(pending["min"]).split("-")[0]))
    last = next((g["last-delivered-id"] for g in groups if g["name"] == group), None)
    if last is not None:
        nxt = await client.xrange(stream, min=f"({last}", count=1)
        if nxt:
            oldest.append(int(str(nxt[0][0]).split("-")[0]))
    if not oldest:
        return 0.0
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return max(0.0, (now_ms - min(oldest)) / 1000)
