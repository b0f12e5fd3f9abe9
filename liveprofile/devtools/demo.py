"""``liveprofile demo``: the whole pipeline on one machine, in one command.

Starts a private ``redis-server`` (AOF on, in a work directory) unless
``LIVEPROFILE_REDIS_URL`` is set, the HTTP collector, the dataflow with
Bytewax recovery on, and the ESP sync pushing changes to a local stand-in
email platform (a webhook receiver in this process); generates a realistic
stream (with duplicates, invalid events and bots), feeds it through the
collector's ``/v1/batch`` with gzip at ``--rate`` events/s, and shows a live
panel fed by the components' own Prometheus metrics (events/s, freshness,
dead letters by reason, anomalies, segment sizes, ESP deliveries). Then it
prints a summary: what was accepted, dead-lettered and de-duplicated, how
many profiles match the generator's truth exactly, and a sample profile.
Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.keys import Keys

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


class _FakeEsp:
    """A stand-in email platform: a webhook receiver counting delivered profile changes."""

    def __init__(self) -> None:
        self.requests = 0
        self.items = 0
        esp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                try:
                    doc = orjson.loads(body)
                    n = len(doc.get("items", doc.get("batch", []))) if isinstance(doc, dict) else 0
                except orjson.JSONDecodeError:
                    n = 0
                esp.requests += 1
                esp.items += n
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a: object) -> None:
                return

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for fam in text_string_to_metric_families(text):
        if fam.name != name:
            continue
        for smp in fam.samples:
            if smp.name.endswith("_total") and all(smp.labels.get(k) == v for k, v in labels.items()):
                total += smp.value
    return total


def _by_label(text: str, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == name:
            for smp in fam.samples:
                if smp.name.endswith("_total") and label in smp.labels:
                    out[smp.labels[label]] = out.get(smp.labels[label], 0.0) + smp.value
    return out


class _Panel:
    """The live view: redrawn in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, r: redis.Redis, keys: Keys, shards: int, urls: dict[str, str], esp: _FakeEsp) -> None:
        self.r, self.keys, self.shards, self.urls, self.esp = r, keys, shards, urls, esp
        self.tty = sys.stdout.isatty()
        self.lines = 0
        self.prev: tuple[float, float] | None = None
        self.last_print = 0.0

    def _get(self, which: str) -> str:
        try:
            return httpx.get(self.urls[which], timeout=1).text
        except httpx.HTTPError:
            return ""

    def draw(self, sent: int, total: int) -> None:
        now = time.monotonic()
        coll, flow, sync = self._get("collector"), self._get("dataflow"), self._get("sync")
        accepted = _counter(coll, "liveprofile_collector_events_accepted")
        rate = 0.0
        if self.prev is not None and now > self.prev[0]:
            rate = (accepted - self.prev[1]) / (now - self.prev[0])
        self.prev = (now, accepted)
        p50 = histogram_quantile(flow, "liveprofile_freshness_seconds", 0.5) if flow else None
        p99 = histogram_quantile(flow, "liveprofile_freshness_seconds", 0.99) if flow else None
        dead = _by_label(coll, "liveprofile_collector_events_rejected", "reason")
        for k, v in _by_label(flow, "liveprofile_dataflow_events_rejected", "reason").items():
            dead[k] = dead.get(k, 0) + v
        sizes: Counter[str] = Counter()
        for key in self.r.scan_iter(self.keys.segment_pattern(), count=1000):  # every group's sets
            sizes[self.keys.segment_name(key)] += self.r.scard(key)
        segs = sorted(((n, name) for name, n in sizes.items()), reverse=True)
        fmt = lambda x: "-" if x is None else f"<= {x * 1000:.0f} ms"  # noqa: E731
        rows = [
            f"liveprofile demo  sent {sent}/{total}   accepted {int(accepted)}   {rate:,.0f} events/s   backlog {_backlog(self.r, self.keys, self.shards)}",
            f"freshness (receipt -> profile in Redis)  p50 {fmt(p50)}   p99 {fmt(p99)}",
            f"duplicates dropped {int(_counter(flow, 'liveprofile_dataflow_events_duplicate'))}   "
            f"profile writes {int(_counter(flow, 'liveprofile_profile_writes', result='written'))}   "
            f"anomalous users flagged {int(_counter(flow, 'liveprofile_dataflow_events_flagged'))}   anomalies stream {self.r.xlen(self.keys.anomalies)}",
            "dead letters  " + ("  ".join(f"{k} {int(v)}" for k, v in sorted(dead.items(), key=lambda kv: -kv[1])) or "none"),
            "segments      " + ("  ".join(f"{n} {c}" for c, n in segs[:8]) or "none yet"),
            f"ESP sync      delivered {int(_counter(sync, 'liveprofile_sync_delivered_changes'))} changes in {self.esp.requests} requests "
            f"({self.esp.items} items received by the stand-in platform)",
        ]  # fmt: skip
        if self.tty:
            if self.lines:
                sys.stdout.write(f"\x1b[{self.lines}F")
            for row in rows:
                sys.stdout.write("\x1b[2K" + row[:160] + "\n")
            self.lines = len(rows)
            sys.stdout.flush()
        elif now - self.last_print > 3:
            self.last_print = now
            print(" | ".join(rows[:2]), flush=True)


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo (see module docstring); returns a process exit code."""
    from liveprofile.devtools.generate import GenConfig, generate

    own_dir = args.workdir is None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="liveprofile-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = _Stack(workdir)
    esp = _FakeEsp()
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
        r = connect(settings.redis_url, settings.redis_cluster)
        _wait(r.ping, 15, "redis-server")
        keys = Keys.of(settings)

        rec = workdir / "recovery"
        if not rec.exists():
            rec.mkdir()
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True, env=env)
        api_port, sync_port = _free_port(), _free_port()
        df_env = {**env, "BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(api_port)}
        stack.start("dataflow", [sys.executable, "-m", "bytewax.run", "dataflows.profiles:flow", "-r", str(rec), "-s", "2", "-b", "10"], df_env)
        cport = args.port or _free_port()
        stack.start("collector", [sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(cport)], env)
        sync_env = {
            **env, "LIVEPROFILE_SYNC_METRICS_PORT": str(sync_port),
            "LIVEPROFILE_SYNC_DESTINATIONS": orjson.dumps({"demo-esp": {
                "type": "webhook", "url": f"http://127.0.0.1:{esp.port}/hook", "secret": "demo-secret"}}).decode(),
        }  # fmt: skip
        stack.start("sync", [sys.executable, "-m", "liveprofile.cli", "sync"], sync_env)
        base = f"http://127.0.0.1:{cport}"
        _wait(lambda: httpx.get(base + "/healthz", timeout=1).status_code == 200, 30, "collector")

        end_ms = int(time.time() * 1000) - 60_000
        gen = generate(GenConfig(users=args.users, seed=7, end_ms=end_ms, days=args.days, duplicate_rate=0.02, invalid_rate=0.01, bots=max(1, args.users // 200)))
        print(f"liveprofile demo: {len(gen.events)} events for {len(gen.truth)} users -> {base} (work dir {workdir})")
        panel = _Panel(r, keys, settings.shards, {
            "collector": base + "/metrics", "dataflow": f"http://127.0.0.1:{api_port}/metrics",
            "sync": f"http://127.0.0.1:{sync_port}/metrics",
        }, esp)  # fmt: skip
        progress = {"sent": 0}
        feeder = threading.Thread(target=_feed, args=(base, write_key, gen.events, args.rate, progress), daemon=True)
        feeder.start()
        while feeder.is_alive():
            panel.draw(progress["sent"], len(gen.events))
            time.sleep(0.5)
        deadline = time.monotonic() + 120
        while _backlog(r, keys, settings.shards) > 0 and time.monotonic() < deadline:
            panel.draw(progress["sent"], len(gen.events))
            time.sleep(0.5)
        for _ in range(6):  # the last epoch's writes, and the ESP catching up
            panel.draw(progress["sent"], len(gen.events))
            time.sleep(0.5)
        _summary(r, keys, gen, api_port)
        if args.keep_running:
            print(f"\nrunning: collector {base}, Redis {settings.redis_url}; Ctrl-C to stop")
            while all(p.poll() is None for _, p in stack.procs):
                panel.draw(progress["sent"], len(gen.events))
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping", file=sys.stderr)
        return 130
    finally:
        stack.stop()
        esp.close()
        if own_dir and not args.keep_running:
            shutil.rmtree(workdir, ignore_errors=True)


def _backlog(r: redis.Redis, keys: Keys, shards: int) -> int:
    from liveprofile.buffer.streams import backlog

    return sum(backlog(r, keys, shards).values())


def _metrics(api_port: int) -> str:
    try:
        return httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=1).text
    except httpx.HTTPError:
        return ""


def _feed(base: str, write_key: str, events: list[dict], rate: float, progress: dict[str, int]) -> None:
    """POST the events to /v1/batch (gzip) at ``rate`` events/s, retrying 429/503 as told."""
    client = httpx.Client(base_url=base, auth=(write_key, ""), timeout=30)
    batch_n = 100
    t0 = time.monotonic()
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
        progress["sent"] += len(chunk)
        ahead = progress["sent"] / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)


def _summary(r: redis.Redis, keys: Keys, gen, api_port: int) -> None:  # type: ignore[no-untyped-def]
    m = _metrics(api_port)
    dl = Counter(f[b"reason"].decode() for _, f in r.xrange(keys.dead_letter))
    match = 0
    for uid, truth in gen.truth.items():
        got = {k.decode(): v.decode() for k, v in r.hgetall(keys.profile(uid)).items()}
        if all(got.get(k) == v for k, v in truth.items()):
            match += 1
    p50 = histogram_quantile(m, "liveprofile_freshness_seconds", 0.5)
    p99 = histogram_quantile(m, "liveprofile_freshness_seconds", 0.99)
    print("\nsummary")
    print(f"  events generated        {len(gen.events)}")
    print(f"  duplicates dropped      {int(_counter(m, 'liveprofile_dataflow_events_duplicate'))}")
    print(f"  dead letters by reason  {dict(sorted(dl.items()))}")
    print(f"  profiles matching truth {match}/{len(gen.truth)}")
    print(f"  bots flagged suspect    {sum(1 for b in gen.bots if r.hget(keys.profile(b), 'suspect') == b'1')}/{len(gen.bots)}")
    if p50 is not None and p99 is not None:
        print(f"  freshness (receipt -> profile in Redis): p50 <= {p50 * 1000:.0f} ms, p99 <= {p99 * 1000:.0f} ms")
    buyers = [u for u, t in gen.truth.items() if t.get("purchase_count", "0") != "0"]
    sample = buyers[0] if buyers else next(iter(gen.truth))
    prof = {k.decode(): v.decode() for k, v in sorted(r.hgetall(keys.profile(sample)).items())}
    print(f"\nsample profile {keys.profile(sample)}:")
    print(orjson.dumps(prof, option=orjson.OPT_INDENT_2).decode())
