"""Server SDKs, unchanged, against a real collector (issue 13 item 2): ``@segment/analytics-node``
(run with node), ``rudder-sdk-python`` and ``segment-analytics-python``.

Each sends one identify and :data:`EVENTS` tracks in its own batching (the Python clients gzip
their batches, as they do by default or when asked: ``gzip=True``). The collector starts with its
backlog full (``LIVEPROFILE_MAX_BACKLOG`` reached by earlier events and nothing read yet), so the
SDK's first batch is refused ``503 backlog_full`` with ``Retry-After`` — a real collector
condition. Once that refusal is seen in the collector's metrics, the backlog drains (the dataflow's
progress is reported, as :mod:`tests.integration.test_collector` does) and the SDK's own retry
must deliver: every event lands exactly once (the refused request kept nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from liveprofile.store.keys import Keys
from tests.browser.conftest import HERE as NODE_ROOT
from tests.browser.conftest import npm_ci
from tests.procs import base_env, start_collector, wait_for

K = Keys("lp")
KEY = "test-key"
EVENTS = 6
BACKLOG = 10


@pytest.fixture
def full_collector(redis_url: str, r: redis.Redis, tmp_path: Path) -> Iterator[str]:
    """A collector whose backlog is exactly full (BACKLOG unread events of another user)."""
    proc, url = start_collector(base_env(redis_url, LIVEPROFILE_MAX_BACKLOG=str(BACKLOG)), tmp_path)
    batch = [{"type": "track", "userId": "filler", "event": "Product Viewed", "messageId": f"f{i}"} for i in range(BACKLOG)]
    assert httpx.post(url + "/v1/batch", json={"batch": batch}, auth=(KEY, "")).status_code == 200
    yield url
    proc.stop()


def backlog_refusals(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith('liveprofile_collector_events_rejected_total{reason="backlog_full"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def sdk_events(r: redis.Redis, user: str) -> list[dict]:
    out = []
    for shard in range(4):
        out += [ev for _, f in r.xrange(K.events(shard)) if (ev := orjson.loads(f[b"e"])).get("userId") == user]
    return out


def run_through_a_full_backlog(url: str, r: redis.Redis, send: Callable[[], None], user: str) -> list[dict]:
    """Run ``send`` (the SDK's whole session) while the backlog is full; drain it after the first
    refusal; the events of ``user`` that landed."""
    done = threading.Event()
    failure: list[BaseException] = []

    def runner() -> None:
        try:
            send()
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=runner, daemon=True)
    t.start()
    wait_for(lambda: backlog_refusals(url) >= 1 or done.is_set(), 60, 0.1, what="the SDK's batch refused 503")
    assert backlog_refusals(url) >= 1, "the SDK's first batch was not refused"
    assert sdk_events(r, user) == []  # refused whole
    r.hset(K.buffer_progress, mapping={str(i): 10**6 for i in range(4)})  # the dataflow read everything
    t.join(150)
    assert done.is_set() and not failure, failure
    return sdk_events(r, user)


def check_exactly_once(events: list[dict]) -> None:
    assert len({e["messageId"] for e in events}) == len(events) == EVENTS + 1, events
    assert sorted(e["properties"]["i"] for e in events if e["type"] == "track") == list(range(EVENTS))
    # RudderStack's SDKs send identify traits in context.traits only (not at the top level; the
    # profile takes the email from there: tests/operators/test_events.py); here: the identify landed as sent
    traits = [e.get("traits") or e["context"]["traits"] for e in events if e["type"] == "identify"]
    assert [t["email"] for t in traits] == [events[0]["userId"] + "@example.com"]


@pytest.mark.parametrize("module", ["segment.analytics", "rudderstack.analytics"])
def test_python_sdks_batch_gzip_and_retry_a_503(full_collector: str, r: redis.Redis, module: str) -> None:
    lib = pytest.importorskip(module)
    user = module.split(".")[0] + "-1"
    errors: list[str] = []

    def send() -> None:
        client = lib.Client(KEY, host=full_collector, gzip=True, sync_mode=False, max_retries=10,
                            upload_size=100, on_error=lambda e, batch: errors.append(repr(e)))  # fmt: skip
        client.identify(user_id=user, traits={"email": f"{user}@example.com"})
        for i in range(EVENTS):
            client.track(user_id=user, event="Product Viewed", properties={"i": i, "product_id": f"p{i}"})
        client.flush()
        client.join()

    events = run_through_a_full_backlog(full_collector, r, send, user)
    check_exactly_once(events)
    assert errors == [] or all("503" in e or "backlog" in e for e in errors), errors


def test_analytics_node_batches_and_retries_a_503(full_collector: str, r: redis.Redis) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    npm_ci()
    out: list[str] = []

    def send() -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "COLLECTOR": full_collector, "WRITE_KEY": KEY, "EVENTS": str(EVENTS)}
        proc = subprocess.run([node, str(NODE_ROOT / "analytics_node.js")], env=env, cwd=NODE_ROOT,  # noqa: S603
                              capture_output=True, text=True, timeout=140, check=True)  # fmt: skip
        out.append(proc.stdout)

    events = run_through_a_full_backlog(full_collector, r, send, "node-1")
    check_exactly_once(events)
    assert json.loads(out[0].strip().splitlines()[-1]) == {"errors": []}


def auth_failures(url: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(url + "/metrics").text.splitlines()
               if line.startswith("liveprofile_collector_auth_failures_total{"))  # fmt: skip


@pytest.mark.parametrize("module", ["segment.analytics", "rudderstack.analytics"])
def test_python_sdks_read_the_refusal_and_do_not_retry_a_4xx(full_collector: str, module: str) -> None:
    """A 401 (unknown write key) reaches the SDK as its own ``APIError`` with our code, and the SDK
    gives up at once as it does for Segment's 4xx: both read ``payload["code"]`` from an error
    answer (without it rudder-sdk-python raised ``KeyError`` and retried the 401 until its budget ran out)."""
    lib = pytest.importorskip(module)
    errors: list[BaseException] = []
    before = auth_failures(full_collector)
    client = lib.Client("not-a-key", host=full_collector, sync_mode=False, max_retries=4,
                        on_error=lambda e, batch: errors.append(e))  # fmt: skip
    client.track(user_id="u-4xx", event="Product Viewed", properties={"product_id": "p"})
    client.flush()
    client.join()
    assert len(errors) == 1, errors
    assert type(errors[0]).__name__ == "APIError" and errors[0].status == 401 and errors[0].code == "unauthorized", repr(errors[0])
    assert auth_failures(full_collector) - before == 1  # one request: no retry of a 4xx
