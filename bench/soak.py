"""Soak: mixed valid, hostile and oversize traffic against the whole stack, with Redis at a low
maxmemory for part of the time (issue 12's "done when").

    .venv/bin/python bench/soak.py [--minutes 10] [--users 1500] [--squeeze 0.3,0.5]

Starts a private redis-server (AOF on), the dataflow (recovery on), the collector and the sync
(one webhook destination: a local receiver that answers 200) as real processes. For the whole run:

* a Segment-style client sends the generated stream through ``/v1/batch`` (gzip, 50 events per
  request), spread over the run, retrying 429/503 answers after their ``Retry-After`` like the
  SDKs; an event counts as acknowledged when its request got 200;
* a hostile client sends, one after another, malformed JSON, broken gzip, oversize bodies and
  events, batches with one poisoned event (a lone surrogate, NaN, 1e400, 300-deep nesting), unknown
  write keys, large headers, unknown paths and methods;
* between the ``--squeeze`` fractions of the run, Redis gets ``maxmemory`` = its use then +
  ``--headroom-mb``
  (``noeviction``), so writes fail with OOM until it is lifted.

At the end (once the buffer is drained) it reports, and exits non-zero unless all hold: 0 crashed
processes; 0 acknowledged events missing from the profiles (each generated user's event_count,
purchase_count and revenue_total against the generator's truth); Redis memory bounded (the
largest ``used_memory`` seen, against the squeeze limit while it held); every answer that was not
200 a 4xx/429/503 with a JSON reason (a closed connection is counted apart).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.server
import os
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.buffer.streams import backlog  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

KEY = "soak-key"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
COUNTERS = ("event_count", "purchase_count", "revenue_total")


class Receiver:
    """The webhook destination: answers 200 to every POST, counts them."""

    def __init__(self) -> None:
        self.posts = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.posts += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Tally:
    """Answers seen, by (client, status, reason), and contract violations."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answers: Counter[tuple[str, int, str]] = Counter()
        self.violations: list[str] = []

    def record(self, who: str, resp: httpx.Response | None, what: str) -> None:
        with self.lock:
            if resp is None:
                self.answers[(who, 0, "connection closed")] += 1
                return
            reason = ""
            if resp.status_code != 200:
                try:
                    body = resp.json()
                    reason = str(body.get("error") or "")
                except ValueError:
                    body = None
                ok_status = 400 <= resp.status_code < 500 or resp.status_code == 503
                if not ok_status or not reason:
                    self.violations.append(f"{what}: {resp.status_code} {resp.text[:120]!r}")
            self.answers[(who, resp.status_code, reason)] += 1


def valid_client(url: str, events: list[dict], seconds: float, tally: Tally, acked: list[int], stop: threading.Event) -> None:
    bodies = [events[i : i + 50] for i in range(0, len(events), 50)]
    interval = seconds / max(len(bodies), 1)
    t0 = time.monotonic()
    with httpx.Client(base_url=url, headers={**AUTH, "Content-Encoding": "gzip", "Content-Type": "application/json"}, timeout=30) as c:
        for k, batch in enumerate(bodies):
            delay = t0 + k * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = gzip.compress(orjson.dumps({"batch": batch}), 1)
            while not stop.is_set():
                try:
                    resp = c.post("/v1/batch", content=body)
                except httpx.HTTPError:
                    tally.record("valid", None, "valid batch")
                    time.sleep(1)
                    continue
                tally.record("valid", resp, "valid batch")
                if resp.status_code == 200:
                    acked[0] += len(batch)
                    break
                if resp.status_code in (429, 503):
                    time.sleep(min(float(resp.headers.get("Retry-After") or 1), 5))
                    continue
                break  # a 4xx for a valid batch is a finding: recorded as a violation above if it has no reason


