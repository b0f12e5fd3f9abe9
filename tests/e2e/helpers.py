"""Helpers for end-to-end tests: feed a generated stream, compare profiles to truth.

The truth (:mod:`liveprofile.devtools.generate`) is computed independently of the pipeline; these
helpers only read what the pipeline wrote and compare: exact string fields
(:func:`profile_mismatches`), decayed interest scores within a tolerance
(:func:`interest_mismatches`), and the ``Cart Abandoned`` triggers of the change feed
(:func:`abandonment_mismatches`).
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import orjson
import redis

from liveprofile.buffer.streams import backlog
from liveprofile.store.keys import Keys
from tests.procs import wait_for

K = Keys("lp")
#: rendered interest scores are rounded to 4 decimals; the truth's are not
INTEREST_TOLERANCE = 1e-4


def post_batches(url: str, events: Sequence[dict], batch: int = 200, key: str = "test-key") -> None:
    """POST events to /v1/batch with gzip, retrying 429/503 as a client should (back-off, not
    synchronisation: the collector asked to be called again later)."""
    with httpx.Client(base_url=url, auth=(key, ""), timeout=30) as c:
        for i in range(0, len(events), batch):
            body = gzip.compress(orjson.dumps({"batch": list(events[i : i + batch])}))
            for _ in range(200):
                resp = c.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
                if resp.status_code not in (429, 503):
                    break
                time.sleep(0.2)
            assert resp.status_code == 200, resp.text


def _profiles(r: redis.Redis, users: Sequence[str], keys: Keys) -> list[dict[str, str]]:
    pipe = r.pipeline(transaction=False)
    for u in users:
        pipe.hgetall(keys.profile(u))
    return [{k.decode(): v.decode() for k, v in prof.items()} for prof in pipe.execute()]


def profile_mismatches(r: redis.Redis, truth: dict[str, dict[str, str]], keys: Keys = K) -> list[tuple[str, str, str | None, str]]:
    """(user, field, got, expected) for every truth field that differs."""
    users = list(truth)
    out = []
    for u, got in zip(users, _profiles(r, users, keys), strict=True):
        for f, v in truth[u].items():
            if got.get(f) != v:
                out.append((u, f, got.get(f), v))
    return out


def interest_mismatches(r: redis.Redis, interests: dict[str, dict[str, float]], keys: Keys = K,
                        tol: float = INTEREST_TOLERANCE) -> list[tuple[str, dict[str, float], dict[str, float]]]:  # fmt: skip
    """(user, got, expected) for every user whose ``interests`` differ from the truth's decayed
    scores: another set of categories, or a score further off than ``tol``."""
    users = list(interests)
    out = []
    for u, prof in zip(users, _profiles(r, users, keys), strict=True):
        got = orjson.loads(prof.get("interests") or "null")
        want = interests[u]
        if not isinstance(got, dict) or set(got) != set(want) or any(abs(got[c] - w) > tol for c, w in want.items()):
            out.append((u, got, want))
    return out


def abandoned_feed(r: redis.Redis, keys: Keys = K) -> list[dict[str, Any]]:
    """The ``Cart Abandoned`` triggers of the change feed, in feed order: ``user_id``, ``ts``,
    ``cart_value``, ``products`` (the shape of ``Generated.abandonments``) and the ``feed_id``."""
    out = []
    for eid, f in r.xrange(keys.changes):
        if b"event" not in f:
            continue
        ev = orjson.loads(f[b"event"])
        if ev.get("name") == "Cart Abandoned":
            out.append({"user_id": f[b"user_id"].decode(), "ts": ev["ts"], **ev["properties"], "feed_id": eid.decode()})
    return out


def abandonment_mismatches(r: redis.Redis, expected: list[dict[str, Any]], keys: Keys = K) -> dict[str, Any]:
    """Triggers the feed has more or fewer times than expected (``{}``: each exactly once)."""

    def key(a: dict[str, Any]) -> bytes:
        return orjson.dumps({k: v for k, v in a.items() if k != "feed_id"}, option=orjson.OPT_SORT_KEYS)

    got, want = Counter(map(key, abandoned_feed(r, keys))), Counter(map(key, expected))
    extra, missing = got - want, want - got
    return {k: v for k, v in (("extra", extra), ("missing", missing)) if v}


def wait_caught_up(r: redis.Redis, shards: int = 4, timeout: float = 120, keys: Keys = K) -> None:
    wait_for(lambda: sum(backlog(r, keys, shards).values()) == 0, timeout, 0.2, "dataflow to catch up")


def wait_truth(r: redis.Redis, truth: dict[str, dict[str, str]], timeout: float = 60, keys: Keys = K,
               interests: dict[str, dict[str, float]] | None = None) -> list:  # fmt: skip
    """Wait until every profile equals the truth (and, if given, the interest scores are
    within tolerance); returns the remaining mismatches (empty on success)."""
    mism: list = []

    def ok() -> bool:
        nonlocal mism
        mism = profile_mismatches(r, truth, keys)
        if not mism and interests is not None:
            mism = interest_mismatches(r, interests, keys)
        return not mism

    with contextlib.suppress(TimeoutError):
        wait_for(ok, timeout, 0.5, "profiles to match the truth")
    return mism


def dead_letters(r: redis.Redis, keys: Keys = K) -> list[dict[str, str]]:
    return [{k.decode(): v.decode(errors="replace") for k, v in f.items()} for _, f in r.xrange(keys.dead_letter)]


class OutageClient:
    """A Segment-style client in a thread for buffer-outage tests: POSTs ``batches`` to
    ``/v1/batch`` (gzip) one after another, retrying each until it is answered 200, as the SDKs
    do. Before batch ``len(batches) // 2`` it waits for :attr:`gate` (set by the test once the
    outage has begun), so the second half is sent during the outage.

    A 503 or 429 (with its ``Retry-After`` recorded) is retried after a 0.2 s pause (a client's
    pause, shorter than Retry-After to keep tests quick; not synchronisation); with
    ``retry_connection_errors`` so is a connection error. Any other answer fails the client, and
    :meth:`join` re-raises it."""

    def __init__(self, url: str, batches: Sequence[Sequence[dict]], *, what: str, timeout: float = 60,
                 retry_connection_errors: bool = False, key: str = "test-key") -> None:  # fmt: skip
        self.url, self.batches, self.what, self.timeout, self.key = url, batches, what, timeout, key
        self.retry_connection_errors = retry_connection_errors
        self.gate = threading.Event()
        self.statuses: list[int] = []
        self.retry_after: set[str] = set()
        self.acked = 0
        self.done = threading.Event()
        self.failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _post(self, c: httpx.Client, body: bytes) -> httpx.Response | None:
        try:
            return c.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
        except httpx.HTTPError:
            if not self.retry_connection_errors:
                raise
            return None

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, auth=(self.key, ""), timeout=self.timeout) as c:
                for i, batch in enumerate(self.batches):
                    if i == len(self.batches) // 2:
                        assert self.gate.wait(120), f"{self.what} never began"
                    body = gzip.compress(orjson.dumps({"batch": list(batch)}))
                    while True:
                        resp = self._post(c, body)
                        if resp is not None:
                            self.statuses.append(resp.status_code)
                            if resp.status_code == 200:
                                self.acked += 1
                                break
                            assert resp.status_code in (429, 503), resp.text
                            self.retry_after.add(resp.headers.get("retry-after", ""))
                        time.sleep(0.2)
            self.done.set()
        except BaseException as exc:  # surfaced by join()
            self.failure.append(exc)

    def join(self, timeout: float) -> None:
        """Wait for the client to finish; re-raise its failure; assert every batch was acknowledged."""
        self._thread.join(timeout)
        assert not self.failure, self.failure
        assert self.done.is_set() and self.acked == len(self.batches), (self.acked, len(self.batches))

    def release(self) -> None:
        """Let a client still waiting for the outage go on (cleanup)."""
        self.gate.set()


def assert_nothing_lost(r: redis.Redis, gen: Any, output: Callable[[], str], timeout: float = 60) -> None:
    """Every profile equals the generator's truth (waiting up to ``timeout``) and every invalid
    event of ``gen`` is in the dead letters; ``output`` (a process's log) explains a failure."""
    mism = wait_truth(r, gen.truth, timeout=timeout)
    assert not mism, (len(mism), mism[:10], output())
    got = {d["message_id"] for d in dead_letters(r)}
    assert {i["messageId"] for i in gen.invalid} <= got
