"""Collector throughput: requests/s and events/s over loopback, against the buffer's ceiling.

    .venv/bin/python bench/collector.py [--seconds 10] [--connections 32] [--processes 2] [--debugger]

Starts a private redis-server and ``liveprofile collector`` (one uvicorn worker),
then drives it with keep-alive HTTP/1.1 connections from ``--processes`` load
processes (a minimal asyncio client: pre-built requests, so the client costs
little). Two shapes: ``/v1/batch`` with 100 events per request (gzip), and
``/v1/track`` with one event per request. The baseline, measured in the same
run, is the buffer's ceiling: the same events appended from one Python process
with pipelined XADDs (1,000 per round trip), no HTTP at all. ``--debugger``: a second collector
with the source debugger's tap on (``LIVEPROFILE_DEBUGGER=on``) against the same server, and the
on/off ratio of each shape.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

AUTH = "Basic " + base64.b64encode(b"bench-key:").decode()


def _requests(path: str, bodies: list[bytes], gz: bool) -> list[bytes]:
    out = []
    for b in bodies:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Type: application/json\r\nContent-Length: {len(b)}\r\n"
        if gz:
            head += "Content-Encoding: gzip\r\n"
        out.append(head.encode() + b"\r\n" + b)
    return out


async def _conn(port: int, reqs: list[bytes], stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    while time.monotonic() < stop_at:
        writer.write(reqs[i % len(reqs)])
        i += 1
        await writer.drain()
        status = await reader.readline()
        clen = None
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.partition(b":")
            if k.lower() == b"content-length":
                clen = int(v)
            elif k.lower() == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if clen is not None:
            await reader.readexactly(clen)
        elif chunked:
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        counts[0 if status.split(b" ")[1] == b"200" else 1] += 1
    writer.close()


def _load(port: int, reqs: list[bytes], seconds: float, connections: int, q: mp.Queue) -> None:
    counts = [0, 0]

    async def main() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(_conn(port, reqs[k::connections] or reqs, stop_at, counts) for k in range(connections)))

    asyncio.run(main())
    q.put(counts)


def drive(port: int, reqs: list[bytes], seconds: float, connections: int, processes: int) -> tuple[float, int]:
    """Requests/s answered 200, and the number of non-200 answers."""
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_load, args=(port, reqs, seconds, connections // processes, q)) for _ in range(processes)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    totals = [0, 0]
    for _ in procs:
        c = q.get()
        totals[0] += c[0]
        totals[1] += c[1]
    for p in procs:
        p.join()
    return totals[0] / (time.perf_counter() - t0), totals[1]


def ceiling(url: str, events: list[dict], seconds: float) -> float:
    """Events/s of pipelined XADDs from one process (the buffer's ceiling)."""
    r = redis.Redis.from_url(url)
    raws = [orjson.dumps(e) for e in events]
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pipe = r.pipeline(transaction=False)
        for raw in raws[n % len(raws) : n % len(raws) + 1000]:
            pipe.xadd(f"ceiling:{n % 4}", {"e": raw})
        n += len(pipe.execute())
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--debugger", action="store_true", help="measure with LIVEPROFILE_DEBUGGER off and on, side by side")
    args = ap.parse_args()
    gen = generate(GenConfig(users=2000, seed=4, end_ms=int(time.time() * 1000) - 60_000, days=2))
    ev = gen.events
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d) / "redis", appendonly=True).start()
        try:
            batches = [gzip.compress(orjson.dumps({"batch": ev[i : i + 100]}), 1) for i in range(0, min(len(ev), 50_000), 100)]
            singles = [orjson.dumps({k: v for k, v in e.items() if k != "type"}) for e in ev[:5000] if e.get("type") == "track"]
            ceil = ceiling(srv.url, ev[:20_000], args.seconds / 2)
            modes = ("off", "on") if args.debugger else ("off",)
            results = {m: run_collector(srv.url, m, batches, singles, args) for m in modes}
        finally:
            srv.stop()
    print(f"buffer ceiling (pipelined XADD, no HTTP)   {ceil:10.0f} events/s")
    for m, (b_rps, b_bad, s_rps, s_bad) in results.items():
        tag = f" [LIVEPROFILE_DEBUGGER={m}]" if args.debugger else ""
        print(f"/v1/batch, 100 events, gzip{tag:28s} {b_rps:10.0f} req/s  {b_rps * 100:10.0f} events/s  ratio {b_rps * 100 / ceil:.2f} of ceiling  ({b_bad} non-200)")
        print(f"/v1/track, 1 event{tag:37s} {s_rps:10.0f} req/s  {s_rps:10.0f} events/s  ({s_bad} non-200)")
    if args.debugger:
        (b0, _, s0, _), (b1, _, s1, _) = results["off"], results["on"]
        print(f"debugger tap on / off: /v1/batch {b1 / b0:.2f}, /v1/track {s1 / s0:.2f}")


def run_collector(url: str, debugger: str, batches: list[bytes], singles: list[bytes], args: argparse.Namespace) -> tuple[float, int, float, int]:
    """(batch req/s, batch non-200, track req/s, track non-200) of one collector process with
    ``LIVEPROFILE_DEBUGGER=debugger`` on the shared redis-server ``url``."""
    port = free_port()
    env = {**os.environ, "LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_WRITE_KEYS": "bench-key", "LIVEPROFILE_MAX_BACKLOG": str(10**9),
           "LIVEPROFILE_DEBUGGER": debugger}  # fmt: skip
    coll = subprocess.Popen([sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(port)], env=env, cwd=ROOT)
    try:
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        b_rps, b_bad = drive(port, _requests("/v1/batch", batches, True), args.seconds, args.connections, args.processes)
        s_rps, s_bad = drive(port, _requests("/v1/track", singles, False), args.seconds, args.connections, args.processes)
    finally:
        coll.terminate()
        coll.wait(10)
    return b_rps, b_bad, s_rps, s_bad

if __name__ == "__main__":
    main()
