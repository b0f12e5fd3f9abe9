"""The source debugger in a real headless Chromium: the API's ``/debugger`` page, live over
server-sent events, fed by the real collector's tap (``LIVEPROFILE_DEBUGGER=on``) and the real
dataflow's change feed.

* with the API token the page shows, as they arrive, an accepted event (its write key by its hash
  label, its e-mail masked, trait names without values), a rejected one with its reason, and the
  profile change the accepted one made — and never the write key or the raw e-mail;
* without a token (or a wrong one, or a forged ticket) the stream is 401 and the page shows no row;
* ``liveprofile forget`` scrubs the user's tap entries.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis

from liveprofile.admin.privacy import forget
from liveprofile.store.keys import Keys
from tests.browser.conftest import SERVER_KEY
from tests.procs import Proc, base_env, start_collector, start_dataflow, wait_for
from tests.redis_server import RedisServer, free_port

TOKEN = "debugger-token-0123456789"
K = Keys("lp")
TAP = "lp:debug-events"  # Keys.debug_events
KEY_LABEL = "key:" + hashlib.sha256(SERVER_KEY.encode()).hexdigest()[:8]  # how the debugger names the write key


@dataclass
class Stack:
    collector: str
    api: str
    r: redis.Redis


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("debugger")
    srv = RedisServer(tmp / "redis", free_port()).start()
    env = base_env(srv.url, LIVEPROFILE_WRITE_KEYS=SERVER_KEY, LIVEPROFILE_DEBUGGER="on", LIVEPROFILE_API_TOKENS=TOKEN)
    coll, url = start_collector(env, tmp)
    df = start_dataflow(env, tmp)
    port = free_port()
    api = Proc([sys.executable, "-m", "liveprofile.api", "--port", str(port)], env, tmp / "api.log")
    api_url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert api.alive(), api.output()
        try:
            return httpx.get(api_url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 60, what="api")
    client = redis.Redis.from_url(srv.url)
    try:
        yield Stack(url, api_url, client)
    finally:
        client.close()
        api.stop()
        df.interrupt()
        coll.stop()
        srv.stop()


def _send(stack: Stack, batch: list[dict[str, Any]]) -> dict[str, Any]:
    resp = httpx.post(stack.collector + "/v1/batch", json={"batch": batch}, auth=(SERVER_KEY, ""), timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_page_shows_accepted_and_rejected_events_and_the_profile_change_live(stack: Stack, browser: Any) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{stack.api}/debugger#token={TOKEN}")
        page.wait_for_selector("#status[data-state=live]", timeout=30_000)
        assert page.locator("#rows tr").count() == 0  # nothing was sent yet
        answer = _send(stack, [
            {"type": "identify", "userId": "u-dbg", "messageId": "m-dbg-1",
             "traits": {"email": "ann.lee@example.com", "first_name": "Ann", "plan": "pro"}},
            {"type": "track", "userId": "u-dbg", "messageId": "m-dbg-2", "properties": {"x": 1}},  # no event name
        ])  # fmt: skip
        assert answer.get("rejected"), answer
        accepted = page.locator("tr.event[data-status=accepted][data-mid=m-dbg-1]")
        accepted.wait_for(timeout=30_000)
        rejected = page.locator("tr.event[data-status=rejected][data-mid=m-dbg-2]")
        rejected.wait_for(timeout=30_000)
        assert "missing_event" in rejected.inner_text()
        row = accepted.inner_text()
        assert KEY_LABEL in row and "u-dbg" in row and "identify" in row
        assert "a***@example.com" in row and "first_name" in row and "plan" in row
        change = page.locator("tr.change[data-user=u-dbg]").first
        change.wait_for(timeout=60_000)  # the dataflow wrote the profile: its change-feed entry
        assert "email" in change.inner_text()
        text = page.content()
        assert SERVER_KEY not in text and "ann.lee@example.com" not in text  # never the key, never the raw e-mail
        assert "first_name=<text>" in row and "Ann" not in text and "=pro" not in text  # names, not values
    finally:
        page.close()


def test_without_a_token_the_stream_is_refused_and_the_page_shows_nothing(stack: Stack, browser: Any) -> None:
    _send(stack, [{"type": "track", "userId": "u-other", "event": "Seen", "messageId": "m-dbg-3"}])
    wait_for(lambda: stack.r.xlen(TAP) > 0, 10, what="the tap")
    for url in ("/v1/debugger/events", "/v1/debugger/events?ticket=9999999999.abc.def", "/v1/debugger/ticket"):
        resp = httpx.get(stack.api + url, headers={"Accept": "text/event-stream"}, timeout=10)
        assert resp.status_code == 401 and resp.json()["error"] == "unauthorized", (url, resp.status_code)
    wrong = httpx.get(stack.api + "/v1/debugger/ticket", headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    assert wrong.status_code == 401
    page = browser.new_page()
    try:
        page.goto(f"{stack.api}/debugger")
        page.fill("#token", "not-the-token")
        page.click("button[type=submit]")
        page.wait_for_selector("#status[data-state=unauthorized]", timeout=30_000)
        assert page.locator("#rows tr").count() == 0
        assert "m-dbg-3" not in page.content()
    finally:
        page.close()


def test_forget_scrubs_the_users_debugger_entries(stack: Stack) -> None:
    _send(stack, [{"type": "track", "userId": "u-gone", "event": "Seen", "messageId": "m-dbg-4"}])

    def tapped() -> set[str]:  # the user ids of the tapped events (one stream entry per request, field d)
        return {e.get("uid", "") for _, f in stack.r.xrange(TAP) for e in orjson.loads(f.get(b"d", b"[]"))}

    wait_for(lambda: "u-gone" in tapped(), 10, what="the tap entry")
    stats = forget(stack.r, K, 4, "u-gone")
    assert stats.get("debug_events", 0) >= 1
    assert "u-gone" not in tapped() and "u-dbg" in tapped()
