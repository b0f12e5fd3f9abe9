"""Which fields of the per-user state cost what, pickled: a table of mean bytes per user.

    .venv/bin/python bench/state_fields.py [--users 2000]

Builds every user's :class:`operators.user.UserState` over ``bench/memory.py``'s stream (known users)
and ``bench/anon_state.py``'s (anonymous visitors, with their :class:`operators.user.MergeLog`), then
pickles each attribute of each state object on its own (``pickle.HIGHEST_PROTOCOL``) and prints the
mean per user, largest first, next to the whole state's pickled size. A field's own pickle carries a
few bytes of framing the whole state shares, so the rows sum to a little more than the total.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections import defaultdict
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.anon_state import routed, run  # noqa: E402
from bench.identity_dedupe import stream  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from operators.events import Event, Limits, parse_event  # noqa: E402
from operators.identity import is_anon  # noqa: E402
from operators.user import UserConfig, UserState, step  # noqa: E402


def _size(v: Any) -> int:
    return len(pickle.dumps(v, protocol=pickle.HIGHEST_PROTOCOL))


def table(states: list[UserState]) -> list[tuple[str, float]]:
    """(``part.field``, mean pickled bytes per state), largest first."""
    tot: dict[str, int] = defaultdict(int)
    for st in states:
        for f in fields(st):
            v = getattr(st, f.name)
            if is_dataclass(v) and not isinstance(v, type):
                for g in fields(v):
                    tot[f"{f.name}.{g.name}"] += _size(getattr(v, g.name))
            else:
                tot[f.name] += _size(v)
    n = max(len(states), 1)
    return sorted(((k, v / n) for k, v in tot.items()), key=lambda kv: -kv[1])


def known_states(users: int) -> list[UserState]:
    """The known users' states over ``bench/memory.py``'s stream."""
    gen = generate(GenConfig(users=users, seed=8, end_ms=int(time.time() * 1000) - 60_000, days=30))
    lim = Limits(timestamp_min_ms=0)
    cfg = UserConfig()
    states: dict[str, Any] = {}
    for raw in gen.events:
        ev = parse_event(dict(raw, receivedAt=raw["timestamp"]), lim)
        if isinstance(ev, Event):
            states[ev.uid], _, _ = step(cfg, states.get(ev.uid), ev.uid, [ev])
    return [s for s in states.values() if isinstance(s, UserState)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    a = ap.parse_args()
    known = known_states(a.users)
    _, st, _ = run(routed(stream(a.users)))
    anon = [s for uid, s in st.items() if is_anon(uid) and isinstance(s, UserState)]
    for name, group in (("memory.py stream, all users", known), ("anon_state.py stream, anonymous visitors", anon)):
        whole = sum(_size(s) for s in group) / max(len(group), 1)
        print(f"{name}: {len(group)} states, {whole:.0f} B pickled each")
        for k, v in table(group):
            if v >= 8:
                print(f"  {k:32s} {v:8.0f}")


if __name__ == "__main__":
    main()
