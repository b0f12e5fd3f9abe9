"""Profile API latency at a fixed request rate (open loop), against a Redis holding many profiles.

    .venv/bin/python bench/api.py [--profiles 100000] [--rate 1000] [--duration 20] [--framework plain|starlette|both]

1. Starts a private redis-server and loads ``--profiles`` realistic profile
   hashes (SPEC §4 fields, JSON interests/cart), a catalogue and segments.
2. Starts the API in its own process under uvicorn (httptools, uvloop): the
   plain ASGI app (``liveprofile api``) and/or the same handlers behind
   Starlette's router, to compare.
3. Drives ``GET /v1/profiles/{random user}`` **open loop** at ``--rate``
   requests/s: request *i* is due at ``t0 + i/rate`` whether or not earlier
   ones finished, over a pool of keep-alive connections that grows when all
   are busy, and latency is measured from the due time — so a stall is
   charged to every request it delays (no coordinated omission). A warm-up
   precedes the measurement. Then the same for ``/v1/content/{user}/recommendations``
   at a tenth of the rate. Latency from the *actual* send is printed too: the
   difference is the generator's own scheduling lag (uvloop timers tick in
   milliseconds, and the generator shares the 2 cores with the API and Redis).

Prints p50/p90/p99/p99.9/max per endpoint and framework, the achieved rate
and the error count. The goal: profile p99 <= 5 ms at 1,000 req/s on 2 cores.
The load generator shares the machine with the API and Redis, so the figures
include its interference.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
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
from tests.redis_server import RedisServer, free_port  # noqa: E402

K = Keys("lp")

TOKEN = "bench-token"
CATEGORIES = ["shoes", "hats", "bags", "shirts", "watches", "books", "toys", "garden"]


def load_profiles(url: str, n: int) -> None:
    r = redis.Redis.from_url(url)
    rng = random.Random(7)
    pipe = r.pipeline(transaction=False)
    for cat in CATEGORIES:
        for j in range(50):
            pid = f"{cat}-{j}"
            pipe.zadd(K.category_top(cat), {pid: rng.random() * 1000})
            pipe.hset(K.product(pid), mapping={"name": f"{cat.title()} #{j}", "category": cat, "price": f"{rng.uniform(5, 200):.2f}",
                                                    "url": f"https://shop.example/p/{pid}"})  # fmt: skip
    pipe.execute()
    for start in range(0, n, 2000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(n, start + 2000)):
            cat = rng.choice(CATEGORIES)
            cart = [{"product_id": f"{cat}-{k}", "name": f"{cat} {k}", "category": cat, "price": "19.99", "quantity": 1} for k in range(rng.randint(0, 3))]
            pipe.hset(K.profile(f"user-{i}"), mapping={
                "user_id": f"user-{i}", "email": f"user{i}@example.com", "event_count": str(rng.randint(1, 500)),
                "first_seen_at": "2024-01-02T03:04:05.678Z", "last_seen_at": "2024-06-01T10:00:00.000Z",
                "purchase_count": str(rng.randint(0, 20)), "revenue_total": f"{rng.uniform(0, 2000):.2f}",
                "first_purchase_at": "2024-02-01T00:00:00.000Z", "last_purchase_at": "2024-05-30T00:00:00.000Z",
                "cart_value": f"{19.99 * len(cart):.2f}", "cart_items": str(len(cart)), "email_opens": str(rng.randint(0, 50)),
                "email_clicks": str(rng.randint(0, 10)), "last_email_open_at": "2024-05-31T08:00:00.000Z",
                "rfm_r": "4", "rfm_f": "3", "rfm_m": "5", "rfm_segment": "loyal", "top_category": cat,
                "interests": orjson.dumps({c: round(rng.random() * 5, 3) for c in rng.sample(CATEGORIES, 3)}).decode(),
                "cart": orjson.dumps(cart).decode(), "consent": '{"email": true}', "updated_at": "2024-06-01T10:00:00.000Z",
                "version": str(rng.randint(1, 500)),
            })  # fmt: skip
            if i % 10 == 0:
                pipe.sadd(K.segment("loyal"), f"user-{i}")
        pipe.execute()
    r.close()


# -- the server side (run in a child process) ------------------------------------
def serve(framework: str, port: int) -> None:
    import uvicorn

    from liveprofile.api.app import ApiApp, tune_gc
    from liveprofile.api.config import ApiConfig
    from liveprofile.settings import Settings, load_env

    values = load_env()
    core = ApiApp(Settings.from_env(), ApiConfig.from_values(values))
    app: object = core
    if framework == "starlette":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        from liveprofile.api.app import ApiError

        async def profile(request: Request) -> Response:
            try:
                core._auth(request.scope)
                status, body, ctype = await core.profile(request.path_params["user_id"], dict(request.query_params))
            except ApiError as exc:
                return Response(orjson.dumps({"error": exc.code}), exc.status, media_type="application/json")
            return Response(body, status, media_type=ctype[1].decode())

        async def content(request: Request) -> Response:
            try:
                core._auth(request.scope)
                status, body, ctype = await core.render(request.path_params["user_id"], request.path_params["slot"], dict(request.query_params))
            except ApiError as exc:
                return Response(orjson.dumps({"error": exc.code}), exc.status, media_type="application/json")
            return Response(body, status, media_type=ctype[1].decode())

        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def lifespan(_app: object):  # type: ignore[no-untyped-def]
            await core.startup()
            yield
            await core.shutdown()

        app = Starlette(routes=[Route("/v1/profiles/{user_id}", profile), Route("/v1/content/{user_id}/{slot}", content)],
                        lifespan=lifespan)  # fmt: skip
    tune_gc()
    uvicorn.run(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", lifespan="on", log_level="warning",  # type: ignore[arg-type]
                access_log=False, timeout_keep_alive=30)  # as liveprofile.api.app.serve


# -- the load generator ----------------------------------------------------------
class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.r, self.w = reader, writer

    async def get(self, path: str) -> int:
        self.w.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.r.readexactly(length)
        return status


async def open_loop(port: int, paths: list[str], rate: float, duration: float,
                    warmup: float) -> tuple[list[float], dict[str, int], int, float, list[float]]:  # fmt: skip
    clock = time.perf_counter  # uvloop's loop.time() has only millisecond resolution
    idle: list[_Conn] = [_Conn(*await asyncio.open_connection("127.0.0.1", port)) for _ in range(16)]
    lat: list[float] = []
    service: list[float] = []
    errors: dict[str, int] = {}
    opened = 0

    async def one(path: str, due: float) -> None:
        nonlocal errors, opened
        if idle:
            conn = idle.pop()
        else:
            opened += 1
            conn = _Conn(*await asyncio.open_connection("127.0.0.1", port))
        sent = clock()
        try:
            try:
                status = await conn.get(path)
            except asyncio.IncompleteReadError as exc:
                if exc.partial:
                    raise
                # a keep-alive connection the server closed while idle: reconnect, as HTTP clients do
                conn = _Conn(*await asyncio.open_connection("127.0.0.1", port))
                opened += 1
                status = await conn.get(path)
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            return
        if due >= t_measure:
            now = clock()
            lat.append(now - due)
            service.append(now - sent)
        if status != 200:
            errors[str(status)] = errors.get(str(status), 0) + 1
        idle.append(conn)

    n = int(rate * (duration + warmup))
    t0 = clock() + 0.05
    t_measure = t0 + warmup
    tasks = set()
    for i in range(n):
        due = t0 + i / rate
        wait = due - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        task = asyncio.create_task(one(paths[i % len(paths)], due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    elapsed = clock() - t0
    for c in idle:
        c.w.close()
    return lat, errors, opened, n / elapsed, service


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000 if s else float("nan")


def measure(port: int, users: int, rate: float, duration: float, endpoint: str) -> dict[str, object]:
    import uvloop

    rng = random.Random(1)
    if endpoint == "profile":
        paths = [f"/v1/profiles/user-{rng.randrange(users)}" for _ in range(50_000)]
    else:
        paths = [f"/v1/content/user-{rng.randrange(users)}/recommendations" for _ in range(50_000)]
    lat, errors, opened, achieved, service = uvloop.run(open_loop(port, paths, rate, duration, warmup=min(3.0, duration / 4)))
    return {"service_p50": pct(service, 50), "service_p99": pct(service, 99),"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "p99.9": pct(lat, 99.9), "max": max(lat) * 1000,
            "n": len(lat), "errors": errors, "rate": achieved, "connections": opened}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profiles", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--framework", choices=["plain", "starlette", "both"], default="both")
    ap.add_argument("--serve", choices=["plain", "starlette"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        srv = RedisServer(Path(tmp) / "redis").start()
        try:
            t = time.perf_counter()
            load_profiles(srv.url, args.profiles)
            print(f"loaded {args.profiles} profiles in {time.perf_counter() - t:.1f}s", flush=True)
            frameworks = ["plain", "starlette"] if args.framework == "both" else [args.framework]
            if args.framework == "both" and importlib.util.find_spec("starlette") is None:
                print("starlette is not installed: measuring the plain ASGI app only", flush=True)
                frameworks = ["plain"]
            for fw in frameworks:
                port = free_port()
                env = {**os.environ, "LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_API_TOKENS": TOKEN,
                       "LIVEPROFILE_API_EXPERIMENTS": '{"subject": {"a": 1, "b": 1}}'}  # fmt: skip
                proc = subprocess.Popen([sys.executable, __file__, "--serve", fw, "--port", str(port)], env=env)
                try:
                    _wait_up(port)
                    for endpoint, rate in (("profile", args.rate), ("content", args.rate / 10)):
                        m = measure(port, args.profiles, rate, args.duration, endpoint)
                        print(f"{fw:>9} {endpoint:>8} @ {m['rate']:.0f} req/s open loop: p50 {m['p50']:.2f} ms  p90 {m['p90']:.2f} ms  "
                              f"p99 {m['p99']:.2f} ms  p99.9 {m['p99.9']:.2f} ms  max {m['max']:.1f} ms  "
                              f"(n={m['n']}, errors={m['errors']}, connections={m['connections']}); "
                              f"from actual send: p50 {m['service_p50']:.2f} ms  p99 {m['service_p99']:.2f} ms", flush=True)  # fmt: skip
                finally:
                    proc.terminate()
                    proc.wait(10)
        finally:
            srv.stop()
    return 0


def _wait_up(port: int) -> None:
    import httpx

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/profiles/user-0", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    msg = "the API did not come up"
    raise RuntimeError(msg)


if __name__ == "__main__":
    sys.exit(main())
