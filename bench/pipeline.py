"""The live dataflow against two baselines, on the same events and the same Redis, in one run.

    .venv/bin/python bench/pipeline.py [--users 5000] [--rounds 2] [--variants 1w,w2,2p]
    .venv/bin/python bench/pipeline.py --stop-at-end [--users 5000]     # bench/compare.py's form

One generated stream (``--users`` users, 30 days, 2 % duplicates: ~42 events per user, so
5,000 users is ~210k entries) is loaded into the Redis buffer of a private redis-server once
and saved (``SAVE``). Then, every round, in an order rotated by round:

* **naive consumer** (the baseline of the ≥ 10× goal): reads the buffer in pages of 500
  (``XREAD COUNT 500``), ``json.loads`` per entry, ``SET NX`` per ``messageId`` (dedupe),
  then one round trip per counter (``HINCRBY``/``HSET``/``HINCRBYFLOAT``, no pipelining),
  into DB 1 of the same server;
* **bare page consumer** (the ceiling of the ≥ 0.25× goal): ``XREAD COUNT 500`` pages +
  ``orjson`` + one pipelined ``HSET`` per user per page (no validation, no logic);
* **the live flow, as deployed**: ``python -m bytewax.run dataflows.profiles:flow`` (it never
  stops by itself) on a *fresh copy* of the saved buffer (a new redis-server from the saved
  RDB, AOF ``everysec`` switched on as in ``deploy/k8s``), recovery as deployed (a fresh
  ``bytewax.recovery`` directory, ``-s 2 -b 10``; partitions = workers). It is timed by the
  change feed's own stream ids (millisecond timestamps of the Redis server): from its first
  profile write to the write after which every generated user's ``event_count`` equals the
  generator's truth ("every profile holds its events"); the bench's poll of the feed only
  decides when to look. Then the process is stopped (SIGINT). Variants: ``1w`` (one worker),
  ``w2`` (``-w 2``: two worker threads in one process), ``2p`` (two processes,
  ``-i 0``/``-i 1`` with one ``-a`` list, one recovery directory of 2 partitions).

For each live variant: events/s (buffer entries, duplicates included, as the baselines count
them), dataflow CPU seconds per event (``/proc`` utime+stime of its processes between the poll
that saw the first write and the poll that saw the last user complete), Redis CPU per event
(``INFO cpu`` used_cpu_user+sys, main process) and Redis commands per event (``INFO stats``
total_commands_processed, which counts the commands scripts run too, as ``INFO commandstats``
does; the bench's own polling commands subtracted) from before the start
to completion. The bench's poll of the change feed costs Redis a little CPU that is included.

Prints medians over rounds and the ratios: pipeline / bare (goal ≥ 0.25), pipeline / naive
(goal ≥ 10), ``-w 2`` / 1 worker and 2 processes / 1 worker. Absolute figures vary with the
machine and its load (printed); compare ratios across runs.

``--stop-at-end`` keeps the older single-run form for ``bench/compare.py``: the flow built with
``stop_at_end=True`` (no recovery), timed from process start to exit, with the startup on an
empty buffer subtracted for the "without" figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.admin.history import replay_lines  # noqa: E402
from liveprofile.devtools.generate import GenConfig, Generated, generate  # noqa: E402
from liveprofile.settings import Settings  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

#: entries per XREAD page of both baselines
PAGE = 500
#: how the deployed dataflow runs recovery (docs/reliability.md, deploy/entrypoint-dataflow.sh)
SNAPSHOT_S, BACKUP_S = "2", "10"
#: live variants: name -> (processes, worker threads per process)
#: (``1w-pure``: one worker with the pure-Python operators, ``LIVEPROFILE_PURE=1``; the others run
#: the operators as installed: compiled by mypyc unless the build was skipped)
VARIANTS: dict[str, tuple[int, int]] = {"1w": (1, 1), "w2": (1, 2), "2p": (2, 1), "1w-pure": (1, 1)}
LABELS = {"1w": "live flow, 1 worker", "w2": "live flow, -w 2", "2p": "live flow, 2 processes", "1w-pure": "live flow, 1 worker, pure Python"}


def load_buffer(url: str, events: list[dict], shards: int) -> int:
    """Append ``events`` to the buffer streams at ``url`` as the collector would; entries accepted."""
    import orjson

    s = Settings.from_env({"LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_SHARDS": str(shards), "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"})
    client = redis.Redis.from_url(url)
    stats = replay_lines(s, client, ((i, orjson.dumps(e)) for i, e in enumerate(events)), source="bench", batch=2000)
    client.close()
    return stats["accepted"]


def load() -> str:
    """The machine's load average (1, 5, 15 min), for printing next to every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------- baselines


