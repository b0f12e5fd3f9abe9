"""Freshness at fixed offered rates: collector receipt -> profile visible in Redis.

    .venv/bin/python bench/freshness.py [--rates 1000,5000,10000] [--seconds 20] [--baseline DIR]

For each rate: a private redis-server, the collector and the dataflow
(recovery on, ``-s 2``) as real processes on this machine; an open-loop
client sends a generated stream through ``/v1/batch`` in gzip requests of
``--batch`` events at the offered rate (its own schedule, not waiting for
answers to send the next; raw keep-alive HTTP/1.1 on 16 connections, since an
HTTP client library would take much of the CPU it is measuring), for ``--seconds``. The dataflow's own
``liveprofile_freshness_seconds`` histogram (scraped from its Bytewax API) gives
p50/p99 (bucket upper bounds); the achieved rate is what the collector
accepted. All three processes and Redis share this 2-core machine.

The histogram is read only once the dataflow has caught up: when the offered period ends, the
buffer's backlog (entries appended and not yet read by the dataflow, all shards) is recorded,
then the bench waits until it is 0 and the histogram's count has stopped growing (up to
``--drain-timeout`` s). Reading it earlier would leave out the events still queued, the
stalest ones, and make a saturated rate look better than it is. The backlog at the end of the
offered period and the time it took to drain are printed with the quantiles, and so are the p99
read when the offered period ended (the old reading, ``p99 undrained``) and the histogram's
count then / after the drain (``writes``); a rate whose
backlog did not drain within the timeout prints ``not drained`` (its quantiles are then a
lower bound).

``--baseline DIR``: at each rate the same run twice, once with the collector of ``DIR`` (a
checkout of the baseline commit, e.g. a worktree of main) and once with this tree's (the
dataflow is this tree's both times), order swapped from one rate to the next, same events;
the rows are printed together with the collector's CPU per accepted event (``/proc``) and
the p99 ratio this/baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.buffer.streams import backlog  # noqa: E402
from liveprofile.devtools.demo import _counter, histogram_quantile  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from liveprofile.settings import Settings  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402


async def _conn_worker(host: str, port: int, auth: str, queue: asyncio.Queue[bytes | None], counts: dict[str, int], batch: int) -> None:
    """One keep-alive HTTP/1.1 connection posting queued bodies, one at a time."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST /v1/batch HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Basic {auth}\r\n"
            "Content-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: ").encode()  # fmt: skip
    try:
        while (body := await queue.get()) is not None:
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            line = await reader.readline()
            if not line:
                raise ConnectionError("the collector closed the connection")
            status = int(line.split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            if status == 200:
                counts["sent"] += batch
            else:
                counts["refused"] += 1
    finally:
        writer.close()


async def offer(url: str, events: list[dict], rate: float, seconds: float, batch: int, connections: int = 16) -> tuple[int, int, float]:
    """Open-loop sender: bodies are released at the offered rate on their own schedule and
    posted by ``connections`` keep-alive connections (raw HTTP/1.1: an HTTP client library
    would take more of this machine's two cores than the collector it measures).
    Returns (events accepted, requests refused, seconds until the last answer)."""
    import base64

    bodies = [gzip.compress(orjson.dumps({"batch": events[i : i + batch]}), 1) for i in range(0, len(events), batch)]
    n = min(len(bodies), int(rate * seconds / batch))  # the stream is generated large enough
    interval = batch / rate
    host, port = url.removeprefix("http://").split(":")
    auth = base64.b64encode(b"bench-key:").decode()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    counts = {"sent": 0, "refused": 0}
    workers = [asyncio.create_task(_conn_worker(host, int(port), auth, queue, counts, batch)) for _ in range(connections)]
    t0 = time.perf_counter()
    for k in range(n):
        delay = t0 + k * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(bodies[k])
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return counts["sent"], counts["refused"], time.perf_counter() - t0


def _hist_count(text: str, name: str = "liveprofile_freshness_seconds") -> float:
    """The ``_count`` sample of histogram ``name`` in exposition ``text`` (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + "_count"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def drain(metrics_url: str, unread: Callable[[], int], timeout: float, quiet: float = 1.5) -> tuple[int, float, bool]:
    """Wait until the buffer backlog ``unread()`` is 0 and the freshness histogram's count has not
    grown for ``quiet`` seconds. Returns (backlog when called, seconds waited, drained in time)."""
    at_end = unread()
    t0 = time.monotonic()
    last, since = -1.0, time.monotonic()
    while time.monotonic() - t0 < timeout:
        count = _hist_count(httpx.get(metrics_url, timeout=5).text)
        if count != last:
            last, since = count, time.monotonic()
        if unread() == 0 and time.monotonic() - since >= quiet:
            return at_end, time.monotonic() - t0, True
        time.sleep(0.25)
    return at_end, time.monotonic() - t0, False


def _proc_cpu(pid: int) -> float:
    """utime + stime of process ``pid`` in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(rate: float, seconds: float, batch: int, workdir: Path, drain_timeout: float = 120.0, collector_tree: Path = ROOT) -> dict[str, float]:
    workdir = workdir / f"{int(rate)}-{len(list(workdir.iterdir()))}"
    workdir.mkdir()
    srv = RedisServer(workdir / f"redis-{int(rate)}", appendonly=True).start()
    cport, aport = free_port(), free_port()
    env = {**os.environ, "LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_WRITE_KEYS": "bench-key",
           "BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(aport)}  # fmt: skip
    rec = workdir / f"rec-{int(rate)}"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True)
    procs = [
        subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.profiles:flow", "-r", str(rec), "-s", "2", "-b", "10"], env=env, cwd=ROOT,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(cport)], env=env, cwd=collector_tree,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        base = f"http://127.0.0.1:{cport}"
        for _ in range(100):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200 and httpx.get(f"http://127.0.0.1:{aport}/metrics", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        n_users = max(200, int(rate * seconds / 40))  # ~49 events per user in a day
        gen = generate(GenConfig(users=n_users, seed=2, end_ms=int(time.time() * 1000) - 60_000, days=1))
        cpu0 = _proc_cpu(procs[1].pid)
        sent, refused, elapsed = asyncio.run(offer(base, gen.events, rate, seconds, batch))
        collector_us = (_proc_cpu(procs[1].pid) - cpu0) / max(sent, 1) * 1e6
        client = redis.Redis.from_url(srv.url)
        shards = Settings.from_env(env).shards
        metrics = f"http://127.0.0.1:{aport}/metrics"
        early = httpx.get(metrics, timeout=5).text  # the histogram when the offered period ends
        at_end, waited, drained = drain(metrics, lambda: sum(backlog(client, Keys("lp"), shards).values()), drain_timeout)
        client.close()
        text = httpx.get(metrics, timeout=5).text
        return {
            "offered": rate, "achieved": sent / elapsed, "refused_requests": refused,
            "backlog_at_end": at_end, "drain_s": waited, "drained": drained,
            "p99_early_ms": (histogram_quantile(early, "liveprofile_freshness_seconds", 0.99) or float("nan")) * 1000,
            "n_early": _hist_count(early), "n": _hist_count(text),
            "p50_ms": (histogram_quantile(text, "liveprofile_freshness_seconds", 0.5) or float("nan")) * 1000,
            "p99_ms": (histogram_quantile(text, "liveprofile_freshness_seconds", 0.99) or float("nan")) * 1000,
            "writes": _counter(text, "liveprofile_profile_writes", result="written"),
            "collector_us": collector_us,
        }  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,5000,10000")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--batch", type=int, default=50, help="events per request")
    ap.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for the backlog to drain before reading")
    ap.add_argument("--baseline", type=Path, default=None, help="a checkout whose collector runs each rate too, side by side in the output")
    args = ap.parse_args()
    trees = {"": ROOT} if args.baseline is None else {"baseline": args.baseline.resolve(), "this": ROOT}
    print(f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    if args.baseline is not None:
        for name, tree in trees.items():
            rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
            print(f"  {name}: collector of {tree} at {rev}")
    print(f"{'collector':>9} {'offered ev/s':>12} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8} {'refused':>8} {'backlog at end':>15} {'drain s':>8} "
          f"{'p99 undrained':>14} {'writes':>13} {'coll us/ev':>10}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        for k, rate in enumerate(float(x) for x in args.rates.split(",")):
            names = list(trees) if k % 2 == 0 else list(reversed(trees))
            p99: dict[str, float] = {}
            for name in names:
                res = run(rate, args.seconds, args.batch, Path(d), args.drain_timeout, trees[name])
                p99[name] = res["p99_ms"]
                note = "" if res["drained"] else "  not drained: quantiles are a lower bound"
                print(f"{name:>9} {res['offered']:12.0f} {res['achieved']:9.0f} {res['p50_ms']:8.1f} {res['p99_ms']:8.1f} {res['refused_requests']:8.0f} "
                      f"{res['backlog_at_end']:15.0f} {res['drain_s']:8.1f} {res['p99_early_ms']:14.1f} {res['n_early']:6.0f}/{res['n']:<6.0f} "
                      f"{res['collector_us']:10.1f}  (load {os.getloadavg()[0]:.2f}){note}", flush=True)  # fmt: skip
            if args.baseline is not None:
                print(f"{'':>9} {rate:12.0f} p99 this/baseline {p99['this'] / p99['baseline']:.2f}", flush=True)


if __name__ == "__main__":
    main()
