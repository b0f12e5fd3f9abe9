"""Online models, one set per shard: anomaly (HalfSpaceTrees) and purchase propensity.

Contract
--------
``ShardModels`` is the state of one shard's models (never one per user: a
HalfSpaceTrees is ~170 KB; guide §10.3). Every use is **score, then learn**
(prequential):

* ``score_behaviour(x, learn)`` scores a user's behaviour vector with one
  HalfSpaceTrees per feature group (:data:`FEATURE_GROUPS`; the score is the
  highest) over fixed feature ranges (:data:`operators.behaviour.FEATURE_LIMITS`,
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
from typing import Any

from river import anomaly, compose, linear_model, metrics, optim, preprocessing

from operators.behaviour import FEATURE_LIMITS
from operators.hst import ForestView
from operators.logreg import AucView, PropensityView, auc_view, propensity_view
from operators.snapshot import set_slots_state

__all__ = ["model_fields", "judge", "ModelConfig", "ShardModels", "add_missing_forests"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Hyper-parameters (guide §10.2: height 6-8 pays, 15 does not)."""

    n_trees: int = 10
    window_size: int = 128
    threshold: float = 0.75
    seed: int = 42
    learning_rate: float = 0.05


#: Feature groups, one HalfSpaceTrees each: browsing sessions, engagement (email, orders), and
#: abuse (order bursts: card testing; distinct emails: identity bombs; bench/abuse.py).
#: Separate low-dimensional forests isolate each kind of bot far better than one forest
#: over all features, where random splits mostly land on the dimensions a bot looks
#: normal in (measured: link scanners 0.37 vs 0.35 at the 95th percentile of normal users
#: with one forest; see bench/evaluate.py).
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "session": ("velocity", "regularity", "breadth_products", "breadth_categories", "view_cart_ratio"),
    "engagement": ("order_z", "fast_email_ratio", "email_latency_log"),
    "abuse": ("order_burst", "small_order_burst", "identities_day", "identities_30d"),
}


#: Tree height per group: about the number of features (more would split empty space).
GROUP_HEIGHT = {"session": 6, "engagement": 3, "abuse": 4}


