"""Fixtures for the collector's edge tests: real collector processes over loopback, real redis-server."""

from __future__ import annotations

import base64
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from liveprofile.store.keys import Keys
from tests.procs import Proc, base_env, wait_for
from tests.redis_server import free_port

K = Keys("lp")
WRITE_KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
PIXEL_NEW = "pixel-secret-new-0123456789"
PIXEL_OLD = "pixel-secret-old-0123456789"
HOOK_ESP = "whsec-esp-0123456789abcdef"
HOOK_ESP_OLD = "whsec-esp-old-0123456789ab"
HOOK_SHOP = "whsec-shop-0123456789abcdef"

SECURE_ENV = {
    "LIVEPROFILE_WRITE_KEYS": f"{WRITE_KEY},{OTHER_KEY}",
    "LIVEPROFILE_PIXEL_SECRET": f"{PIXEL_NEW},{PIXEL_OLD}",
    "LIVEPROFILE_PIXEL_MAX_AGE": "1h",
    "LIVEPROFILE_WEBHOOK_SECRETS": orjson.dumps({"esp": [HOOK_ESP, HOOK_ESP_OLD], "shop": HOOK_SHOP}).decode(),
    "LIVEPROFILE_WEBHOOK_TOLERANCE": "300",
}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def launch(env: dict[str, str], tmp: Path, *, log_level: str = "warning", name: str = "collector") -> tuple[Proc, str]:
    """Start ``liveprofile [--log-level L] collector`` and wait until it serves /metrics."""
    port = free_port()
    args = [sys.executable, "-m", "liveprofile.cli", "--log-level", log_level, "collector", "--port", str(port)]
    proc = Proc(args, env, tmp / f"{name}-{port}.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            msg = f"collector exited: {proc.output()}"
            raise RuntimeError(msg)
        try:
            return httpx.get(url + "/metrics", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, what="collector")
    return proc, url


@pytest.fixture
def start(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``start(**env)`` -> URL of a collector with SECURE_ENV plus ``env``; stopped after the test."""
    procs: list[Proc] = []

    def _start(**extra: str) -> str:
        proc, url = launch(base_env(redis_url, **{**SECURE_ENV, **extra}), tmp_path, name=f"collector{len(procs)}")
        procs.append(proc)
        return url

    yield _start
    for p in procs:
        p.stop()


@pytest.fixture
def secure(start: Callable[..., str]) -> str:
    return start()


def buffered(r: redis.Redis) -> list[dict]:
    out = []
    for i in range(4):
        out += [orjson.loads(f[b"e"]) for _, f in r.xrange(K.events(i))]
    return out


def dead(r: redis.Redis) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(K.dead_letter)]


def metric(text: str, name: str, **labels: str) -> float:
    """Value of one sample in Prometheus text (0 when absent)."""
    want = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if "{" in head:
            n, _, rest = head.partition("{")
            got = "{" + ",".join(sorted(rest.rstrip("}").split(","))) + "}"
        else:
            n, got = head, ""
        if n == name and got == want:
            return float(value)
    return 0.0


class FakeClock:
    """A settable clock for :class:`~liveprofile.collector.app.CollectorApp`'s ``monotonic`` (rate limits)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class InProcessCollector:
    """The real :class:`~liveprofile.collector.app.CollectorApp` under uvicorn (httptools) in a
    thread, on loopback, against a real redis-server, with an injected monotonic clock: what
    the collector process runs, minus the process boundary, so a test can move time exactly."""

    def __init__(self, redis_url: str, monotonic: Callable[[], float], **values: str) -> None:
        import threading
        import time

        import uvicorn

        from liveprofile.collector.app import CollectorApp
        from liveprofile.collector.config import CollectorConfig
        from liveprofile.settings import Settings, load_env

        env = {"LIVEPROFILE_REDIS_URL": redis_url, **SECURE_ENV, **values}
        self.app = CollectorApp(Settings.from_env(env), config=CollectorConfig.from_values(load_env(env)), monotonic=monotonic)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on", http="httptools", loop="asyncio"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:  # uvicorn sets it once the socket listens
            if time.monotonic() > deadline or not self.thread.is_alive():
                msg = "in-process collector did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def in_process(redis_url: str) -> Iterator[Callable[..., InProcessCollector]]:
    """``in_process(clock, **env)`` -> a started :class:`InProcessCollector`; stopped after the test."""
    made: list[InProcessCollector] = []

    def make(clock: Callable[[], float], **values: str) -> InProcessCollector:
        c = InProcessCollector(redis_url, clock, **values)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
