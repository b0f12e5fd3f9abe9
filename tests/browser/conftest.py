"""Fixtures of the browser tests: the SDK packages from the npm registry, a real headless Chromium
(Debian's ``chromium``, driven by Playwright for Python — never a downloaded browser), a page
server and a collector + dataflow on other loopback ports (so every SDK request is cross-origin).

* :func:`node_modules` — ``npm ci`` into ``tests/browser/node_modules`` from the committed
  ``package-lock.json``; skipped when it is there and was installed from the same lock (the
  lock's SHA-256 is kept in ``node_modules/.liveprofile-lock``). Without ``npm``: the tests skip.
* :func:`pipeline` — one redis-server, collector (``LIVEPROFILE_CORS_ORIGINS`` = the page
  origin, a browser write key) and dataflow per module.
* :func:`page_server` — a static HTTP server for ``tests/browser`` (pages and the SDK bundles
  from ``node_modules``) on ``127.0.0.1``; the same server reached as ``localhost`` is another
  origin, one that is not allowed.
* :func:`browser` — Chromium launched with ``executable_path=/usr/bin/chromium`` and the flags
  this machine needs, a fresh user-data-dir per module.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from liveprofile.store.keys import Keys
from tests.procs import Proc, base_env, start_collector, start_dataflow
from tests.redis_server import RedisServer, free_port

HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("LIVEPROFILE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
BROWSER_KEY = "browser-pub-ajs-0123456789"
SERVER_KEY = "server-key-0123456789abcdef"
K = Keys("lp")


def npm_ci(root: Path = HERE) -> Path:
    """``root/node_modules`` installed from ``root/package-lock.json`` (cached by the lock's hash)."""
    lock = root / "package-lock.json"
    stamp = root / "node_modules" / ".liveprofile-lock"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return root / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (dev.sh setup installs it)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=root, check=True, timeout=600)  # noqa: S603
    stamp.write_text(digest)
    return root / "node_modules"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    return npm_ci()


@dataclass
class Pipeline:
    collector: str  # http://127.0.0.1:port
    r: redis.Redis
    collector_proc: Proc
    dataflow: Proc

    def profile(self, user_id: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(K.profile(user_id)).items()}

    def buffered_ids(self) -> set[str]:
        """messageIds of every event the collector appended (any shard)."""
        import orjson

        out: set[str] = set()
        for shard in range(4):
            for _, f in self.r.xrange(K.events(shard)):
                if b"e" in f:
                    out.add(orjson.loads(f[b"e"]).get("messageId", ""))
        return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def page_server(node_modules: Path) -> Iterator[int]:
    """The port of a static server of ``tests/browser`` on 127.0.0.1 (pages are written into ``pages/``)."""
    (HERE / "pages").mkdir(exist_ok=True)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(HERE)))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, page_server: int) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("browser-pipeline")
    srv = RedisServer(tmp / "redis", free_port()).start()
    env = base_env(
        srv.url, LIVEPROFILE_WRITE_KEYS=SERVER_KEY, LIVEPROFILE_BROWSER_WRITE_KEYS=BROWSER_KEY,
        LIVEPROFILE_CORS_ORIGINS=f"http://127.0.0.1:{page_server}",
    )  # fmt: skip
    coll, url = start_collector(env, tmp)
    df = start_dataflow(env, tmp)
    client = redis.Redis.from_url(srv.url)
    try:
        yield Pipeline(url, client, coll, df)
    finally:
        client.close()
        df.interrupt()
        coll.stop()
        srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (dev.sh setup installs Debian's chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        )  # fmt: skip
        try:
            yield ctx
        finally:
            ctx.close()
