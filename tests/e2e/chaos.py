"""Helpers for crash-consistency tests: run the dataflow to a settled state, kill it mid-stream
on observed progress, compare states.

Progress is observed, never guessed from elapsed time:

* **entries read** by a dataflow incarnation: its own ``liveprofile_dataflow_events_read_total``
  per shard (Bytewax's dataflow API, :func:`tests.procs.dataflow_reads`), counted from zero by
  each process;
* **the resume position**: what a restart would resume from, read from the recovery
  partitions (SQLite) by Bytewax's own rule (:func:`snapshot_positions`): per source
  partition, the newest snapshot before the resume epoch. The Redis source snapshots
  ``(last id, entries read)``, the Kafka source the next offset; both are "entries before the
  resume point" of that shard.
"""

from __future__ import annotations

import pickle
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis

from liveprofile.buffer.streams import backlog
from liveprofile.store.keys import Keys
from tests.procs import Proc, base_env, dataflow_reads, start_dataflow, wait_for
from tests.redis_server import free_port

K = Keys("lp")
#: Write metadata and online-model outputs: not comparable across runs (see docs/reliability.md).
VOLATILE = {"version", "updated_at", "seq", "anomaly_score", "suspect", "purchase_propensity"}
#: Short event-time windows so every cart/session deadline has passed soon after the input ends.
FAST_WINDOWS = {"LIVEPROFILE_CART_ABANDON_WINDOW": "2s", "LIVEPROFILE_SESSION_GAP": "2s", "LIVEPROFILE_TIMER_RECHECK": "1s", "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"}
#: The generator's windows for a stream run under FAST_WINDOWS (its truth then decides sessions
#: and carts by the same windows as the pipeline).
FAST_GEN = {"session_gap_ms": 2_000, "abandon_ms": 2_000}
#: A fixed clock for the crash and Kafka tests: nothing there needs wall time (timers run on
#: the stream clock, and LIVEPROFILE_TIMESTAMP_MIN in FAST_WINDOWS admits old events).
END_MS = 1_717_200_000_000  # 2024-06-01T00:00:00Z
#: The input step's id in the recovery store (flow id "liveprofile", step "inp").
INPUT_STEP = "liveprofile.inp"


def init_recovery(path: Path, parts: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), str(parts)], check=True)
    return path


def _shard_label(state_key: str) -> str:
    """The shard of a source partition: ``lp:events:3`` (Redis) or ``3-topic`` (Kafka) -> ``3``."""
    if ":events:" in state_key:
        return state_key.rpartition(":events:")[2]
    return state_key.split("-", 1)[0]


def _position(state: object) -> int:
    """Entries before the resume point in one source snapshot: ``(last_id, read)`` (Redis
    source) or the next offset (Kafka source: ``None`` or a negative logical offset such as
    ``OFFSET_BEGINNING`` before the first message)."""
    if isinstance(state, tuple):
        return int(state[1])
    return max(0, int(state)) if state is not None else 0


def snapshot_positions(rec: Path, step: str = INPUT_STEP) -> dict[str, int]:
    """Per shard, the position a dataflow started now on ``rec`` would resume from (empty
    before the first snapshot): Bytewax 0.21's rule (``RecoveryPartitions.resume_from``),
    over all partitions: the resume epoch is the smallest per-worker frontier of the last
    execution, and each partition's state is its newest snapshot *before* that epoch."""
    exs: list[tuple[int, int, int]] = []
    fronts: list[tuple[int, int, int]] = []
    snaps: list[tuple[str, int, bytes | None]] = []
    for db in sorted(rec.glob("*.sqlite3")):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            exs += con.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall()
            fronts += con.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts").fetchall()
            snaps += con.execute("SELECT state_key, snap_epoch, ser_change FROM snaps WHERE step_id = ?", (step,)).fetchall()
        finally:
            con.close()
    if not exs:
        return {}
    ex, workers, resume = max(exs)
    front = {w: resume for w in range(workers)}
    for e, w, f in fronts:
        if e == ex:
            front[w] = max(front.get(w, resume), f)
    epoch = min(front.values())
    newest: dict[str, tuple[int, bytes | None]] = {}
    for key, snap_epoch, ser in snaps:
        if snap_epoch < epoch and (key not in newest or snap_epoch > newest[key][0]):
            newest[key] = (snap_epoch, ser)
    return {_shard_label(k): _position(pickle.loads(ser)) for k, (_, ser) in newest.items() if ser is not None}


