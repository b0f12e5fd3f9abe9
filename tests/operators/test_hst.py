"""operators.hst.ScoreView and ShardModels' use of it: the same float scores as River's
HalfSpaceTrees on generated streams, and the same pickled bytes as before the views."""

from __future__ import annotations

import pickle
import random
from typing import Any

from river import anomaly

from operators.behaviour import FEATURE_LIMITS
from operators.hst import ForestView
from operators.models import FEATURE_GROUPS, ModelConfig, ShardModels


def _vector(rng: random.Random, outlier: bool) -> dict[str, float]:
    """A behaviour vector: mostly inside the fixed limits, sometimes anywhere (and past them)."""
    out = {}
    for k, (lo, hi) in FEATURE_LIMITS.items():
        span = hi - lo
        out[k] = rng.uniform(lo - span, hi + span) if outlier else rng.uniform(lo, lo + 0.3 * span) + rng.random() * 0.01
    return out


def test_view_scores_and_learns_as_river_on_a_stream_across_windows() -> None:
    rng = random.Random(7)
    feats = ("a", "b", "c")
    for height, window in ((1, 1), (1, 3), (3, 16), (6, 32)):
        ref, ours = (anomaly.HalfSpaceTrees(n_trees=5, height=height, window_size=window, limits={f: (0.0, 10.0) for f in feats}, seed=height)
                     for _ in range(2))  # fmt: skip
        view: ForestView | None = None
        for n in range(20 * window):
            x = {f: rng.uniform(-2.0, 12.0) if rng.random() < 0.1 else rng.uniform(2.0, 4.0) for f in feats}
            xs = [x[f] for f in feats]
            if view is not None:
                assert view.score(xs) == ref.score_one(x) == ours.score_one(x), (height, window, n)
            if rng.random() < 0.7:
                ref.learn_one(x)
                if view is None:
                    ours.learn_one(x)
                    view = ForestView(ours, feats)
                else:
                    view.learn(xs)
                assert (ours.counter, ours._first_window) == (ref.counter, ref._first_window)
        assert pickle.dumps(ours) == pickle.dumps(ref)


class _River:
    """score_behaviour as it was before the views: River's score_one per group."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.m = ShardModels.new(cfg)

    def score_behaviour(self, x: dict[str, float], learn: bool) -> float:
        m = self.m
        best = 0.0
        warm = m.scored >= 4 * m.window
        do_learn = learn and (not warm or m.scored % 2 == 0)
        for g, feats in FEATURE_GROUPS.items():
            xg = {f: x[f] for f in feats}
            best = max(best, float(m.hst[g].score_one(xg)))
            if do_learn:
                m.hst[g].learn_one(xg)
        m.scored += 1
        return best


def _stream(seed: int, n: int) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    return [(_vector(rng, rng.random() < 0.05), rng.random() > 0.1) for _ in range(n)]


def test_shard_models_scores_equal_rivers_and_pickle_the_same_bytes() -> None:
    for seed, window in ((1, 5), (2, 16), (3, 128)):
        cfg = ModelConfig(window_size=window, seed=seed)
        ours, ref = ShardModels.new(cfg), _River(cfg)
        for i, (x, learn) in enumerate(_stream(seed, 12 * window)):
            assert ours.score_behaviour(x, learn) == ref.score_behaviour(x, learn), (seed, i)
        assert ours.to_bytes() == ref.m.to_bytes()


def test_restored_models_score_as_the_originals_and_old_pickles_load() -> None:
    cfg = ModelConfig(window_size=8)
    a = ShardModels.new(cfg)
    stream = _stream(5, 200)
    for x, learn in stream[:100]:
        a.score_behaviour(x, learn)
    a.score_behaviour(stream[0][0], learn=False)
    assert set(a.views) == set(FEATURE_GROUPS)  # scored after the first window: views cached
    legacy: Any = pickle.loads(pickle.dumps(a))
    assert legacy.views == {}
    # a pickle written before the views existed: the default slots state, no "views"
    state = (None, {k: getattr(a, k) for k in ("hst", "prop", "auc", "scored", "sessions", "window")})
    c: Any = ShardModels.__new__(ShardModels)
    c.__setstate__(pickle.loads(pickle.dumps(state)))
    assert c.views == {}
    b = ShardModels.from_bytes(a.to_bytes())
    for x, learn in stream[100:]:
        s = a.score_behaviour(x, learn)
        assert b.score_behaviour(x, learn) == s and c.score_behaviour(x, learn) == s
