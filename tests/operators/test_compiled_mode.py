"""The compiled operators (mypyc, ``setup.py``) and the pure ones are the same program.

* The mode this process runs in is the one asked for: compiled by default (every module of
  ``setup.py``'s ``MYPYC_MODULES`` imported from its extension module, so a build that silently
  failed cannot pass as compiled), every module from its ``.py`` source with ``LIVEPROFILE_PURE=1``.
  ``LIVEPROFILE_NO_COMPILE=1`` (an explicit pure install) is the one way to run without the build.
* Snapshots cross the modes: the per-user states built by the real step over a generated stream
  pickle to the same bytes in both modes, and a snapshot written in one mode loads in the other
  (a subprocess in the other mode) to a state equal to the one the other mode built.
"""

from __future__ import annotations

import ast
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import operators

ROOT = Path(__file__).resolve().parents[2]


def _mypyc_modules() -> list[str]:
    """``MYPYC_MODULES`` as ``setup.py`` lists it (read, not imported: setup.py runs setup())."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MYPYC_MODULES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py defines no MYPYC_MODULES")


def test_the_mode_asked_for_is_the_mode_running() -> None:
    names = _mypyc_modules()
    assert len(names) >= 10
    files = {n: str(__import__(f"operators.{n}", fromlist=["_"]).__file__) for n in names}
    if operators.PURE:
        assert all(f.endswith(".py") for f in files.values()), files
        assert operators.compiled_modules() == []
        assert operators.mode().startswith("pure")
    elif os.environ.get("LIVEPROFILE_NO_COMPILE", "0") not in ("", "0"):
        pytest.skip("an explicit pure install (LIVEPROFILE_NO_COMPILE=1): nothing was compiled")
    else:
        not_compiled = sorted(n for n, f in files.items() if f.endswith(".py"))
        assert not not_compiled, f"not compiled (did the mypyc build of setup.py fail?): {not_compiled}"
        assert sorted(operators.compiled_modules()) == sorted(names)
        assert operators.mode().startswith(f"compiled ({len(names)} modules")


# the states: every user's UserState after the real step over a generated stream with the
# definitions of bench/audiences.py (computed traits and audiences included), an Event, the RFM
# population, a merge graph and catalogue product states, as snapshot bytes
_BUILD = r"""
import sys
sys.path.insert(0, {root!r})
import operators
from bench.audiences import file_text
from liveprofile.devtools.generate import GenConfig, generate
from operators.definitions import load_definitions
from operators.events import Event, Limits, parse_event
from operators.snapshot import dump
from operators.user import UserConfig, step

def states():
    cfg = UserConfig(definitions=load_definitions(file_text()))
    gen = generate(GenConfig(users=40, seed=7, end_ms=1_780_000_000_000, days=20, duplicate_rate=0.05))
    lim = Limits(timestamp_min_ms=0)
    by_user = {{}}
    for raw in gen.events:
        ev = parse_event(dict(raw, receivedAt=raw["timestamp"]), lim)
        if isinstance(ev, Event):
            by_user.setdefault(ev.uid, []).append(ev)
    out = {{}}
    for uid in sorted(by_user):
        st = None
        evs = by_user[uid]
        for i in range(0, len(evs), 7):
            st, _, _ = step(cfg, st, uid, evs[i:i + 7])
        out[uid] = st
    # the native classes pickled as plain slots classes (operators.snapshot.slots_state) too
    from operators.identity import MergeGraph
    from operators.rfm import Population
    pop = Population()
    for st in out.values():
        if st.rfm is not None:
            pop.apply(None, st.rfm)
    with_products = [ev for evs in by_user.values() for ev in evs if ev.products]
    out["~event with products"] = with_products[0]
    out["~population"] = pop
    out["~merge graph"] = MergeGraph({{"a": "b", "b": "c"}})
    from operators.catalogue import apply, sightings
    lines = {{}}
    for ev in with_products:
        for s in sightings(ev):
            lines.setdefault(s.product_id, []).append(s)
    for pid in sorted(lines)[:5]:
        out["~product " + pid] = apply(None, lines[pid])[0]
    return out
"""


_SNAPSHOTS = r"""
import pickle
from operators.snapshot import load
theirs = pickle.loads(sys.stdin.buffer.read())
own = states()
mine = {uid: dump(st) for uid, st in own.items()}
# the other mode's snapshots load here, each to the state this mode built (field for field)
back = {uid: type(load(raw)) is type(own[uid]) and load(raw) == own[uid] for uid, raw in theirs.items()}
sys.stdout.buffer.write(pickle.dumps((mine, back, operators.mode())))
"""


def _run(pure: bool, theirs: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bool], str]:
    """(its snapshots, whether each of ``theirs`` loads to the state it built, its mode) from a
    process in one mode.
    One string hash seed for both: sets pickle in their iteration order."""
    env = {k: v for k, v in os.environ.items() if k != "LIVEPROFILE_PURE"}
    env["PYTHONHASHSEED"] = "0"
    if pure:
        env["LIVEPROFILE_PURE"] = "1"
    code = _BUILD.format(root=str(ROOT)) + _SNAPSHOTS
    done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(theirs), capture_output=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    return pickle.loads(done.stdout)


def test_snapshots_cross_the_modes() -> None:
    if not operators.built_modules():
        pytest.skip("nothing compiled (LIVEPROFILE_NO_COMPILE=1): both modes are the pure one")
    compiled, _, compiled_mode = _run(False, {})
    pure, compiled_in_pure, pure_mode = _run(True, compiled)
    _, pure_in_compiled, _ = _run(False, pure)
    assert compiled_mode.startswith("compiled") and pure_mode.startswith("pure")
    assert len(pure) >= 30 and pure.keys() == compiled.keys()
    assert compiled == pure  # the same states pickle to the same bytes in both modes
    # a compiled snapshot restores in the pure build to the state it builds, and the other way round
    # (load + dump is not byte-stable in one mode either: a restored set can iterate in another order)
    assert compiled_in_pure == dict.fromkeys(pure, True)
    assert pure_in_compiled == dict.fromkeys(compiled, True)


def test_liveprofile_version_prints_the_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from liveprofile.cli import main

    assert main(["version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("liveprofile ") and out[1] == f"operators: {operators.mode()}"
