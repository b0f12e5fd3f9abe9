"""Sending one destination's items: vendor requests out, each item committed once its requests finished.

**Requests.** :meth:`Delivery.deliver` drops the items the adapter has nothing
to send for (``nothing_to_send``), counts the cleared fields it cannot express
(``unclearable``), and has the adapter pack the rest into requests (vendor
limits); up to ``concurrency`` requests of a batch are in flight (their users
are disjoint).

**Retries** (:meth:`Delivery.send`). Every attempt waits for the destination's
:class:`~liveprofile.sync.pacing.Pacer` first, and for its request class's own pacer when the
adapter names one (:meth:`~liveprofile.sync.destinations.base.Destination.rate_class`: a vendor
endpoint with its own rate limit, e.g. Klaviyo's list endpoints; a 429 there holds only that class). ``429`` waits for
``Retry-After`` (or backs off when there is none), ``RateLimit-*`` headers slow
the destination down before it runs out, 5xx/408/401/403 and timeouts back off
exponentially with jitter (:func:`~liveprofile.sync.pacing.backoff`);
400/404/413/422 (and any other 4xx not retried) split the request in two until
the offending item is alone. An item that fails for ``max_attempts`` attempts or
``max_age`` seconds, or is refused alone, is dead-lettered. Before each attempt
the lease is checked (:attr:`~liveprofile.sync.lease.Lease.serving`): a worker
told to stop, or that lost the lease, raises
:class:`~liveprofile.sync.lease.Stopped` and sends nothing more.

**Per-item outcomes.** An item the adapter cannot express
(:meth:`~liveprofile.sync.destinations.base.Destination.refusal`, e.g. a Klaviyo
deletion with no identifier: ``no_identity``) is dead-lettered without a
request. An item the vendor must be asked about first
(:meth:`~liveprofile.sync.destinations.base.Destination.lookup`, e.g. the Klaviyo
id of a profile known only by its ``external_id``) is looked up with a paced GET
(three tries): not held by the vendor, it is committed as done
(``not_at_vendor``); the lookup failing dead-letters it (``lookup_failed``). Objects refused inside an accepted answer (Braze's ``errors`` in a 201)
dead-letter their items (``vendor_rejected``); the rest of the request is
delivered. A lookup may also be a request (e.g. Klaviyo's profile-import, which answers the profile id that
list membership takes), sent with the same pacing and retries.
Tombstones (items whose ``merged_into`` is set: the profile now lives under the user it merged
into) are not pushed (``tombstone``), except their audience exits: a profile merged away leaves
every audience (the shared contract 3), and the vendor's lists must drop it too.

**Asynchronous jobs** (:meth:`Delivery.poll_jobs`). When an accepted request
started a vendor job (a Klaviyo bulk import), the job id and its items are
recorded in HASH ``{p}:sync-jobs:{dest}`` before the items are committed; the
items count as delivered, so later batches never wait for the job. The worker
polls recorded jobs between batches (at most every ``job_poll_interval``
seconds): a finished job's errors (every page) dead-letter the failed items
(``vendor_rejected``, the vendor's detail), a cancelled job's items without an
error are dead-lettered ``job_cancelled``, and a job still unfinished after
``max_age`` seconds (or unknown to the vendor: 404) dead-letters its items
``job_unresolved`` — re-drivable, never silently dropped. Then the job is
removed. A crash between the dead letters and the removal repeats them
(at-least-once for job dead letters).

**Commit.** As soon as every request holding an item has finished, the item's
watermark is raised and, if it failed, its dead letter appended to
``{p}:sync-dead-letter:{dest}`` — in one ``sync_commit`` script per group
feed (:func:`~liveprofile.store.scripts.sync_commit_argv`). Entries the feed
could not parse are dead-lettered the same way, as ``malformed``
(:meth:`Delivery.dead_letter_malformed`). The caller acknowledges the batch's
entries only after the whole batch is committed; a crash anywhere leaves them
pending, the next holder claims them and the watermark skips what was already
taken, so at most the requests in flight at the crash are sent again (and those
carry the same idempotency keys).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import redis.asyncio as aioredis

from liveprofile.store.scripts import lua_source, sync_commit_argv
from liveprofile.sync.config import DestinationConfig
from liveprofile.sync.destinations import Destination, Request
from liveprofile.sync.feed import BadEntry, FeedReader, GroupFeed
from liveprofile.sync.lease import Lease, Stopped
from liveprofile.sync.metrics import SyncMetrics
from liveprofile.sync.model import Item, SyncKeys
from liveprofile.sync.pacing import Pacer, backoff
from operators.timeutil import iso

__all__ = ["Delivery", "Outcome", "COMMIT_LUA", "RETRYABLE", "SPLITTABLE"]

logger = logging.getLogger(__name__)

#: statuses retried with backoff (besides 429, which waits for Retry-After)
RETRYABLE = frozenset({401, 403, 408, 409, 425, 500, 502, 503, 504})
#: statuses that refuse the content: split the request, then dead-letter
SPLITTABLE = frozenset({400, 404, 413, 422})

COMMIT_LUA = lua_source("sync_commit")

#: one ``sync_commit`` row: user, version, item JSON ('' when delivered), reason, status, attempts
_Row = tuple[str, int, bytes | str, str, str, int]


@dataclass(slots=True)
class Outcome:
    """How one request (or one part of a split request) ended for its items."""

    items: list[Item]
    ok: bool
    reason: str = ""
    status: str = ""
    attempts: int = 0


class Delivery:
    """Sends destination ``cfg.name``'s items through ``dest`` and commits them (see module docstring)."""

    def __init__(
        self,
        client: aioredis.Redis,
        cfg: DestinationConfig,
        dest: Destination,
        *,
        feed: FeedReader,
        lease: Lease,
        metrics: SyncMetrics,
        dead_letter_maxlen: int = 1_000_000,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.cfg = cfg
        self.dest = dest
        self.feed = feed
        self.lease = lease
        self.metrics = metrics
        self.dl_maxlen = dead_letter_maxlen
        self.http = http
        self.pacer = Pacer(cfg.rate_per_s)
        #: pacers of the adapter's request classes (:meth:`Destination.rate_class`)
        self.class_pacers: dict[str, Pacer] = {}
        self._own_http = False
        self._commit = client.register_script(COMMIT_LUA)
        self.r = client
        self.jobs_key = SyncKeys(feed.keys.prefix, cfg.name, feed.keys.cluster_groups).jobs
        self._polled = 0.0

    def open(self) -> None:
        """Make the HTTP client (``concurrency`` + 2 connections) unless one was given."""
        if self.http is None:
            n = self.cfg.concurrency + 2
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
            self.http = httpx.AsyncClient(timeout=self.cfg.timeout, limits=limits)
            self._own_http = True

    async def close(self) -> None:
        """Close the HTTP client made by :meth:`open` (a given one stays open)."""
        if self._own_http and self.http is not None:
            await self.http.aclose()
            self.http = None
            self._own_http = False

    # -- commit ----------------------------------------------------------------
    async def _commit_rows(self, per_feed: dict[GroupFeed, list[_Row]]) -> None:
        now = iso(int(time.time() * 1000))
        for f, rows in per_feed.items():
            await self._commit(keys=[f.watermark, f.dead_letter], args=sync_commit_argv(self.dl_maxlen, now, rows))

    async def dead_letter_malformed(self, bad: list[BadEntry]) -> None:
        """Dead-letter the entries the feed could not parse (``malformed``: they cannot be re-driven)."""
        if not bad:
            return
        per_feed: dict[GroupFeed, list[_Row]] = {}
        for stream, entry_id, fields in bad:
            raw = orjson.dumps({"entry_id": entry_id, "raw": fields, "user_id": fields.get("user_id", "")})
            per_feed.setdefault(self.feed.of_stream(stream), []).append((fields.get("user_id", ""), 0, raw, "malformed", "", 0))
        await self._commit_rows(per_feed)
        self.metrics.skipped.labels(self.cfg.name, "malformed").inc(len(bad))

    async def _commit_items(self, done: list[Item], failed: dict[int, Outcome]) -> None:
        per_feed: dict[GroupFeed, list[_Row]] = {}
        delivered = dead = 0
        for it in done:
            oc = failed.get(id(it))
            rows = per_feed.setdefault(self.feed.of_user(it.user_id), [])
            version = -1 if it.deleted else it.version  # a deletion leaves no watermark naming the user
            if oc is None:
                rows.append((it.user_id, version, "", "", "", 0))
                delivered += it.entries
            else:
                rows.append((it.user_id, version, it.to_json(), oc.reason, oc.status, oc.attempts))
                dead += 1
        await self._commit_rows(per_feed)
        if delivered:
            self.metrics.delivered.labels(self.cfg.name).inc(delivered)
        if dead:
            self.metrics.dead.labels(self.cfg.name).inc(dead)
            logger.warning("sync %s: %d item(s) dead-lettered", self.cfg.name, dead)

    # -- delivery --------------------------------------------------------------
    async def deliver(self, items: list[Item]) -> None:
        """Send ``items`` (one per user) and commit each as soon as its requests finished."""
        name = self.cfg.name
        sendable = []
        refused: dict[int, Outcome] = {}
        absent: list[Item] = []
        for it in items:
            if (url := self.dest.lookup(it)) is not None:
                why = await self._lookup(it, url)
                if why == "absent":
                    absent.append(it)
                elif why is not None:
                    refused[id(it)] = Outcome([it], False, "lookup_failed", why, 1)
        if absent:
            self.metrics.skipped.labels(name, "not_at_vendor").inc(sum(it.entries for it in absent))
            await self._commit_items(absent, {})
        gone = {id(it) for it in absent} | set(refused)
        for it in items:
            if id(it) in gone:
                continue
            if not it.deleted and it.changed.get("merged_into") and not (it.transitions and self._tombstone_exits(it)):
                self.metrics.skipped.labels(name, "tombstone").inc(it.entries)
            elif (why := self.dest.refusal(it)) is not None:
                refused[id(it)] = Outcome([it], False, why, "", 0)
            elif self.dest.sendable(it):
                sendable.append(it)
            else:
                self.metrics.skipped.labels(name, "nothing_to_send").inc(it.entries)
        if refused:
            await self._commit_items([oc.items[0] for oc in refused.values()], refused)
        items = sendable
        if not items:
            return
        unclearable = self.dest.skipped_clears(items)
        if unclearable:
            self.metrics.skipped.labels(name, "unclearable").inc(unclearable)
        no_email = self.dest.unsubscribe_skipped(items)
        if no_email:
            self.metrics.skipped.labels(name, "unsubscribe_no_email").inc(no_email)
        requests = self.dest.build(items)
        pending: dict[int, int] = {}
        failed: dict[int, Outcome] = {}
        for req in requests:
            for it in req.items:
                pending[id(it)] = pending.get(id(it), 0) + 1
        sem = asyncio.Semaphore(self.cfg.concurrency)

        async def one(req: Request) -> None:
            async with sem:
                outcomes = await self.send(req)
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

    def _tombstone_exits(self, item: Item) -> bool:
        """A known profile merged away keeps no memberships: its tombstone's exits are delivered, its
        fields and events are not (whether anything is left to send to this destination)."""
        item.changed = {}
        item.events = []
        return self.dest.sendable(item)

    async def _accepted(self, req: Request, status: int, body: bytes, attempts: int) -> list[Outcome]:
        """Outcomes of an accepted request: per-object refusals apart; a started job recorded for polling."""
        rejected = self.dest.rejected(req, status, body)
        bad = {id(it) for it, _ in rejected}
        out = [Outcome([it for it in req.items if id(it) not in bad], True)]
        out += [Outcome([it], False, "vendor_rejected", why, attempts) for it, why in rejected]
        if rejected:
            self.metrics.skipped.labels(self.cfg.name, "vendor_rejected").inc(len(rejected))
        job = self.dest.job_id(req, status, body)
        if job is not None:
            items = [it.to_json().decode() for it in self.dest.job_items(req)]
            await self.r.hset(self.jobs_key, job, orjson.dumps({"at": int(time.time() * 1000), "items": items}))
        return out

    def _class_pacer(self, req: Request) -> Pacer | None:
        rc = self.dest.rate_class(req)
        if rc is None:
            return None
        name, rate = rc
        if self.cfg.rate_per_s is not None:
            rate = min(rate, self.cfg.rate_per_s)
        return self.class_pacers.setdefault(name, Pacer(rate))

    async def _paced(self, req: Request | None) -> Pacer | None:
        """Wait for the destination's pacer and the request class's; mark the start in both."""
        cp = self._class_pacer(req) if req is not None else None
        while (wait := max(self.pacer.delay(), cp.delay() if cp is not None else 0.0)) > 0:
            await self.lease.wait(wait)
        if not self.lease.serving:
            raise Stopped
        self.pacer.started()
        if cp is not None:
            cp.started()
        return cp

    async def _post(self, req: Request) -> httpx.Response | None:
        assert self.http is not None
        try:
            resp = await self.http.request(req.method, req.url, content=req.body, headers=self.dest.headers(req),
                                           timeout=self.cfg.timeout)  # fmt: skip
        except (httpx.TimeoutException, httpx.TransportError):
            self.metrics.requests.labels(self.cfg.name, "error").inc()
            return None
        self.metrics.requests.labels(self.cfg.name, str(resp.status_code)).inc()
        return resp

    async def _lookup(self, item: Item, how: str | Request) -> str | None:
        """Run the adapter's lookup (a GET, or a request) for ``item`` (paced, a few retries): None
        when found, ``"absent"`` when the vendor holds nothing of it, else the failure's label."""
        label = ""
        req = how if isinstance(how, Request) else None
        for attempt in range(1, 4):
            cp = await self._paced(req)
            if req is None:
                resp = await self._get(str(how))
            else:
                resp = await self._post(req)
                if resp is not None:
                    ra = self.pacer.observe(resp.status_code, resp.headers)
                    if cp is not None:
                        cp.observe(resp.status_code, resp.headers)
                    if resp.status_code == 429 and ra is None:
                        self.pacer.pause(backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_max))
            if resp is not None and 200 <= resp.status_code < 300 and (req is not None or resp.status_code == 200):
                try:
                    return None if self.dest.found(item, resp.content) else "absent"
                except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                    return "unreadable"
            label = "error" if resp is None else str(resp.status_code)
            if resp is not None and 400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE | {429}:
                return label
            await self.lease.wait(backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_max))
        return label

    # -- asynchronous jobs -----------------------------------------------------
    async def poll_jobs(self, force: bool = False) -> int:
        """Read the results of recorded jobs (see module docstring); the number of jobs resolved."""
        now = time.monotonic()
        if not force and now - self._polled < self.cfg.job_poll_interval:
            return 0
        self._polled = now
        jobs = await self.r.hgetall(self.jobs_key)
        resolved = 0
        for jid, raw in list(jobs.items())[:50]:
            if not self.lease.serving:
                raise Stopped
            rec = orjson.loads(raw)
            items = [Item.from_json(x) for x in rec["items"]]
            state = await self._job_state(jid, items, rec)
            if state is None:
                continue
            if state:
                await self._commit_items([oc.items[0] for oc in state.values()], state)
            await self.r.hdel(self.jobs_key, jid)
            resolved += 1
        return resolved

    async def _get(self, url: str) -> httpx.Response | None:
        assert self.http is not None
        hdrs = self.dest.headers(Request("job", url, b"", []))
        try:
            resp = await self.http.get(url, headers=hdrs, timeout=self.cfg.timeout)
        except httpx.TransportError:
            self.metrics.requests.labels(self.cfg.name, "error").inc()
            return None
        self.metrics.requests.labels(self.cfg.name, str(resp.status_code)).inc()
        self.pacer.observe(resp.status_code, resp.headers)
        return resp

    async def _job_state(self, jid: str, items: list[Item], rec: dict[str, Any]) -> dict[int, Outcome] | None:
        """None: not finished (or the vendor could not answer now); else the failed items' outcomes."""
        old = time.time() * 1000 - rec["at"] > self.cfg.max_age * 1000
        resp = await self._get(self.dest.job_url(jid))
        if resp is None or resp.status_code >= 500 or resp.status_code == 429:
            return self._unresolved(items) if old else None
        if resp.status_code == 404:
            return self._unresolved(items)
        if resp.status_code != 200:
            return self._unresolved(items) if old else None
        state, errors_url = self.dest.job_poll(jid, resp.content)
        if state == "pending":
            return self._unresolved(items) if old else None
        failed: dict[int, Outcome] = {}
        by_user = {it.user_id: it for it in items}
        url = errors_url
        while url:
            page = await self._get(url)
            if page is None or page.status_code != 200:
                return self._unresolved(items) if old else None  # read the errors again next time
            errs, url = self.dest.job_errors(page.content)
            for uid, index, why in errs:
                it = by_user.get(uid) if uid is not None else None
                if it is None and index is not None and 0 <= index < len(items):
                    it = items[index]
                if it is not None and id(it) not in failed:
                    failed[id(it)] = Outcome([it], False, "vendor_rejected", why, 1)
        if state == "cancelled":
            for it in items:
                failed.setdefault(id(it), Outcome([it], False, "job_cancelled", "", 1))
        if failed:
            logger.warning("sync %s: job %s: %d item(s) failed at the vendor", self.cfg.name, jid, len(failed))
        return failed

    @staticmethod
    def _unresolved(items: list[Item]) -> dict[int, Outcome]:
        return {id(it): Outcome([it], False, "job_unresolved", "", 1) for it in items}

    async def send(self, req: Request) -> list[Outcome]:
        """Deliver one request with pacing and retries; the outcome of each part."""
        cfg = self.cfg
        name = cfg.name
        assert self.http is not None
        attempts = 0
        first = time.monotonic()
        while True:
            if not self.lease.serving:
                raise Stopped
            cp = self._class_pacer(req)
            wait = max(self.pacer.delay(), cp.delay() if cp is not None else 0.0)
            if wait > 0:
                await self.lease.wait(wait)
                continue
            self.pacer.started()
            if cp is not None:
                cp.started()
            t0 = time.perf_counter()
            status: int | None = None
            try:
                resp = await self.http.request(req.method, req.url, content=req.body, headers=self.dest.headers(req),
                                               timeout=cfg.timeout)  # fmt: skip
                status = resp.status_code
                label = str(status)
            except httpx.TimeoutException:
                label = "timeout"
            except httpx.TransportError:
                label = "error"
            self.metrics.requests.labels(name, label).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)
            if status is not None:
                if cp is not None and status == 429:  # the class's own limit: hold that class only
                    retry_after = cp.observe(status, resp.headers)
                    if retry_after is None:
                        cp.pause(backoff(max(1, attempts), cfg.backoff_base, cfg.backoff_max))
                        retry_after = 0.0
                else:
                    retry_after = self.pacer.observe(status, resp.headers)
                if self.dest.accepted(req, status, resp.content):
                    return await self._accepted(req, status, resp.content, attempts + 1)
                if status in SPLITTABLE or (400 <= status < 500 and status not in RETRYABLE and status != 429):
                    if len(req.items) > 1:
                        half = len(req.items) // 2
                        return (await self.send(self.dest.rebuild(req.kind, req.items[:half]))
                                + await self.send(self.dest.rebuild(req.kind, req.items[half:])))  # fmt: skip
                    logger.warning("sync %s: %s refused (%d): %s", name, req.kind, status, resp.text[:300])
                    return [Outcome(req.items, False, f"http_{status}", label, attempts + 1)]
                if status == 429:
                    self.metrics.retries.labels(name, "429").inc()
                    if retry_after is None:
                        self.pacer.pause(backoff(max(1, attempts), cfg.backoff_base, cfg.backoff_max))
                    if time.monotonic() - first > cfg.max_age:
                        return [Outcome(req.items, False, "max_age", label, attempts)]
                    continue
            attempts += 1
            self.metrics.retries.labels(name, label).inc()
            if attempts >= cfg.max_attempts:
                return [Outcome(req.items, False, "max_attempts", label, attempts)]
            if time.monotonic() - first > cfg.max_age:
                return [Outcome(req.items, False, "max_age", label, attempts)]
            await self.lease.wait(backoff(attempts, cfg.backoff_base, cfg.backoff_max))