def dead_letter_multiset(r: redis.Redis) -> list[tuple[str, str, str, int]]:
    """Dead letters as a sorted multiset of (stage, reason, messageId): a replayed epoch must
    not write one twice (the source position and the raw entry, with its receipt time, are
    left out: they differ between runs)."""
    out = Counter()
    for _, f in r.xrange(K.dead_letter):
        out[tuple(f.get(k, b"").decode(errors="replace") for k in (b"stage", b"reason", b"message_id"))] += 1
    return sorted((*k, n) for k, n in out.items())  # type: ignore[misc]


def state(r: redis.Redis) -> dict[str, object]:
    """Profiles (minus volatile fields), segment sets (minus suspect), the folded change feed
    and the dead letters (with multiplicity).

    Anonymous ids that merged into a user are left out: whether they had a profile of their
    own before the merge depends on which of their events reached the dataflow first across
    shards; the merged user's profile is the same either way (and is compared)."""
    profiles = {}
    merged: set[str] = set()
    # known users, then anonymous profiles (their own key family; feed entries anonymous=1)
    for family, tag in ((K.profile(""), ""), (K.profile_anon(""), "anon:")):
        for key in r.scan_iter(family + "*"):
            p = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
            if "merged_into" in p:
                merged.add(tag + key.decode().removeprefix(family))
                continue
            profiles[key.decode()] = {k: v for k, v in p.items() if k not in VOLATILE}
    segments = {k.decode(): sorted(m.decode() for m in r.smembers(k)) for k in r.scan_iter(K.segment("*")) if not k.endswith(b":suspect")}
    feed: dict[str, dict[str, str]] = {}
    seen: set[tuple[bytes, bytes]] = set()
    for _, f in r.xrange(K.changes):
        who = ("anon:" if f.get(b"anonymous") == b"1" else "") + f[b"user_id"].decode()
        key = (who.encode(), f[b"version"])
        assert key not in seen, f"change feed repeats {key}"
        seen.add(key)
        if who in merged:
            continue
        d = feed.setdefault(who, {})
        d.update({k: v for k, v in orjson.loads(f[b"changed"]).items() if k not in VOLATILE})
    return {"profiles": profiles, "segments": segments, "feed": feed, "dead_letters": {"all": dead_letter_multiset(r)}}


def diff(a: dict, b: dict) -> list[tuple[str, str, object, object]]:
    """(part, key, a's value, b's value) wherever two :func:`state` results differ."""
    out = []
    for part in ("profiles", "segments", "feed", "dead_letters"):
        for k in sorted(set(a[part]) | set(b[part])):
            if a[part].get(k) != b[part].get(k):
                out.append((part, k, a[part].get(k), b[part].get(k)))
    return out


def entries_added(r: redis.Redis, shards: int = 4) -> dict[str, int]:
    """Per shard: entries ever appended to the Redis Streams buffer (the collector's events
    and the dataflow's own identity merges)."""
    out = {}
    for i in range(shards):
        try:
            out[str(i)] = int(r.xinfo_stream(K.events(i))["entries-added"])
        except redis.ResponseError:  # no such stream yet
            out[str(i)] = 0
    return out


def redis_backlog(r: redis.Redis, shards: int = 4) -> Callable[[], int]:
    return lambda: sum(backlog(r, K, shards).values())


