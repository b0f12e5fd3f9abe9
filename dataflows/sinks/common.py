"""What every Redis sink shares: retries with backoff, a client with the profile script, cached
RFM edges (see :mod:`dataflows.sinks` for the guarantees)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from itertools import chain
from typing import Any

import orjson
import redis

from dataflows import metrics
from liveprofile.store.connection import (
    BLOCKED,
    RETRYABLE,
    RawPipeline,
    blocked_reason,
    connect,
    load_scripts,
    run_script,
)
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import PROFILE_LUA, ProfileMode, profile_argv
from operators.identity import is_anon, public_id
from operators.rfm import RfmEdges
from operators.timeutil import iso

__all__ = ["with_retry", "raise_errors", "now_iso", "Writer", "Batch"]

logger = logging.getLogger("dataflows.sinks")


def with_retry(fn: Callable[[], object], what: str, retry_for: float, reload: Callable[[], None] | None = None) -> object:
    """Run ``fn`` until it succeeds, retrying transient errors with backoff for ``retry_for``
    seconds; on ``NoScriptError`` (a cluster node lost its scripts) call ``reload`` and retry.

    Writes Redis refuses as ``OOM`` or ``READONLY`` (:data:`~liveprofile.store.connection.BLOCKED`)
    are retried without a deadline: the process waits (``liveprofile_dataflow_redis_writes_blocked``
    is 1 meanwhile, the ``LiveprofileRedisWritesBlocked`` alert fires) rather than exit, holds its
    read position (the sink does not return, so nothing after it is acknowledged), and goes on
    once memory frees or a primary takes writes. ``fn`` must be idempotent (every sink's is: the
    seq guard, the dead-letter high-water marks)."""
    deadline = time.monotonic() + retry_for
    delay = 0.05
    blocked: str | None = None
    try:
        while True:
            try:
                return fn()
            except redis.exceptions.NoScriptError:
                if reload is None or time.monotonic() > deadline:
                    raise
                logger.warning("%s: a Redis node lost the scripts; loading them again", what)
                with_retry(reload, what, retry_for)
            except BLOCKED as exc:
                reason = blocked_reason(exc)
                if blocked != reason:
                    if blocked is not None:
                        metrics.WRITES_BLOCKED.labels(blocked).set(0)
                    blocked = reason
                    metrics.WRITES_BLOCKED.labels(reason).set(1)
                    logger.error("%s: Redis refuses writes (%s); waiting until it takes them again", what, exc)
                metrics.BLOCKED_RETRIES.labels(reason).inc()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                deadline = time.monotonic() + retry_for  # the wait for memory has no deadline
            except RETRYABLE as exc:
                if time.monotonic() > deadline:
                    raise
                logger.warning("%s: Redis unreachable (%s); retrying in %.2fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    finally:
        if blocked is not None:
            metrics.WRITES_BLOCKED.labels(blocked).set(0)
            logger.warning("%s: Redis takes writes again", what)


def raise_errors(replies: list[Any]) -> list[Any]:
    """The replies of a pipeline, or the first error among them raised (redis-py's
    pipelines raise it; :class:`RawPipeline` returns it in place)."""
    for r in replies:
        if isinstance(r, redis.ResponseError):
            raise r
    return replies


def now_iso() -> str:
    """Wall time as the ``updated_at`` of a write (the one clock read of the sinks)."""
    return iso(int(time.time() * 1000))


class Writer:
    """Shared plumbing: a client, the profile script, the key layout, cached RFM edges.

    ``client``, ``keys`` and ``retry_for`` are public: the partitions build their pipelines on them."""

    def __init__(self, url: str, keys: Keys, changes_maxlen: int, retry_for: float) -> None:
        self.client = connect(url, keys.cluster, socket_timeout=10)
        self.keys = keys
        self._maxlen = changes_maxlen
        self.retry_for = retry_for
        self._script = self.client.register_script(PROFILE_LUA)
        self.loaded = False  # EVALSHA needs the script loaded first (every primary of a cluster)
        # single Redis: the per-call keys are constants but the profile's (the hot path stays as it was)
        self._single = None if keys.cluster else (keys.profile_prefix, keys.changes, keys.suppressed)
        self._edges = RfmEdges()
        self._edges_at = 0.0

    def load(self) -> None:
        """``SCRIPT LOAD`` the profile script (every primary of a cluster)."""
        load_scripts(self.client, [self._script])
        self.loaded = True

    def retry(self, fn: Callable[[], object], what: str) -> object:
        """:func:`with_retry` with this writer's budget, loading the script first where needed."""

        def run() -> object:
            if not self.loaded:
                self.load()
            return fn()

        return with_retry(run, what, self.retry_for, self.load)

    def remember_edges(self, edges: RfmEdges) -> None:
        """Use ``edges`` (just published) until the next refresh."""
        self._edges, self._edges_at = edges, time.monotonic()

    def edges(self) -> RfmEdges:
        """The population's RFM edges, read from Redis at most every 0.5 s."""
        if time.monotonic() - self._edges_at > 0.5:
            raw = with_retry(lambda: self.client.get(self.keys.rfm_edges), "rfm edges", self.retry_for)
            self._edges = RfmEdges.from_json(raw)  # type: ignore[arg-type]
            self._edges_at = time.monotonic()
        return self._edges

    def pipe(self) -> Any:
        """A pipeline for :meth:`call` and :meth:`command`: a :class:`RawPipeline` on one
        server (the hot path), redis-py's cluster pipeline on a cluster."""
        return RawPipeline(self.client) if self._single is not None else self.client.pipeline(transaction=False)

    @staticmethod
    def command(pipe: Any, *args: Any) -> None:
        """Queue a plain command in a pipeline from :meth:`pipe`."""
        if type(pipe) is RawPipeline:
            pipe.command(*args)
        else:
            pipe.execute_command(*args)

    def profile_key(self, uid: str) -> str:
        """The profile hash of the per-user key ``uid`` (an anonymous key: the profile-anon family)."""
        return self.keys.profile_anon(public_id(uid)) if is_anon(uid) else self.keys.profile(uid)

    def call(self, pipe: Any, uid: str, seq: int, mode: ProfileMode, fields: dict[str, str], event: bytes | str, updated_at: str,
             event_at: str = "") -> None:  # fmt: skip
        """Queue one :data:`PROFILE_LUA` call; the fields travel as one JSON array argument
        (packing ~70 separate arguments per call cost more than the rest of the sink).

        ``uid`` is the per-user key: an anonymous one (:func:`operators.identity.is_anon`) writes
        the profile-anon family under the anonymous id, with ``user_id`` the anonymous id.
        ``event_at``: the ISO time of the event that caused the write (audience transitions)."""
        keys = self.keys
        single = self._single
        if is_anon(uid):
            aid = public_id(uid)
            if "user_id" in fields:
                fields = {**fields, "user_id": aid}
            packed = orjson.dumps(list(chain.from_iterable(fields.items())))
            argv = profile_argv(seq, updated_at, self._maxlen, aid, event, keys.script_prefix(aid), mode, packed, anonymous=True, event_at=event_at)
            if single is not None:
                pipe.command("EVALSHA", self._script.sha, 3, *keys.profile_anon_keys(aid), *argv)
            else:
                run_script(self._script, keys.profile_anon_keys(aid), argv, pipe)
            return
        packed = orjson.dumps(list(chain.from_iterable(fields.items())))
        if single is not None:  # one server: the keys without the group computation (the hot path)
            argv = profile_argv(seq, updated_at, self._maxlen, uid, event, keys.prefix, mode, packed, event_at=event_at)
            pipe.command("EVALSHA", self._script.sha, 3, single[0] + uid, single[1], single[2], *argv)
        else:
            argv = profile_argv(seq, updated_at, self._maxlen, uid, event, keys.script_prefix(uid), mode, packed, event_at=event_at)
            run_script(self._script, keys.profile_keys(uid), argv, pipe)

    def close(self) -> None:
        self.client.close()


class Batch:
    """One sink batch ready to write: ``build`` queues its commands in a fresh ``writer.pipe()``
    (callable again: a retry rebuilds the same commands), ``finish`` (``None``: nothing to do)
    takes the pipeline's replies (every error among them already raised) and does the sink's
    accounting.

    :meth:`run` writes it synchronously, with the writer's retries; a
    :class:`~dataflows.sinks.deferred.Channel` sends it and reads the replies later."""

    __slots__ = ("writer", "build", "finish", "what")

    def __init__(self, writer: Writer, build: Callable[[], Any], finish: Callable[[list[Any]], None] | None, what: str) -> None:
        self.writer = writer
        self.build = build
        self.finish = finish
        self.what = what

    def run(self) -> None:
        """Write it now: build, execute, raise the first error (transient ones retried), finish."""
        self.done(self.writer.retry(lambda: raise_errors(self.build().execute()), self.what))  # type: ignore[arg-type]

    def done(self, replies: list[Any]) -> None:
        """The batch was written and these are its replies (none an error): its accounting."""
        if self.finish is not None:
            self.finish(replies)
