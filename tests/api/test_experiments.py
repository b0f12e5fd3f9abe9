"""A/B assignment (Hypothesis properties), exposure recording and the per-variant report."""

from __future__ import annotations

import argparse
import hashlib
from collections import Counter
from fractions import Fraction

import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from liveprofile.api import add_commands
from liveprofile.api.config import Experiment, parse_experiments
from liveprofile.api.experiments import assign, exposures_key
from liveprofile.settings import ConfigError, Settings
from tests.api.conftest import EXPERIMENTS, ApiServer

weights_st = st.lists(st.floats(min_value=0.05, max_value=10, allow_nan=False), min_size=1, max_size=5)


def reference_variant(name: str, salt: str, user_id: str, variants: list[tuple[str, float]]) -> str:
    """The documented assignment rule (liveprofile/api/experiments.py), written independently:
    ``u`` = the first 8 bytes of SHA-256 over the UTF-8 of ``name``, ``salt`` and the user id
    joined by U+001F, big-endian, over 2**64; the variant is the first whose cumulative share
    (exact fractions here) exceeds ``u``."""
    digest = hashlib.sha256("\x1f".join((name, salt, user_id)).encode("utf-8")).digest()
    u = Fraction(int.from_bytes(digest[:8], "big"), 2**64)
    total = sum(Fraction(w) for _, w in variants)
    acc = Fraction(0)
    for v, w in variants:
        acc += Fraction(w)
        if u < acc / total:
            return v
    return variants[-1][0]


SUBJECT = [("control", 1.0), ("urgent", 1.0)]
HERO = [("a", 70.0), ("b", 20.0), ("c", 10.0)]
# Pinned once from reference_variant: a user's variant must never change while the
# experiment's variants, weights and salt stay the same (every process, every release).
PINNED = [
    ("subject", "", SUBJECT, "u0", "urgent"), ("subject", "", SUBJECT, "u1", "control"),
    ("subject", "", SUBJECT, "u7", "urgent"), ("subject", "", SUBJECT, "u9", "control"),
    ("subject", "", SUBJECT, "ü-ser 7", "control"), ("subject", "", SUBJECT, "", "control"),
    ("hero", "s1", HERO, "u0", "a"), ("hero", "s1", HERO, "u1", "b"), ("hero", "s1", HERO, "u5", "b"),
    ("hero", "s1", HERO, "u32", "c"), ("hero", "s1", HERO, "u41", "c"), ("hero", "s1", HERO, "alice", "a"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "salt", "variants", "user", "want"), PINNED)
def test_assignment_fixed_vectors(name: str, salt: str, variants: list[tuple[str, float]], user: str, want: str) -> None:
    exp = Experiment(name, tuple(v for v, _ in variants), tuple(w for _, w in variants), salt)
    assert reference_variant(name, salt, user, variants) == want  # the reference still says what was pinned
    assert assign(exp, user) == want


@given(name=st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=12).filter(lambda s: s.isascii()),
       weights=weights_st, user=st.text(max_size=40), salt=st.text(max_size=5))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_assignment_follows_the_documented_rule(name: str, weights: list[float], user: str, salt: str) -> None:
    """Any name, salt, user (unicode included) and weights: the variant is the reference's."""
    exp = Experiment(name, tuple(f"v{i}" for i in range(len(weights))), tuple(weights), salt)
    assert assign(exp, user) == reference_variant(name, salt, user, list(zip(exp.variants, weights, strict=True)))


@given(weights=weights_st, seed=st.integers(0, 10**6))
@settings(max_examples=25, deadline=None)
def test_variant_frequencies_converge_to_weights(weights: list[float], seed: int) -> None:
    exp = Experiment(f"exp{seed}", tuple(f"v{i}" for i in range(len(weights))), tuple(weights))
    n = 20_000
    counts = Counter(assign(exp, f"user-{seed}-{i}") for i in range(n))
    for variant, share in exp.shares.items():
        # 5 standard deviations of a binomial proportion at n = 20,000 is at most 0.018
        assert abs(counts[variant] / n - share) < 0.02, (variant, counts[variant] / n, share)


def test_salt_and_name_reshuffle_independently() -> None:
    a = Experiment("a", ("x", "y"), (1, 1))
    b = Experiment("b", ("x", "y"), (1, 1))
    a2 = Experiment("a", ("x", "y"), (1, 1), "new")
    users = [f"u{i}" for i in range(2000)]
    same_b = sum(assign(a, u) == assign(b, u) for u in users) / len(users)
    same_salt = sum(assign(a, u) == assign(a2, u) for u in users) / len(users)
    assert 0.4 < same_b < 0.6 and 0.4 < same_salt < 0.6  # no correlation between experiments