def _hst(cfg: ModelConfig, features: tuple[str, ...], seed: int, height: int) -> anomaly.HalfSpaceTrees:
    return anomaly.HalfSpaceTrees(
        n_trees=cfg.n_trees, height=height, window_size=cfg.window_size,
        limits={f: FEATURE_LIMITS[f] for f in features}, seed=seed,
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

    hst: dict[str, anomaly.HalfSpaceTrees]
    prop: compose.Pipeline
    auc: metrics.ROCAUC = field(default_factory=metrics.ROCAUC)
    scored: int = 0
    sessions: int = 0
    window: int = 250
    #: group -> the compiled view of its forest (:mod:`operators.hst`) that scores and learns it;
    #: a cache, not state: never pickled, rebuilt after a restore
    views: dict[str, ForestView] = field(default_factory=dict, repr=False, compare=False)
    #: the compiled views of ``prop`` and ``auc`` (:mod:`operators.logreg`); caches like ``views``
    #: (``None``: not built yet, or the model is not of the shape they compute: River's calls then)
    pview: PropensityView | None = field(default=None, repr=False, compare=False)
    aview: AucView | None = field(default=None, repr=False, compare=False)
    #: ``auc_of.get()`` as of ``auc_at`` sessions (a cache: it only changes when a session is learnt)
    auc_of: Any = field(default=None, repr=False, compare=False)
    auc_at: int = field(default=-1, repr=False, compare=False)
    auc_last: float = field(default=0.0, repr=False, compare=False)

    #: the pickled fields, as before the views (the snapshot bytes are unchanged)
    _STATE = ("hst", "prop", "auc", "scored", "sessions", "window")

    @classmethod
    def new(cls, cfg: ModelConfig) -> ShardModels:
        forests = {g: _hst(cfg, f, cfg.seed + i, GROUP_HEIGHT[g]) for i, (g, f) in enumerate(FEATURE_GROUPS.items())}
        return cls(forests, _propensity(cfg), window=cfg.window_size)

    def score_behaviour(self, x: dict[str, float], learn: bool) -> float:
        """Score ``x``, then learn it (all of them while warming up, then every other
        normal vector: the trees' mass profile needs a sample of normal behaviour, not
        all of it; halves the cost)."""
        best = 0.0
        warm = self.scored >= 4 * self.window
        do_learn = learn and (not warm or self.scored % 2 == 0)
        views = self.views
        for g, feats in FEATURE_GROUPS.items():
            model = self.hst[g]
            view = views.get(g)
            if view is None or view.model is not model:
                if not model.trees:  # River builds the trees on the first learn; scores 0 until a window closed
                    if do_learn:
                        model.learn_one({f: x[f] for f in feats})
                    continue
                view = views[g] = ForestView(model, feats)
            xs = [x[f] for f in feats]
            best = max(best, view.score(xs))  # == float(model.score_one(xg)): River's walk, compiled
            if do_learn:
                view.learn(xs)  # == model.learn_one(xg)
        self.scored += 1
        return best

    def _pview(self) -> PropensityView | None:
        v = self.pview
        if v is None or v.pipeline is not self.prop:
            v = self.pview = propensity_view(self.prop)
        return v

    def propensity(self, x: dict[str, float]) -> float:
        """P(converts) of session features ``x``: River's ``predict_proba_one``, computed by the
        compiled view when the pipeline is the usual one (the same float)."""
        v = self._pview()
        if v is None:
            return float(self.prop.predict_proba_one(x).get(True, 0.0))
        return v.predict(x)

    def learn_session(self, x: dict[str, float], converted: bool, learn: bool) -> float:
        p = self.propensity(x)
        a = self.aview
        if a is None or a.auc is not self.auc:
            a = self.aview = auc_view(self.auc)
        if a is None:
            self.auc.update(converted, p)
        else:
            a.update(converted, p)  # == self.auc.update(converted, p)
        if learn:
            v = self._pview()
            if v is None:
                self.prop.learn_one(x, converted)
            else:
                v.learn(x, converted)  # == self.prop.learn_one(x, converted)
        self.sessions += 1
        return p

    def auc_value(self) -> float:
        """``auc.get()``, computed again only after a session was learnt since the last call:
        ``get`` reads the matrices (inserting their zero counts on its first read, as River does)
        and the next call before an update would return the same float and change nothing."""
        if self.auc_at != self.sessions or self.auc_of is not self.auc:
            self.auc_last = float(self.auc.get())
            self.auc_at, self.auc_of = self.sessions, self.auc
        return self.auc_last

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """What a slots dataclass pickles by default, without the views (the same bytes as before them)."""
        return (None, {k: getattr(self, k) for k in self._STATE})

    def __setstate__(self, state: Any) -> None:
        set_slots_state(self, state)
        self.views = {}
        self.pview = self.aview = self.auc_of = None
        self.auc_at, self.auc_last = -1, 0.0

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(data: bytes) -> ShardModels:
        obj = pickle.loads(data)
        assert isinstance(obj, ShardModels)
        return obj


def add_missing_forests(m: ShardModels) -> ShardModels:
    """Give models restored from an older layout a forest for each feature group they lack
    (snapshot 2 -> 3: the ``abuse`` group), configured like their existing forests (tree count,
    window, base seed); the new forest starts its warm-up, the others keep what they learned.

    >>> m = ShardModels.new(ModelConfig(window_size=5))
    >>> del m.hst["abuse"]
    >>> sorted(add_missing_forests(m).hst) == sorted(FEATURE_GROUPS)
    True
    """
    if all(g in m.hst for g in FEATURE_GROUPS):
        return m
    ref = next(iter(m.hst.values()))
    base = ref.seed - list(FEATURE_GROUPS).index(next(iter(m.hst)))
    cfg = ModelConfig(n_trees=ref.n_trees, window_size=ref.window_size, seed=base)
    for i, (g, feats) in enumerate(FEATURE_GROUPS.items()):
        if g not in m.hst:
            m.hst[g] = _hst(cfg, feats, cfg.seed + i, GROUP_HEIGHT[g])
    return m


def judge(score: float, rule_suspect: bool, threshold: float) -> tuple[float, bool]:
    """The reported ``(anomaly_score, suspect)`` of a scored user: suspect when the fixed-limit
    rule fires or the model's score reaches ``threshold``, and the score then at least
    ``threshold`` — so ``suspect`` is always ``anomaly_score >= threshold``, also during the
    models' warm-up (their score is 0 then) for users the rule already flags.

    >>> judge(0.0, True, 0.75), judge(0.9, False, 0.75), judge(0.2, False, 0.75)
    ((0.75, True), (0.9, True), (0.2, False))
    """
    flagged = rule_suspect or score >= threshold
    return (max(score, threshold) if flagged else score), flagged


def model_fields(score: float, flagged: bool, propensity: float | None) -> dict[str, str]:
    """The profile fields of the models step (:attr:`operators.schema.Owner.MODELS`); the
    propensity only while a session is open.

    >>> model_fields(0.25, False, None)
    {'anomaly_score': '0.2500', 'suspect': '0'}
    """
    fields = {"anomaly_score": f"{score:.4f}", "suspect": "1" if flagged else "0"}
    if propensity is not None:
        fields["purchase_propensity"] = f"{propensity:.4f}"
    return fields