def naive_consumer(src_url: str, dst_url: str, keys: Keys, shards: int, limit: int = 0) -> tuple[int, float]:
    """A hand-written per-event consumer: ``XREAD`` pages of :data:`PAGE` entries, then per entry
    ``json.loads``, ``SET NX`` on its messageId, and one round trip per counter (no pipelining).
    Reads at most ``limit`` entries (0: all). Returns (entries, seconds)."""
    src = redis.Redis.from_url(src_url)
    dst = redis.Redis.from_url(dst_url)
    n = 0
    t0 = time.perf_counter()
    for shard in range(shards):
        last = "0-0"
        while not limit or n < limit:
            resp = src.xread({keys.events(shard): last}, count=PAGE)
            if not resp:
                break
            entries = resp[0][1]
            last = entries[-1][0]
            for _, fields in entries:
                ev = json.loads(fields[b"e"])
                n += 1
                if not dst.set(f"seen:{ev.get('messageId')}", 1, nx=True, ex=86400):
                    continue
                key = f"naive:profile:{ev.get('userId') or ev.get('anonymousId')}"
                dst.hincrby(key, "event_count", 1)
                dst.hset(key, "last_seen_at", ev.get("timestamp") or ev["receivedAt"])
                if ev.get("event") == "Order Completed":
                    props = ev.get("properties") or {}
                    dst.hincrby(key, "purchase_count", 1)
                    dst.hincrbyfloat(key, "revenue_total", float(props.get("revenue") or props.get("total") or 0))
                if limit and n >= limit:
                    break
    dt = time.perf_counter() - t0
    src.close()
    dst.close()
    return n, dt


def bare_consumer(url: str, keys: Keys, shards: int) -> tuple[int, float]:
    """The bare page consumer: ``XREAD`` pages of :data:`PAGE` + orjson + one pipelined ``HSET``
    per user per page (a count and the last timestamp); no validation, no logic."""
    import orjson

    r = redis.Redis.from_url(url)
    n = 0
    t0 = time.perf_counter()
    for shard in range(shards):
        last = "0-0"
        while True:
            resp = r.xread({keys.events(shard): last}, count=PAGE)
            if not resp:
                break
            entries = resp[0][1]
            last = entries[-1][0]
            latest: dict[str, dict[str, object]] = {}
            for _, f in entries:
                ev = orjson.loads(f[b"e"])
                p = latest.setdefault(ev.get("userId") or ev.get("anonymousId"), {"event_count": 0})
                p["event_count"] = int(p["event_count"]) + 1  # type: ignore[call-overload]
                p["last_seen_at"] = ev.get("timestamp") or ev["receivedAt"]
            pipe = r.pipeline(transaction=False)
            for uid, fields in latest.items():
                pipe.hset(f"bare:profile:{uid}", mapping=fields)  # type: ignore[arg-type]
            pipe.execute()
            n += len(entries)
    dt = time.perf_counter() - t0
    r.close()
    return n, dt


# --------------------------------------------------------------------------- the live flow