def _hostile_requests() -> list[tuple[str, str, dict[str, str], bytes]]:
    """(what, method+path, headers, body)."""
    ev = {"type": "track", "userId": "h1", "event": "Product Viewed", "messageId": "hx"}
    deep = b'{"d":' * 300 + b"1" + b"}" * 300  # deeper than orjson writes: spelled out
    poisoned = [b'"\\ud83d"', b"NaN", b"1e400"]
    out = [
        ("malformed json", "POST /v1/batch", {}, b'{"batch": [{"type": '),
        ("broken gzip", "POST /v1/batch", {"Content-Encoding": "gzip"}, b"\x1f\x8b\x08\x00garbage"),
        ("oversize body", "POST /v1/batch", {}, b'{"batch": [' + b",".join([orjson.dumps({**ev, "p": "x" * 1000})] * 1200) + b"]}"),
        ("oversize event", "POST /v1/track", {}, orjson.dumps({**ev, "properties": {"blob": "y" * 40_000}})),
        ("deep nesting", "POST /v1/track", {}, orjson.dumps(ev)[:-1] + b',"properties":' + deep + b"}"),
        ("unknown key", "POST /v1/track", {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}, orjson.dumps(ev)),
        ("large header", "POST /v1/track", {"X-Pad": "z" * 60_000}, orjson.dumps(ev)),
        ("unknown path", "POST /v1/nothing", {}, b"{}"),
        ("wrong method", "PUT /v1/track", {}, b"{}"),
        ("not an object", "POST /v1/track", {}, b"[1, 2, 3]"),
        ("invalid event", "POST /v1/track", {}, orjson.dumps({"type": "track", "userId": "h2"})),
    ]
    for p in poisoned:
        good = orjson.dumps({**ev, "messageId": "hp-ok"})
        bad = b'{"type":"track","userId":"h3","event":"E","messageId":"hp-bad","properties":{"v":' + p + b"}}"
        out.append((f"poisoned batch {p.decode()}", "POST /v1/batch", {}, b'{"batch":[' + good + b"," + bad + b"]}"))
    return out


