"""Redis clients for both layouts: one server, or a Redis Cluster (``LIVEPROFILE_REDIS_CLUSTER=on``).

:func:`connect` / :func:`connect_async` return ``redis.Redis`` (exactly what
the components used before cluster support) or redis-py's ``RedisCluster``
built from the same ``LIVEPROFILE_REDIS_URL`` (any node: the client discovers
the others and follows ``MOVED``/``ASK``). Cluster clients split pipelines per
node (commands of one pipeline to different nodes go out in parallel; there is
no cross-node atomicity — every multi-key command and script in liveprofile
touches one hash slot, see :mod:`liveprofile.store.keys`).

:func:`run_script` queues a Lua script in a pipeline of either kind: redis-py's
cluster pipeline refuses ``evalsha()``, so there the raw ``EVALSHA`` is queued
(the script must have been loaded on every primary: :func:`load_scripts`;
a ``NoScriptError`` from a pipeline means a node lost its script cache —
restart, failover, new node — and the caller loads them again and retries).

Routing without round trips: redis-py routes a command it cannot parse itself
(``EVALSHA`` in a pipeline, ``XREAD``, ``XREADGROUP``: "movable keys") by
asking a node ``COMMAND GETKEYS`` first — one extra round trip per call (it
made pipelined profile writes several times slower, and doubled every buffer
poll). The cluster clients made here find those keys locally
(:func:`local_keys`) and ask the server only for anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers.commands import AsyncCommandsParser, CommandsParser
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.connection import HiredisRespSerializer

__all__ = ["connect", "connect_async", "run_script", "load_scripts", "RawPipeline", "read_replies", "RETRYABLE", "BLOCKED", "TROUBLE", "blocked_reason"]

#: writes Redis refuses until an operator or a failover acts: ``OOM`` (at ``maxmemory`` with
#: ``noeviction``) and ``READONLY`` (the server is, or has just become, a replica). Nothing of a
#: refused command or script was written; a writer waits (without a deadline) and writes again.
BLOCKED: tuple[type[Exception], ...] = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)

#: transient errors worth retrying: connection trouble, a cluster resharding or failing over, and
#: the :data:`BLOCKED` writes
RETRYABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError, redis.exceptions.TryAgainError, *BLOCKED,
)  # fmt: skip

#: anything a long-running loop should log and retry rather than die of (a cluster client
#: raises ``RedisClusterException``, which is not a ``RedisError``, e.g. while slots are uncovered)
TROUBLE: tuple[type[Exception], ...] = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)


def blocked_reason(exc: BaseException) -> str:
    """The metric label of a :data:`BLOCKED` error: ``oom`` or ``readonly``.

    >>> blocked_reason(redis.exceptions.OutOfMemoryError()), blocked_reason(redis.exceptions.ReadOnlyError())
    ('oom', 'readonly')
    """
    return "oom" if isinstance(exc, redis.exceptions.OutOfMemoryError) else "readonly"


def local_keys(args: Sequence[Any]) -> list[Any] | None:
    """The keys of a script call or a stream read (``args`` = command and arguments), or None.

    >>> local_keys(("EVALSHA", "abc", 2, "k1", "k2", "arg")), local_keys(("XREAD", "COUNT", 5, "STREAMS", "s1", "s2", "0", "0"))
    (['k1', 'k2'], ['s1', 's2'])
    >>> local_keys(("XREADGROUP", "GROUP", "STREAMS", "c", "COUNT", 1, "STREAMS", "s", ">")), local_keys(("GET", "k"))
    (['s'], None)
    """
    name = _text(args[0]).upper()
    if name in ("EVAL", "EVALSHA") and len(args) > 2:
        return list(args[3 : 3 + int(args[2])])
    if name in ("XREAD", "XREADGROUP"):
        # options before STREAMS are keywords and numbers; XREADGROUP's group and consumer
        # names (which may be anything) come first, at positions 2 and 3
        for i in range(4 if name == "XREADGROUP" else 1, len(args)):
            if _text(args[i]).upper() == "STREAMS":
                rest = args[i + 1 :]
                return list(rest[: len(rest) // 2])
    return None


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


class _Parser(CommandsParser):
    def get_keys(self, redis_conn: Any, *args: Any) -> Any:
        keys = local_keys(args)
        return keys if keys is not None else super().get_keys(redis_conn, *args)


class _AsyncParser(AsyncCommandsParser):
    async def get_keys(self, *args: Any) -> Any:
        keys = local_keys(args)
        return keys if keys is not None else await super().get_keys(*args)


def connect(url: str, cluster: bool = False, **kwargs: Any) -> redis.Redis:
    """A blocking client for ``url``: ``redis.Redis``, or ``RedisCluster`` when ``cluster``.

    ``kwargs`` are connection options (``socket_timeout``, ``decode_responses``, ...);
    with a cluster they apply to every node's connections."""
    if not cluster:
        return redis.Redis.from_url(url, **kwargs)
    rc = RedisCluster.from_url(url, **kwargs)
    rc.commands_parser.__class__ = _Parser  # same state, keys of scripts and stream reads found locally
    return rc  # type: ignore[return-value]


