"""operators.models.ShardModels: warm-up, score-then-learn, propensity quality, snapshots."""

from __future__ import annotations

from operators.behaviour import FEATURE_LIMITS
from operators.models import FEATURE_GROUPS, GROUP_HEIGHT, ModelConfig, ShardModels

LOW = {k: lo for k, (lo, _) in FEATURE_LIMITS.items()}
HIGH = {k: hi for k, (_, hi) in FEATURE_LIMITS.items()}


def test_forests_per_group_with_their_heights_and_seeds() -> None:
    m = ShardModels.new(ModelConfig(window_size=7, n_trees=3, seed=5))
    assert set(m.hst) == set(FEATURE_GROUPS) and m.window == 7
    for i, (g, feats) in enumerate(FEATURE_GROUPS.items()):
        h = m.hst[g]
        assert (h.n_trees, h.height, h.window_size, h.seed) == (3, GROUP_HEIGHT[g], 7, 5 + i)
        assert set(h.limits) == set(feats)


def test_warm_up_then_outliers_score_higher() -> None:
    m = ShardModels.new(ModelConfig(window_size=8))
    first = [m.score_behaviour(LOW, learn=True) for _ in range(8)]
    assert first == [0.0] * 8 and m.scored == 8  # HST warm-up: no mass profile yet
    for _ in range(40):
        m.score_behaviour(LOW, learn=True)
    assert m.score_behaviour(HIGH, learn=False) > m.score_behaviour(LOW, learn=False)


def test_learn_false_keeps_the_model_unchanged() -> None:
    a, b = ShardModels.new(ModelConfig(window_size=4)), ShardModels.new(ModelConfig(window_size=4))
    for _ in range(10):
        a.score_behaviour(LOW, learn=True)
        b.score_behaviour(LOW, learn=True)
    for _ in range(20):
        b.score_behaviour(HIGH, learn=False)  # suspect activity: scored, not learned
    assert b.score_behaviour(HIGH, learn=False) == a.score_behaviour(HIGH, learn=False)
    assert b.scored == a.scored + 20


def test_propensity_learns_and_tracks_auc() -> None:
    m = ShardModels.new(ModelConfig(learning_rate=0.2))
    buy, browse = {"views": 9.0, "adds": 3.0, "checkouts": 1.0}, {"views": 1.0, "adds": 0.0, "checkouts": 0.0}
    assert m.propensity(buy) == 0.5
    for _ in range(60):
        m.learn_session(buy, True, learn=True)
        m.learn_session(browse, False, learn=True)
    assert m.sessions == 120 and m.propensity(buy) > 0.8 > 0.2 > m.propensity(browse)
    assert m.auc.get() > 0.9
    frozen = ShardModels.new(ModelConfig())
    assert frozen.learn_session(buy, True, learn=False) == 0.5 and frozen.propensity(buy) == 0.5
    assert frozen.sessions == 1


def test_snapshot_round_trip() -> None:
    m = ShardModels.new(ModelConfig(window_size=4))
    for _ in range(6):
        m.score_behaviour(LOW, learn=True)
    m.learn_session({"views": 2.0}, True, learn=True)
    back = ShardModels.from_bytes(m.to_bytes())
    assert (back.scored, back.sessions, back.window) == (m.scored, m.sessions, m.window)
    assert back.score_behaviour(HIGH, learn=False) == m.score_behaviour(HIGH, learn=False)
    assert back.propensity({"views": 2.0}) == m.propensity({"views": 2.0})
