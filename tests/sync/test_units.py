"""Pure parts of the sync layer: config, collapse, pacing, packing to vendor limits, signatures."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.settings import ConfigError
from liveprofile.sync.config import SyncConfig, parse_destinations
from liveprofile.sync.destinations import make_destination
from liveprofile.sync.destinations.braze import BrazeDestination
from liveprofile.sync.destinations.klaviyo import KlaviyoDestination
from liveprofile.sync.destinations.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookDestination,
    sign,
    verify_signature,
)
from liveprofile.sync.model import Change, Item, collapse, parse_change
from liveprofile.sync.pacing import Pacer, backoff

CFG = {
    "hook": {"type": "webhook", "url": "http://h/", "secret_env": "S", "max_items": 3},
    "braze": {"type": "braze", "url": "http://b", "api_key": "k", "channel": "email", "require_consent": True},
    "klav": {"type": "klaviyo", "url": "http://k", "api_key": "k", "fields": ["email", "cart_value"]},
}


def dests() -> dict:
    return parse_destinations(orjson.dumps(CFG).decode(), {"S": "sec"})


def test_config_parses_and_resolves_secrets() -> None:
    d = dests()
    assert d["hook"].secret == "sec" and d["hook"].url == "http://h" and d["hook"].max_items == 3
    assert d["braze"].require_consent and d["klav"].fields == ("email", "cart_value")
    assert d["klav"].max_bytes == 5_000_000
    assert "sec" not in repr(d["hook"])  # secrets stay out of logs


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        ('{"x": {"type": "smtp", "url": "http://a"}}', "type must be"),
        ('{"x": {"type": "webhook", "url": "http://a"}}', "secret"),
        ('{"x": {"type": "braze", "url": "ftp://a", "api_key": "k"}}', "url"),
        ('{"x": {"type": "braze", "url": "http://a", "api_key_env": "MISSING"}}', "MISSING"),
        ('{"x": {"type": "braze", "url": "http://a", "api_key": "k", "batchsize": 5}}', "unknown option"),
        ('{"x": {"type": "braze", "url": "http://a", "api_key": "k", "require_consent": true}}', "channel"),
        ('{"bad name": {"type": "braze", "url": "http://a", "api_key": "k"}}', "name"),
        ("[1]", "JSON object"),
        ("{", "not valid JSON"),
    ],
)
def test_config_errors(raw: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        parse_destinations(raw, {})


def test_config_from_file_and_values(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "d.json"
    f.write_text(orjson.dumps({"h": {"type": "webhook", "url": "http://x", "secret": "s"}}).decode())
    cfg = SyncConfig.from_values({"LIVEPROFILE_SYNC_DESTINATIONS": str(f), "LIVEPROFILE_SYNC_LEASE_TTL": "3",
                                  "LIVEPROFILE_SYNC_METRICS_PORT": "0", "LIVEPROFILE_SYNC_DEAD_LETTER_MAXLEN": "10"})  # fmt: skip
    assert list(cfg.destinations) == ["h"] and cfg.lease_ttl == 3 and cfg.consumer


def test_parse_change_entries() -> None:
    c = parse_change("s", "7-1", {"user_id": "u", "version": "4", "changed": "{}", "deleted": "1"})
    assert c.deleted and c.changed == {} and c.ms == 7
    item = Item("u", 9, 8, {"a": "1"})
    r = parse_change("redrive", "8-0", {"item": item.to_json().decode()})
    assert r.redrive == item and r.version == 9
    with pytest.raises(ValueError, match="unreadable"):
        parse_change("s", "1-0", {"user_id": "u", "version": "x"})


changes_st = st.lists(
    st.tuples(st.sampled_from("abc"), st.dictionaries(st.sampled_from(["f", "g", "h"]), st.text(max_size=3), max_size=2), st.booleans()),
    max_size=30,
)


@given(changes_st)
@settings(max_examples=100, deadline=None)
def test_collapse_equals_sequential_application(spec: list) -> None:  # type: ignore[type-arg]
    versions: dict[str, int] = {}
    changes = []
    for i, (uid, changed, has_event) in enumerate(spec):
        versions[uid] = versions.get(uid, 0) + 1
        changes.append(Change(("s", f"{i}-0"), uid, versions[uid], changed, {"name": "E"} if has_event else None))
    shuffled = changes[:]
    random.Random(len(spec)).shuffle(shuffled)
    items = {it.user_id: it for it in collapse(shuffled)}
    for uid, last in versions.items():
        state: dict[str, str] = {}
        events = []
        for c in changes:
            if c.user_id == uid:
                state.update(c.changed)
                if c.event:
                    events.append(f"{uid}:{c.version}")
        it = items[uid]
        assert (it.from_version, it.version, it.entries) == (1, last, last)
        assert it.changed == state and [e["id"] for e in it.events] == events


def test_collapse_deletion_is_sticky() -> None:
    cs = [Change(("s", "1-0"), "u", 1, {"a": "1"}, {"name": "E"}), Change(("s", "2-0"), "u", 2, {}, None, True),
          Change(("s", "3-0"), "u", 3, {"a": "2"})]  # fmt: skip
    (it,) = collapse(cs)
    assert it.deleted and it.changed == {} and it.events == [] and it.version == 2


def test_pacer_slows_down_before_zero_and_obeys_retry_after() -> None:
    t = [0.0]
    p = Pacer(clock=lambda: t[0])
    p.observe(200, {"ratelimit-limit": "100", "ratelimit-remaining": "50", "ratelimit-reset": "10"})
    assert p.delay() == 0  # plenty left
    p.observe(200, {"ratelimit-limit": "100", "ratelimit-remaining": "5", "ratelimit-reset": "10"})
    assert p.delay() == pytest.approx(2.0)  # 5 left for 10 s: one every 2 s
    p.observe(200, {"ratelimit-limit": "100", "ratelimit-remaining": "0", "ratelimit-reset": "7"})
    assert p.delay() == pytest.approx(7.0)
    t[0] = 8.0
    p.observe(429, {"retry-after": "3"})
    assert p.delay() == pytest.approx(3.0)
    s = Pacer(rate_per_s=4, clock=lambda: t[0])
    s.started()
    assert s.delay() == pytest.approx(0.25)


class _Fixed(random.Random):
    """A "random" source that always answers ``x`` (the ends of the jitter range)."""

    def __init__(self, x: float) -> None:
        super().__init__(0)
        self.x = x

    def random(self) -> float:
        return self.x


#: ceiling of attempt n = 1..11 for base 0.5 s, cap 30 s (min(cap, base * 2 ** (n - 1))), written out
CEILINGS = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0, 30.0]


def test_backoff_each_attempt_within_its_own_bounds() -> None:
    """Attempt n waits between half and all of its own ceiling ("equal jitter"), both ends reached."""
    for n, ceiling in enumerate(CEILINGS, start=1):
        assert backoff(n, 0.5, 30, _Fixed(0.0)) == pytest.approx(ceiling / 2), n
        assert backoff(n, 0.5, 30, _Fixed(1.0)) == pytest.approx(ceiling), n
        rng = random.Random(n)
        d = [backoff(n, 0.5, 30, rng) for _ in range(50)]
        assert all(ceiling / 2 <= x <= ceiling for x in d), (n, min(d), max(d))
        assert len({round(x, 9) for x in d}) == len(d)  # jittered
    assert backoff(1000, 0.5, 30, _Fixed(1.0)) == 30  # huge attempt numbers stay capped


def items(n: int, events: int = 0) -> list[Item]:
    return [Item(f"u{i}", 2, 1, {"email": f"u{i}@x.co", "cart_value": "1.50", "interests": '{"shoes": 1}'},
                 [{"name": "E", "id": f"u{i}:{j}", "ts": "2024-01-01T00:00:00Z"} for j in range(events)]) for i in range(n)]  # fmt: skip


def test_webhook_batches_signature_and_idempotency() -> None:
    d = make_destination(dests()["hook"])
    assert isinstance(d, WebhookDestination)
    reqs = d.build(items(7))
    assert [len(r.items) for r in reqs] == [3, 3, 1]
    h = d.headers(reqs[0])
    assert verify_signature("sec", h[TIMESTAMP_HEADER], reqs[0].body, h[SIGNATURE_HEADER])
    assert not verify_signature("sec", h[TIMESTAMP_HEADER], reqs[0].body + b" ", h[SIGNATURE_HEADER])
    assert not verify_signature("sec", str(int(h[TIMESTAMP_HEADER]) - 3600), reqs[0].body, h[SIGNATURE_HEADER])
    assert d.build(items(7))[0].idempotency_key == reqs[0].idempotency_key  # stable across retries
    assert reqs[0].idempotency_key == "cabf83baebf488e275da56d860d5472f"  # sha256("u0:2|u1:2|u2:2")[:32]
    doc = orjson.loads(reqs[0].body)
    assert [i["idempotency_key"] for i in doc["items"]] == ["u0:2", "u1:2", "u2:2"]


def test_braze_counts_every_object() -> None:
    d = BrazeDestination(dests()["braze"])
    reqs = d.build(items(100, events=2))  # 3 objects per user
    for r in reqs:
        doc = orjson.loads(r.body)
        assert len(doc["attributes"]) + len(doc["events"]) <= 75
    assert sum(len(r.items) for r in reqs) == 100
    attrs = orjson.loads(reqs[0].body)["attributes"][0]
    assert attrs == {"external_id": "u0", "email": "u0@x.co", "cart_value": 1.5, "interests": {"shoes": 1}, "lp_version": 2}
    gone = d.build([Item(f"d{i}", 1, 1, deleted=True) for i in range(120)])
    assert [len(orjson.loads(r.body)["external_ids"]) for r in gone] == [50, 50, 20]


def test_klaviyo_limits_and_field_allow_list() -> None:
    d = KlaviyoDestination(dests()["klav"])
    reqs = d.build(items(10_500, events=1) + [Item("gone", 3, 3, deleted=True)])
    kinds = [r.kind for r in reqs]
    assert kinds.count("profiles") == 2 and kinds.count("events") == 11 and kinds.count("delete") == 1
    for r in reqs:
        assert len(r.body) <= 5_000_000
        assert r.url.startswith("http://k/api/")
    prof = orjson.loads(reqs[0].body)["data"]["attributes"]["profiles"]["data"][0]["attributes"]
    assert prof == {"external_id": "u0", "email": "u0@x.co", "properties": {"cart_value": 1.5, "lp_version": 2}}
    h = d.headers(reqs[0])
    assert h["authorization"] == "Klaviyo-API-Key k" and h["revision"]


def test_webhook_signature_fixed_vectors() -> None:
    """The signature against vectors computed outside the code (hmac-sha256 of "{ts}." + body)."""
    assert sign("s3cret", 1700000000, b"{}") == "v1=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
    assert sign("sec", 1700000000, b'{"a":1}') == "v1=365103082ce111aeb294935f093807c734de5f29cca9913ba4cac5eb17f108e3"
    assert verify_signature("sec", "1700000000", b'{"a":1}', sign("sec", 1700000000, b'{"a":1}'), now=1700000100)
    assert not verify_signature("sec", "1700000000", b'{"a":1}', sign("sec", 1700000000, b'{"a":1}'), now=1700000301)


def test_klaviyo_never_sends_null() -> None:
    cfg = parse_destinations('{"k": {"type": "klaviyo", "url": "http://k", "api_key": "k", "clear": "skip"}}', {})["k"]
    it = Item("u", 2, 2, {"top_category": "", "email": "", "cart_value": "3"})
    assert KlaviyoDestination(cfg).skipped_clears([it]) == 2
    (req,) = KlaviyoDestination(cfg).build([it])
    assert b"null" not in req.body
