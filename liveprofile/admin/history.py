"""``liveprofile replay FILE.jsonl``: historical imports into the buffer.

Each line is one Segment-spec event. Lines go through the same envelope checks
as the collector (:func:`liveprofile.buffer.ingest.prepare`), in batches appended with
one pipeline each; invalid lines (including unparseable JSON) become dead
letters with stage ``replay`` and source ``replay:FILE:LINE``. An event that
carries its own ``receivedAt`` keeps it (so clock-skew correction uses the
original receipt); others are stamped with the import time.

Re-running an import is harmless for profiles: every event keeps its
``messageId`` and the dataflow de-duplicates within its window.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import redis

from liveprofile.buffer.ingest import prepare
from liveprofile.buffer.writers import appends_writer
from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.deadletter import Stage, dead_letter_fields
from liveprofile.store.keys import Keys
from operators.events import Rejected
from operators.timeutil import iso

__all__ = ["replay_file", "replay_lines"]


def _lines(path: str) -> Iterator[tuple[int, bytes]]:
    with Path(path).open("rb") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                yield n, line


def replay_lines(
    settings: Settings,
    client: redis.Redis,
    lines: Iterator[tuple[int, bytes]],
    *,
    source: str,
    batch: int = 1000,
    total_bytes: int | None = None,
    progress: bool = False,
) -> dict[str, int]:
    """Import ``(line number, JSON bytes)`` pairs; returns counts read/accepted/rejected."""
    keys = Keys.of(settings)
    append = appends_writer(settings, client)
    stats = {"read": 0, "accepted": 0, "rejected": 0}
    done_bytes = 0
    t0 = time.monotonic()
    pending: list[tuple[int, bytes]] = []

    def flush() -> None:
        nonlocal pending
        received = iso(int(time.time() * 1000))
        decoded: list[object] = []
        bad = []
        for n, raw in pending:
            try:
                decoded.append(orjson.loads(raw))
            except orjson.JSONDecodeError as exc:
                bad.append((n, Rejected("malformed_json", f"invalid JSON: {exc}", raw[: settings.limits.max_event_bytes])))
        prep = prepare(
            decoded, keys=keys, shards=settings.shards, limits=settings.limits, received_at=received,
            source=source, stage=Stage.REPLAY, keep_received=True,
        )  # fmt: skip
        for n, rej in bad:
            prep.appends.append((keys.dead_letter, dead_letter_fields(rej, Stage.REPLAY, f"{source}:{n}")))
            prep.owners.append((None, None))
        append(prep.appends)
        stats["accepted"] += prep.accepted
        stats["rejected"] += len(prep.rejected) + len(bad)
        pending = []

    for n, raw in lines:
        pending.append((n, raw))
        stats["read"] += 1
        done_bytes += len(raw) + 1
        if len(pending) >= batch:
            flush()
            if progress:
                _progress(stats, done_bytes, total_bytes, t0)
    if pending:
        flush()
    if progress:
        _progress(stats, done_bytes, total_bytes, t0)
        print(file=sys.stderr)
    return stats


def _progress(stats: dict[str, int], done: int, total: int | None, t0: float) -> None:
    rate = stats["read"] / max(time.monotonic() - t0, 1e-9)
    if total:
        frac = min(done / total, 1.0)
        bar = "#" * int(frac * 30)
        head = f"[{bar:<30}] {frac:6.1%}"
    else:
        head = ""
    print(
        f"\r{head} {stats['read']:>9} read {stats['accepted']:>9} accepted {stats['rejected']:>7} rejected {rate:9.0f}/s",
        end="", file=sys.stderr, flush=True,
    )  # fmt: skip


def replay_file(settings: Settings, path: str, *, batch: int = 1000, progress: bool = True) -> dict[str, int]:
    """Import one JSONL file (see module docstring)."""
    client = connect(settings.redis_url, settings.redis_cluster)
    try:
        return replay_lines(
            settings, client, _lines(path), source=f"replay:{Path(path).name}", batch=batch,
            total_bytes=Path(path).stat().st_size, progress=progress,
        )  # fmt: skip
    finally:
        client.close()
