"""operators.logreg's views against River itself: the same floats (bit for bit) from
``StandardScaler() | LogisticRegression(SGD)`` and ``ROCAUC``, the same state left in River's
objects (their pickles byte for byte), and ShardModels' snapshots unchanged by the views."""

from __future__ import annotations

import pickle
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from river import linear_model, metrics, optim, preprocessing

from operators.logreg import AucView, PropensityView, auc_view, propensity_view
from operators.models import ModelConfig, ShardModels

KEYS = ("views", "adds", "removes", "checkouts", "duration_min", "new_a", "new_b")


def _bits(x: float) -> bytes:
    """The float's bytes: equal floats of different sign of zero (or NaN payloads) differ here."""
    return struct.pack("<d", x)


# feature values: repeated constants (zero variance, exact ties), counts, and wide floats (|logit| past 18 and 30)
values = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 3.0, 1e-300]),
    st.integers(0, 50).map(float),
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
)


@st.composite
def feature_dicts(draw: Any) -> dict[str, float]:
    """A dict over a random subset of KEYS in a random order (features missing, or new ones later)."""
    keys = draw(st.permutations(KEYS))
    n = draw(st.integers(0, len(keys)))
    return {k: draw(values) for k in keys[:n]}


steps = st.lists(st.tuples(feature_dicts(), st.booleans(), st.sampled_from(["learn", "learn", "predict"])), min_size=1, max_size=60)


def _pipeline(rate: float, with_std: bool = True) -> Any:
    return preprocessing.StandardScaler(with_std=with_std) | linear_model.LogisticRegression(optimizer=optim.SGD(rate))


@settings(max_examples=300, deadline=None)
@given(steps=steps, rate=st.sampled_from([0.05, 0.2, 1.0, 40.0]), with_std=st.sampled_from([True, True, False]))
def test_view_predicts_and_learns_as_river(steps: list[tuple[dict[str, float], bool, str]], rate: float, with_std: bool) -> None:
    ref, ours = _pipeline(rate, with_std), _pipeline(rate, with_std)
    view = propensity_view(ours)
    assert isinstance(view, PropensityView)
    for i, (x, y, what) in enumerate(steps):
        p = float(ref.predict_proba_one(x).get(True, 0.0))
        assert _bits(view.predict(x)) == _bits(p), (i, x)  # score first, as ShardModels does
        if what == "learn":
            ref.learn_one(x, y)
            view.learn(x, y)
        assert pickle.dumps(ours) == pickle.dumps(ref), i


def test_view_reads_what_river_learnt_in_between_and_river_reads_what_it_learnt() -> None:
    ref, ours = _pipeline(0.1), _pipeline(0.1)
    view = propensity_view(ours)
    assert view is not None
    xs = [{"views": float(i % 7), "adds": float(i % 3), "new": float(i)} for i in range(40)]
    for i, x in enumerate(xs):
        y = i % 4 == 0
        ref.learn_one(x, y)
        if i % 2:
            ours.learn_one(x, y)  # River itself, on the objects the view reads
        else:
            view.learn(x, y)
        assert view.predict(x) == ref.predict_proba_one(x)[True] == ours.predict_proba_one(x)[True]
    assert pickle.dumps(ours) == pickle.dumps(ref)
    back = pickle.loads(pickle.dumps(ours))  # a restored pipeline: a new view over its objects
    v2 = propensity_view(back)
    assert v2 is not None and v2.predict(xs[3]) == ref.predict_proba_one(xs[3])[True]


def test_other_shapes_get_no_view() -> None:
    assert propensity_view(preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.1)) is None
    assert propensity_view(preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.Adam())) is None
    assert propensity_view(preprocessing.StandardScaler(window_size=5) | linear_model.LogisticRegression()) is None
    assert propensity_view(linear_model.LogisticRegression()) is None
    assert auc_view(metrics.ROCAUC()) is not None and auc_view(metrics.Accuracy()) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 1.0, 0.5, 1 / 9]))), max_size=40),
       st.sampled_from([2, 5, 10]))  # fmt: skip
def test_auc_view_updates_as_river(stream: list[tuple[bool, float]], n: int) -> None:
    ref, ours = metrics.ROCAUC(n_thresholds=n), metrics.ROCAUC(n_thresholds=n)
    view = auc_view(ours)
    assert isinstance(view, AucView)
    for y, p in stream:
        ref.update(y, p)
        view.update(y, p)
    assert pickle.dumps(ours) == pickle.dumps(ref)
    assert _bits(ours.get()) == _bits(ref.get())
    assert pickle.dumps(ours) == pickle.dumps(ref)  # get() inserts its zero counts alike


class _River:
    """learn_session/propensity and the AUC as before the views: River's calls."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.m = ShardModels.new(cfg)

    def propensity(self, x: dict[str, float]) -> float:
        return float(self.m.prop.predict_proba_one(x).get(True, 0.0))

    def learn_session(self, x: dict[str, float], converted: bool, learn: bool) -> float:
        m = self.m
        p = self.propensity(x)
        m.auc.update(converted, p)
        if learn:
            m.prop.learn_one(x, converted)
        m.sessions += 1
        return p


ops = st.lists(st.tuples(st.sampled_from(["session", "session", "open", "auc"]), feature_dicts(), st.booleans(), st.booleans()),
               min_size=1, max_size=50)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(ops=ops, rate=st.sampled_from([0.05, 0.5]))
def test_shard_models_equal_rivers_and_pickle_the_same_bytes(ops: list[tuple[str, dict[str, float], bool, bool]], rate: float) -> None:
    cfg = ModelConfig(learning_rate=rate, window_size=4)
    ours, ref = ShardModels.new(cfg), _River(cfg)
    for i, (what, x, converted, learn) in enumerate(ops):
        if what == "session":
            assert _bits(ours.learn_session(x, converted, learn)) == _bits(ref.learn_session(x, converted, learn)), i
        elif what == "open":
            assert _bits(ours.propensity(x)) == _bits(ref.propensity(x)), i
        elif ours.sessions:
            assert _bits(ours.auc_value()) == _bits(float(ref.m.auc.get())), i  # what ModelsLogic reports per batch
    assert ours.to_bytes() == ref.m.to_bytes()
    back = ShardModels.from_bytes(ours.to_bytes())  # restored: views rebuilt over the restored objects
    ref.m = ShardModels.from_bytes(ref.m.to_bytes())
    assert back.pview is None and back.auc_at == -1
    x = {"views": 3.0, "adds": 1.0}
    assert back.learn_session(x, True, True) == ref.learn_session(x, True, True)
    assert back.auc_value() == float(ref.m.auc.get()) and back.to_bytes() == ref.m.to_bytes()


def test_auc_value_is_computed_again_after_each_session() -> None:
    m = ShardModels.new(ModelConfig())
    m.learn_session({"views": 1.0}, True, True)
    first = m.auc_value()
    assert m.auc_value() == first == m.auc.get()
    for i in range(6):
        m.learn_session({"views": float(i)}, i % 2 == 0, True)
        assert m.auc_value() == m.auc.get()
