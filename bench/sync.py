"""ESP sync throughput against a fast fake vendor, with a naive baseline measured in the same run.

    .venv/bin/python bench/sync.py [--changes 50000] [--naive-sample 3000]

1. Starts a private redis-server and a fast fake webhook vendor (uvicorn +
   httptools in its own process; it verifies each HMAC signature and counts
   items).
2. Writes ``--changes`` change-feed entries, one per distinct user — so
   nothing collapses and the comparison with the baseline is change for change.
3. **liveprofile sync** (``python -m liveprofile.sync``, one webhook
   destination, default batching): changes/s from the moment the process holds
   its lease until every change is acknowledged.
4. **Naive sender** (the baseline): a consumer-group reader that takes one
   change at a time, POSTs it alone (signed, keep-alive connection) and
   acknowledges it — what a hand-written syncer typically does. Measured on
   ``--naive-sample`` changes.

Prints both rates and their ratio; the ratio is what to compare across runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.store.keys import Keys  # noqa: E402
from liveprofile.sync.destinations.webhook import (  # noqa: E402
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify_signature,
)
from liveprofile.sync.model import SyncKeys  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

CHANGES = Keys("lp").changes

SECRET = "bench-secret"


# -- the fake vendor (child process) ---------------------------------------------
def vendor(port: int) -> None:
    import uvicorn

    state = {"items": 0, "requests": 0, "bad": 0}

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]  # noqa: ANN001
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        if scope["method"] == "GET":
            out = orjson.dumps(state)
        else:
            h = dict(scope["headers"])
            ok = verify_signature(SECRET, h.get(TIMESTAMP_HEADER.lower().encode(), b"").decode(), body,
                                  h.get(SIGNATURE_HEADER.lower().encode(), b"").decode())  # fmt: skip
            state["requests"] += 1
            if ok:
                doc = orjson.loads(body)
                state["items"] += len(doc["items"]) if "items" in doc else 1
            else:
                state["bad"] += 1
            out = b'{"ok":true}'
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"),
                                                                              (b"content-length", str(len(out)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": out})

    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", log_level="warning", access_log=False)


def vendor_state(url: str) -> dict[str, int]:
    import httpx

    return httpx.get(url + "/state").json()


# -- feed ----------------------------------------------------------------------
def write_feed(r: redis.Redis, n: int, stream: str = CHANGES) -> None:
    for start in range(0, n, 5000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 5000)):
            changed = orjson.dumps({"cart_value": f"{i % 300}.50", "event_count": str(i % 97), "email_opens": "3"})
            pipe.xadd(stream, {"user_id": f"user-{i}", "version": "1", "changed": changed, "updated_at": "2024-06-01T10:00:00.000Z"})
        pipe.execute()


def done(r: redis.Redis, group: str, stream: str = CHANGES) -> bool:
    groups = {g["name"]: g for g in r.xinfo_groups(stream)}
    g = groups.get(group)
    return bool(g) and g["lag"] == 0 and g["pending"] == 0


# -- the naive baseline --------------------------------------------------------
def naive(url: str, vendor_url: str, limit: int) -> float:
    import httpx

    r = redis.Redis.from_url(url, decode_responses=True)
    r.xgroup_create(CHANGES, "naive", id="0")
    client = httpx.Client()
    n = 0
    t0 = time.perf_counter()
    while n < limit:
        res = r.xreadgroup("naive", "c1", {CHANGES: ">"}, count=1)
        if not res:
            break
        entry_id, fields = res[0][1][0]
        body = orjson.dumps({"user_id": fields["user_id"], "version": int(fields["version"]),
                             "changed": orjson.loads(fields["changed"])})  # fmt: skip
        ts = int(time.time())
        resp = client.post(vendor_url + "/hook", content=body, headers={
            "content-type": "application/json", "idempotency-key": f"{fields['user_id']}:{fields['version']}",
            TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(SECRET, ts, body)})  # fmt: skip
        resp.raise_for_status()
        r.xack(CHANGES, "naive", entry_id)
        n += 1
    rate = n / (time.perf_counter() - t0)
    client.close()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=50_000)
    ap.add_argument("--naive-sample", type=int, default=3000)
    ap.add_argument("--vendor", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.vendor:
        vendor(args.vendor)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        srv = RedisServer(Path(tmp) / "redis").start()
        vport = free_port()
        vproc = subprocess.Popen([sys.executable, __file__, "--vendor", str(vport)])
        vurl = f"http://127.0.0.1:{vport}"
        sync_proc = None
        try:
            _wait(lambda: _up(vurl), "vendor")
            r = redis.Redis.from_url(srv.url, decode_responses=True)
            write_feed(r, args.changes)
            cfg = {"hook": {"type": "webhook", "url": vurl + "/hook", "secret": SECRET}}
            env = {**os.environ, "LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_SYNC_DESTINATIONS": orjson.dumps(cfg).decode(),
                   "LIVEPROFILE_SYNC_METRICS_PORT": "0", "LIVEPROFILE_SYNC_CONSUMER": "bench"}  # fmt: skip
            sync_proc = subprocess.Popen([sys.executable, "-m", "liveprofile.sync", "--log-level", "warning"], env=env, cwd=ROOT)
            _wait(lambda: r.get(SyncKeys("lp", "hook").lease) is not None, "sync lease")
            t0 = time.perf_counter()
            _wait(lambda: done(r, "sync:hook"), "sync to finish", timeout=600, interval=0.01)
            sync_rate = args.changes / (time.perf_counter() - t0)
            st = vendor_state(vurl)
            sync_proc.terminate()
            sync_proc.wait(10)
            print(f"liveprofile sync: {args.changes} changes in {args.changes / sync_rate:.2f}s = {sync_rate:,.0f} changes/s "
                  f"({st['requests']} requests, {st['items']} items, {st['bad']} bad signatures)", flush=True)  # fmt: skip
            naive_rate = naive(srv.url, vurl, min(args.naive_sample, args.changes))
            print(f"naive one-request-per-change sender: {naive_rate:,.0f} changes/s (sample {min(args.naive_sample, args.changes)})")
            print(f"ratio: {sync_rate / naive_rate:.1f}x")
        finally:
            if sync_proc is not None and sync_proc.poll() is None:
                sync_proc.kill()
            vproc.terminate()
            vproc.wait(10)
            srv.stop()
    return 0


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url + "/state", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(pred, what: str, timeout: float = 30.0, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
