"""Collector throughput: requests/s and events/s over loopback, against the buffer's ceiling.

    .venv/bin/python bench/collector.py [--seconds 10] [--connections 32] [--processes 2] [--debugger]
    .venv/bin/python bench/collector.py --cpu [--rate 4000] [--seconds 8] [--rounds 3] [--baseline DIR]

Starts a private redis-server and ``liveprofile collector`` (one uvicorn worker),
then drives it with keep-alive HTTP/1.1 connections from ``--processes`` load
processes (a minimal asyncio client: pre-built requests, so the client costs
little). Two shapes: ``/v1/batch`` with 100 events per request (gzip), and
``/v1/track`` with one event per request. The baseline, measured in the same
run, is the buffer's ceiling: the same events appended from one Python process
with pipelined XADDs (1,000 per round trip), no HTTP at all. ``--debugger``: a second collector
with the source debugger's tap on (``LIVEPROFILE_DEBUGGER=on``) against the same server, and the
on/off ratio of each shape.

``--cpu``: the collector's CPU per accepted event and Redis's CPU per event for its writes, at a
fixed offered rate (open loop: ``--rate`` events/s, not as fast as possible, so both sides do
the same work per second). Requests are ``/v1/batch`` bodies as analytics.js and
analytics-python send them: 20-100 events each (uniform, seeded), ~1 KB per event (the
generated stream plus the SDKs' ``anonymousId``, ``context.locale/timezone/screen/
userAgentData/page.referrer``, ``integrations``, ``_metadata``; a batch ``sentAt``), plain JSON.
CPU is utime+stime from ``/proc/<pid>/stat`` over the measured period (after a warm-up), divided
by the events the collector answered as accepted. Each measurement has its own fresh
redis-server (AOF on, as deployed) and collector process. With ``--baseline DIR`` (a checkout
of the baseline commit, e.g. a worktree of main) the collector of ``DIR`` and the collector of
this tree run side by side, each with its own redis-server, and every request is released to
both at the same moment (so whatever else loads the machine loads both alike: on 2 shared
cores, measuring them one after the other gave rounds from 0.79 to 1.03 for the same code);
``--rounds`` fresh pairs, and the ratios this/baseline are printed with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime
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
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds (default 10; --cpu: 8 per measurement)")
    ap.add_argument("--cpu", action="store_true", help="CPU per accepted event of the collector and Redis at --rate")
    ap.add_argument("--rate", type=float, default=4000, help="--cpu: offered events/s")
    ap.add_argument("--rounds", type=int, default=3, help="--cpu: measurements per tree")
    ap.add_argument("--baseline", type=Path, default=None, help="--cpu: the baseline checkout to measure alternately")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--debugger", action="store_true", help="measure with LIVEPROFILE_DEBUGGER off and on, side by side")
    args = ap.parse_args()
    if args.cpu:
        cpu_main(args)
        return
    args.seconds = args.seconds or 10
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


def wait_healthy(port: int, tries: int = 100) -> None:
    """Wait until the collector on ``port`` answers ``/healthz`` 200 (up to ``tries`` attempts,
    0.1 s apart while it refuses connections)."""
    for _ in range(tries):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)


def run_collector(url: str, debugger: str, batches: list[bytes], singles: list[bytes], args: argparse.Namespace) -> tuple[float, int, float, int]:
    """(batch req/s, batch non-200, track req/s, track non-200) of one collector process with
    ``LIVEPROFILE_DEBUGGER=debugger`` on the shared redis-server ``url``."""
    port = free_port()
    env = {**os.environ, "LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_WRITE_KEYS": "bench-key", "LIVEPROFILE_MAX_BACKLOG": str(10**9),
           "LIVEPROFILE_DEBUGGER": debugger}  # fmt: skip
    coll = subprocess.Popen([sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(port)], env=env, cwd=ROOT)
    try:
        wait_healthy(port)
        b_rps, b_bad = drive(port, _requests("/v1/batch", batches, True), args.seconds, args.connections, args.processes)
        s_rps, s_bad = drive(port, _requests("/v1/track", singles, False), args.seconds, args.connections, args.processes)
    finally:
        coll.terminate()
        coll.wait(10)
    return b_rps, b_bad, s_rps, s_bad

# -- --cpu: CPU per accepted event at a fixed offered rate ---------------------------------------

_UA_DATA = {"brands": [{"brand": "Chromium", "version": "124"}, {"brand": "Google Chrome", "version": "124"},
                       {"brand": "Not-A.Brand", "version": "99"}], "mobile": False, "platform": "macOS"}  # fmt: skip


def sdk_event(ev: dict, k: int) -> dict:
    """``ev`` as analytics.js would send it (~1 KB): the SDK's envelope and context fields added."""
    e = dict(ev)
    uid = str(e.get("userId", k))
    e["anonymousId"] = f"{zlib.crc32(uid.encode()):08x}-5c2c-4eab-b1c2-{zlib.crc32(uid.encode() + b'a'):012x}"
    ctx = dict(e.get("context") or {})
    page = {"path": "/", "url": "https://shop.example.com/", "title": "Shop", **(ctx.get("page") or {})}
    page.update(referrer="https://www.google.com/", search="?utm_source=newsletter&utm_medium=email")
    ctx.update(page=page, locale="en-US", timezone="Europe/Berlin", userAgentData=_UA_DATA,
               screen={"width": 1920, "height": 1080, "density": 2, "innerWidth": 1280, "innerHeight": 720},
               library={"name": "analytics.js", "version": "npm:next-1.70.0"})  # fmt: skip
    e["context"] = ctx
    e["integrations"] = {}
    e["_metadata"] = {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []}
    return e


