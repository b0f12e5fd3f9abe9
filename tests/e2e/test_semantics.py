"""End to end (issue 12 item 3): refunds, cancellations, an unsubscribe, consent and Apple MPP
opens go through ``liveprofile replay`` into the buffer and the real dataflow process, and the
profile hash in real Redis holds SPEC 4's fields. Failed on main (8fe6588): none of
refund_total / cancelled_total / revenue_net / email_unsubscribed / consent /
email_opens_machine were written, and the proxy's opens counted as human opens."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import redis

from tests.e2e.helpers import K, dead_letters
from tests.procs import base_env, start_dataflow

T0 = 1_714_564_800  # 2024-05-01T12:00:00Z, seconds
MPP_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


def _events() -> list[dict]:
    evs: list[dict] = []

    def track(event: str, t: int, uid: str = "u1", context: dict | None = None, **props: object) -> None:
        evs.append({"type": "track", "event": event, "userId": uid, "messageId": f"m{len(evs)}", "timestamp": T0 + t,
                    "receivedAt": T0 + t, "properties": props, "context": context or {}})  # fmt: skip

    track("Order Refunded", 5, order_id="o2")  # before its order: the whole order, once it arrives
    track("Order Completed", 10, order_id="o1", revenue=100)
    track("Order Completed", 20, order_id="o2", total=40.10)
    track("Order Refunded", 30, order_id="o1", total=30, refund_id="r1")
    track("Order Refunded", 31, order_id="o1", total=30, refund_id="r1")  # the same refund again
    track("Order Cancelled", 40, order_id="o1")  # the remaining 70
    track("Order Completed", 50, order_id="o3", revenue=9.99)
    track("Email Delivered", 60, email_id="e1")
    track("Email Opened", 61, context={"userAgent": MPP_UA}, email_id="e1")  # Apple's proxy
    track("Email Opened", 3600, context={"userAgent": MPP_UA + " Version/17.4 Safari/605.1.15"}, email_id="e1")  # the person
    track("Unsubscribed", 4000, email_id="e1")
    evs.append({"type": "page", "userId": "u1", "messageId": "p1", "timestamp": T0 + 100, "receivedAt": T0 + 100,
                "context": {"consent": {"categoryPreferences": {"email": True, "ads": True}}}})  # fmt: skip
    evs.append({"type": "identify", "userId": "u1", "messageId": "p2", "timestamp": T0 + 200, "receivedAt": T0 + 200,
                "traits": {"email": "ann@example.com"},
                "context": {"consentManagement": {"provider": "oneTrust", "deniedConsentIds": ["ads"]}}})  # fmt: skip
    return evs


def test_refunds_unsubscribe_consent_and_machine_opens_reach_the_profile(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in _events()) + b"\n")
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z")
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "replay", str(path), "--quiet"], env=env,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert '"accepted":13' in out.stdout, out
    df = start_dataflow(env, tmp_path, flow="dataflows.profiles:get_flow(stop_at_end=True)")
    assert df.wait(120) == 0, df.output()
    p = {k.decode(): v.decode() for k, v in r.hgetall(K.profile("u1")).items()}
    assert dead_letters(r) == []
    got = {k: p.get(k) for k in ("purchase_count", "revenue_total", "refund_total", "cancelled_total", "revenue_net",
                                 "email_opens", "email_opens_machine", "last_email_open_at", "email_unsubscribed",
                                 "unsubscribed_at", "rfm_m")}  # fmt: skip
    assert got == {
        "purchase_count": "3", "revenue_total": "150.09", "refund_total": "70.10", "cancelled_total": "70.00",
        "revenue_net": "9.99", "email_opens": "1", "email_opens_machine": "1",
        "last_email_open_at": "2024-05-01T13:00:00.000Z", "email_unsubscribed": "1",
        "unsubscribed_at": "2024-05-01T13:06:40.000Z", "rfm_m": "1",
    }  # fmt: skip
    assert orjson.loads(p["consent"]) == {"ads": False, "email": True}
