"""Traits end to end, through real processes: ``first_name`` sent by the Segment Python SDK's
identify (and ``lastName`` in a RudderStack-style ``context.traits`` over plain HTTP) reaches the
profile hash, the profile API, a content template ("Hi {{ traits.first_name }}") and the fake
Klaviyo and Braze request bodies under their own field names; a deny-listed trait reaches none
of them; an older identify arriving later does not overwrite a newer trait."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import redis

from tests.api.conftest import ApiServer
from tests.procs import base_env, start_collector, start_dataflow
from tests.sync.fakes import FakeVendor
from tests.sync.helpers import dest, start_syncer, wait_until

from .helpers import K


def test_first_name_reaches_profile_api_template_and_platforms(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    from segment.analytics import Client

    tpl = tmp_path / "templates"
    tpl.mkdir()
    (tpl / "hi.html").write_text("<p>Hi {{ traits.first_name }} {{ traits.last_name }}</p>")
    env = base_env(redis_url, LIVEPROFILE_TRAITS_DENY="password")
    klav, braze = FakeVendor("klaviyo", job_polls=0), FakeVendor("braze")
    coll, url = start_collector(env, tmp_path)
    df = start_dataflow(env, tmp_path)
    sync = start_syncer(redis_url, {**dest("klav", klav), **dest("braze", braze)}, tmp_path, "sync1")
    api = None
    try:
        now = time.time()
        client = Client("test-key", host=url, gzip=True, sync_mode=True, max_retries=2)
        client.identify(user_id="u1", traits={"email": "ann@example.com", "firstName": "Ann", "plan": "pro",
                                             "password": "hunter2"})  # fmt: skip
        # an older identify, sent afterwards: its first_name loses to the newer one by event time
        client.identify(user_id="u1", traits={"first_name": "Old"}, timestamp=_dt(now - 3600))
        client.flush()
        resp = httpx.post(url + "/v1/track", auth=("test-key", ""), json={
            "userId": "u1", "event": "Product Viewed", "messageId": "rs-1",
            "context": {"traits": {"lastName": "Lee", "phone": "+4712345678"}}})  # fmt: skip
        assert resp.status_code == 200, resp.text

        def traits() -> dict:
            raw = r.hget(K.profile("u1"), "traits")
            return orjson.loads(raw) if raw else {}

        wait_until(lambda: traits().get("last_name") == "Lee" and r.hget(K.profile("u1"), "event_count") == b"3",
                   60, "traits on the profile")  # fmt: skip
        assert traits() == {"first_name": "Ann", "last_name": "Lee", "phone": "+4712345678", "plan": "pro"}
        assert r.hget(K.profile("u1"), "email") == b"ann@example.com"

        api = ApiServer(redis_url, LIVEPROFILE_API_TEMPLATES=str(tpl))
        body = api.get("/v1/profiles/u1").json()
        assert body["traits"]["first_name"] == "Ann", body
        html = api.get("/v1/content/u1/hi")
        assert html.status_code == 200 and "<p>Hi Ann Lee</p>" in html.text, html.text

        def applied(v: FakeVendor, name: str) -> dict:
            with v.lock:
                return next((rec["fields"] for rec in reversed(v.applied) if rec["user_id"] == "u1" and name in rec["fields"]), {})

        wait_until(lambda: applied(klav, "last_name") and applied(braze, "last_name"), 60, "traits at the platforms")
        k, b = applied(klav, "last_name"), applied(braze, "last_name")
        assert k["first_name"] == "Ann" and k["phone_number"] == "+4712345678" and k["plan"] == "pro"
        assert b["first_name"] == "Ann" and b["phone"] == "+4712345678" and b["plan"] == "pro"
        assert klav.violations == [] and braze.violations == []
        for v in (klav, braze):
            with v.lock:
                assert "hunter2" not in repr(v.applied)
        assert not any(b"hunter2" in v for h in [r.hgetall(K.profile("u1"))] for v in h.values())
    finally:
        if api is not None:
            api.stop()
        sync.stop()
        df.interrupt()
        coll.stop()
        klav.close()
        braze.close()


def _dt(t: float):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, tz=UTC)