def sdk_batches(events: list[dict], seed: int = 7) -> list[tuple[int, bytes]]:
    """(events, body) of ``/v1/batch`` requests of 20-100 SDK events each (see the module doc)."""
    rng = random.Random(seed)
    out: list[tuple[int, bytes]] = []
    i = 0
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    while i < len(events):
        n = rng.randint(20, 100)
        chunk = [sdk_event(e, i + j) for j, e in enumerate(events[i : i + n])]
        out.append((len(chunk), orjson.dumps({"batch": chunk, "sentAt": sent_at})))
        i += n
    return out


def proc_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _open_loop_conn(port: int, queue: asyncio.Queue, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /v1/batch HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH}\r\nContent-Type: application/json\r\nContent-Length: ".encode()
    try:
        while (item := await queue.get()) is not None:
            n, body = item
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            answer = await reader.readexactly(length)
            if status != 200:
                counts[1] += 1
            elif answer == b'{"success":true}':
                counts[0] += n
            else:
                counts[0] += orjson.loads(answer)["accepted"]
    finally:
        writer.close()


async def offer_batches(ports: list[int], reqs: list[tuple[int, bytes]], rate: float, seconds: float, start: int = 0,
                        connections: int = 8) -> tuple[list[tuple[int, int]], int]:  # fmt: skip
    """Release ``reqs`` (from ``start``, cycling) at ``rate`` events/s for ``seconds``, open loop,
    each request to every collector of ``ports`` at the same moment, over ``connections``
    keep-alive connections per collector. Returns ((events accepted, non-200) per port, next start)."""
    queues: list[asyncio.Queue] = [asyncio.Queue() for _ in ports]
    counts = [[0, 0] for _ in ports]
    workers = [asyncio.create_task(_open_loop_conn(port, q, c)) for port, q, c in zip(ports, queues, counts, strict=True) for _ in range(connections)]
    t0 = time.perf_counter()
    due = 0.0
    k = start
    while due < seconds:
        delay = t0 + due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        item = reqs[k % len(reqs)]
        for q in queues:
            q.put_nowait(item)
        due += item[0] / rate
        k += 1
    for q in queues:
        for _ in range(connections):
            q.put_nowait(None)
    await asyncio.gather(*workers)
    return [(c[0], c[1]) for c in counts], k


def _tree_label(tree: Path) -> str:
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return rev + ("+changes" if dirty else "")