def proc_cpu_s(pids: list[int]) -> float:
    """utime + stime (seconds) of ``pids`` and all their descendants, from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d.name)] = (int(f[1]), (int(f[11]) + int(f[12])) / tick)
    tree, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p not in tree:
            tree.add(p)
            todo += [c for c, (pp, _) in stats.items() if pp == p]
    return sum(stats[p][1] for p in tree if p in stats)


def sched_s(pids: list[int]) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of the main threads of ``pids``
    (each runs its process's first worker), summed, from ``/proc/PID/schedstat``; wall time
    minus both is the time the worker was blocked or asleep."""
    run = wait = 0.0
    for pid in pids:
        try:
            r, w, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        run += int(r) / 1e9
        wait += int(w) / 1e9
    return run, wait


def redis_counters(client: redis.Redis) -> tuple[float, int]:
    """(redis-server main-process CPU seconds, commands processed so far)."""
    cpu = client.info("cpu")
    stats = client.info("stats")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), int(stats["total_commands_processed"])


def profile_memory(client: redis.Redis, keys: Keys, users: list[str]) -> float:
    """Mean ``MEMORY USAGE`` (bytes, exact: ``SAMPLES 0``) of the profile hashes of ``users``."""
    sizes = [client.memory_usage(keys.profile(u), samples=0) for u in users]
    got = [s for s in sizes if s]
    return sum(got) / max(len(got), 1)


def fresh_copy(rdb: Path, workdir: Path) -> RedisServer:
    """A new redis-server loaded from the saved buffer ``rdb``, with AOF everysec switched on
    (as deployed) and its first rewrite finished before this returns."""
    workdir.mkdir(parents=True)
    shutil.copy(rdb, workdir / "dump.rdb")
    srv = RedisServer(workdir).start(timeout=60)
    c = redis.Redis.from_url(srv.url)
    c.config_set("appendonly", "yes")
    while True:
        p = c.info("persistence")
        if not p.get("aof_rewrite_in_progress") and not p.get("aof_rewrite_scheduled") and p.get("aof_enabled"):
            break
        time.sleep(0.1)
    c.close()
    return srv


@dataclass
class Live:
    """One live run's figures."""

    variant: str
    events: int
    seconds: float  #: first profile write -> the write completing the last user (feed ids)
    startup_s: float  #: process start -> first profile write (wall)
    flow_cpu_s: float
    redis_cpu_s: float
    redis_cmds: int
    over: int  #: users whose event_count went above the truth (should be 0)
    redis_calls: int = 0  #: commands including those run inside scripts (INFO commandstats)
    profile_bytes: float = 0.0  #: mean MEMORY USAGE of a known user's profile hash
    used_memory: int = 0  #: redis used_memory at completion (buffer left, change feed, profiles, sets)
    cmd_top: list[tuple[str, int]] = field(default_factory=list)
    poll_wall_s: float = 0.0  #: wall seconds between the polls that bound flow_cpu_s
    on_cpu_s: float = 0.0  #: the same span: seconds the worker (main) thread ran (schedstat)
    runqueue_s: float = 0.0  #: the same span: seconds it was runnable but waiting for a CPU

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def run_live(rdb: Path, variant: str, expected: dict[str, int], n_events: int, shards: int, workdir: Path, timeout: float = 600.0,
             tree: Path = ROOT) -> Live:  # fmt: skip
    """Run the deployed flow (variant of :data:`VARIANTS`) on a fresh copy of the buffer until
    every user in ``expected`` has its ``event_count``; then stop it. See the module docstring.
    ``tree``: the source tree whose flow runs (another worktree: its code, this interpreter)."""
    srv = fresh_copy(rdb, workdir / "redis")
    try:
        return _run_live(srv, variant, expected, n_events, shards, workdir, timeout, tree)
    finally:
        srv.stop()  # also when the flow never started


