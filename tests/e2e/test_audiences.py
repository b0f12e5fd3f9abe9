"""Computed traits and audiences through the whole flow (real dataflow process, real Redis),
checked against the independent brute force of :mod:`tests.audiences_bruteforce`.

The generated stream (fixed seed, ~360 profiles, ~6.7k events over 40 days) goes into the
buffer in prefixes: all events with ``ts <= cut`` for each sample cut (three in the middle,
then the end); after each, the test waits until every profile's ``computed`` and ``audiences``
fields and every ``lp:audience:{name}`` set equal the brute force at ``T``, the newest event
time of the prefix (or fails with the differences after a timeout). The sample times come after windows closed for
users with no later events (the early stoppers' 7d windows, the early email openers' 30d), so
those exits must have been fired by the flow's own event-time timers. Shuffled input (each event
displaced by up to 20 minutes of event time) and two workers must give the same results. All
runs also check the change feed: per user and audience, transitions alternate entered/exited
starting with entered and end at the brute force's membership; and, on sorted input with one
worker, each carries an ``event_at`` at which the brute force agrees with the transition.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import redis

from bench.pipeline import load_buffer
from operators.definitions import Definitions
from tests.audiences_bruteforce import (
    PREFIX,
    RICH,
    SAMPLES,
    SPEC_FILE,
    Stream,
    expected,
    feed_transitions,
    generate,
    load,
    membership_at,
    mismatches,
    owners,
    profile_state,
)
from tests.e2e.chaos import FAST_WINDOWS
from tests.procs import base_env, start_dataflow, wait_for

STREAM = generate()
T_END = max(STREAM.ts(e) for e in STREAM.events)
TIMES = (*SAMPLES, T_END)


def _ts(ev: dict) -> int:
    return STREAM.ts(ev)


def newest(cut: int) -> int:
    """The stream's time once every event up to ``cut`` is in: its newest event time (the flow
    cannot know about an exit after it; event times avoid the 5 minutes before an hour, where
    exits are, so the clock's wall-time extrapolation while the test waits reaches none)."""
    return max(t for e in STREAM.events if (t := _ts(e)) <= cut)


def agree(r: redis.Redis, defs: Definitions, at: int, timeout: float = 90, stream: Stream = STREAM) -> None:
    """Wait until Redis equals the brute force over ``stream`` at ``at``; fail with the differences."""
    exp = expected(defs, stream, at)
    last: list = []

    def ok() -> bool:
        nonlocal last
        last = mismatches(r, defs, exp)
        return not last

    try:
        wait_for(ok, timeout, 0.5, f"the profiles to equal the brute force at {at}")
    except TimeoutError:
        keys = sorted({m[0] for m in last if m[0] in exp.events})[:3]
        counts = {k: {f: v for f, v in profile_state(r, [k])[k].items() if f in ("event_count", "email_opens", "anonymous_ids")}
                  for k in keys}  # fmt: skip
        pytest.fail(f"at {at}: {len(mismatches(r, defs, exp, limit=0))} mismatches, e.g. {last}; "
                    f"the flow's own counters there: {counts}; brute-force events: {[len(exp.events[k]) for k in keys]}")


def run_prefixes(redis_url: str, r: redis.Redis, tmp: Path, text: str, order: list[dict], workers: int) -> Definitions:
    defs = load(text)
    path = tmp / "definitions.yaml"
    path.write_text(text)
    env = base_env(redis_url, LIVEPROFILE_DEFINITIONS=str(path), **FAST_WINDOWS)
    df = start_dataflow(env, tmp, extra=["-w", str(workers)] if workers > 1 else ())
    try:
        lo = -1
        for cut in TIMES:
            chunk = [e for e in order if lo < _ts(e) <= cut]
            assert load_buffer(redis_url, chunk, 4) == len(chunk)
            agree(r, defs, newest(cut))
            assert df.alive(), df.output()
            lo = cut
    finally:
        df.interrupt()
    return defs


def check_feed(r: redis.Redis, defs: Definitions, stream: Stream, at: int, event_times: bool) -> None:
    """The change feed's audience transitions (see the module doc). ``event_times``: also check
    each transition against the brute force at its ``event_at`` (users without an anonymous
    history only: theirs is merged in through the buffer, so it may land after event_at)."""
    for _, f in r.xrange(f"{PREFIX}:profile-changes"):
        if f.get(b"anonymous") == b"1":
            assert b"audiences_entered" not in f and b"audiences_exited" not in f, f"an anonymous profile has transitions: {f}"
    feed = feed_transitions(r)
    exp = expected(defs, stream, at)
    fields = profile_state(r, exp.known)
    merged_users = {u for u, _ in stream.identified.values()}
    by_key = owners(stream, at)
    pure: set[str] = set()  # audiences that read computed traits and pure audiences only
    for a in defs.audiences:  # dependency order
        if all(f[0] == "computed" or (f[0] == "audience" and f[1] in pure) for f in a.when.fields()):
            pure.add(a.name)
    n = 0
    for key in exp.known:
        uid = key.removeprefix(f"{PREFIX}:profile:")
        final = set(orjson.loads(fields[key].get("audiences", "[]")))
        trans = feed.get(uid, [])
        for a in defs.audiences:
            seq = [(k, t) for name, k, t in trans if name == a.name]
            kinds = [k for k, _ in seq]
            assert kinds == ["entered", "exited"] * (len(kinds) // 2) + ["entered"] * (len(kinds) % 2), (uid, a.name, seq)
            assert (len(kinds) % 2 == 1) == (a.name in final), (uid, a.name, seq, final)
            n += len(kinds)
            if not event_times or uid in merged_users or a.name not in pure:
                continue
            for k, t in seq:
                assert t is not None, (uid, a.name, seq)
                ms = _iso_ms(t)
                inside = a.name in membership_at(defs, by_key[key], fields[key], ms)
                assert inside == (k == "entered"), (uid, a.name, k, t)
    assert n > 0, "the stream has audience transitions"


def _iso_ms(s: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def test_spec_example_file_equals_brute_force(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    defs = run_prefixes(redis_url, r, tmp_path, SPEC_FILE, STREAM.events, 1)
    check_feed(r, defs, STREAM, T_END, event_times=False)


@pytest.mark.parametrize(("shuffled", "workers"), [(False, 1), (True, 1), (True, 2)], ids=["sorted-1w", "shuffled-1w", "shuffled-2w"])
def test_every_kind_equals_brute_force_at_sampled_times_and_end(redis_url: str, r: redis.Redis, tmp_path: Path, shuffled: bool, workers: int) -> None:
    order = STREAM.shuffled(seed=3) if shuffled else STREAM.events
    assert shuffled == (order != STREAM.events)
    defs = run_prefixes(redis_url, r, tmp_path, RICH, order, workers)
    check_feed(r, defs, STREAM, T_END, event_times=False)


def test_transitions_carry_an_event_at_when_they_hold(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """Sorted input, one worker: each enter/exit entry's ``event_at`` is a time at which the brute
    force agrees with it (in after ``entered``, out after ``exited``)."""
    defs = run_prefixes(redis_url, r, tmp_path, RICH, STREAM.events, 1)
    check_feed(r, defs, STREAM, T_END, event_times=True)
