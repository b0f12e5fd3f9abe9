"""What the stateful steps hand to the sinks (besides :mod:`operators.user`'s outputs).

Made by :mod:`dataflows.parse` and :mod:`dataflows.logic`, written by :mod:`dataflows.sinks`.
"""

from __future__ import annotations

from dataclasses import dataclass

from liveprofile.store.deadletter import Stage
from operators.events import Rejected
from operators.rfm import RfmEdges

__all__ = ["DeadLetter", "ModelOut", "EdgesOut"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected event with the source position it came from (for idempotence)."""

    rejected: Rejected
    source: str
    position: tuple[int, int]
    stage: Stage = Stage.DATAFLOW


@dataclass(frozen=True, slots=True)
class ModelOut:
    """Model outputs for one user: written as a patch; flagged ones go to the anomalies stream."""

    uid: str
    fields: dict[str, str]
    flagged: bool
    score: float
    features: dict[str, float]


@dataclass(frozen=True, slots=True)
class EdgesOut:
    """New RFM population edges (or ``None``: only a refresh tick); ``final``: the input
    ended, rescore every customer now."""

    edges: RfmEdges | None
    final: bool = False