def _run_live(srv: RedisServer, variant: str, expected: dict[str, int], n_events: int, shards: int, workdir: Path, timeout: float,
              tree: Path = ROOT) -> Live:  # fmt: skip
    """:func:`run_live` on the already started ``srv``."""
    procs_n, workers = VARIANTS[variant]
    keys = Keys("lp")
    rec = workdir / "rec"
    rec.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), str(procs_n * workers)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_SHARDS": str(shards), "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"}
    env.pop("LIVEPROFILE_PURE", None)
    if variant.endswith("-pure"):
        env["LIVEPROFILE_PURE"] = "1"
    base = [sys.executable, "-m", "bytewax.run", "dataflows.profiles:flow", "-r", str(rec), "-s", SNAPSHOT_S, "-b", BACKUP_S]
    if workers > 1:
        base += ["-w", str(workers)]
    argvs = [base]
    if procs_n > 1:
        addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(procs_n))
        argvs = [[*base, "-i", str(i), "-a", addrs] for i in range(procs_n)]
    c = redis.Redis.from_url(srv.url)
    own_xread = 0  # the poll's XREADs of the change feed, subtracted from the figures
    before_cmdstats = c.info("commandstats")
    rcpu0, rcmd0 = redis_counters(c)
    logs = [open(workdir / f"dataflow-{i}.log", "wb") for i in range(len(argvs))]  # noqa: SIM115
    t_start = time.time()
    procs = [subprocess.Popen(a, env=env, cwd=tree, stdout=lf, stderr=subprocess.STDOUT) for a, lf in zip(argvs, logs, strict=True)]
    # the working directory is the tree: ``python -m`` puts it first on sys.path
    pids = [p.pid for p in procs]
    todo = dict(expected)
    over: set[str] = set()
    last_id, first_ms, last_ms = "0-0", 0, 0
    cpu_first = cpu_last = 0.0
    t_first = t_last = 0.0
    sched_first = sched_last = (0.0, 0.0)
    try:
        deadline = time.monotonic() + timeout
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{variant}: {len(todo)} of {len(expected)} users short of their events after {timeout:.0f} s")
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{variant}: a dataflow process exited ({p.returncode}); see {workdir}")
            time.sleep(0.2)
            cpu_now, t_now, sched_now = proc_cpu_s(pids), time.monotonic(), sched_s(pids)
            while True:
                resp = c.xread({keys.changes: last_id}, count=10_000)
                own_xread += 1
                if not resp:
                    break
                entries = resp[0][1]
                last_id = entries[-1][0].decode()
                if not first_ms:
                    first_ms = int(entries[0][0].split(b"-")[0])
                    cpu_first, t_first, sched_first = cpu_now, t_now, sched_now
                for eid, f in entries:
                    if f.get(b"anonymous") == b"1":
                        continue
                    uid = f[b"user_id"].decode()
                    ch = f.get(b"changed")
                    if not ch or b"event_count" not in ch:
                        continue
                    got = int(float(json.loads(ch)["event_count"]))
                    want = expected.get(uid)
                    if want is None:
                        continue
                    if got > want:
                        over.add(uid)
                    if got >= want and uid in todo:
                        del todo[uid]
                        last_ms = max(last_ms, int(eid.split(b"-")[0]))
        cpu_last, t_last, sched_last = proc_cpu_s(pids), time.monotonic(), sched_s(pids)
        rcpu1, rcmd1 = redis_counters(c)
        after_cmdstats = c.info("commandstats")
        profile_bytes = profile_memory(c, keys, list(expected)[:300])
        used_memory = int(c.info("memory")["used_memory"])
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for lf in logs:
            lf.close()
        c.close()
        srv.stop()
    # INFO commandstats counts the commands scripts run too; the bench's own INFO/XREAD are not the flow's
    own = {"info": 3, "xread": own_xread}
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) - int(before_cmdstats.get(k, {}).get("calls", 0)) for k, v in after_cmdstats.items()}
    calls = {k: v - own.get(k, 0) for k, v in calls.items() if v - own.get(k, 0) > 0}
    top = sorted(calls.items(), key=lambda kv: -kv[1])
    return Live(
        variant=variant, events=n_events, seconds=max(last_ms - first_ms, 1) / 1000, startup_s=first_ms / 1000 - t_start,
        flow_cpu_s=cpu_last - cpu_first, redis_cpu_s=rcpu1 - rcpu0, redis_cmds=rcmd1 - rcmd0 - sum(own.values()), over=len(over),
        redis_calls=sum(calls.values()), cmd_top=top[:7], profile_bytes=profile_bytes, used_memory=used_memory,
        poll_wall_s=t_last - t_first, on_cpu_s=sched_last[0] - sched_first[0], runqueue_s=sched_last[1] - sched_first[1],
    )  # fmt: skip


