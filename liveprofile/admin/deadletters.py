"""Dead letters you can act on: ``liveprofile deadletter list | show ID | replay``.

* ``list`` — counts by reason (and stage), then the newest entries;
* ``show ID`` — one entry with its raw event, pretty-printed;
* ``replay`` — re-drive selected entries (``--reason``, ``--id``, ``--stage``,
  or ``--all``) through the normal path: the same envelope checks as the
  collector (:func:`liveprofile.buffer.ingest.prepare`) under the *current* settings
  (e.g. after ``LIVEPROFILE_TIMESTAMP_MIN`` was set back, or a tracker fixed),
  keeping the original ``receivedAt``. Entries that now pass are appended to the
  buffer and moved from ``{p}:dead-letter`` to ``{p}:dead-letter:redriven``;
  the rest stay where they are. Re-driving is idempotent: a moved entry is not
  re-driven twice, and an event that was in fact already counted (the client
  re-sent it fixed) keeps its ``messageId`` and is de-duplicated downstream.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections import Counter
from typing import Any

import orjson
import redis

from liveprofile.admin.privacy import scan_stream
from liveprofile.buffer.ingest import prepare
from liveprofile.buffer.writers import appends_writer
from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.deadletter import Stage
from liveprofile.store.keys import Keys
from operators.timeutil import iso

__all__ = ["summary", "redrive", "add_commands"]


def _s(f: dict[bytes, bytes], k: str) -> str:
    return f.get(k.encode(), b"").decode(errors="replace")


def summary(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Counts by reason and by stage, over the whole dead-letter stream."""
    by_reason: Counter[str] = Counter()
    by_stage: Counter[str] = Counter()
    for _, f in scan_stream(client, keys.dead_letter):
        by_reason[_s(f, "reason")] += 1
        by_stage[_s(f, "stage")] += 1
    return {"total": sum(by_reason.values()), "by_reason": dict(by_reason.most_common()), "by_stage": dict(by_stage.most_common())}


def redrive(
    client: redis.Redis,
    settings: Settings,
    *,
    reasons: set[str] | None = None,
    ids: set[str] | None = None,
    stages: set[str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Re-drive matching dead letters (see module docstring); returns counts."""
    keys = Keys.of(settings)
    picked: list[tuple[bytes, dict[bytes, bytes]]] = []
    for eid, f in scan_stream(client, keys.dead_letter):
        if ids is not None and eid.decode() not in ids:
            continue
        if reasons is not None and _s(f, "reason") not in reasons:
            continue
        if stages is not None and _s(f, "stage") not in stages:
            continue
        picked.append((eid, f))
    stats: dict[str, Any] = {"selected": len(picked), "redriven": 0, "still_invalid": Counter(), "dry_run": dry_run}
    received = iso(int(time.time() * 1000))
    append = appends_writer(settings, client)
    for eid, f in picked:
        try:
            ev = orjson.loads(f.get(b"raw", b""))
        except orjson.JSONDecodeError:
            stats["still_invalid"]["malformed_json"] += 1
            continue
        prep = prepare(
            [ev], keys=keys, shards=settings.shards, limits=settings.limits, received_at=received,
            source=f"redrive:{eid.decode()}", stage=Stage.REDRIVE, keep_received=True, trust=None,
        )  # fmt: skip
        if prep.rejected:
            stats["still_invalid"][str(prep.rejected[0].reason)] += 1  # a StrEnum member: orjson wants str keys
            continue
        stats["redriven"] += 1
        if dry_run:
            continue
        append(prep.appends)
        pipe = client.pipeline(transaction=True)
        pipe.xadd(keys.dead_letter_redriven, {**f, b"dead_letter_id": eid, b"redriven_at": received.encode()},
                  maxlen=settings.dead_letter_maxlen, approximate=True)
        pipe.xdel(keys.dead_letter, eid)
        pipe.execute()
    stats["still_invalid"] = dict(stats["still_invalid"])
    return stats


def _client(settings: Settings) -> redis.Redis:
    return connect(settings.redis_url, settings.redis_cluster)


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    keys = Keys.of(settings)
    print(orjson.dumps(summary(client, keys), option=orjson.OPT_INDENT_2).decode())
    for eid, f in client.xrevrange(keys.dead_letter, count=args.limit):
        if args.reason and _s(f, "reason") != args.reason:
            continue
        print(f"{eid.decode()}  {_s(f, 'reason'):<22} {_s(f, 'stage'):<10} {_s(f, 'message_id')[:36]:<36} {_s(f, 'message')[:80]}")
    return 0


def _cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    client = _client(settings)
    rows = client.xrange(Keys.of(settings).dead_letter, min=args.id, max=args.id)
    if not rows:
        print(f"no dead letter {args.id}")
        return 1
    f = rows[0][1]
    out: dict[str, Any] = {k.decode(): v.decode(errors="replace") for k, v in f.items()}
    with contextlib.suppress(KeyError, orjson.JSONDecodeError):
        out["raw"] = orjson.loads(f[b"raw"])
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.all or args.reason or args.id or args.stage):
        print("choose what to re-drive: --reason R, --id ID, --stage S, or --all")
        return 2
    stats = redrive(
        _client(settings), settings,
        reasons=set(args.reason) if args.reason else None, ids=set(args.id) if args.id else None,
        stages=set(args.stage) if args.stage else None, dry_run=args.dry_run,
    )  # fmt: skip
    print(orjson.dumps(stats).decode())
    return 0


def add_commands(sub: Any) -> None:
    """Register ``deadletter list|show|replay`` on the ``liveprofile`` CLI."""
    d = sub.add_parser("deadletter", help="inspect and re-drive dead letters")
    dsub = d.add_subparsers(dest="deadletter_cmd", required=True)
    li = dsub.add_parser("list", help="counts by reason, then the newest entries")
    li.add_argument("--limit", type=int, default=20)
    li.add_argument("--reason")
    li.set_defaults(func=_cmd_list)
    sh = dsub.add_parser("show", help="one entry, with its raw event")
    sh.add_argument("id")
    sh.set_defaults(func=_cmd_show)
    rp = dsub.add_parser("replay", help="re-drive selected entries through the normal path")
    rp.add_argument("--reason", action="append")
    rp.add_argument("--id", action="append")
    rp.add_argument("--stage", action="append")
    rp.add_argument("--all", action="store_true")
    rp.add_argument("--dry-run", action="store_true")
    rp.set_defaults(func=_cmd_replay)
