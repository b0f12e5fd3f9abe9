"""A compiled view of River's propensity pipeline and its ROC AUC: the same floats, faster.

Contract
--------
:class:`PropensityView` is built from a River ``compose.Pipeline`` of exactly
``preprocessing.StandardScaler()`` (no ``window_size``) and ``linear_model.LogisticRegression``
with plain ``optim.SGD`` on a constant learning rate, the ``Log`` loss, a constant intercept
learning rate, zero weight initialisation and no L1/L2 penalty (what
:func:`operators.models._propensity` builds; :func:`propensity_view` returns ``None`` for anything
else, and the caller keeps River's own calls).

* :meth:`PropensityView.predict` is ``float(pipeline.predict_proba_one(x).get(True, 0.0))`` and
  :meth:`PropensityView.learn` is ``pipeline.learn_one(x, y)`` of River 0.26.1
  (``river/preprocessing/scale.py`` ``StandardScaler``, ``river/linear_model/base.py`` ``GLM``,
  ``river/linear_model/log_reg.py``, ``river/optim/sgd.py``, ``river/optim/losses.py`` ``Log``,
  ``river/utils/math.py`` ``sigmoid``, the ``VectorDict`` of ``river._river_rust``): the same float
  operations in the same order, so the **same floats**, and the same side effects on River's own
  objects, which stay the only state: the scaler's ``counts``/``means``/``vars`` (including the
  zero variance ``transform_one`` inserts for a feature it has not learnt, and the insertion
  order of every key), the weights dict (a weight of 0.0 inserted for each new feature when it is
  first learnt, as the learn-mode ``VectorDict``'s initializer does), ``intercept`` and the
  optimizer's ``n_iterations``. Pickles of the pipeline are byte-identical to River's
  (``tests/operators/test_logreg.py`` checks all of it against River on generated streams).
* The view keeps no copy of any state: it holds River's dicts (for the weights, the dict inside the
  ``VectorDict``: the view rebinds ``_weights`` to a ``VectorDict`` over the same dict, which
  pickles the same), so River's own methods may be called on the same objects in between.
* :class:`AucView` is ``metrics.ROCAUC.update(y_true, p)`` for a float ``p`` (River's
  ``ConfusionMatrix.update`` per threshold, on River's own matrices).

Pure: no engine, no I/O, no clock.
"""

from __future__ import annotations

import math
from typing import Any

from river import compose, linear_model, metrics, optim, preprocessing, utils

__all__ = ["PropensityView", "AucView", "propensity_view", "auc_view"]


def propensity_view(pipeline: Any) -> PropensityView | None:
    """The view of ``pipeline`` when it is the supported shape (see the module docstring), else ``None``."""
    if type(pipeline) is not compose.Pipeline:
        return None
    steps = list(pipeline.steps.values())
    if len(steps) != 2:
        return None
    scaler, lr = steps
    if type(scaler) is not preprocessing.StandardScaler or getattr(scaler, "window_size", None) is not None:
        return None
    if type(lr) is not linear_model.LogisticRegression:
        return None
    if lr.l1 != 0 or lr.l2 or type(lr.optimizer) is not optim.SGD or type(lr.optimizer.lr) is not optim.schedulers.Constant:
        return None
    if type(lr.loss) is not optim.losses.Log or type(lr.intercept_lr) is not optim.schedulers.Constant:
        return None
    if type(lr.initializer) is not optim.initializers.Zeros or type(lr._weights) is not utils.VectorDict:
        return None
    return PropensityView(pipeline)


