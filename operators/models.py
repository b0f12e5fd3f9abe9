"""Online models, one set per shard: anomaly (HalfSpaceTrees) and purchase propensity.

Contract
--------
``ShardModels`` is the state of one shard's models (never one per user: a
HalfSpaceTrees is ~170 KB; guide §10.3). Every use is **score, then learn**
(prequential):

* ``score_behaviour(x, learn)`` scores a user's behaviour vector with
  HalfSpaceTrees over fixed feature ranges (:data:`operators.behaviour.FEATURE_LIMITS`,
  the most accurate setting measured in the guide) and then learns it, unless
  ``learn`` is false (activity a fixed-limit rule already calls bot-like is
  kept out of the model of normal behaviour). Scores are 0 during the model's
  first ``window_size`` observations (HST warm-up).
* ``propensity(x)`` is P(session converts) from a logistic regression on
  standardized session features; ``learn_session(x, converted, learn)``
  scores the closed session first (that score feeds the running ROC AUC),
  then learns from it unless the user is suspect.

The state pickles to bytes for Bytewax snapshots (``to_bytes``/``from_bytes``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from river import anomaly, compose, linear_model, metrics, optim, preprocessing

from operators.behaviour import FEATURE_LIMITS

__all__ = ["ModelConfig", "ShardModels"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Hyper-parameters (guide §10.2: height 6-8 pays, 15 does not)."""

    n_trees: int = 10
    height: int = 8
    window_size: int = 250
    threshold: float = 0.75
    seed: int = 42
    learning_rate: float = 0.05


def _hst(cfg: ModelConfig) -> anomaly.HalfSpaceTrees:
    return anomaly.HalfSpaceTrees(
        n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.window_size,
        limits=dict(FEATURE_LIMITS), seed=cfg.seed,
    )  # fmt: skip


def _propensity(cfg: ModelConfig) -> compose.Pipeline:
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(cfg.learning_rate))


@dataclass(slots=True)
class ShardModels:
    """Anomaly and propensity models of one shard, with their running quality.

    >>> m = ShardModels.new(ModelConfig(window_size=5))
    >>> x = {k: lo for k, (lo, hi) in FEATURE_LIMITS.items()}
    >>> [round(m.score_behaviour(x, learn=True), 2) for _ in range(7)][-1] < 0.5
    True
    >>> 0.0 <= m.propensity({"views": 3.0}) <= 1.0
    True
    """

    hst: anomaly.HalfSpaceTrees
    prop: compose.Pipeline
    auc: metrics.ROCAUC = field(default_factory=metrics.ROCAUC)
    scored: int = 0
    sessions: int = 0

    @classmethod
    def new(cls, cfg: ModelConfig) -> ShardModels:
        return cls(_hst(cfg), _propensity(cfg))

    def score_behaviour(self, x: dict[str, float], learn: bool) -> float:
        s = float(self.hst.score_one(x))
        if learn:
            self.hst.learn_one(x)
        self.scored += 1
        return s

    def propensity(self, x: dict[str, float]) -> float:
        return float(self.prop.predict_proba_one(x).get(True, 0.0))

    def learn_session(self, x: dict[str, float], converted: bool, learn: bool) -> float:
        p = self.propensity(x)
        self.auc.update(converted, p)
        if learn:
            self.prop.learn_one(x, converted)
        self.sessions += 1
        return p

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(data: bytes) -> ShardModels:
        obj = pickle.loads(data)
        assert isinstance(obj, ShardModels)
        return obj
