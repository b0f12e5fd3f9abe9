"""Same input, two versions: every profile field, set and dead letter compared, key by key.

    .venv/bin/python bench/equality.py BASE_REV [--head REV] [--users 600] [--no-definitions]

Issue 15's "every profile field and dead-letter reason unchanged, equality with the previous
commit on the same input", for any two versions: a performance change must not change a result.

One input, made once: a generated stream (``--users`` users and bots, 30 days, 2 % duplicates, 2 %
invalid events, shuffled within the hour so some arrive out of order) appended to a buffer as the
collector would (this tree's ``replay_lines``), plus the invalid events and a few hostile entries
written straight to the buffer streams (what a producer bypassing the collector could leave
there: the dataflow's own dead letters), saved as one RDB. Each version's dataflow
(``dataflows.profiles:get_flow(stop_at_end=True)``, started from its tree's root so it imports that
tree's code, with the 20-trait / 10-audience file of ``bench/audiences.py`` unless
``--no-definitions``) runs over its own copy of that RDB. Then every key of both servers is read
(hashes, sets, sorted sets, strings; streams as the multiset of their entries' fields, since
batching may interleave users differently) and compared; fields that hold wall-clock times or
count writes are left out (:data:`VOLATILE`), and so is the change feed, whose entries follow how
the pages fell into batches (:data:`BATCHING`). Prints each difference (the first 20) and exits 1 if there is any.
``BASE_REV`` may equal the head: the check then shows the comparison itself is deterministic.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.audiences import file_text  # noqa: E402
from bench.compare import loaded_from  # noqa: E402
from bench.pipeline import load_buffer  # noqa: E402
from liveprofile.buffer.ingest import prepare  # noqa: E402
from liveprofile.devtools.generate import GenConfig, generate  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from operators.events import Limits  # noqa: E402
from operators.timeutil import iso, parse_ts  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

#: fields that are not results: the wall clock of a write, and ``version`` (how many writes it
#: took, which depends on how the source's pages fell into batches: timing, not logic)
VOLATILE = frozenset({b"updated_at", b"at", b"failed_at", b"dead_at", b"written_at", b"version"})
#: keys whose entries follow the batching (one change-feed entry per write, its ``changed`` what
#: that write changed): left out; their exactly-once transitions have tests of their own
BATCHING = ("lp:profile-changes",)
SHARDS = 4
HOSTILE = [
    b"{not json", b"[]", b'{"type": "track"}', b'{"type": "track", "event": "x", "userId": 7}',
    b'{"type": "alias", "userId": "a", "previousId": "a"}', b'{"type": "identify", "userId": "u", "traits": "s"}',
]


def make_input(users: int, workdir: Path) -> tuple[Path, int]:
    """The saved buffer (RDB) both versions read, and its entry count."""
    gen = generate(GenConfig(users=users, seed=5, end_ms=int(time.time() * 1000) - 3_600_000, days=30,
                             duplicate_rate=0.02, invalid_rate=0.02))  # fmt: skip
    rnd = random.Random(5)
    events = sorted(gen.events, key=lambda e: (str(e.get("timestamp", ""))[:13], rnd.random()))  # shuffled within the hour
    srv = RedisServer(workdir / "input").start()
    try:
        n = load_buffer(srv.url, events, SHARDS)
        r = redis.Redis.from_url(srv.url)
        prep = prepare(gen.events, keys=Keys("lp"), shards=1, limits=Limits(timestamp_min_ms=parse_ts("2000-01-01T00:00:00Z")),
                       received_at=iso(int(time.time() * 1000)), source="bench", keep_received=True)  # fmt: skip
        bad = [x.raw for x in prep.rejected]  # what the collector refuses, left in the buffer by a raw producer
        for i, raw in enumerate(bad + HOSTILE):
            r.xadd(f"lp:events:{i % SHARDS}", {"e": raw})
        n += len(bad) + len(HOSTILE)
        r.save()
        r.close()
    finally:
        srv.stop()
    rdb = workdir / "input.rdb"
    shutil.copy(workdir / "input" / "dump.rdb", rdb)
    return rdb, n


def run_version(tree: Path, rdb: Path, workdir: Path, definitions: Path | None) -> dict[str, Any]:
    """Run ``tree``'s dataflow over a copy of ``rdb``; every key's comparable content."""
    workdir.mkdir(parents=True)
    shutil.copy(rdb, workdir / "dump.rdb")
    srv = RedisServer(workdir).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEPROFILE_")}
        env.update({"LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_SHARDS": str(SHARDS),
                    "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "PYTHONPATH": str(tree)})  # fmt: skip
        if definitions is not None:
            env["LIVEPROFILE_DEFINITIONS"] = str(definitions)
        subprocess.run([sys.executable, "-m", "bytewax.run", "dataflows.profiles:get_flow(stop_at_end=True)"],
                       cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        return dump(redis.Redis.from_url(srv.url))
    finally:
        srv.stop()


def _entry(fields: dict[bytes, bytes]) -> bytes:
    kept = {k.decode(): v.decode("utf-8", "replace") for k, v in sorted(fields.items()) if k not in VOLATILE}
    return orjson.dumps(kept)


def dump(r: redis.Redis) -> dict[str, Any]:
    """Every key's content in a comparable form (streams: a Counter of their entries)."""
    out: dict[str, Any] = {}
    for key in sorted(r.scan_iter(count=1000)):
        name = key.decode()
        if name.startswith(BATCHING):
            continue
        kind = r.type(key).decode()
        if kind == "hash":
            out[name] = {k: v for k, v in r.hgetall(key).items() if k not in VOLATILE}
        elif kind == "set":
            out[name] = sorted(r.smembers(key))
        elif kind == "zset":
            out[name] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            out[name] = r.get(key)
        elif kind == "stream":
            out[name] = Counter(_entry(f) for _, f in r.xrange(key))
        else:
            out[name] = kind
    r.close()
    return out


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two dumps (keys only in one, then differing values)."""
    diffs = [f"only in base: {k}" for k in sorted(a.keys() - b.keys())]
    diffs += [f"only in head: {k}" for k in sorted(b.keys() - a.keys())]
    for k in sorted(a.keys() & b.keys()):
        va, vb = a[k], b[k]
        if va == vb:
            continue
        if isinstance(va, Counter) and isinstance(vb, Counter):
            gone, new = va - vb, vb - va
            diffs.append(f"{k}: {sum(gone.values())} entries only in base (e.g. {next(iter(gone), b'')[:200]!r}), "
                         f"{sum(new.values())} only in head (e.g. {next(iter(new), b'')[:200]!r})")  # fmt: skip
        elif isinstance(va, dict) and isinstance(vb, dict):
            for f in sorted(va.keys() | vb.keys()):
                if va.get(f) != vb.get(f):
                    diffs.append(f"{k} field {f.decode()}: base {va.get(f)!r} head {vb.get(f)!r}"[:400])
        else:
            diffs.append(f"{k}: base {va!r:.200} head {vb!r:.200}")
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="the base revision (e.g. HEAD~1, a commit id)")
    ap.add_argument("--head", default="", help="a revision instead of the working tree")
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--no-definitions", action="store_true", help="run without computed traits and audiences")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="equality-") as d:
        work = Path(d)
        trees = {"base": work / "base", "head": ROOT}
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees["base"]), a.base], check=True)
        if a.head:
            trees["head"] = work / "head"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees["head"]), a.head], check=True)
        try:
            for name, tree in trees.items():
                where = loaded_from(tree)
                assert Path(where).resolve().is_relative_to(tree.resolve()), (name, where)
            definitions = None
            if not a.no_definitions:
                definitions = work / "definitions.yaml"
                definitions.write_text(file_text())
            rdb, n = make_input(a.users, work)
            print(f"input: {n} buffer entries ({a.users} users; definitions: {'none' if definitions is None else '20 traits, 10 audiences'})", flush=True)
            dumps = {name: run_version(tree, rdb, work / f"run-{name}", definitions) for name, tree in trees.items()}
        finally:
            for tree in set(trees.values()) - {ROOT}:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    base, head = dumps["base"], dumps["head"]
    profiles = sum(1 for k in head if k.startswith("lp:profile:"))
    dead = sum(sum(v.values()) for k, v in head.items() if "dead" in k and isinstance(v, Counter))
    print(f"keys: base {len(base)}, head {len(head)}; profiles {profiles}; dead letters {dead}")
    diffs = differences(base, head)
    for line in diffs[:20]:
        print("  " + line)
    print(f"equal: {'yes' if not diffs else f'NO, {len(diffs)} differences'} (base {a.base}, head {a.head or 'working tree'})")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
