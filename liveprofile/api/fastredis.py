"""A minimal pipelined Redis client for the API's hot path (profile reads).

One TCP connection per client; every command is written immediately and the
replies, which Redis sends in order, resolve the waiting futures in FIFO
order (hiredis parses). Concurrent requests therefore share one connection
with no pool checkout and no lock — about a third of the client-side cost of
``redis.asyncio`` per command. A lost connection fails the commands in flight
with :class:`ConnectionError` and the next command reconnects; a command that
times out closes the connection (its reply can no longer be matched safely).

Only ``redis://`` URLs (host, port, db, optional user/password) are handled;
:func:`from_url` returns None for anything else (TLS, sockets) and the caller
keeps using ``redis.asyncio``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import unquote, urlparse

import hiredis

__all__ = ["PipelinedRedis", "from_url"]


def _pack(args: tuple[str | bytes, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            fut = self.waiters.popleft()
            if fut.done():
                continue  # timed out / cancelled: its reply is dropped, order stays aligned
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(f"Redis connection lost: {exc}"))


class PipelinedRedis:
    """Pipelined single-connection client (see module docstring)."""

    def __init__(self, host: str, port: int, db: int = 0, username: str | None = None, password: str | None = None,
                 timeout: float = 5.0) -> None:  # fmt: skip
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout = timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def _connection(self) -> _Protocol:
        proto = self._proto
        if proto is not None and not proto.lost:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and not self._proto.lost:
                return self._proto
            loop = asyncio.get_running_loop()
            _, proto = await asyncio.wait_for(loop.create_connection(_Protocol, self.host, self.port), self.timeout)
            self._proto = proto
            if self.password is not None:
                auth = ("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)
                await self._send(proto, auth)
            if self.db:
                await self._send(proto, ("SELECT", str(self.db)))
            return proto

    async def _send(self, proto: _Protocol, args: tuple[Any, ...]) -> Any:
        assert proto.transport is not None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        proto.waiters.append(fut)
        proto.transport.write(_pack(args))
        try:
            async with asyncio.timeout(self.timeout):
                return await fut
        except TimeoutError:
            proto.transport.close()
            raise

    async def execute(self, *args: str | bytes) -> Any:
        """Run one command; its decoded reply."""
        return await self._send(await self._connection(), args)

    async def hgetall(self, key: str) -> dict[str, str]:
        flat = await self.execute("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def aclose(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()


def from_url(url: str, timeout: float = 5.0) -> PipelinedRedis | None:
    """A client for a plain ``redis://`` URL, else None.

    >>> c = from_url("redis://:pw@10.0.0.1:6380/2")
    >>> (c.host, c.port, c.db, c.password), from_url("rediss://h:1/0")
    (('10.0.0.1', 6380, 2, 'pw'), None)
    """
    u = urlparse(url)
    if u.scheme != "redis" or u.query:
        return None
    db = int(u.path.strip("/") or 0) if u.path.strip("/").isdigit() or not u.path.strip("/") else None
    if db is None:
        return None
    return PipelinedRedis(u.hostname or "127.0.0.1", u.port or 6379, db, unquote(u.username) if u.username else None,
                          unquote(u.password) if u.password is not None else None, timeout)  # fmt: skip