def hostile_client(url: str, tally: Tally, stop: threading.Event) -> None:
    reqs = _hostile_requests()
    i = 0
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            what, line, headers, body = reqs[i % len(reqs)]
            method, path = line.split(" ", 1)
            try:
                resp = c.request(method, path, content=body, headers={**AUTH, "Content-Type": "application/json", **headers})
            except httpx.HTTPError:
                resp = None
            tally.record("hostile", resp, what)
            overload = resp is not None and resp.status_code in (429, 503) and "retry-after" in resp.headers
            if what.startswith("poisoned") and (resp is None or resp.status_code != 200) and not overload:
                # one bad event must not cost the batch (SPEC 2); a 429/503 with Retry-After (Redis at its
                # maxmemory, backlog full) refuses the whole request for every client alike, nothing kept
                with tally.lock:
                    tally.violations.append(f"{what}: {resp.status_code if resp else 'closed'} for the whole batch")
            i += 1
            time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--squeeze", default="0.3,0.5", help="fractions of the run between which Redis is at a low maxmemory")
    ap.add_argument("--headroom-mb", type=float, default=2.0, help="maxmemory during the squeeze: Redis's use then + this")
    a = ap.parse_args()
    seconds = a.minutes * 60
    lo, hi = (float(x) for x in a.squeeze.split(","))
    with tempfile.TemporaryDirectory(prefix="soak-") as d:
        work = Path(d)
        srv = RedisServer(work / "redis", appendonly=True).start()
        r = redis.Redis.from_url(srv.url)
        recv = Receiver()
        cport = free_port()
        env = {**os.environ, "LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_WRITE_KEYS": KEY,
               "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z",
               "LIVEPROFILE_SYNC_DESTINATIONS": orjson.dumps({"hook": {"type": "webhook", "url": recv.url, "secret": "soak"}}).decode()}  # fmt: skip
        rec = work / "rec"
        rec.mkdir()
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(rec), "1"], check=True)
        logs = {n: open(work / f"{n}.log", "wb") for n in ("dataflow", "collector", "sync")}  # noqa: SIM115
        procs = {
            "dataflow": subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.profiles:flow", "-r", str(rec), "-s", "2", "-b", "10"],
                                         env=env, cwd=ROOT, stdout=logs["dataflow"], stderr=subprocess.STDOUT),
            "collector": subprocess.Popen([sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(cport)],
                                          env=env, cwd=ROOT, stdout=logs["collector"], stderr=subprocess.STDOUT),
            "sync": subprocess.Popen([sys.executable, "-m", "liveprofile.cli", "sync"], env=env, cwd=ROOT, stdout=logs["sync"], stderr=subprocess.STDOUT),
        }  # fmt: skip
        url = f"http://127.0.0.1:{cport}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the collector did not start")
                time.sleep(0.2)
            gen = generate(GenConfig(users=a.users, seed=5, end_ms=int(time.time() * 1000) - 60_000, days=3))
            tally, acked, stop = Tally(), [0], threading.Event()
            threads = [
                threading.Thread(target=valid_client, args=(url, gen.events, seconds * 0.8, tally, acked, stop), daemon=True),
                threading.Thread(target=hostile_client, args=(url, tally, stop), daemon=True),
            ]
            for t in threads:
                t.start()
            t0 = time.monotonic()
            peak, squeeze_limit, squeezed, crashed = 0, 0, False, set()
            while time.monotonic() - t0 < seconds:
                frac = (time.monotonic() - t0) / seconds
                used = int(r.info("memory")["used_memory"])
                peak = max(peak, used)
                if not squeezed and lo <= frac < hi:
                    squeeze_limit = used + int(a.headroom_mb * 2**20)
                    r.config_set("maxmemory-policy", "noeviction")
                    r.config_set("maxmemory", squeeze_limit)
                    squeezed = True
                    print(f"[{frac:4.0%}] maxmemory {squeeze_limit / 2**20:.1f} MB", flush=True)
                elif squeezed and frac >= hi and squeeze_limit:
                    r.config_set("maxmemory", 0)
                    print(f"[{frac:4.0%}] maxmemory lifted (peak so far {peak / 2**20:.1f} MB)", flush=True)
                    squeeze_limit = 0
                crashed |= {n for n, p in procs.items() if p.poll() is not None}
                time.sleep(1)
            threads[0].join(timeout=seconds)
            stop.set()
            threads[1].join(timeout=30)
            keys = Keys("lp")
            deadline = time.monotonic() + 300
            missing: list = []
            left = -1
            while time.monotonic() < deadline:
                crashed |= {n for n, p in procs.items() if p.poll() is not None}
                left = sum(backlog(r, keys, 4).values())
                missing = []
                for u, want in gen.truth.items():
                    got_s = [x.decode() if x else None for x in r.hmget(keys.profile(u), COUNTERS)]
                    if got_s != [want.get(f) for f in COUNTERS]:
                        missing.append((u, got_s, [want.get(f) for f in COUNTERS]))
                if left == 0 and not missing:
                    break
                time.sleep(2)
        finally:
            for p in procs.values():
                p.terminate()
            for p in procs.values():
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            srv.stop()
        print(f"\nevents generated {len(gen.events)}, acknowledged {acked[0]}; webhook posts {recv.posts}")
        print(f"crashed processes: {sorted(crashed) or 0}")
        print(f"buffer backlog left unread: {left}")
        print(f"users whose counters differ from the truth: {len(missing)} {missing[:3]}")
        print(f"Redis used_memory peak {peak / 2**20:.1f} MB")
        print("answers (client, status, reason): count")
        for (who, status, reason), n in sorted(tally.answers.items()):
            print(f"  {who:8} {status:4} {reason:28} {n}")
        print(f"contract violations: {len(tally.violations)} {tally.violations[:5]}")
        ok = not crashed and not missing and not tally.violations
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
