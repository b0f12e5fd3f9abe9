"""The models step reports an ``anomaly_score`` that agrees with ``suspect`` (issue 12 item 4):
during the forests' warm-up their score is 0, and a user the fixed-limit rule flags was
reported ``suspect=1`` with ``anomaly_score=0.0000`` (failed on main bed8741: 0.0 < 0.75)."""

from __future__ import annotations

from dataflows.logic import ModelsLogic
from operators.behaviour import FEATURE_LIMITS
from operators.models import ModelConfig
from operators.user import BehaviourUpdate


def _update(uid: str, rule: bool) -> BehaviourUpdate:
    x = {k: lo for k, (lo, _) in FEATURE_LIMITS.items()}
    return BehaviourUpdate(uid, x, rule, None)


def test_suspect_is_always_a_score_at_or_above_the_threshold() -> None:
    cfg = ModelConfig(threshold=0.75)
    logic = ModelsLogic(cfg, 1, None)
    out, _ = logic.on_batch([_update(f"u{i}", rule=i % 3 == 0) for i in range(30)])  # all inside the warm-up
    assert len(out) == 30
    for o in out:
        score, suspect = float(o.fields["anomaly_score"]), o.fields["suspect"] == "1"
        assert suspect == (score >= cfg.threshold), o
        assert o.flagged == suspect and o.score == score
    assert sum(o.flagged for o in out) == 10