def measure_cpu(trees: dict[str, Path], reqs: list[tuple[int, bytes]], rate: float, seconds: float, workdir: Path) -> dict[str, dict[str, float]]:
    """One measurement: per tree a fresh redis-server and that tree's collector, all offered the
    same requests at the same moments (``rate`` events/s each): 1.5 s of warm-up, then ``seconds``
    measured. Per tree: events accepted, non-200 answers, CPU seconds of its collector and Redis."""
    servers: dict[str, RedisServer] = {}
    colls: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    try:
        for name, tree in trees.items():
            srv = servers[name] = RedisServer(workdir / name, appendonly=True).start()
            ports[name] = free_port()
            env = {**os.environ, "LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_WRITE_KEYS": "bench-key", "LIVEPROFILE_MAX_BACKLOG": str(10**9)}
            env.pop("PYTHONPATH", None)
            colls[name] = subprocess.Popen([sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(ports[name])], env=env, cwd=tree)
        for port in ports.values():
            wait_healthy(port)
        port_list = list(ports.values())
        _, nxt = asyncio.run(offer_batches(port_list, reqs, rate, 1.5))

        def cpu() -> dict[str, tuple[float, float]]:
            return {n: (proc_cpu(colls[n].pid), proc_cpu(servers[n].proc.pid)) for n in trees}  # type: ignore[union-attr]

        before, t0 = cpu(), time.perf_counter()
        counts, _ = asyncio.run(offer_batches(port_list, reqs, rate, seconds, nxt))
        after, t1 = cpu(), time.perf_counter()
    finally:
        for c in colls.values():
            c.terminate()
            c.wait(10)
        for srv in servers.values():
            srv.stop()
    return {
        n: {"events": counts[i][0], "bad": counts[i][1], "collector_s": after[n][0] - before[n][0],
            "redis_s": after[n][1] - before[n][1], "wall_s": t1 - t0}
        for i, n in enumerate(trees)
    }  # fmt: skip


def cpu_main(args: argparse.Namespace) -> None:
    """``--cpu``: see the module doc."""
    seconds = args.seconds or 8
    gen = generate(GenConfig(users=3000, seed=4, end_ms=int(time.time() * 1000) - 60_000, days=2))
    reqs = sdk_batches(gen.events[:60_000])
    n_ev = sum(n for n, _ in reqs)
    mean_bytes = sum(len(b) for _, b in reqs) / n_ev
    trees = {"this": ROOT} if args.baseline is None else {"baseline": args.baseline.resolve(), "this": ROOT}
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start; {len(reqs)} requests of 20-100 events, "
          f"{mean_bytes:.0f} bytes/event; offered {args.rate:.0f} events/s to each collector, {seconds:g} s per round")  # fmt: skip
    for name, tree in trees.items():
        print(f"  {name}: {tree} at {_tree_label(tree)}")
    totals = {name: {"events": 0.0, "collector_s": 0.0, "redis_s": 0.0} for name in trees}
    per_round: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds):
            for name, m in measure_cpu(trees, reqs, args.rate, seconds, Path(d) / f"round-{r}").items():
                ev = max(m["events"], 1)
                c_us, r_us = m["collector_s"] / ev * 1e6, m["redis_s"] / ev * 1e6
                per_round[name].append((c_us, r_us))
                for k in ("events", "collector_s", "redis_s"):
                    totals[name][k] += m[k]
                print(f"round {r + 1} {name:8s} accepted {m['events']:7.0f} ({m['events'] / m['wall_s']:6.0f} events/s, {m['bad']:.0f} non-200)  "
                      f"collector {c_us:6.1f} us/event  redis {r_us:5.1f} us/event  (load {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
    for name, t in totals.items():
        ev = max(t["events"], 1)
        print(f"{name:8s} over {args.rounds} rounds: collector {t['collector_s'] / ev * 1e6:6.1f} us/event, "
              f"redis {t['redis_s'] / ev * 1e6:5.1f} us/event")  # fmt: skip
    if args.baseline is not None:
        b, t = totals["baseline"], totals["this"]
        ratio_c = (t["collector_s"] / t["events"]) / (b["collector_s"] / b["events"])
        ratio_r = (t["redis_s"] / t["events"]) / (b["redis_s"] / b["events"])
        rounds_c = " ".join(f"{x[0] / y[0]:.2f}" for x, y in zip(per_round["this"], per_round["baseline"], strict=True))
        print(f"this/baseline CPU per accepted event: collector {ratio_c:.2f} (rounds {rounds_c}), redis {ratio_r:.2f}  "
              f"(load {' '.join(f'{x:.2f}' for x in os.getloadavg())})")  # fmt: skip


if __name__ == "__main__":
    main()
