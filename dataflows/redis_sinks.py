"""Redis outputs of the dataflow: versioned profile upserts and dead letters.

Bytewax sinks are at-least-once: after a crash the outputs of up to one epoch
are written again. Both sinks are therefore idempotent *in Redis*, inside one
Lua script per item, so no interleaving can break them:

* **Profile upsert** (:data:`UPSERT_LUA`): writes the profile hash only when
  the incoming ``version`` is greater than the stored one, and only the fields
  whose value changed; in the same script it appends one entry to the change
  feed naming the changed fields. A replayed or stale write is a no-op and adds
  no change entry.
* **Dead letter** (:data:`DEAD_LETTER_LUA`): keeps a high-water mark of source
  positions per source partition; an entry at or below it was already
  dead-lettered and is skipped.

Writes coalesce per user per batch (only the newest version is written) and go
out as one pipelined round trip per batch. Transient Redis errors are retried
with backoff for up to ``retry_for`` seconds before the sink gives up (the
dataflow then stops and recovery resumes it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows import metrics
from liveprofile.deadletter import dead_letter_fields
from liveprofile.keys import Keys
from operators.events import Rejected

__all__ = [
    "ProfileOut",
    "DeadLetter",
    "RedisProfileSink",
    "RedisDeadLetterSink",
    "UPSERT_LUA",
    "DEAD_LETTER_LUA",
]

logger = logging.getLogger(__name__)

UPSERT_LUA = """
-- KEYS[1] profile hash, KEYS[2] change feed
-- ARGV[1] version, ARGV[2] updated_at, ARGV[3] change-feed MAXLEN, ARGV[4] user id,
-- ARGV[5] extra change-feed payload (JSON object text or ''), ARGV[6..] field, value pairs
local v = tonumber(ARGV[1])
local cur = redis.call('HGET', KEYS[1], 'version')
if cur and tonumber(cur) >= v then return 0 end
local names = {}
for i = 6, #ARGV, 2 do names[#names + 1] = ARGV[i] end
local old = {}
if #names > 0 then old = redis.call('HMGET', KEYS[1], unpack(names)) end
local set = {'version', ARGV[1], 'updated_at', ARGV[2]}
local changed = {}
local n = 0
local j = 1
for i = 6, #ARGV, 2 do
  if old[j] ~= ARGV[i + 1] then
    set[#set + 1] = ARGV[i]
    set[#set + 1] = ARGV[i + 1]
    changed[ARGV[i]] = ARGV[i + 1]
    n = n + 1
  end
  j = j + 1
end
redis.call('HSET', KEYS[1], unpack(set))
local payload = cjson.encode(changed)
if n == 0 then payload = '{}' end
local entry = {'user_id', ARGV[4], 'version', ARGV[1], 'changed', payload, 'updated_at', ARGV[2]}
if ARGV[5] ~= '' then
  entry[#entry + 1] = 'event'
  entry[#entry + 1] = ARGV[5]
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
return 1
"""

DEAD_LETTER_LUA = """
-- KEYS[1] dead-letter stream, KEYS[2] high-water-mark hash
-- ARGV[1] source partition, ARGV[2] position major, ARGV[3] position minor, ARGV[4] MAXLEN,
-- ARGV[5..] entry field, value pairs
local hwm = redis.call('HGET', KEYS[2], ARGV[1])
local a = tonumber(ARGV[2])
local b = tonumber(ARGV[3])
if hwm then
  local sep = string.find(hwm, '-', 1, true)
  local ha = tonumber(string.sub(hwm, 1, sep - 1))
  local hb = tonumber(string.sub(hwm, sep + 1))
  if a < ha or (a == ha and b <= hb) then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '-' .. ARGV[3])
local entry = {}
for i = 5, #ARGV do entry[#entry + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', unpack(entry))
return 1
"""


@dataclass(frozen=True, slots=True)
class ProfileOut:
    """One profile version to write: fields (strings) and the newest receipt time."""

    version: int
    fields: dict[str, str]
    last_received_ms: int
    extra: bytes = b""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event with the source position it came from (for idempotence)."""

    rejected: Rejected
    source: str
    position: tuple[int, int]
    stage: str = "dataflow"


def _with_retry(fn: Callable[[], object], what: str, retry_for: float) -> object:
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise
            logger.warning("%s: Redis unreachable (%s); retrying in %.2fs", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class _ProfilePartition(StatelessSinkPartition[tuple[str, ProfileOut]]):
    def __init__(self, url: str, keys: Keys, changes_maxlen: int, retry_for: float) -> None:
        self._r = redis.Redis.from_url(url, socket_timeout=10)
        self._keys = keys
        self._maxlen = changes_maxlen
        self._retry_for = retry_for
        self._script = self._r.register_script(UPSERT_LUA)

    def write_batch(self, items: list[tuple[str, ProfileOut]]) -> None:
        t0 = time.perf_counter()
        latest: dict[str, ProfileOut] = {}
        for uid, out in items:
            prev = latest.get(uid)
            if prev is None or out.version > prev.version:
                latest[uid] = out
        now = time.time()
        updated_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
        keys = self._keys
        changes = keys.changes
        maxlen = self._maxlen
        script = self._script

        def run() -> list[int]:
            pipe = self._r.pipeline(transaction=False)
            for uid, out in latest.items():
                args: list[object] = [out.version, updated_at, maxlen, uid, out.extra]
                for k, v in out.fields.items():
                    args.append(k)
                    args.append(v)
                script(keys=[keys.profile(uid), changes], args=args, client=pipe)
            return pipe.execute()

        results = _with_retry(run, "profile sink", self._retry_for)
        done = time.time()
        written = 0
        for out, ok in zip(latest.values(), results, strict=True):  # type: ignore[call-overload]
            if ok:
                written += 1
                metrics.FRESHNESS.observe(max(0.0, done - out.last_received_ms / 1000))
        metrics.PROFILE_WRITES.labels("written").inc(written)
        metrics.PROFILE_WRITES.labels("stale").inc(len(latest) - written)
        metrics.SINK_SECONDS.labels("profile").observe(time.perf_counter() - t0)

    def close(self) -> None:
        self._r.close()


class RedisProfileSink(DynamicSink[tuple[str, ProfileOut]]):
    """Versioned, change-feed-emitting profile upserts (see module docstring)."""

    def __init__(self, url: str, keys: Keys, changes_maxlen: int = 1_000_000, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.changes_maxlen = changes_maxlen
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProfilePartition:
        return _ProfilePartition(self.url, self.keys, self.changes_maxlen, self.retry_for)


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, url: str, keys: Keys, maxlen: int, retry_for: float) -> None:
        self._r = redis.Redis.from_url(url, socket_timeout=10)
        self._keys = keys
        self._maxlen = maxlen
        self._retry_for = retry_for
        self._script = self._r.register_script(DEAD_LETTER_LUA)

    def write_batch(self, items: list[DeadLetter]) -> None:
        keys = [self._keys.dead_letter, self._keys.dead_letter_seen]

        def run() -> list[int]:
            pipe = self._r.pipeline(transaction=False)
            for d in items:
                a, b = d.position
                src = f"{d.source}:{a}-{b}"
                args: list[object] = [d.source, a, b, self._maxlen]
                for k, v in dead_letter_fields(d.rejected, d.stage, src).items():
                    args.append(k)
                    args.append(v)
                self._script(keys=keys, args=args, client=pipe)
            return pipe.execute()

        _with_retry(run, "dead-letter sink", self._retry_for)
        for d in items:
            metrics.EVENTS_REJECTED.labels(d.rejected.reason).inc()

    def close(self) -> None:
        self._r.close()


class RedisDeadLetterSink(DynamicSink[DeadLetter]):
    """Idempotent dead-letter writes (see module docstring)."""

    def __init__(self, url: str, keys: Keys, maxlen: int = 1_000_000, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.maxlen = maxlen
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.url, self.keys, self.maxlen, self.retry_for)


def encode_extra(obj: dict[str, object] | None) -> bytes:
    """JSON text for :attr:`ProfileOut.extra` (``b""`` when there is nothing)."""
    return orjson.dumps(obj) if obj else b""