class PropensityView:
    """River's ``StandardScaler() | LogisticRegression(SGD)`` pipeline, computed here; see the
    module docstring.

    >>> from river import linear_model, optim, preprocessing
    >>> ref, ours = (preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.1)) for _ in range(2))
    >>> v = propensity_view(ours)
    >>> for i in range(5):
    ...     x = {"a": float(i), "b": 1.0}
    ...     assert v.predict(x) == ref.predict_proba_one(x)[True]
    ...     ref.learn_one(x, i % 2 == 0); v.learn(x, i % 2 == 0)
    >>> v.predict({"a": 2.0, "c": 1.0}) == ref.predict_proba_one({"a": 2.0, "c": 1.0})[True]
    True
    """

    def __init__(self, pipeline: Any) -> None:
        self.pipeline: Any = pipeline
        if pipeline._plan is None:
            pipeline._build_plan()  # what River's first call does (the plan is pickled with the pipeline)
        steps = list(pipeline.steps.values())
        self.scaler: Any = steps[0]
        self.lr: Any = steps[1]
        self.with_std: bool = bool(self.scaler.with_std)
        self.counts: dict[Any, Any] = self.scaler.counts
        self.means: dict[Any, float] = self.scaler.means
        self.vars: dict[Any, float] = self.scaler.vars
        self.vd: Any = None
        self.weights: dict[Any, float] = {}
        self._bind()

    def _bind(self) -> None:
        """Hold the dict of the model's weights: a ``VectorDict`` over a dict shares it."""
        lr = self.lr
        d: dict[Any, float] = lr._weights.to_dict()
        lr._weights = utils.VectorDict(d)
        self.vd = lr._weights
        self.weights = d

    def _river(self) -> bool:
        """Whether River must run this call itself (the pipeline learns during predict: River's
        ``compose.learn_during_predict``); rebinds the weights if ``_weights`` was replaced. (River's
        methods never replace the scaler's dicts, and restore ``_weights`` after a learn.)"""
        if self.pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:
            return True
        if self.lr._weights is not self.vd:
            self._bind()
        return False

    def predict(self, x: dict[Any, float]) -> float:
        """``float(pipeline.predict_proba_one(x).get(True, 0.0))``."""
        if self._river():
            return float(self.pipeline.predict_proba_one(x).get(True, 0.0))
        means = self.means
        vars_ = self.vars
        w = self.weights
        acc = 0.0  # VectorDict.dot(x): over x's keys, in x's order, missing weights skipped
        if self.with_std:
            for k, xi in x.items():
                # StandardScaler.transform_one: vars_[i] (a defaultdict: inserts 0.0), means[i] only if v
                v = vars_.get(k)
                if v is None:
                    vars_[k] = 0.0
                    v = 0.0
                if v:
                    m = means.get(k)
                    if m is None:
                        means[k] = 0.0
                        m = 0.0
                    t = (xi - m) / v**0.5
                else:
                    t = 0.0
                wk = w.get(k)
                if wk is not None:
                    acc += wk * t
        else:
            for k, xi in x.items():
                m = means.get(k)
                if m is None:
                    means[k] = 0.0
                    m = 0.0
                wk = w.get(k)
                if wk is not None:
                    acc += wk * (xi - m)
        intercept: float = self.lr.intercept
        return _sigmoid(acc + intercept)

    def learn(self, x: dict[Any, float], y: bool) -> None:
        """``pipeline.learn_one(x, y)``: the scaler learns ``x``, then the regression learns
        ``x`` scaled with the updated statistics."""
        if self._river():
            self.pipeline.learn_one(x, y)
            return
        counts = self.counts
        means = self.means
        vars_ = self.vars
        keys: list[Any] = []
        ts: list[float] = []
        # StandardScaler.learn_one (Welford), then transform_one
        if self.with_std:
            for k, xi in x.items():
                n: int = counts.get(k, 0) + 1  # Counter: counts[i] += 1
                counts[k] = n
                old = means.get(k)  # old_mean = means[i] (inserts 0.0)
                if old is None:
                    means[k] = 0.0
                    old = 0.0
                new = old + (xi - old) / n
                means[k] = new
                v = vars_.get(k)  # vars_[i] += ...: read (inserting 0.0) before the right-hand side
                if v is None:
                    vars_[k] = 0.0
                    v = 0.0
                vars_[k] = v + ((xi - old) * (xi - new) - v) / n
            for k, xi in x.items():
                v = vars_[k]
                keys.append(k)
                ts.append((xi - means[k]) / v**0.5 if v else 0.0)
        else:
            for k, xi in x.items():
                n = counts.get(k, 0) + 1
                counts[k] = n
                old = means.get(k)
                if old is None:
                    means[k] = 0.0
                    old = 0.0
                means[k] = old + (xi - old) / n
            for k, xi in x.items():
                keys.append(k)
                ts.append(xi - means[k])
        self._learn_scaled(keys, ts, y)

    def _learn_scaled(self, keys: list[Any], ts: list[float], y: bool) -> None:
        """``LogisticRegression.learn_one(dict(zip(keys, ts)), y)`` (GLM ``_fit`` with SGD)."""
        lr = self.lr
        w = self.weights
        # the learn-mode VectorDict (mask x, Zeros initializer): dot over x, inserting 0.0 weights
        acc = 0.0
        for i in range(len(keys)):
            k = keys[i]
            wk = w.get(k)
            if wk is None:
                w[k] = 0.0
                wk = 0.0
            acc += wk * ts[i]
        intercept: float = lr.intercept
        raw = acc + intercept
        # Log.gradient(y_true=y, y_pred=raw)
        loss = lr.loss
        if y:
            yt = 1.0
            weight: float = loss.weight_pos
        else:
            yt = -1.0
            weight = loss.weight_neg
        z = raw * yt
        if z > 18.0:
            g = weight * math.exp(-z) * -yt
        elif z < -18.0:
            g = weight * -yt
        else:
            g = weight * -yt / (math.exp(z) + 1.0)
        # (* w, w == 1.0: the same float) then utils.math.clamp(g, -clip, clip) == max(min(g, clip), -clip)
        clip: float = lr.clip_gradient
        if clip < g:
            g = clip
        lo = -clip
        if lo > g:
            g = lo
        opt = lr.optimizer
        ilr: float = lr.intercept_lr.learning_rate
        lr.intercept = intercept - ilr * g
        # SGD step: w -= lr * VectorDict.from_scaled(x, g), i.e. w[k] - (x[k] * g) * lr
        rate: float = opt.lr.learning_rate
        for i in range(len(keys)):
            k = keys[i]
            w[k] = w[k] - (ts[i] * g) * rate
        opt.n_iterations += 1