def settled(r: redis.Redis, shards: int = 4, quiet: float = 5.0, timeout: float = 240.0, unread: Callable[[], int] | None = None) -> None:
    """Wait until the buffer is read (``unread() == 0``; default: the Redis Streams backlog),
    the RFM refresher converged, and the change feed took no entry for ``quiet`` seconds
    (cart/session timers fire ~2 s of stream time after the input ends: FAST_WINDOWS)."""
    unread = unread or redis_backlog(r, shards)
    wait_for(lambda: unread() == 0, timeout, 0.2, "dataflow to catch up")
    # the RFM refresher has made a full pass over the customers that changed nothing
    wait_for(lambda: not r.exists(K.rfm_edges) or r.hget(K.rfm_refresh, "converged") == b"1", timeout, 0.5, "RFM refresh to converge")
    deadline = time.monotonic() + timeout
    last = r.xlen(K.changes)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet:
        if time.monotonic() > deadline:
            raise TimeoutError("the change feed never settled")
        time.sleep(0.5)
        n = r.xlen(K.changes)
        if n != last:
            last, stable_since = n, time.monotonic()


def cluster(env: dict[str, str], tmp: Path, n: int, rec: Path, name: str, api: bool = False) -> list[Proc]:
    """``n`` dataflow processes forming one Bytewax cluster over loopback (``-i/-a``)."""
    if n == 1:
        return [start_dataflow(env, tmp, recovery=rec, name=name, api=api)]
    addrs = ";".join(f"127.0.0.1:{free_port()}" for _ in range(n))
    return [start_dataflow(env, tmp, recovery=rec, name=f"{name}-{i}", extra=["-i", str(i), "-a", addrs], api=api) for i in range(n)]


def kill_all(procs: list[Proc]) -> None:
    for p in procs:
        p.kill9()


def stop_all(procs: list[Proc]) -> None:
    for p in procs:
        p.interrupt(20)


@dataclass
class Kill:
    """One ``kill -9``: where the killed incarnation had started, what it had read, and the
    position its restart resumed from (sums over shards)."""

    incarnation: int
    resumed_from: int  # entries before the position this incarnation started from
    read: int  # entries it had read when killed (scraped just before the SIGKILL)
    snapshot: int  # position of the newest committed snapshot after the kill: the restart's start

    @property
    def reached(self) -> int:
        return self.resumed_from + self.read

    @property
    def reread(self) -> int:
        """Entries the restart reads again (they were read before the kill)."""
        return max(0, self.reached - self.snapshot)


@dataclass
class ChaosReport:
    total: int  # buffer entries before the first start
    kills: list[Kill] = field(default_factory=list)
    last_resume: dict[str, int] = field(default_factory=dict)  # per shard: where the last incarnation started
    last_read: dict[str, int] = field(default_factory=dict)  # per shard: what it read until settled
    end: dict[str, int] = field(default_factory=dict)  # per shard: entries ever appended, at the end


