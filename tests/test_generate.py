"""Tests of the test-stream generator: determinism, stream shape, planted noise, and the
cross-check that the real operators reproduce the generator's independent truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import orjson
import pytest

from liveprofile.generate import (
    BOT_KINDS,
    INVALID_REASONS,
    TRUTH_FIELDS,
    GenConfig,
    Generated,
    generate,
    generate_to_files,
    read_jsonl,
)
from operators.dedupe import DedupeConfig
from operators.events import REASONS, Limits, Rejected, parse_event
from operators.profile import ProfileState, to_fields
from operators.timeutil import parse_ts

END_MS = 1_714_564_800_000  # 2024-05-01T12:00:00Z
CFG = GenConfig(users=300, seed=7, end_ms=END_MS, duplicate_rate=0.05, invalid_rate=0.03, bots=4)


@pytest.fixture(scope="module")
def gen() -> Generated:
    return generate(CFG)


def _first_occurrences(gen: Generated) -> list[dict[str, Any]]:
    """The valid events once each (drops invalid events and the second copy of duplicates)."""
    bad = {d["messageId"] for d in gen.invalid}
    seen: set[str] = set()
    out = []
    for ev in gen.events:
        mid = ev["messageId"]
        if mid in bad or mid in seen:
            continue
        seen.add(mid)
        out.append(ev)
    return out


def _replay(gen: Generated, end_ms: int) -> tuple[dict[str, ProfileState], list[str], int]:
    """Feed the stream through parse_event + ProfileState.apply.

    Returns the states, a list of problems with rejections, and the number of
    events the profiles refused as duplicates.
    """
    limits, dedupe = Limits(timestamp_min_ms=0), DedupeConfig()
    expected_reason = {d["messageId"]: d["reason"] for d in gen.invalid}
    states: dict[str, ProfileState] = {}
    problems: list[str] = []
    refused = 0
    for raw in gen.events:
        ev = parse_event(raw, limits, received_at=end_ms + 1000)
        mid = raw.get("messageId")
        if isinstance(ev, Rejected):
            if expected_reason.get(mid) != ev.reason:
                problems.append(f"{mid}: rejected as {ev.reason} ({ev.message}), expected {expected_reason.get(mid)}")
            continue
        if mid in expected_reason:
            problems.append(f"{mid}: accepted, expected rejection {expected_reason[mid]}")
            continue
        st = states.setdefault(ev.uid, ProfileState(ev.uid))
        if not st.apply(ev, dedupe):
            refused += 1
    return states, problems, refused


def _assert_truth_reproduced(gen: Generated, end_ms: int) -> None:
    states, problems, refused = _replay(gen, end_ms)
    assert problems == []
    assert refused == len(gen.duplicates)
    assert set(states) == set(gen.truth)
    mismatches = [
        (uid, f, got, want)
        for uid, truth in gen.truth.items()
        for f, got, want in ((f, to_fields(states[uid])[f], truth[f]) for f in TRUTH_FIELDS)
        if got != want
    ]
    assert mismatches[:10] == []


# --------------------------------------------------------------------------- determinism & config


def test_same_seed_same_stream(gen: Generated) -> None:
    again = generate(CFG)
    assert orjson.dumps(again.events) == orjson.dumps(gen.events)
    assert again.truth == gen.truth
    assert again.invalid == gen.invalid
    assert again.preferences == gen.preferences


def test_other_seed_other_stream(gen: Generated) -> None:
    other = generate(GenConfig(users=300, seed=8, end_ms=END_MS, duplicate_rate=0.05, invalid_rate=0.03, bots=4))
    assert orjson.dumps(other.events) != orjson.dumps(gen.events)


def test_config_requires_end_and_sane_values() -> None:
    with pytest.raises(TypeError):
        GenConfig(users=1)  # type: ignore[call-arg]
    for bad in ({"duplicate_rate": 1.5}, {"invalid_rate": -0.1}, {"days": 0}, {"categories": ()}, {"users": -1}):
        with pytest.raises(ValueError):
            GenConfig(end_ms=END_MS, **bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- stream shape


def test_event_shape(gen: Generated) -> None:
    for ev in _first_occurrences(gen):
        assert {"type", "messageId", "userId", "timestamp", "context"} <= ev.keys()
        assert "sentAt" not in ev and "receivedAt" not in ev
        assert ev["timestamp"].endswith("Z") and len(ev["timestamp"]) == 24
        assert {"userAgent", "ip"} <= ev["context"].keys()
        if ev["type"] == "track":
            assert isinstance(ev["event"], str) and isinstance(ev["properties"], dict)


def test_per_user_time_order_and_span(gen: Generated) -> None:
    last: dict[str, int] = {}
    for ev in _first_occurrences(gen):
        ts = parse_ts(ev["timestamp"])
        assert CFG.start_ms <= ts <= END_MS
        uid = ev["userId"]
        assert ts > last.get(uid, CFG.start_ms - 1), uid
        last[uid] = ts
    assert set(last) == set(gen.truth)


def test_message_ids_unique_except_planted_duplicates(gen: Generated) -> None:
    counts = Counter(ev["messageId"] for ev in gen.events)
    twice = {mid for mid, n in counts.items() if n == 2}
    assert max(counts.values()) == 2
    assert twice == set(gen.duplicates)
    assert len(gen.duplicates) == len(twice)
    where: dict[str, list[int]] = defaultdict(list)
    for i, ev in enumerate(gen.events):
        if ev["messageId"] in twice:
            where[ev["messageId"]].append(i)
    for mid, (a, b) in where.items():
        assert 1 <= b - a <= CFG.duplicate_max_positions, mid
        assert gen.events[a] == gen.events[b]
        assert gen.events[a] is not gen.events[b]


def test_noise_counts_match_rates(gen: Generated) -> None:
    n_valid = len(gen.events) - len(gen.duplicates) - len(gen.invalid)
    assert n_valid == sum(int(t["event_count"]) for t in gen.truth.values())
    assert len(gen.invalid) == round(CFG.invalid_rate * n_valid) > 0
    assert len(gen.duplicates) == round(CFG.duplicate_rate * n_valid) > 0
    assert len({d["messageId"] for d in gen.invalid}) == len(gen.invalid)
    assert {d["reason"] for d in gen.invalid} == set(INVALID_REASONS)
    assert set(INVALID_REASONS) <= REASONS.keys()
    # spread through the stream, not bunched at one end
    positions = [i for i, ev in enumerate(gen.events) if ev["messageId"] in {d["messageId"] for d in gen.invalid}]
    assert positions[0] < len(gen.events) / 4 and positions[-1] > len(gen.events) * 3 / 4


def test_no_noise_by_default() -> None:
    g = generate(GenConfig(users=20, end_ms=END_MS))
    assert g.invalid == [] and g.duplicates == [] and g.bots == []
    assert len({ev["messageId"] for ev in g.events}) == len(g.events)


def test_orders_money_and_mix(gen: Generated) -> None:
    modes = Counter()
    for ev in _first_occurrences(gen):
        if ev.get("event") != "Order Completed":
            continue
        props = ev["properties"]
        lines = sum(Decimal(repr(p["price"])) * p["quantity"] for p in props["products"])
        for key in ("revenue", "total"):
            if key in props:
                assert Decimal(repr(props[key])) == lines
                modes[key] += 1
                break
        else:
            modes["neither"] += 1
        for p in props["products"]:
            assert Decimal(repr(p["price"])).as_tuple().exponent >= -2
    assert set(modes) == {"revenue", "total", "neither"}


def test_cart_removals_never_exceed_net_adds(gen: Generated) -> None:
    cart: dict[str, Counter[str]] = defaultdict(Counter)
    for ev in _first_occurrences(gen):
        name, uid = ev.get("event"), ev["userId"]
        if name == "Order Completed":
            cart[uid].clear()
        elif name == "Product Added":
            cart[uid][ev["properties"]["product_id"]] += ev["properties"]["quantity"]
        elif name == "Product Removed":
            pid = ev["properties"]["product_id"]
            assert 1 <= ev["properties"]["quantity"] <= cart[uid][pid]
            cart[uid][pid] -= ev["properties"]["quantity"]
    abandoned = [uid for uid, t in gen.truth.items() if t["cart_items"] != "0"]
    assert abandoned, "some users should end with an abandoned cart"


def test_planted_preferences(gen: Generated) -> None:
    hits = total = 0
    for ev in _first_occurrences(gen):
        uid = ev["userId"]
        cat = ev.get("properties", {}).get("category")
        if uid in gen.preferences and cat:
            total += 1
            hits += cat == gen.preferences[uid]
    assert 0.55 <= hits / total <= 0.75
    assert set(gen.preferences) == {u for u in gen.truth if u.startswith("u")}


def test_bots(gen: Generated) -> None:
    assert gen.bots == ["bot0001", "bot0002", "bot0003", "bot0004"]
    assert set(gen.bot_kinds.values()) == set(BOT_KINDS)
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in _first_occurrences(gen):
        by_user[ev["userId"]].append(ev)
    for bot, kind in gen.bot_kinds.items():
        evs = by_user[bot]
        names = Counter(ev.get("event") for ev in evs)
        assert not names.keys() & {"Order Completed", "Product Added", "Checkout Started"}
        ts = [parse_ts(ev["timestamp"]) for ev in evs]
        if kind == "scraper":
            gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
            assert sorted(gaps)[len(gaps) // 2] <= 300  # regular, sub-second
            assert sum(200 <= g <= 300 for g in gaps) / len(gaps) > 0.95
            viewed = {ev["properties"]["product_id"] for ev in evs if ev.get("event") == "Product Viewed"}
            cats = {ev["properties"]["category"] for ev in evs if ev.get("event") == "Product Viewed"}
            assert len(viewed) >= 150 and cats == set(CFG.categories)
        else:
            delivered = {ev["properties"]["email_id"]: parse_ts(ev["timestamp"]) for ev in evs if ev.get("event") == "Email Delivered"}
            assert len(delivered) >= 40
            for ev in evs:
                if ev.get("event") in ("Email Opened", "Email Link Clicked"):
                    lag = parse_ts(ev["timestamp"]) - delivered[ev["properties"]["email_id"]]
                    assert 1000 <= lag <= 2000
        assert int(gen.truth[bot]["event_count"]) == len(evs)


# --------------------------------------------------------------------------- the cross-check


def test_operators_reproduce_truth(gen: Generated) -> None:
    """parse_event + ProfileState reproduce every truth field; invalid events get their reason."""
    _assert_truth_reproduced(gen, END_MS)


@pytest.mark.parametrize(
    "cfg",
    [
        GenConfig(users=40, seed=1, end_ms=END_MS, duplicate_rate=1.0, invalid_rate=0.5, bots=2),
        GenConfig(users=30, seed=2, end_ms=END_MS, days=0.05, duplicate_rate=0.2, invalid_rate=0.1),
        GenConfig(users=0, seed=3, end_ms=END_MS, bots=2, duplicate_rate=0.1, invalid_rate=0.1),
        GenConfig(users=25, seed=4, end_ms=END_MS, checkout_rate=0.0, sessions_mean=40, days=90),
        GenConfig(users=25, seed=5, end_ms=END_MS, checkout_rate=1.0, categories=("a", "b"), products=7),
    ],
    ids=["heavy-noise", "short-span", "bots-only", "never-buy", "always-buy"],
)
def test_operators_reproduce_truth_edge_configs(cfg: GenConfig) -> None:
    _assert_truth_reproduced(generate(cfg), cfg.end_ms)


def test_truth_mentions_purchases_and_email(gen: Generated) -> None:
    truths = list(gen.truth.values())
    assert any(t["purchase_count"] != "0" for t in truths)
    assert any(t["first_purchase_at"] == "" for t in truths)
    assert any(t["email_clicks"] != "0" for t in truths)
    assert all(t["email"] for uid, t in gen.truth.items() if uid.startswith("u"))


# --------------------------------------------------------------------------- files


def test_generate_to_files(tmp_path: Any) -> None:
    cfg = GenConfig(users=15, end_ms=END_MS, duplicate_rate=0.1, invalid_rate=0.1, bots=2)
    g = generate_to_files(cfg, tmp_path / "events.jsonl", tmp_path / "truth.json")
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    assert len(lines) == len(g.events) and all(b"\n" not in line for line in lines)
    assert list(read_jsonl(tmp_path / "events.jsonl")) == g.events
    doc = orjson.loads((tmp_path / "truth.json").read_bytes())
    assert {"truth", "invalid", "bots", "bot_kinds", "preferences"} <= doc.keys()
    assert doc["truth"] == g.truth and doc["bot_kinds"] == g.bot_kinds
