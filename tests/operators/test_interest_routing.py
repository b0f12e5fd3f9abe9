"""operators.interest (decay, pruning, the category cap, config) and operators.routing."""

from __future__ import annotations

import zlib

import pytest

from operators.events import Event, Limits, parse_event
from operators.interest import Interest, InterestConfig, event_weight
from operators.routing import shard_of


def test_decay_is_relative_to_the_newest_event() -> None:
    cfg = InterestConfig(half_life_ms=1000)
    i = Interest()
    i.add(cfg, "a", 1.0, 5000)
    assert (i.t_ref, i.scores) == (5000, {"a": 1.0})
    i.add(cfg, "a", 1.0, 5000)  # same time: no decay
    i.add(cfg, "b", 2.0, 4000)  # older: its own weight decays
    assert i.scores == {"a": 2.0, "b": 1.0} and i.t_ref == 5000
    i.add(cfg, "b", 1.0, 6000)  # newer: the stored scores decay
    assert i.scores == {"a": 1.0, "b": 1.5} and i.t_ref == 6000


def test_pruning_below_the_floor() -> None:
    cfg = InterestConfig(half_life_ms=1000, prune_below=0.0625)  # binary-exact halvings
    i = Interest()
    i.add(cfg, "edge", 0.125, 0)
    i.add(cfg, "x", 1.0, 1000)  # edge decays to 0.0625: exactly the floor, kept
    assert i.scores == {"edge": 0.0625, "x": 1.0}
    i.add(cfg, "x", 1.0, 2000)  # 0.03125: dropped
    assert i.scores == {"x": 1.5}


def test_the_category_cap_keeps_the_highest() -> None:
    cfg = InterestConfig(max_categories=16)
    i = Interest()
    for k in range(20):
        i.add(cfg, f"c{k:02d}", 1.0 + k, 0)
    assert sorted(i.scores) == [f"c{k:02d}" for k in range(4, 20)]
    j = Interest()
    for k in reversed(range(20)):  # ties: by name, not by arrival
        j.add(cfg, f"t{k:02d}", 1.0, 0)
    assert sorted(j.scores) == [f"t{k:02d}" for k in range(16)]
    assert list(j.render())[:2] == ["t00", "t01"] and j.top() == "t00"


def test_nothing_to_add() -> None:
    cfg = InterestConfig()
    i = Interest()
    i.add(cfg, "", 5.0, 0)
    i.add(cfg, "a", 0.0, 0)
    i.add(cfg, "a", -1.0, 0)
    assert i.scores == {} and i.t_ref == -(2**62) and i.top() == "" and i.render() == {}
    assert event_weight(cfg, "identify", "x") == 0.0 and event_weight(cfg, "screen", "Home") == 0.0
    assert event_weight(cfg, "track", "Email Link Clicked") == 1.5 and event_weight(cfg, "track", "Checkout Started") == 2.0


def test_render_rounds_and_drops_zeros() -> None:
    i = Interest(scores={"a": 0.123456, "b": 0.00001, "c": 2.0})
    assert i.render() == {"c": 2.0, "a": 0.1235}


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"half_life_ms": 0}, "interest half-life must be positive"),
     ({"view": 0.0}, "interest weights must satisfy 0 < view <= cart <= purchase"),
     ({"view": 3.0}, "interest weights must satisfy 0 < view <= cart <= purchase"),
     ({"cart": 4.0}, "interest weights must satisfy 0 < view <= cart <= purchase")],
)  # fmt: skip
def test_config_validation(kw: dict, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        InterestConfig(**kw)
    assert str(exc.value) == message


def test_config_boundaries_are_allowed() -> None:
    assert InterestConfig(half_life_ms=1, view=2.0, cart=2.0, purchase=2.0).purchase == 2.0


def test_shard_of_is_crc32_of_utf8() -> None:
    for ident, n in [("user-1", 4), ("ü", 7), ("\ud800", 3), ("", 2)]:
        assert shard_of(ident, n) == zlib.crc32(ident.encode("utf-8", "surrogatepass")) % n
    assert shard_of("user-1", 4) == 0 and shard_of("user-2", 4) == 2


def test_the_identity_is_the_parsed_uid() -> None:
    """One identity rule: what the envelope check routes by is what the dataflow keys by."""
    lim = Limits(timestamp_min_ms=0)
    for raw, uid in [({"userId": "  ", "anonymousId": "a1"}, "a1"), ({"userId": "", "anonymousId": " a "}, "a"),
                     ({"userId": 0, "anonymousId": "a"}, "0"), ({"userId": " u1 ", "anonymousId": "a"}, "u1")]:  # fmt: skip
        ev = parse_event({"type": "page", "receivedAt": 0, **raw}, lim)
        assert isinstance(ev, Event) and ev.uid == uid, raw
