"""``liveprofile demo``: the whole pipeline on one machine, in one command.

Starts a private ``redis-server`` (AOF on, in a work directory) unless
``LIVEPROFILE_REDIS_URL`` is set, the HTTP collector, and the dataflow with
Bytewax recovery on; generates a realistic stream (with duplicates, invalid
events and bots), feeds it through the collector's ``/v1/batch`` with gzip at
``--rate`` events/s, shows live progress, then prints a summary: what was
accepted, dead-lettered and de-duplicated, how many profiles match the
generator's truth exactly, the freshness the dataflow measured, and a sample
profile. Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from liveprofile.keys import Keys
from liveprofile.settings import Settings

__all__ = ["run_demo", "histogram_quantile"]

DEMO_KEY = "demo-write-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def histogram_quantile(text: str, name: str, q: float) -> float | None:
    """Quantile ``q`` of a Prometheus histogram in exposition ``text`` (bucket upper bound).

    >>> t = 'h_bucket{le="0.1"} 90\\nh_bucket{le="1.0"} 100\\nh_bucket{le="+Inf"} 100\\nh_count 100\\nh_sum 5\\n'
    >>> histogram_quantile("# TYPE h histogram\\n" + t, "h", 0.99)
    1.0
    """
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        buckets = sorted(
            ((float(s.labels["le"]), s.value) for s in fam.samples if s.name.endswith("_bucket")),
            key=lambda b: b[0],
        )
        if not buckets or buckets[-1][1] == 0:
            return None
        target = q * buckets[-1][1]
        for le, count in buckets:
            if count >= target:
                return le
    return None


class _Stack:
    """Child processes and a private Redis, torn down in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        p = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self) -> None:
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if name != "redis" else signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def _wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except Exception:  # noqa: S110 - still starting
            pass
        if time.monotonic() > deadline:
            msg = f"{what} did not come up in {timeout:.0f}s"
            raise RuntimeError(msg)
        time.sleep(0.1)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo (see module docstring); returns a process exit code."""
    from liveprofile.generate import GenConfig, generate

    own_dir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="liveprofile-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = _Stack(workdir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYTEWAX_")}
    env.setdefault("LIVEPROFILE_WRITE_KEYS", DEMO_KEY)
    write_key = env["LIVEPROFILE_WRITE_KEYS"].split(",")[0]
    env["PYTHONUNBUFFERED"] = "1"
    try:
        if "LIVEPROFILE_REDIS_URL" not in os.environ:
            exe = shutil.which("redis-server")
            if exe is None:
                print("redis-server is not installed: run ./dev.sh demo, or apt-get install redis-server", file=sys.stderr)
                return 2
            port = _free_port()
            stack.start("redis", [
                exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
                "--appendonly", "yes", "--appendfsync", "everysec", "--protected-mode", "no",
            ], env)  # fmt: skip
            env["LIVEPROFILE_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        settings = Settings.from_env(env)
        r = redis.Redis.from_url(settings.redis_url)
        _wait(r.ping, 15, "redis-server")
        keys = Keys(settings.key_prefix)

        rec = workdir / "recovery"
        if not rec.exists():
            rec.mkdir()
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True, env=env)
        api_port = _free_port()
        df_env = {**env, "BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(api_port)}
        stack.start("dataflow", [sys.executable, "-m", "bytewax.run", "dataflows.profiles:flow", "-r", str(rec), "-s", "2", "-b", "10"], df_env)
        cport = args.port or _free_port()
        stack.start("collector", [sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(cport)], env)
        base = f"http://127.0.0.1:{cport}"
        _wait(lambda: httpx.get(base + "/healthz", timeout=1).status_code == 200, 30, "collector")

        end_ms = int(time.time() * 1000) - 60_000
        gen = generate(GenConfig(users=args.users, seed=7, end_ms=end_ms, days=args.days, duplicate_rate=0.02, invalid_rate=0.01, bots=max(1, args.users // 200)))
        print(f"liveprofile demo: {len(gen.events)} events for {len(gen.truth)} users -> {base} (work dir {workdir})")
        _feed(base, write_key, gen.events, args.rate, r, keys, settings.shards, api_port)
        _wait(lambda: _backlog(r, keys, settings.shards) == 0, 120, "the dataflow catching up")
        time.sleep(2.5)  # let the last epoch's writes land
        _summary(r, keys, gen, api_port, base)
        if args.keep_running:
            print(f"\nrunning: collector {base}, Redis {settings.redis_url}; Ctrl-C to stop")
            while all(p.poll() is None for _, p in stack.procs):
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        return 130
    finally:
        stack.stop()
        if own_dir and not args.keep_running:
            shutil.rmtree(workdir, ignore_errors=True)


def _backlog(r: redis.Redis, keys: Keys, shards: int) -> int:
    from liveprofile.buffer import backlog

    return sum(backlog(r, keys, shards).values())


def _metrics(api_port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return ""


def _feed(base: str, write_key: str, events: list[dict], rate: float, r: redis.Redis, keys: Keys, shards: int, api_port: int) -> None:
    client = httpx.Client(base_url=base, auth=(write_key, ""), timeout=30)
    batch_n = 100
    t0 = time.monotonic()
    last_show = 0.0
    sent = 0
    for i in range(0, len(events), batch_n):
        chunk = events[i : i + batch_n]
        body = gzip.compress(orjson.dumps({"batch": chunk}), 1)
        while True:
            resp = client.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
            if resp.status_code in (429, 503):
                time.sleep(float(resp.headers.get("retry-after", "1")))
                continue
            resp.raise_for_status()
            break
        sent += len(chunk)
        ahead = sent / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
        now = time.monotonic()
        if now - last_show > 0.5 or sent == len(events):
            last_show = now
            m = _metrics(api_port)
            p99 = histogram_quantile(m, "liveprofile_freshness_seconds", 0.99) if m else None
            backlog = _backlog(r, keys, shards)
            print(
                f"\r  sent {sent:>8}  {sent / max(now - t0, 1e-9):7.0f} ev/s  backlog {backlog:>6}  "
                f"dead letters {r.xlen(keys.dead_letter):>5}  changes {r.xlen(keys.changes):>7}  "
                f"freshness p99 {'-' if p99 is None else f'<= {p99 * 1000:.0f} ms':>10}",
                end="", flush=True,
            )  # fmt: skip
    print()


def _summary(r: redis.Redis, keys: Keys, gen, api_port: int, base: str) -> None:  # type: ignore[no-untyped-def]
    m = _metrics(api_port)
    dl = Counter(f[b"reason"].decode() for _, f in r.xrange(keys.dead_letter))
    match = 0
    checked = 0
    for uid, truth in gen.truth.items():
        prof = r.hgetall(keys.profile(uid))
        got = {k.decode(): v.decode() for k, v in prof.items()}
        checked += 1
        if all(got.get(k) == v for k, v in truth.items()):
            match += 1
    dups = 0.0
    for fam in text_string_to_metric_families(m):
        if fam.name == "liveprofile_dataflow_events_duplicate":
            dups = sum(s.value for s in fam.samples if s.name.endswith("_total"))
    p50 = histogram_quantile(m, "liveprofile_freshness_seconds", 0.5)
    p99 = histogram_quantile(m, "liveprofile_freshness_seconds", 0.99)
    print("\nsummary")
    print(f"  events generated        {len(gen.events)}")
    print(f"  duplicates dropped      {int(dups)}")
    print(f"  dead letters by reason  {dict(sorted(dl.items()))}")
    print(f"  profiles matching truth {match}/{checked}")
    if p50 is not None and p99 is not None:
        print(f"  freshness (receipt -> profile in Redis): p50 <= {p50 * 1000:.0f} ms, p99 <= {p99 * 1000:.0f} ms")
    buyers = [u for u, t in gen.truth.items() if t.get("purchase_count", "0") != "0"]
    sample = buyers[0] if buyers else next(iter(gen.truth))
    prof = {k.decode(): v.decode() for k, v in sorted(r.hgetall(keys.profile(sample)).items())}
    print(f"\nsample profile {keys.profile(sample)}:")
    print(orjson.dumps(prof, option=orjson.OPT_INDENT_2).decode())