class _HiredisPacking:
    """Mixin for ``redis.asyncio`` connections: commands packed by hiredis (in C), as redis-py's
    blocking connections already do when hiredis is installed (its ``HiredisRespSerializer``,
    used here as is). redis-py's asyncio connections pack every argument in Python instead:
    ~13 us per event of the collector's append script against ~2 us (bench/collector.py --cpu).
    The bytes sent are the same RESP; only who builds them changes."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        return self._packer.pack(*args)

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        pack = self._packer.pack
        return [b"".join(chunk for cmd in commands for chunk in pack(*cmd))]


@cache
def _hiredis_packing(base: type) -> type:
    """``base`` (an asyncio connection class) with :class:`_HiredisPacking`."""
    return type(f"Hiredis{base.__name__}", (_HiredisPacking, base), {})


def connect_async(url: str, cluster: bool = False, **kwargs: Any) -> aioredis.Redis:
    """An asyncio client for ``url``: ``redis.asyncio.Redis``, or its ``RedisCluster`` when ``cluster``.

    ``max_connections`` is per node with a cluster (exhaustion raises
    ``MaxConnectionsError``, a ``ConnectionError``, instead of waiting). On one server the
    connections pack commands with hiredis (:class:`_HiredisPacking`)."""
    if not cluster:
        client = aioredis.Redis.from_url(url, **kwargs)
        pool = client.connection_pool
        pool.connection_class = _hiredis_packing(pool.connection_class)  # no connection is made before the first command
        return client
    rc = AsyncRedisCluster.from_url(url, **kwargs)
    rc.commands_parser.__class__ = _AsyncParser  # same state, keys of scripts and stream reads found locally
    return rc  # type: ignore[return-value]


def run_script(script: Script, keys: Sequence[Any], args: Sequence[Any], pipe: Any) -> Any:
    """Queue ``script`` with ``keys``/``args`` in ``pipe`` (a plain or a cluster pipeline).

    A plain pipeline goes through redis-py's ``Script`` (which loads it before the
    pipeline runs), unchanged; a cluster pipeline gets the raw ``EVALSHA``."""
    if isinstance(pipe, ClusterPipeline):
        return pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    return script(keys=keys, args=args, client=pipe)


def load_scripts(client: Any, scripts: Iterable[Script]) -> None:
    """``SCRIPT LOAD`` each script (on every primary of a cluster): needed before :func:`run_script`
    queues them in a cluster pipeline; harmless (and unused) with one server."""
    for s in scripts:
        client.script_load(s.script)


class RawPipeline:
    """A lean pipeline for one server: commands packed by hiredis, sent in one write on one
    pooled connection, replies read back in order.

    The hot sinks write tens of thousands of ``EVALSHA`` calls per second; redis-py's
    ``Pipeline`` spends ~3x hiredis's own packing time per command in Python (argument
    normalisation) and adds a ``SCRIPT EXISTS`` round trip per execute. This keeps
    redis-py's connection handling (connect, health, errors) and skips the rest.

    Contract: :meth:`execute` returns one reply per queued command; a command's
    ``ResponseError`` is returned in its place, except ``NoScriptError``, which is raised
    after every reply was read (the caller loads the script and re-runs the batch — the
    scripts here are idempotent). Connection trouble raises (``RETRYABLE``) and discards
    the connection. A pipeline is reusable: :meth:`execute` empties it.

    Arguments are ``str``, ``bytes``, ``int`` or ``float`` (what hiredis packs).
    """

    __slots__ = ("_pool", "_cmds")

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._cmds: list[bytes] = []

    def __len__(self) -> int:
        return len(self._cmds)

    def command(self, *args: Any) -> None:
        """Queue one command (name first)."""
        self._cmds.append(hiredis.pack_command(args))

    def execute(self) -> list[Any]:
        cmds, self._cmds = self._cmds, []
        if not cmds:
            return []
        conn = self._pool.get_connection()
        try:
            conn.send_packed_command([b"".join(cmds)])
            out = read_replies(conn, len(cmds))
        except BaseException:
            conn.disconnect()  # replies may be pending: never hand this connection out again
            raise
        finally:
            self._pool.release(conn)
        for r in out:
            if type(r) is redis.exceptions.NoScriptError:
                raise r
        return out

    def take(self) -> list[bytes]:
        """The queued commands, packed (one ``bytes`` each), and the pipeline emptied: for a
        caller that sends them itself (:mod:`dataflows.sinks.deferred`)."""
        cmds, self._cmds = self._cmds, []
        return cmds


def read_replies(conn: Any, n: int) -> list[Any]:
    """The next ``n`` replies on ``conn``, each ``ResponseError`` (``NoScriptError`` included)
    returned in its place; connection trouble raises (the caller discards the connection)."""
    out: list[Any] = []
    append = out.append
    read = conn.read_response
    for _ in range(n):
        try:
            append(read())
        except redis.ResponseError as exc:
            append(exc)
    return out