@pytest.mark.parametrize("raw", ['{"x": {"a": 0}}', '{"x": {"a": "1"}}', '{"x": {}}', '{"x": 3}', '{"bad name": {"a": 1}}'])
def test_experiment_config_errors(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_experiments(raw)


def buffered(r: redis.Redis) -> list[dict]:
    out = []
    for i in range(4):
        out += [orjson.loads(f[b"e"]) for _, f in r.xrange(f"lp:events:{i}")]
    return out


def test_exposures_recorded_once_and_reported(api: ApiServer, r: redis.Redis, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    users = [f"u{i}" for i in range(60)]
    for u in users:
        r.hset(f"lp:profile:{u}", mapping={"user_id": u, "purchase_count": "1", "revenue_total": "10.00"})
    variants = {}
    for u in users:
        v1 = api.get(f"/v1/content/{u}/recommendations", params={"format": "json"}).json()["experiments"]
        v2 = api.get(f"/v1/profiles/{u}").json()["experiments"]
        assert v1 == v2  # the same variant on every call
        assert v1 == {"subject": reference_variant("subject", "", u, SUBJECT), "hero": reference_variant("hero", "s1", u, HERO)}
        variants[u] = v1["subject"]
    api.get("/v1/content/u0/cart")  # a second exposure records nothing new
    api.get("/v1/profiles/u1", params={"expose": "1"})
    # the profile call alone does not expose; expose=1 does
    api.get("/v1/profiles/late")  # unknown: 404, nothing recorded
    assert r.hlen(exposures_key("lp", "subject")) == 60 and r.hlen(exposures_key("lp", "hero")) == 60
    rec = orjson.loads(r.hget(exposures_key("lp", "subject"), "u3"))
    assert rec["v"] == variants["u3"] and rec["pc"] == "1" and rec["rev"] == "10.00"

    events = [e for e in buffered(r) if e.get("event") == "Experiment Viewed"]
    assert len(events) == 120  # one per user per experiment
    ev = next(e for e in events if e["userId"] == "u3" and e["properties"]["experiment"] == "subject")
    assert ev["type"] == "track" and ev["properties"]["variant"] == variants["u3"] and ev["receivedAt"].endswith("Z")

    # conversions after exposure: every third user buys once more for 5.50
    buyers = users[::3]
    for u in buyers:
        r.hset(f"lp:profile:{u}", mapping={"purchase_count": "2", "revenue_total": "15.50"})
    monkeypatch.setenv("LIVEPROFILE_API_EXPERIMENTS", EXPERIMENTS)
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["experiments", "report", "subject", "--json"])
    assert args.func(args, Settings.from_env({"LIVEPROFILE_REDIS_URL": api.app.settings.redis_url})) == 0
    rows = {row["variant"]: row for row in orjson.loads(capsys.readouterr().out)}
    for variant in ("control", "urgent"):
        exposed = [u for u in users if variants[u] == variant]
        converted = [u for u in buyers if variants[u] == variant]
        assert rows[variant]["exposures"] == len(exposed)
        assert rows[variant]["conversions"] == len(converted)
        assert rows[variant]["conversion_rate"] == pytest.approx(len(converted) / len(exposed))
        assert rows[variant]["revenue"] == f"{5.5 * len(converted):.2f}"
    args = parser.parse_args(["experiments", "report", "subject"])
    assert args.func(args, Settings.from_env({"LIVEPROFILE_REDIS_URL": api.app.settings.redis_url})) == 0
    table = capsys.readouterr().out
    assert "control" in table and "urgent" in table and "conv_rate" in table
    args = parser.parse_args(["experiments", "report", "never"])
    assert args.func(args, Settings.from_env({"LIVEPROFILE_REDIS_URL": api.app.settings.redis_url})) == 1


def test_no_exposure_is_recorded_for_a_suppressed_user(api: ApiServer, r: redis.Redis) -> None:
    """A forgotten user (in ``{p}:suppressed``) whose profile is still readable (a late write, a
    race with ``forget``) is never recorded as exposed, and no ``Experiment Viewed`` event is
    appended for them; another user is. On main the exposure and the event were kept (issue 12)."""
    for u in ("carol", "dave"):
        r.hset(f"lp:profile:{u}", mapping={"user_id": u, "purchase_count": "1", "revenue_total": "10.00"})
    r.sadd("lp:suppressed", "carol")
    for u in ("carol", "dave"):
        assert api.get(f"/v1/profiles/{u}", params={"expose": "1"}).status_code == 200
    assert r.hkeys(exposures_key("lp", "subject")) == [b"dave"] and r.hkeys(exposures_key("lp", "hero")) == [b"dave"]
    assert {e["userId"] for e in buffered(r) if e.get("event") == "Experiment Viewed"} == {"dave"}
