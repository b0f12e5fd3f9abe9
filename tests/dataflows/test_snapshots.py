"""Versioned state: a recovery store written by the previous layout (bare-pickle snapshots,
commit 037e423, made by ``snapshots/make_recovery_store.py``) resumes under this code with the
same profiles as an uninterrupted run, and later snapshots are written at the current version;
a version bump runs its migration exactly once."""

from __future__ import annotations

import pickle
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from bytewax.recovery import RecoveryConfig
from bytewax.testing import TestingSource, run_main

from operators import snapshot
from operators.user import ProfileUpdate
from tests.dataflows.snapshots.make_recovery_store import ABORT_AT, items
from tests.dataflows.test_flow import Out, flow_of

STORE_V0 = Path(__file__).parent / "snapshots" / "v0"


def _snapshots(store: Path, step: str) -> list[bytes]:
    """The newest snapshot of each key of ``step`` (our bytes, as Bytewax pickled them)."""
    with sqlite3.connect(store / "part-0.sqlite3") as c:
        rows = c.execute(
            "SELECT state_key, ser_change FROM snaps s WHERE step_id = ? AND snap_epoch ="
            " (SELECT MAX(snap_epoch) FROM snaps t WHERE t.step_id = s.step_id AND t.state_key = s.state_key)",
            (f"liveprofile.{step}",),
        ).fetchall()
    return [pickle.loads(blob) for _, blob in rows if blob is not None]


def test_a_store_from_the_previous_layout_resumes_with_the_same_profiles(tmp_path: Path) -> None:
    store = tmp_path / "rec"
    shutil.copytree(STORE_V0, store)
    for step in ("user", "models", "population"):
        snaps = _snapshots(store, step)
        assert snaps and all(snapshot.version_of(s) == 0 for s in snaps), step  # the old layout indeed
    assert all(isinstance(s, str) for s in _snapshots(store, "identity"))  # linked ids were bare strings

    resumed = Out()
    run_main(flow_of(items(), resumed, batch_size=4), recovery_config=RecoveryConfig(str(store)), epoch_interval=timedelta(0))
    whole = Out()
    run_main(flow_of(items(), whole, batch_size=4))

    later = [orjson.loads(raw) for _, _, raw in items()[ABORT_AT:]]
    after = {e.get("userId") or e["anonymousId"] for e in later}
    got, want = resumed.final(), whole.final()
    assert len(after) >= 6 and set(got) >= after  # every user with later events was written again
    for uid, p in got.items():
        assert isinstance(p, type(want[uid])), uid
        if isinstance(p, ProfileUpdate):
            assert p.fields == want[uid].fields, uid  # type: ignore[union-attr]
    for step in ("user", "identity", "population"):
        assert any(snapshot.version_of(s) == snapshot.VERSION for s in _snapshots(store, step) if isinstance(s, bytes)), step


def test_a_version_bump_runs_its_migration_once_and_refuses_newer_snapshots() -> None:
    calls: list[object] = []

    def rename_b_to_c(obj: dict) -> dict:  # what a v1 -> v2 step would do to a renamed field
        calls.append(obj)
        return {"a": obj["a"], "c": obj["b"]}

    v2 = {**snapshot.MIGRATIONS, 1: rename_b_to_c}
    assert snapshot.load(snapshot.dump({"a": 1, "b": 2}), version=2, migrations=v2) == {"a": 1, "c": 2}
    assert len(calls) == 1
    assert snapshot.load(pickle.dumps({"a": 1, "b": 2}), version=2, migrations=v2) == {"a": 1, "c": 2}  # 0 -> 1 -> 2
    assert snapshot.load(snapshot.dump({"a": 1, "c": 2}, version=2), version=2, migrations=v2) == {"a": 1, "c": 2}
    assert len(calls) == 2
    with pytest.raises(ValueError, match="newer"):
        snapshot.load(snapshot.dump({"a": 1}, version=2))


def test_testing_source_items_are_the_generator_s() -> None:
    """The resumed run replays the very items the store was written from (abort point included)."""
    assert len(items()) > ABORT_AT and TestingSource.ABORT not in map(type, items())
