"""In-process units of the collector's edge: token buckets, pixel and webhook signatures,
IP truncation in prepare, and the edge configuration."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.buffer.ingest import prepare, truncate_ip
from liveprofile.collector.config import CollectorConfig, parse_webhook_secrets
from liveprofile.collector.ratelimit import TokenBuckets, retry_after_header
from liveprofile.collector.signing import (
    PixelError,
    PixelOpen,
    WebhookAuthError,
    parse_pixel_query,
    pixel_message,
    pixel_message_id,
    pixel_signature,
    sign_webhook,
    signed_pixel_url,
    verify_pixel,
    verify_webhook,
)
from liveprofile.settings import ConfigError, load_env
from liveprofile.store.keys import Keys
from operators.events import Limits

# ------------------------------------------------------------------- token buckets


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_bucket_counts_events_and_refuses_whole_requests() -> None:
    c = Clock()
    b = TokenBuckets(rate=100, burst=500, clock=c)
    assert b.take(b"k", 500) == 0.0  # one full Segment batch fits the burst
    assert b.take(b"k", 1) == pytest.approx(0.01)
    c.t += 1.0
    assert b.take(b"k", 100) == 0.0 and b.take(b"k", 1) > 0
    assert b.tokens(b"other") == 500  # per key
    wait = b.take(b"k", 200)
    assert wait == pytest.approx(2.0) and b.tokens(b"k") == pytest.approx(0)  # refused: nothing taken
    b.refund(b"k", 50)
    assert b.tokens(b"k") == pytest.approx(50)


def test_bucket_default_burst_fits_a_batch() -> None:
    assert TokenBuckets(rate=10).burst == 500 and TokenBuckets(rate=2000).burst == 2000
    with pytest.raises(ValueError):
        TokenBuckets(rate=0)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0.5, max_value=1000),
    st.floats(min_value=1, max_value=2000),
    st.lists(st.tuples(st.floats(min_value=0, max_value=5), st.integers(1, 3000)), max_size=60),
)
def test_bucket_never_admits_more_than_burst_plus_rate_times_time(rate: float, burst: float, steps: list[tuple[float, int]]) -> None:
    c = Clock()
    b = TokenBuckets(rate=rate, burst=burst, clock=c)
    admitted, elapsed, biggest = 0, 0.0, 0
    for dt, cost in steps:
        c.t += dt
        elapsed += dt
        wait = b.take(b"k", cost)
        assert wait >= 0
        if wait == 0:
            admitted += cost
            biggest = max(biggest, cost)
        else:  # waiting as told is enough for a request that fits the burst
            probe = TokenBuckets(rate=rate, burst=burst, clock=c)
            probe._state = {b"k": list(b._state[b"k"])}
            c.t += wait + 1e-6
            assert probe.take(b"k", cost) == 0.0
            c.t -= wait + 1e-6
    # over-burst requests run into debt, which later requests repay first
    assert admitted <= max(b.burst, biggest) + rate * elapsed + 1e-6 * (1 + admitted)


def test_retry_after_header() -> None:
    assert [retry_after_header(x) for x in (0.0001, 0.5, 1.0, 1.01, 59.2)] == [b"1", b"1", b"1", b"2", b"60"]


# -------------------------------------------------------------------------- pixel


def _params(url: str) -> dict[str, str]:
    return parse_pixel_query(url.split("?", 1)[1].encode())


def test_pixel_round_trip_and_every_tampering_is_detected() -> None:
    key = b"k" * 20
    url = signed_pixel_url("http://c", key, "ann@x.io", "spring & summer", "e=1", ts=1000)
    p = _params(url)
    assert verify_pixel(p, [key], now=1100, max_age_s=3600) == PixelOpen("ann@x.io", "spring & summer", "e=1", 1000)
    for k in ("user", "campaign", "email_id"):
        with pytest.raises(PixelError, match="invalid_signature"):
            verify_pixel({**p, k: p[k] + "x"}, [key], now=1100, max_age_s=3600)
    with pytest.raises(PixelError, match="invalid_signature"):
        verify_pixel({**p, "ts": "1001"}, [key], now=1100, max_age_s=3600)
    with pytest.raises(PixelError, match="invalid_signature"):
        verify_pixel(p, [b"other-key-000000"], now=1100, max_age_s=3600)
    with pytest.raises(PixelError, match="invalid_signature"):
        verify_pixel(p, [], now=1100, max_age_s=3600)
    assert verify_pixel({**p, "sig": p["sig"].upper()}, [key], now=1100, max_age_s=3600).user_id == "ann@x.io"
    assert verify_pixel(p, [b"new-key-00000000", key], now=1100, max_age_s=0).ts == 1000  # rotation; 0 = no expiry
    with pytest.raises(PixelError, match="expired"):
        verify_pixel(p, [key], now=1000 + 3601, max_age_s=3600)
    with pytest.raises(PixelError, match="not_yet_valid"):
        verify_pixel(p, [key], now=1000 - 301, max_age_s=3600)


def test_pixel_canonical_message_is_unambiguous() -> None:
    # values that would collide under naive concatenation sign differently
    a = pixel_message("u&campaign=x", "", "e", 1)
    b = pixel_message("u", "x", "e", 1)
    c = pixel_message("u\n", "x", "e", 1)
    assert len({a, b, c}) == 3
    assert pixel_signature("k", "u", "x", "e", 1) != pixel_signature("k", "u", "x", "e", 2)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (b"", "missing_parameter"),
        (b"user=u&campaign=c&email_id=e&ts=1", "missing_parameter"),
        (b"user=u&user=v&campaign=c&email_id=e&ts=1&sig=0", "malformed"),
        (b"&".join([b"a=1"] * 20), "malformed"),
        (b"user=" + b"u" * 5000, "malformed"),
    ],
)
def test_pixel_query_refusals(query: bytes, reason: str) -> None:
    with pytest.raises(PixelError, match=reason):
        parse_pixel_query(query)


@pytest.mark.parametrize(
    "bad",
    [{"user": ""}, {"user": "u" * 257}, {"campaign": "c" * 257}, {"ts": "-5"}, {"ts": "1e9"}, {"ts": "١٢٣"}, {"ts": "9" * 13}, {"sig": "0" * 200}],
)
def test_pixel_malformed_values(bad: dict[str, str]) -> None:
    p = {"user": "u", "campaign": "c", "email_id": "e", "ts": "100", "sig": "00", **bad}
    with pytest.raises(PixelError, match="malformed"):
        verify_pixel(p, [b"k" * 16], now=100, max_age_s=0)


def test_pixel_message_id_buckets() -> None:
    o = PixelOpen("u", "c", "e", 5)
    ids = [pixel_message_id(o, t, 60) for t in (120.0, 150.0, 179.9, 180.0)]
    assert ids[0] == ids[1] == ids[2] != ids[3]
    assert pixel_message_id(o, 120.0, 60) != pixel_message_id(PixelOpen("u", "c", "e2", 5), 120.0, 60)
    assert len(ids[0]) <= 64 and ids[0].startswith("px-")


# ----------------------------------------------------------------------- webhooks


def test_webhook_verify() -> None:
    key = b"w" * 20
    body = b'{"type":"track"}'
    h = sign_webhook(key, body, ts=10_000).encode()
    assert verify_webhook(h, body, [key], now=10_100, tolerance_s=300) == 10_000
    assert verify_webhook(h.upper().replace(b"T=", b"t=").replace(b"V1=", b"v1="), body, [key], now=10_000, tolerance_s=1) == 10_000
    rotated = b"t=10000,v1=" + b"0" * 64 + b", " + h.split(b",")[1] + b",v0=zzz"
    assert verify_webhook(rotated, body, [b"x" * 16, key], now=10_000, tolerance_s=1) == 10_000
    cases = [
        (None, "missing_signature"), (b"", "missing_signature"), (b"   ", "missing_signature"),
        (b"t=10000", "invalid_signature"), (b"v1=" + b"0" * 64, "invalid_signature"),
        (b"t=1,t=2,v1=00", "invalid_signature"), (b"t=-1,v1=00", "invalid_signature"),
        (b"t=10000,v1=" + b"0" * 64, "invalid_signature"), (b"garbage", "invalid_signature"),
        (b"t=10000,v1=\xff\xfe", "invalid_signature"), (b"x" * 2000, "invalid_signature"),
    ]  # fmt: skip
    for header, code in cases:
        with pytest.raises(WebhookAuthError) as ei:
            verify_webhook(header, body, [key], now=10_000, tolerance_s=300)
        assert ei.value.code == code, header
    for now in (10_000 + 301, 10_000 - 301):
        with pytest.raises(WebhookAuthError) as ei:
            verify_webhook(h, body, [key], now=now, tolerance_s=300)
        assert ei.value.code == "stale_signature"
    with pytest.raises(WebhookAuthError) as ei:  # a forged old request is a forgery, not "stale"
        verify_webhook(sign_webhook(b"z" * 16, body, ts=1), body, [key], now=10_000, tolerance_s=300)
    assert ei.value.code == "invalid_signature"


def test_webhook_errors_never_echo_the_signature() -> None:
    key = b"w" * 20
    h = sign_webhook(key, b"{}", ts=1)
    for body, now in ((b"{} ", 1), (b"{}", 10**6)):
        with pytest.raises(WebhookAuthError) as ei:
            verify_webhook(h.encode(), body, [key], now=now, tolerance_s=300)
        assert h.split("v1=")[1] not in str(ei.value) and "w" * 20 not in str(ei.value)


# -------------------------------------------------------------------- IP truncation


@pytest.mark.parametrize(
    ("ip", "want"),
    [
        ("203.0.113.77", "203.0.113.0"), (" 203.0.113.77 ", "203.0.113.0"), ("10.0.0.0", "10.0.0.0"),
        ("203.0.113.77:8080", "203.0.113.0"), ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("[2001:db8:abcd:12::1]:443", "2001:db8:abcd::"), ("fe80::1%eth0", "fe80::"), ("::1", "::"),
        ("::ffff:198.51.100.9", "198.51.100.0"), ("", None), ("garbage", None), ("1.2.3.4, 5.6.7.8", None),
        ("999.1.1.1", None), ("1" * 100, None),
    ],
)  # fmt: skip
def test_truncate_ip(ip: str, want: str | None) -> None:
    assert truncate_ip(ip) == want


@given(st.ip_addresses())
def test_truncate_ip_is_idempotent_and_hides_the_host(addr: object) -> None:
    import ipaddress

    t = truncate_ip(str(addr))
    assert t is not None and truncate_ip(t) == t
    net = 24 if isinstance(addr, ipaddress.IPv4Address) or getattr(addr, "ipv4_mapped", None) else 48
    base = getattr(addr, "ipv4_mapped", None) or addr
    assert ipaddress.ip_address(t) in ipaddress.ip_network((base, net), strict=False)


def test_prepare_masks_ips_without_touching_shared_defaults() -> None:
    keys = Keys("lp")
    shared = {"ip": "192.0.2.200", "page": {"url": "/"}}
    events = [
        {"type": "track", "userId": "u1", "event": "e"},
        {"type": "track", "userId": "u2", "event": "e", "context": {"ip": "2001:db8:1:2::9"}},
        {"type": "track", "userId": "u3", "context": {"ip": "198.51.100.7"}},  # dead letter
        {"type": "track", "userId": "u4", "event": "e", "context": {"ip": 12345}},
    ]
    prep = prepare(events, keys=keys, shards=2, limits=Limits(), received_at="2024-05-01T00:00:00Z", source="t",
                   defaults={"context": shared}, mask_ip=True)  # fmt: skip
    assert shared == {"ip": "192.0.2.200", "page": {"url": "/"}}
    out = [orjson.loads(f["e"]) for s, f in prep.appends if s != keys.dead_letter]
    assert [e["context"] for e in out] == [{"ip": "192.0.2.0", "page": {"url": "/"}}, {"ip": "2001:db8:1::"}, {}]
    (dl,) = [f for s, f in prep.appends if s == keys.dead_letter]
    assert b"198.51.100.0" in dl["raw"] and b"198.51.100.7" not in dl["raw"]
    plain = prepare([{"type": "track", "userId": "u", "event": "e", "context": {"ip": "198.51.100.7"}}], keys=keys, shards=1,
                    limits=Limits(), received_at="2024-05-01T00:00:00Z", source="t")  # fmt: skip
    assert b"198.51.100.7" in plain.appends[0][1]["e"]


def test_prepare_dead_letters_what_it_cannot_serialize() -> None:
    keys = Keys("lp")
    deep = {"type": "track", "userId": "u", "event": "e", "messageId": "m1", "properties": {"x": orjson.loads(b"[" * 300 + b"]" * 300)}}
    events = [deep, {"type": "track", "userId": "u", "event": "\ud800"}, {"type": "track", "userId": "u", "event": "e", "properties": {1: 2}}]
    prep = prepare(events, keys=keys, shards=1, limits=Limits(), received_at="2024-05-01T00:00:00Z", source="t")
    assert prep.accepted == 0 and [r.reason for r in prep.rejected] == ["invalid_field_type", "invalid_text", "invalid_field_type"]
    assert prep.rejected[0].message_id == "m1" and prep.rejected[1].raw.startswith(b'{"type"')


# ------------------------------------------------------------------- configuration


def test_config_defaults_are_off() -> None:
    cfg = CollectorConfig.from_values(load_env({}))
    assert (cfg.rate_limit, cfg.pixel_secrets, cfg.webhook_secrets, cfg.truncate_ip) == (0, (), {}, False)
    assert cfg.max_batch_events == 5000 and cfg.webhook_tolerance_s == 300 and cfg.pixel_max_age_s == 90 * 86400


def test_config_parses_everything(tmp_path: Path) -> None:
    f = tmp_path / "hooks.json"
    f.write_text('{"esp": ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"], "shop.v2": "cccccccccccccccc"}')
    cfg = CollectorConfig.from_values(load_env({
        "LIVEPROFILE_RATE_LIMIT": "250.5", "LIVEPROFILE_RATE_BURST": "1000", "LIVEPROFILE_PIXEL_SECRET": "p" * 16 + ", " + "q" * 16,
        "LIVEPROFILE_PIXEL_MAX_AGE": "30d", "LIVEPROFILE_PIXEL_OPEN_WINDOW": "2m", "LIVEPROFILE_WEBHOOK_SECRETS": str(f),
        "LIVEPROFILE_WEBHOOK_TOLERANCE": "10m", "LIVEPROFILE_TRUNCATE_IP": "on", "LIVEPROFILE_MAX_BATCH_EVENTS": "100",
    }))  # fmt: skip
    assert cfg.rate_limit == 250.5 and cfg.rate_burst == 1000 and cfg.pixel_secrets == (b"p" * 16, b"q" * 16)
    assert cfg.pixel_max_age_s == 30 * 86400 and cfg.pixel_open_window_s == 120 and cfg.webhook_tolerance_s == 600
    assert cfg.webhook_secrets == {"esp": (b"a" * 16, b"b" * 16), "shop.v2": (b"c" * 16,)} and cfg.truncate_ip
    assert cfg.max_batch_events == 100
    text = repr(cfg) + str(cfg.masked())
    assert not any(s in text for s in ("p" * 16, "a" * 16, "c" * 16))


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LIVEPROFILE_RATE_LIMIT": "-1"}, "LIVEPROFILE_RATE_LIMIT"),
        ({"LIVEPROFILE_RATE_LIMIT": "nan"}, "LIVEPROFILE_RATE_LIMIT"),
        ({"LIVEPROFILE_PIXEL_SECRET": "short"}, "at least 16 bytes"),
        ({"LIVEPROFILE_WEBHOOK_SECRETS": '{"esp": "tooshort"}'}, "at least 16 bytes"),
        ({"LIVEPROFILE_WEBHOOK_SECRETS": '{"bad name": "aaaaaaaaaaaaaaaa"}'}, "source name"),
        ({"LIVEPROFILE_WEBHOOK_SECRETS": '{"esp": []}'}, "non-empty list"),
        ({"LIVEPROFILE_WEBHOOK_SECRETS": '["aaaaaaaaaaaaaaaa"]'}, "readable file"),
        ({"LIVEPROFILE_WEBHOOK_SECRETS": '{"esp": "aaaaaaaaaaaaaaaa",}'}, "not valid JSON"),
        ({"LIVEPROFILE_WEBHOOK_SECRETS": "/no/such/file.json"}, "readable file"),
        ({"LIVEPROFILE_WEBHOOK_TOLERANCE": "0"}, "at least 1 second"),
        ({"LIVEPROFILE_TRUNCATE_IP": "maybe"}, "on or off"),
        ({"LIVEPROFILE_PIXEL_BASE_URL": "collect.example.com"}, "http(s) URL"),
        ({"LIVEPROFILE_MAX_BATCH_EVENTS": "0"}, "LIVEPROFILE_MAX_BATCH_EVENTS"),
    ],
)
def test_config_errors_never_echo_secrets(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as ei:
        CollectorConfig.from_values(load_env(env))
    assert needle in str(ei.value)
    assert "aaaaaaaaaaaaaaaa" not in str(ei.value) and "tooshort" not in str(ei.value)


def test_webhook_secrets_empty() -> None:
    assert parse_webhook_secrets("") == {} and parse_webhook_secrets("{}") == {}


def test_deployed_config_and_secret_placeholders_are_valid(repo_root: Path) -> None:
    """deploy/k8s/base: the ConfigMap values and the Secret's placeholders start a collector."""
    import yaml

    base = repo_root / "deploy" / "k8s" / "base"
    env = dict(
        line.split("=", 1) for line in (base / "config.env").read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    (secret,) = [g for g in kust["secretGenerator"] if g["name"] == "liveprofile-secrets"]
    env |= dict(lit.split("=", 1) for lit in secret["literals"])
    cfg = CollectorConfig.from_values(load_env(env))
    assert cfg.pixel_secrets == () and cfg.webhook_secrets == {} and cfg.rate_limit == 0 and not cfg.truncate_ip


def test_pixel_query_accepts_raw_utf8_and_plus_for_space() -> None:
    key = b"k" * 16
    sig = pixel_signature(key, "zoë x", "c", "e", 7)
    raw = "user=zoë+x&campaign=c&email_id=e&ts=7&sig=".encode() + sig.encode()
    assert verify_pixel(parse_pixel_query(raw), [key], now=7, max_age_s=0).user_id == "zoë x"
