"""parse + validate per event: the typed fast path against the reference, on the same entries.

    .venv/bin/python bench/parse.py [--users 1000] [--rounds 15] [--chunk 2000] [--profile]

1. Generates the bench stream (:func:`liveprofile.devtools.generate.generate`, the settings of
   ``bench/pipeline.py``, with 2 % invalid events) and turns it into buffer entries as the
   buffer holds them: :func:`liveprofile.buffer.ingest.prepare` (what the collector and
   ``replay_lines`` run) stamps ``receivedAt`` and encodes each accepted event with orjson.
   The events prepare rejects, encoded the same way, are the *bad* entries (what a producer
   writing straight to the buffer could leave there).
2. Checks that :func:`operators.events.parse_event` (new: msgspec fast path, reference as the
   fallback) and :func:`operators.events.parse_event_reference` (old: orjson + dict checks)
   return equal results for every entry (Event field by field; Rejected reason, message, raw,
   received_at, message_id); any difference is printed and the bench exits 1.
3. Times (CPU time of this process: ``time.process_time``, so another process's turn on the
   shared cores is not counted; its cache and frequency effects still are), per chunk of ``--chunk`` entries, ``orjson.loads`` alone, the old and the new parse,
   alternating the variants (the order rotates every round), ``--rounds`` rounds; prints µs per
   event (best chunk and median chunk over the rounds) and the ratio new/old; then the same for
   the bad entries (the slow path's cost: the fast path's attempt plus the reference), and the
   good entries made SDK-shaped (:func:`sdk_shaped`: with the ``sentAt`` real SDK requests carry,
   which puts the clock-skew correction on the path; checked equal too).
4. ``--profile``: cProfile of the new parse over the good entries, top entries by own time.

The machine's load average is printed with the figures: the box is shared, so compare the
ratio, and the best chunk (least disturbed), not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.buffer.ingest import prepare  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from operators.events import Limits, parse_event, parse_event_reference  # noqa: E402
from operators.timeutil import iso, parse_ts  # noqa: E402

END_MS = 1_790_000_000_000  # fixed: the same stream every run


def entries(users: int) -> tuple[list[bytes], list[bytes], Limits]:
    """(good buffer entries, bad entries, the limits) of the generated stream."""
    gen = generate(GenConfig(users=users, seed=1, end_ms=END_MS, days=30, duplicate_rate=0.02, invalid_rate=0.02))
    limits = Limits(timestamp_min_ms=parse_ts("2000-01-01T00:00:00Z"))
    prep = prepare(
        gen.events, keys=Keys("lp"), shards=1, limits=limits, received_at=iso(END_MS),
        source="bench", keep_received=True,
    )  # fmt: skip
    good = [f["e"] for stream, f in prep.appends if stream.startswith("lp:events")]
    bad = [r.raw for r in prep.rejected]
    return good, bad, limits


def sdk_shaped(good: list[bytes]) -> list[bytes]:
    """The good entries as the Segment/RudderStack SDKs send them: each with the ``sentAt`` of its
    request (one per batch of 20 events, a second before the collector's ``receivedAt``), which the
    generated stream lacks; the time correction (``receivedAt - (sentAt - timestamp)``) and the
    ``originalTimestamp`` it keeps are then on the path, as in real traffic."""
    out = []
    for i, e in enumerate(good):
        d = orjson.loads(e)
        if "timestamp" in d:
            d["sentAt"] = iso(parse_ts(d["receivedAt"]) - 1000 - (i // 20) % 3)
        out.append(orjson.dumps(d))
    return out


def same(entries_: list[bytes], limits: Limits) -> int:
    """How many entries the two parses disagree on (printing the first few)."""
    n = 0
    for e in entries_:
        a, b = parse_event(e, limits), parse_event_reference(e, limits)
        if a != b or type(a) is not type(b):
            n += 1
            if n <= 3:
                print(f"DIFFERENT for {e[:200]!r}:\n  new {a!r}\n  old {b!r}")
    return n


def timed(variants: dict[str, Callable[[bytes], object]], entries_: list[bytes], rounds: int, chunk: int) -> dict[str, list[float]]:
    """µs per event of each variant, one figure per (round, chunk); variants alternate per chunk."""
    chunks = [entries_[i : i + chunk] for i in range(0, len(entries_), chunk)]
    names = list(variants)
    out: dict[str, list[float]] = {k: [] for k in names}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for c in chunks:
                for k in order:
                    f = variants[k]
                    t0 = time.process_time()
                    for e in c:
                        f(e)
                    out[k].append((time.process_time() - t0) / len(c) * 1e6)
            gc.collect()
    finally:
        if gc_was:
            gc.enable()
    return out


def report(title: str, res: dict[str, list[float]], new: str, old: str) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{title} (load average {load})")
    for k, v in res.items():
        print(f"  {k:<34} best {min(v):6.2f} µs/event   median {statistics.median(v):6.2f} µs/event")
    print(f"  ratio new/old: best {min(res[new]) / min(res[old]):.3f}   median {statistics.median(res[new]) / statistics.median(res[old]):.3f}")


def compare_modes(args: argparse.Namespace) -> int:
    """``--pure-too``: the good entries' figures of the installed (compiled) and the pure-Python
    operators, one child process per (round, mode), the order alternating every round; prints
    each mode's µs/event (best and median chunk) and the ratio compiled/pure."""
    import subprocess

    import operators

    print(f"installed operators: {operators.mode()}")
    res: dict[str, dict[str, list[float]]] = {"compiled": {}, "pure": {}}
    for r in range(args.rounds):
        for mode in ("compiled", "pure") if r % 2 == 0 else ("pure", "compiled"):
            env = {k: v for k, v in os.environ.items() if k != "LIVEPROFILE_PURE"}
            if mode == "pure":
                env["LIVEPROFILE_PURE"] = "1"
            cmd = [sys.executable, __file__, "--users", str(args.users), "--rounds", "1", "--chunk", str(args.chunk), "--emit-json"]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            got = json.loads(next(line for line in out.splitlines() if line.startswith("JSON "))[5:])
            for k, v in got.items():
                res[mode].setdefault(k, []).extend(v)
        print(f"round {r} done (load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
    for mode, figures in res.items():
        report(f"{mode} operators, good entries, parse + validate", figures, "new (parse_event)", "old (parse_event_reference)")
    for k in ("new (parse_event)", "old (parse_event_reference)"):
        c, p = res["compiled"][k], res["pure"][k]
        print(f"compiled/pure {k:<30} best {min(c) / min(p):.3f}   median {statistics.median(c) / statistics.median(p):.3f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--chunk", type=int, default=2000)
    ap.add_argument("--profile", action="store_true", help="cProfile the new parse over the good entries")
    ap.add_argument("--pure-too", action="store_true",
                    help="compiled vs pure operators: --rounds child runs of each mode (LIVEPROFILE_PURE=1), alternated")
    ap.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)  # a --pure-too child's figures
    args = ap.parse_args()
    if args.pure_too:
        return compare_modes(args)

    good, bad, limits = entries(args.users)
    sdk = sdk_shaped(good)
    print(f"{len(good)} good entries (mean {sum(map(len, good)) / len(good):.0f} bytes), {len(bad)} bad entries")
    diff = same(good, limits) + same(bad, limits) + same(sdk, limits)
    print(f"new == old on every entry: {'yes' if diff == 0 else f'NO, {diff} differ'}")
    if diff:
        return 1

    def old(e: bytes) -> object:
        return parse_event_reference(e, limits)

    def new(e: bytes) -> object:
        return parse_event(e, limits)

    res = timed({"orjson.loads alone": orjson.loads, "old (parse_event_reference)": old, "new (parse_event)": new}, good, args.rounds, args.chunk)
    if args.emit_json:
        print("JSON " + json.dumps(res))
        return 0
    report("good entries, parse + validate", res, "new (parse_event)", "old (parse_event_reference)")
    res = timed({"old (parse_event_reference)": old, "new (parse_event)": new}, bad, args.rounds * 5, args.chunk)
    report("bad entries (dead letters: the slow path)", res, "new (parse_event)", "old (parse_event_reference)")
    res = timed({"old (reference, SDK-shaped)": old, "new (parse_event, SDK-shaped)": new}, sdk, args.rounds, args.chunk)
    report("SDK-shaped good entries (with the sentAt of their request)", res, "new (parse_event, SDK-shaped)", "old (reference, SDK-shaped)")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for e in good:
            new(e)
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(15)
        print(s.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