# --------------------------------------------------------------------------- the runs


def prepare(users: int, shards: int, days: float, workdir: Path, sessions_mean: float = 5.0) -> tuple[RedisServer, Generated, int, Path]:
    """Generate the stream, load it into a private redis-server's buffer and save it as an RDB;
    (the server, the generated stream, entries in the buffer, the RDB's path)."""
    cfg = GenConfig(users=users, seed=1, end_ms=int(time.time() * 1000) - 60_000, days=days, duplicate_rate=0.02, sessions_mean=sessions_mean)
    gen = generate(cfg)
    srv = RedisServer(workdir / "base").start()
    n = load_buffer(srv.url, gen.events, shards)
    c = redis.Redis.from_url(srv.url)
    c.save()
    c.close()
    rdb = workdir / "buffer.rdb"
    shutil.copy(workdir / "base" / "dump.rdb", rdb)
    return srv, gen, n, rdb


def measure_live(users: int, shards: int, days: float, rounds: int, variants: list[str], naive_sample: int, sessions_mean: float = 5.0) -> dict[str, object]:
    """Every figure of the default mode, medians over ``rounds``; see the module docstring."""
    out: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # "naive"/"bare" -> consumer CPU s per event, "naive_redis"/"bare_redis" -> Redis's
    lives: dict[str, list[Live]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as d:
        srv, gen, n, rdb = prepare(users, shards, days, Path(d), sessions_mean)
        expected = {u: int(t["event_count"]) for u, t in gen.truth.items()}
        keys = Keys("lp")
        dst = srv.url.rsplit("/", 1)[0] + "/1"
        c = redis.Redis.from_url(srv.url)

        def costed(name: str, fn: Callable[[], tuple[int, float]]) -> tuple[int, float]:
            """Run a baseline, noting its own CPU and Redis's CPU per entry."""
            r0, p0 = redis_counters(c)[0], time.process_time()
            got, dt = fn()
            cpu.setdefault(name, []).append((time.process_time() - p0) / got)
            cpu.setdefault(name + "_redis", []).append((redis_counters(c)[0] - r0) / got)
            return got, dt

        try:
            jobs = [*variants, "naive", "bare"]
            for rnd in range(rounds):
                k = rnd % len(jobs)
                order = jobs[k:] + jobs[:k]
                for job in order:
                    if job == "naive":
                        redis.Redis.from_url(dst).flushdb()
                        nn, nt = costed("naive", lambda: naive_consumer(srv.url, dst, keys, shards, naive_sample))
                        out.setdefault("naive", []).append(nn / nt)
                        print(f"round {rnd + 1}: naive {nn / nt:8.0f} ev/s over {nn} entries  (load {load()})", flush=True)
                    elif job == "bare":
                        bn, bt = costed("bare", lambda: bare_consumer(srv.url, keys, shards))
                        out.setdefault("bare", []).append(bn / bt)
                        print(f"round {rnd + 1}: bare  {bn / bt:8.0f} ev/s over {bn} entries  (load {load()})", flush=True)
                    else:
                        lv = run_live(rdb, job, expected, n, shards, Path(d) / f"{job}-{rnd}")
                        lives[job].append(lv)
                        print(f"round {rnd + 1}: {job:5} {lv.rate:8.0f} ev/s in {lv.seconds:.1f} s after {lv.startup_s:.1f} s startup; "
                              f"{lv.flow_cpu_s / n * 1e6:.1f} µs flow CPU/event, {lv.redis_cpu_s / n * 1e6:.1f} µs Redis CPU/event, "
                              f"{lv.redis_cmds / n:.3f} Redis cmds/event, over-counted users {lv.over}  (load {load()})", flush=True)  # fmt: skip
        finally:
            c.close()
            srv.stop()
    return {"events": n, "users": len(expected), "rates": out, "lives": lives, "cpu": cpu}


def report(m: dict[str, object]) -> None:
    """Print the medians and the ratios of :func:`measure_live`'s result."""
    rates: dict[str, list[float]] = m["rates"]  # type: ignore[assignment]
    lives: dict[str, list[Live]] = m["lives"]  # type: ignore[assignment]
    med = {k: statistics.median(v) for k, v in rates.items()}
    for v, runs in lives.items():
        if runs:
            med[v] = statistics.median(r.rate for r in runs)
    n = int(m["events"])  # type: ignore[call-overload]
    print(f"\nevents in buffer                 {n}  ({m['users']} users; medians of {len(next(iter(rates.values())))} rounds; load {load()})")
    cpu = {k: statistics.median(v) * 1e6 for k, v in m["cpu"].items()}  # type: ignore[attr-defined]
    print(f"naive consumer (pages of {PAGE})    {med['naive']:10.0f} ev/s  (consumer CPU {cpu['naive']:.1f} µs/event, Redis CPU {cpu['naive_redis']:.1f} µs/event)")
    print(f"bare page consumer               {med['bare']:10.0f} ev/s  (consumer CPU {cpu['bare']:.1f} µs/event, Redis CPU {cpu['bare_redis']:.1f} µs/event)")
    cost: dict[str, float] = {}
    for v, runs in lives.items():
        if not runs:
            continue
        fcpu = statistics.median(r.flow_cpu_s for r in runs) / n * 1e6
        rcpu = statistics.median(r.redis_cpu_s for r in runs) / n * 1e6
        cost[v] = fcpu + rcpu
        rcmd = statistics.median(r.redis_cmds for r in runs) / n
        print(f"{LABELS[v]:32} {med[v]:10.0f} ev/s  (startup {statistics.median(r.startup_s for r in runs):.1f} s not counted; "
              f"flow CPU {fcpu:.1f} µs/event, Redis CPU {rcpu:.1f} µs/event, Redis {rcmd:.3f} commands/event)")  # fmt: skip
        top = runs[-1].cmd_top
        print(f"{'':32} Redis commands/event by name (incl. in scripts): " + ", ".join(f"{k} {c / n:.3f}" for k, c in top))
        users = int(m["users"])  # type: ignore[call-overload]
        print(f"{'':32} Redis memory: profile hash {statistics.median(r.profile_bytes for r in runs):.0f} B/user (MEMORY USAGE), "
              f"used_memory at completion {statistics.median(r.used_memory for r in runs) / users:.0f} B/user (buffer left, change feed, sets included)")  # fmt: skip
        if any(r.over for r in runs):
            print(f"{'':32} WARNING: users over-counted: {[r.over for r in runs]}")
    if "1w" in med:
        print(f"ratio pipeline / bare            {med['1w'] / med['bare']:10.3f}   (goal >= 0.25, moonshot 0.5)")
        print(f"ratio pipeline / naive           {med['1w'] / med['naive']:10.2f}   (goal >= 10)")
        if "w2" in med:
            print(f"ratio -w 2 / 1 worker            {med['w2'] / med['1w']:10.3f}")
        if "2p" in med:
            print(f"ratio 2 processes / 1 worker     {med['2p'] / med['1w']:10.3f}")
        if "1w-pure" in med:
            print(f"ratio installed / pure, 1 worker {med['1w'] / med['1w-pure']:10.3f}   (flow + Redis CPU per event, pure / installed: {cost['1w-pure'] / cost['1w']:.3f})")
        # the same comparisons per CPU second (consumer + Redis), less sensitive to a shared machine's load
        print(f"per CPU s, pipeline / bare       {(cpu['bare'] + cpu['bare_redis']) / cost['1w']:10.3f}   (CPU per event: bare / pipeline)")
        print(f"per CPU s, pipeline / naive      {(cpu['naive'] + cpu['naive_redis']) / cost['1w']:10.2f}   (CPU per event: naive / pipeline)")


# --------------------------------------------------------------------------- --stop-at-end


def run_dataflow(url: str, shards: int, recovery: bool, **env_extra: str) -> float:
    """Run the ``stop_at_end`` flow over the buffer until it is drained; wall seconds, startup included."""
    env = {**os.environ, "LIVEPROFILE_REDIS_URL": url, "LIVEPROFILE_SHARDS": str(shards),
           "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", **env_extra}  # fmt: skip
    args = [sys.executable, "-m", "bytewax.run", "dataflows.profiles:get_flow(stop_at_end=True)"]
    tmp = None
    if recovery:
        tmp = tempfile.mkdtemp(prefix="bench-rec-")
        subprocess.run([sys.executable, "-m", "bytewax.recovery", tmp, "1"], check=True)
        args += ["-r", tmp, "-s", "5", "-b", "0"]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=ROOT)
    return time.perf_counter() - t0