def _sigmoid(x: float) -> float:
    """``utils.math.sigmoid`` (its int 0 and 1 as floats: the caller takes ``float`` of it)."""
    if x < -30:
        return 0.0
    if x > 30:
        return 1.0
    return 1 / (1 + math.exp(-x))


def auc_view(auc: Any) -> AucView | None:
    """The view of a River ``metrics.ROCAUC`` (``None`` for anything else)."""
    if type(auc) is not metrics.ROCAUC or any(type(cm) is not metrics.ConfusionMatrix for cm in auc.cms):
        return None
    return AucView(auc)


class AucView:
    """``ROCAUC.update(y_true, p)`` for a float ``p``, on River's confusion matrices.

    >>> from river import metrics
    >>> ref, ours = metrics.ROCAUC(), metrics.ROCAUC()
    >>> v = auc_view(ours)
    >>> for y, p in ((True, 0.9), (False, 0.2), (True, 0.4), (False, 0.6)):
    ...     ref.update(y, p); v.update(y, p)
    >>> bool(ref.get() == ours.get())
    True
    """

    def __init__(self, auc: Any) -> None:
        self.auc: Any = auc
        self.thresholds: list[Any] = auc.thresholds
        self.cms: list[Any] = auc.cms

    def update(self, y_true: bool, p: float) -> None:
        """``auc.update(y_true, p)``: each matrix's ``update(y_true == pos_val, p > t, 1.0)``."""
        auc = self.auc
        if auc.thresholds is not self.thresholds or auc.cms is not self.cms:
            auc.update(y_true, p)
            return
        yt: Any = y_true == auc.pos_val
        w = 1.0
        thresholds = self.thresholds
        cms = self.cms
        for i in range(len(cms)):
            cm: Any = cms[i]
            yp: Any = p > thresholds[i]
            cm.n_samples += 1
            row: dict[Any, Any] = cm.data[yt]  # defaultdicts: a missing key is inserted, as River's += does
            row[yp] += w
            cm.total_weight += w
            sum_row: dict[Any, Any] = cm.sum_row
            sum_row[yt] += w
            sum_col: dict[Any, Any] = cm.sum_col
            sum_col[yp] += w
            if yt == yp:
                cm._total_true_positives += w
