"""Group commit under concurrent requests: the real collector process over raw HTTP/1.1 on
loopback, against a real redis-server.

The collector (:class:`liveprofile.buffer.streams.AsyncAppender`) promises: concurrent requests'
appends share Redis round trips (one pipeline in flight, the next takes everyone who queued
meanwhile), a ``200`` is sent only after Redis acknowledged every entry of the request, and
nothing acknowledged is lost. Redis is made to hold the collector's writes with ``CLIENT PAUSE
WRITE`` (reads go on, so the collector's backlog check still answers), which makes the
grouping observable from Redis's side instead of from the collector's own account:

* while writes are held, the collector has exactly one connection with an append (one
  ``evalsha`` of the append script per request, on one Redis) waiting in
  Redis (``CLIENT LIST`` flag ``b``): one pipeline in flight, the other requests queued;
* no request has been answered while its append cannot have happened;
* after ``CLIENT UNPAUSE`` every request is answered ``200`` and its events are in the buffer
  exactly once; the read events Redis processed (``INFO stats total_reads_processed``, minus
  this test's own commands) are far fewer than the requests: their pipelines were merged;
* requests cut by the client mid-body keep nothing; requests cut after their whole body was
  sent are all-or-nothing (appended once, or refused as ``client_disconnected``), and the
  collector's refusal count accounts for every one of them.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from liveprofile.store.keys import Keys
from tests.collector.conftest import metric
from tests.procs import Proc, base_env, start_collector, wait_for

K = Keys("lp")
AUTH = b"Basic " + base64.b64encode(b"test-key:")
EVENTS_PER_REQUEST = 5
OK_REQUESTS = 48
CUT_MID_BODY = 6
CUT_AFTER_BODY = 6


@pytest.fixture
def collector(redis_url: str, tmp_path: Path) -> Iterator[tuple[Proc, str]]:
    proc, url = start_collector(base_env(redis_url), tmp_path)
    yield proc, url
    proc.stop()


def _body(req: int) -> bytes:
    return orjson.dumps({"batch": [
        {"type": "track", "userId": f"gc-user-{req}", "event": "Product Viewed", "messageId": f"gc-{req}-{i}",
         "properties": {"product_id": f"p{i}"}}
        for i in range(EVENTS_PER_REQUEST)
    ]})  # fmt: skip


def _request(body: bytes, content_length: int | None = None) -> bytes:
    n = len(body) if content_length is None else content_length
    return (b"POST /v1/batch HTTP/1.1\r\nHost: collector\r\nAuthorization: " + AUTH
            + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(n).encode() + b"\r\n\r\n" + body)  # fmt: skip


class Client(threading.Thread):
    """One raw HTTP/1.1 client: connects, sends its request (whole, cut mid-body, or whole then
    closed at once), and reads the status line if it stayed."""

    def __init__(self, addr: tuple[str, int], req: int, mode: str) -> None:
        super().__init__(daemon=True)
        self.addr, self.req, self.mode = addr, req, mode
        self.sent = threading.Event()
        self.status: int | None = None
        self.error: str | None = None

    def run(self) -> None:
        body = _body(self.req)
        try:
            with socket.create_connection(self.addr, timeout=30) as s:
                if self.mode == "cut_mid_body":
                    s.sendall(_request(body[: len(body) // 2], content_length=len(body)))
                else:
                    s.sendall(_request(body))
                self.sent.set()
                if self.mode != "ok":
                    return  # closed here: the collector sees the client go away
                data = b""
                while b"\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        self.error = f"closed without an answer: {data!r}"
                        return
                    data += chunk
                self.status = int(data.split(b" ", 2)[1])
        except OSError as exc:
            self.error = repr(exc)
            self.sent.set()


def _reads(r: redis.Redis) -> int:
    return int(r.info("stats")["total_reads_processed"])


def _held_xadds(r: redis.Redis) -> int:
    """Connections whose append (XADD, or the append script) Redis is holding (postponed by CLIENT PAUSE WRITE)."""
    return sum(1 for c in r.client_list() if "b" in c["flags"] and c["cmd"] in ("xadd", "evalsha"))


def _buffered_ids(r: redis.Redis) -> Counter[str]:
    out: Counter[str] = Counter()
    for i in range(4):
        for _, f in r.xrange(K.events(i)):
            out[orjson.loads(f[b"e"])["messageId"]] += 1
    return out


def test_concurrent_requests_are_group_committed_and_acknowledged_only_after_the_append(
    collector: tuple[Proc, str], r: redis.Redis
) -> None:
    proc, url = collector
    host, port = url.removeprefix("http://").split(":")
    addr = (host, int(port))
    disconnected0 = metric(httpx.get(url + "/metrics").text, "liveprofile_collector_events_rejected_total", reason="client_disconnected")

    modes = ["ok"] * OK_REQUESTS + ["cut_mid_body"] * CUT_MID_BODY + ["cut_after_body"] * CUT_AFTER_BODY
    clients = [Client(addr, i, m) for i, m in enumerate(modes)]
    mine = 0  # commands this test sends to Redis between the two INFO readings (1 read event each)
    reads0 = _reads(r)
    r.client_pause(30_000, all=False)  # WRITE mode: XADDs are held, XINFO/XRANGE/INFO still answer
    mine += 1
    try:
        for c in clients:
            c.start()
        for c in clients:
            assert c.sent.wait(20), f"client {c.req} could not send"
        checks = 0

        def held() -> bool:
            nonlocal checks
            checks += 1
            return _held_xadds(r) >= 1

        wait_for(held, 10, interval=0.01, what="the collector's first pipeline to reach Redis")
        mine += checks
        # Every request was sent and the collector's append is waiting in Redis: nobody may
        # have been answered, and only one pipeline is in flight (the others are queued).
        assert [c.req for c in clients if c.status is not None] == []
        assert _held_xadds(r) == 1
        mine += 1
    finally:
        r.client_unpause()
        mine += 1
    for c in clients:
        c.join(30)
        assert not c.is_alive(), f"client {c.req} still waiting"
    reads1 = _reads(r)

    assert [(c.req, c.error) for c in clients if c.error] == []
    ok = [c for c in clients if c.mode == "ok"]
    assert [c.status for c in ok] == [200] * OK_REQUESTS, proc.output()

    # Group commit, seen from Redis: one read event per request (or more) if each request
    # had its own pipeline; the merged pipelines need a handful (plus the collector's
    # once-a-second backlog reads).
    collector_reads = reads1 - reads0 - mine - 1  # - 1: the INFO that read reads1
    assert collector_reads < OK_REQUESTS // 3, (collector_reads, OK_REQUESTS)

    # A cut request the collector read whole may still be on its way to the buffer: wait until
    # every cut request is resolved, appended or counted as refused (``client_disconnected``),
    # never both; then the buffer is final.
    state: dict[str, Any] = {}

    def resolved() -> bool:
        ids = _buffered_ids(r)
        appended = sum(1 for c in clients if c.mode == "cut_after_body" and ids[f"gc-{c.req}-0"])
        m = httpx.get(url + "/metrics").text
        refused = metric(m, "liveprofile_collector_events_rejected_total", reason="client_disconnected") - disconnected0
        state.update(ids=ids, appended=appended, refused=refused)
        return appended + refused == CUT_MID_BODY + CUT_AFTER_BODY

    try:
        wait_for(resolved, 20, what="every cut request to be appended or refused")
    except TimeoutError:
        pytest.fail(f"cut requests: {state['appended']} appended, {state['refused']} refused, of {CUT_MID_BODY + CUT_AFTER_BODY}\n{proc.output()}")
    ids, appended_cut = state["ids"], state["appended"]
    assert max(ids.values()) == 1, [m for m, n in ids.items() if n > 1][:10]  # exactly once
    for c in ok:  # every acknowledged event is there
        assert all(ids[f"gc-{c.req}-{i}"] == 1 for i in range(EVENTS_PER_REQUEST)), c.req
    for c in clients:
        kept = sum(ids[f"gc-{c.req}-{i}"] for i in range(EVENTS_PER_REQUEST))
        if c.mode == "cut_mid_body":
            assert kept == 0, c.req
        elif c.mode == "cut_after_body":
            assert kept in (0, EVENTS_PER_REQUEST), (c.req, kept)  # all or nothing
    assert len(ids) == (OK_REQUESTS + appended_cut) * EVENTS_PER_REQUEST
    assert r.xlen(K.dead_letter) == 0


def test_many_keep_alive_clients_each_event_exactly_once(collector: tuple[Proc, str], r: redis.Redis) -> None:
    """No pause: 24 keep-alive clients x 10 requests at once; every request 200 and every one of
    its events buffered exactly once."""
    proc, url = collector
    n_clients, per_client = 24, 10
    statuses: list[int] = []
    lock = threading.Lock()
    go = threading.Barrier(n_clients)

    def client(k: int) -> None:
        with httpx.Client(base_url=url, auth=("test-key", ""), timeout=30) as c:
            go.wait()
            for j in range(per_client):
                resp = c.post("/v1/batch", content=_body(1000 + k * per_client + j), headers={"Content-Type": "application/json"})
                with lock:
                    statuses.append(resp.status_code if resp.content == b'{"success":true}' else -resp.status_code)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [200] * (n_clients * per_client), (Counter(statuses), proc.output())
    ids = _buffered_ids(r)
    want = {f"gc-{req}-{i}" for req in range(1000, 1000 + n_clients * per_client) for i in range(EVENTS_PER_REQUEST)}
    assert set(ids) == want and set(ids.values()) == {1}