def measure(users: int, shards: int = 4, naive_sample: int = 20000, days: float = 30) -> dict[str, float]:
    """The ``--stop-at-end`` figures (events/s), one run over one generated stream."""
    with tempfile.TemporaryDirectory() as d:
        srv = RedisServer(Path(d)).start()
        empty = RedisServer(Path(d) / "empty").start()
        try:
            startup = run_dataflow(empty.url, shards, False)
            gen = generate(GenConfig(users=users, seed=1, end_ms=int(time.time() * 1000) - 60_000, days=days, duplicate_rate=0.02))
            n = load_buffer(srv.url, gen.events, shards)
            keys = Keys("lp")
            dst = srv.url.rsplit("/", 1)[0] + "/1"
            nn, nt = naive_consumer(srv.url, dst, keys, shards, naive_sample)
            cn, ct = bare_consumer(srv.url, keys, shards)
            dt = run_dataflow(srv.url, shards, False)
            return {
                "events": n, "naive": nn / nt, "ceiling": cn / ct, "dataflow": n / dt,
                "dataflow_steady": n / max(dt - startup, 1e-3), "startup_s": startup,
            }  # fmt: skip
        finally:
            srv.stop()
            empty.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--days", type=float, default=30)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--sessions-mean", type=float, default=5.0, help="the generator's sessions per user (3.4: ~43 events per user)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--variants", default="1w,w2,2p", help="live variants, comma-separated: 1w, w2, 2p, 1w-pure (pure-Python operators)")
    ap.add_argument("--naive-sample", type=int, default=0, help="entries the naive consumer reads (0: all)")
    ap.add_argument("--stop-at-end", action="store_true", help="the older stop_at_end run (bench/compare.py)")
    args = ap.parse_args()
    if args.stop_at_end:
        m = measure(args.users, args.shards, args.naive_sample or 20000, args.days)
        print(f"events in buffer                 {m['events']:.0f}  (load {load()})")
        print(f"naive consumer (pages of {PAGE})    {m['naive']:10.0f} ev/s")
        print(f"bare page consumer               {m['ceiling']:10.0f} ev/s")
        print(f"liveprofile dataflow             {m['dataflow']:10.0f} ev/s  (startup {m['startup_s']:.1f}s included; {m['dataflow_steady']:.0f} ev/s without)")
        print(f"ratio dataflow / naive           {m['dataflow'] / m['naive']:10.1f}x  ({m['dataflow_steady'] / m['naive']:.1f}x without startup)")
        print(f"ratio dataflow / bare            {m['dataflow'] / m['ceiling']:10.2f}   ({m['dataflow_steady'] / m['ceiling']:.2f} without startup)")
        return
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")
    import operators

    print(f"operators as installed: {operators.mode()}", flush=True)
    report(measure_live(args.users, args.shards, args.days, args.rounds, variants, args.naive_sample, args.sessions_mean))


if __name__ == "__main__":
    main()
