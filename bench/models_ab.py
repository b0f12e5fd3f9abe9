"""The models step of two source trees on one recorded input, alternately, in one run.

    .venv/bin/python bench/models_ab.py --base /work/wt/models-base [--users 800] [--rounds 5]

First the deployed flow of this tree (``dataflows.profiles:get_flow(stop_at_end=True)``, 4
shards) runs once over a generated buffer (``bench/equality.py``'s input) with
``ModelsLogic.on_batch`` recorded: every batch of ``BehaviourUpdate`` each shard's logic got, in
order. Then each tree replays that recording in a process of its own (this interpreter,
``PYTHONPATH`` and working directory the tree, so its compiled modules): one fresh
``ModelsLogic(ModelConfig(), 4, None)`` per recorded shard, fed its batches, timed with
``time.process_time`` around the replay only. Runs alternate base, this, this, base, ... Per run
it prints the CPU µs per BehaviourUpdate; then the medians and the ratio this / base, with the load.
Every run also prints a digest of all outputs (the ``ModelOut`` fields, flags and scores) and
of each shard's final snapshot bytes: the two trees must print the same digest.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _record(out: Path) -> None:
    """In the flow's process: record ModelsLogic's batches, then run the flow (``bytewax.run``)."""
    import runpy

    from dataflows import logic

    batches: list[tuple[int, list[Any]]] = []
    shard_of: dict[int, int] = {}
    inner = logic.ModelsLogic.on_batch

    def on_batch(self: Any, values: list[Any]) -> Any:
        batches.append((shard_of.setdefault(id(self), len(shard_of)), list(values)))
        return inner(self, values)

    logic.ModelsLogic.on_batch = on_batch  # type: ignore[method-assign]
    atexit.register(lambda: out.write_bytes(pickle.dumps(batches, protocol=pickle.HIGHEST_PROTOCOL)))
    sys.argv = ["bytewax.run", "dataflows.profiles:get_flow(stop_at_end=True)"]
    runpy.run_module("bytewax.run", run_name="__main__")


def _replay(rec: Path) -> None:
    """In a tree's process: replay the recording; print CPU seconds, updates and the digest."""
    from dataflows.logic import ModelsLogic
    from operators.models import ModelConfig

    batches = pickle.loads(rec.read_bytes())
    logics: dict[int, Any] = {}
    results: list[Any] = []
    n = 0
    t0 = time.process_time()
    for shard, values in batches:
        lg = logics.get(shard)
        if lg is None:
            lg = logics[shard] = ModelsLogic(ModelConfig(), 4, None)
        results.append(lg.on_batch(values)[0])
        n += len(values)
    cpu = time.process_time() - t0
    h = hashlib.sha256()
    for outs in results:
        for o in outs:
            h.update(repr((o.uid, sorted(o.fields.items()), o.flagged, o.score.hex())).encode())
    for shard in sorted(logics):
        h.update(logics[shard].snapshot())
    print(f"{cpu} {n} {h.hexdigest()[:16]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the baseline source tree (a worktree)")
    ap.add_argument("--users", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=5, help="replays of each tree")
    ap.add_argument("--recording", type=Path, help="reuse (or keep) this recording file")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from bench.equality import SHARDS, make_input
    from bench.pipeline import load
    from tests.redis_server import RedisServer

    trees = {"base": a.base.resolve(), "this": ROOT}
    with tempfile.TemporaryDirectory(prefix="models-ab-") as d:
        work = Path(d)
        rec = a.recording or work / "batches.pickle"
        if not rec.exists():
            rdb, n = make_input(a.users, work)
            (work / "run").mkdir()
            shutil.copy(rdb, work / "run" / "dump.rdb")
            srv = RedisServer(work / "run").start()
            try:
                env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPROFILE_")}
                env.update({"LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_SHARDS": str(SHARDS),
                            "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "PYTHONPATH": str(ROOT)})  # fmt: skip
                code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.models_ab import _record; from pathlib import Path; _record(Path({str(rec)!r}))"
                subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
            finally:
                srv.stop()
            print(f"recorded {n} buffer entries ({a.users} users) -> {rec}", flush=True)
        print(f"base {trees['base']}  this {ROOT}  (load {load()})", flush=True)
        per: dict[str, list[float]] = {"base": [], "this": []}
        digests: dict[str, set[str]] = {"base": set(), "this": set()}
        order = [name for i in range(a.rounds) for name in (("base", "this") if i % 2 == 0 else ("this", "base"))]
        for i, name in enumerate(order):
            tree = trees[name]
            env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPROFILE_")}
            env["PYTHONPATH"] = str(tree)
            code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.models_ab import _replay; from pathlib import Path; _replay(Path({str(rec)!r}))"
            # the tree's own code: its directory first on sys.path (ROOT only for this module)
            code = code.replace(f"sys.path.insert(0, {str(ROOT)!r});", f"sys.path.insert(0, {str(ROOT / 'bench')!r}); sys.path.insert(0, {str(tree)!r});")
            code = code.replace("from bench.models_ab import", "from models_ab import")
            out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, check=True, capture_output=True, text=True).stdout.split()
            cpu, n, digest = float(out[0]), int(out[1]), out[2]
            per[name].append(cpu / n * 1e6)
            digests[name].add(digest)
            print(f"run {i + 1:2}: {name:4} {cpu:6.2f} s CPU, {n} updates, {cpu / n * 1e6:6.2f} µs/update, digest {digest}  (load {load()})", flush=True)
    med = {k: statistics.median(v) for k, v in per.items()}
    print(f"medians: base {med['base']:.2f} µs/update, this {med['this']:.2f} µs/update; ratio this / base {med['this'] / med['base']:.3f}  (load {load()})")
    same = len(digests["base"] | digests["this"]) == 1
    print(f"outputs and snapshots equal: {'yes' if same else 'NO'} ({sorted(digests['base'] | digests['this'])})")


if __name__ == "__main__":
    main()