def chaos_run(env: dict[str, str], tmp: Path, rec: Path, processes: list[int], kills: int, seed: int, *,
              ends: Callable[[], dict[str, int]], settle: Callable[[list[Proc], dict[str, int]], None],
              read_batch: int = 1000) -> ChaosReport:  # fmt: skip
    """Run with ``kills`` ``kill -9``s, restarting each time on the same recovery directory;
    ``processes[i]`` is the process count of the i-th incarnation (``[2, 2, 1]`` rescales).

    ``ends()`` gives, per shard, the entries appended to the buffer so far (Redis
    ``entries-added``, Kafka log ends); ``settle(procs, resumed_from)`` returns once
    the last incarnation (its processes, the per-shard position it started from) has read
    everything and Redis is quiet.

    The i-th kill waits on progress, not time: the incarnation has read something itself, a
    committed snapshot exists, and the position reached (its start plus what it read) is past a
    target drawn (seeded) from the i-th of ``kills + 1`` equal slices of the input — so kills
    land at increasing points, all mid-stream. (Not "a snapshot past this incarnation's
    start": the first resumable snapshot comes ~2 epochs after a start, which a fast machine
    spends reading ~20k entries.) Asserted at every kill: it read > 0, it stopped short of
    the end (with one batch per shard to spare: the most it can read between the scrape and
    the signal), and there is a committed snapshot to resume from. Checked by the caller on
    the report: the last incarnation read exactly the entries after its resume position."""
    rnd = random.Random(seed)
    total = sum(ends().values())
    assert total > 0
    report = ChaosReport(total)
    for i in range(kills + 1):
        n = processes[min(i, len(processes) - 1)]
        start = snapshot_positions(rec)
        resumed_from = sum(start.values())
        procs = cluster(env, tmp, n, rec, f"chaos{i}", api=True)
        try:
            if i == kills:
                settle(procs, start)
                got = dataflow_reads(procs)
                assert got is not None
                report.last_resume, report.last_read, report.end = start, got, ends()
                stop_all(procs)
                return report
            slice_ = total / (kills + 1)
            target = rnd.uniform((i + 0.25) * slice_, (i + 0.8) * slice_)

            def ready(procs: list[Proc] = procs, target: float = target, resumed_from: int = resumed_from) -> bool:
                reads = dataflow_reads(procs)
                if not reads or sum(reads.values()) == 0 or resumed_from + sum(reads.values()) < target:
                    return False
                return sum(snapshot_positions(rec).values()) > 0

            t0 = time.monotonic()
            # 0.1 s polls: each scrape takes the dataflow's GIL, so polling faster slows what it watches
            wait_for(ready, 180, 0.1, f"incarnation {i} to pass {int(target)} of {total} entries with a snapshot")
            reads = dataflow_reads(procs)
        finally:
            kill_all(procs)
        assert reads is not None, f"kill {i} landed before the dataflow was even up"
        k = Kill(i, resumed_from, sum(reads.values()), sum(snapshot_positions(rec).values()))
        report.kills.append(k)
        print(f"kill {i}: {k} after {time.monotonic() - t0:.1f}s target {int(target)}", flush=True)
        margin = read_batch * len(reads)
        assert k.read > 0, f"kill {i} landed before this incarnation read anything: {k}"
        assert k.reached + margin < total, f"kill {i} landed at the end of the input, not mid-stream: {k}, total {total}"
        assert k.snapshot > 0, f"kill {i}: no committed snapshot to resume from: {k}"
        assert k.reread < total, f"restart {i + 1} re-reads the whole input: {k}"
    raise AssertionError("unreachable")


def check_resumed_from_snapshots(rep: ChaosReport, kills: int) -> None:
    """Every kill landed mid-stream (asserted at each kill by :func:`chaos_run`), and the last
    restart read exactly the entries after its resume position, shard by shard — not the
    whole buffer again (a source that ignored its snapshot would read ``end`` entries)."""
    assert len(rep.kills) == kills
    assert sum(rep.last_resume.values()) == rep.kills[-1].snapshot > 0
    expected = {s: rep.end[s] - rep.last_resume.get(s, 0) for s in rep.end}
    assert rep.last_read == expected, (rep.last_read, expected, rep.last_resume, rep.end)
    assert sum(rep.last_read.values()) < rep.total


def caught_up(procs: list[Proc], resumed_from: dict[str, int], ends: Callable[[], dict[str, int]]) -> Callable[[], int]:
    """Entries not read yet by an incarnation that started at ``resumed_from`` (per shard):
    the buffer's ends minus where its own read counters put it (for buffers whose backlog is
    not published in Redis: Kafka)."""

    def unread() -> int:
        reads = dataflow_reads(procs)
        if reads is None:
            return 1
        return sum(max(0, e - resumed_from.get(s, 0) - reads.get(s, 0)) for s, e in ends().items())

    return unread


__all__ = [
    "state", "diff", "settled", "cluster", "chaos_run", "init_recovery", "snapshot_positions", "redis_backlog", "entries_added",
    "FAST_WINDOWS", "FAST_GEN", "kill_all", "stop_all", "base_env", "Kill", "ChaosReport", "check_resumed_from_snapshots",
    "caught_up",
]  # fmt: skip


def replay_file(env: dict[str, str], path: Path) -> None:
    """``liveprofile replay FILE --quiet`` as a process with ``env``; fails the test on a non-zero exit."""
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "replay", str(path), "--quiet"], env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
