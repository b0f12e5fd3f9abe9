"""``liveprofile sync`` subcommands (registered by :func:`add_commands`).

::

    liveprofile sync                          run the sync process (all destinations)
    liveprofile sync status                   per destination: holder, pending, queue age, dead letters
    liveprofile sync dead-letters DEST [-n N] print dead letters as JSON lines
    liveprofile sync replay DEST [--limit N]  re-drive dead letters (see liveprofile.sync.redrive)
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from liveprofile.settings import ConfigError, Settings, load_env

__all__ = ["add_commands"]


def _config() -> Any:
    from liveprofile.sync.config import SyncConfig

    return SyncConfig.from_values(load_env())


def _client(settings: Settings) -> Any:
    from liveprofile.store.connection import connect

    return connect(settings.redis_url, settings.redis_cluster, decode_responses=True)


def _keys(settings: Settings) -> Any:
    from liveprofile.store.keys import Keys

    return Keys.of(settings)


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.sync.runner import run_sync

    try:
        cfg = _config()
    except ConfigError as exc:
        print(f"liveprofile sync: configuration error: {exc}", file=sys.stderr)
        return 2
    return run_sync(settings, cfg)


def _known(settings: Settings, dest: str) -> bool:
    try:
        names = _config().destinations
    except ConfigError:
        return True  # listing/replaying must work even when the config is broken
    if dest not in names:
        print(f"liveprofile sync: unknown destination {dest!r} (configured: {', '.join(names) or 'none'})", file=sys.stderr)
        return False
    return True


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.sync.redrive import replay

    if not _known(settings, args.dest):
        return 2
    n = replay(_client(settings), _keys(settings), args.dest, limit=args.limit)
    print(f"re-driven {n} dead letter(s) of {args.dest}")
    return 0


def _cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.sync.redrive import dead_letters

    for d in dead_letters(_client(settings), _keys(settings), args.dest, count=args.count):
        print(orjson.dumps(d).decode())
    return 0


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """One JSON line per destination; with a Redis Cluster, summed (lag, pending, dead
    letters) or the oldest (pending age) over every group's feed."""
    from liveprofile.sync.model import SyncKeys

    r = _client(settings)
    keys = _keys(settings)
    try:
        names = list(_config().destinations)
    except ConfigError as exc:
        print(f"liveprofile sync: configuration error: {exc}", file=sys.stderr)
        return 2
    now = time.time() * 1000
    for name in names:
        sk = SyncKeys(keys.prefix, name, keys.cluster_groups)
        lag: int | None = None
        pending = dead = 0
        oldest: float | None = None
        for gi in keys.groups:
            changes = keys.changes_in(gi)
            groups = {g["name"]: g for g in r.xinfo_groups(changes)} if r.exists(changes) else {}
            g = groups.get(sk.group, {})
            pend = r.xpending(changes, sk.group) if g else {"pending": 0, "min": None}
            if g.get("lag") is not None:
                lag = (lag or 0) + int(g["lag"])
            pending += int(pend["pending"])
            if pend.get("min"):
                ms = int(str(pend["min"]).split("-")[0])
                oldest = ms if oldest is None else min(oldest, ms)
            dead += r.xlen(sk.dead_letter_in(gi))
        age = (now - oldest) / 1000 if oldest is not None else 0.0
        print(orjson.dumps({
            "destination": name, "holder": r.get(sk.lease), "lag": lag, "pending": pending,
            "oldest_pending_s": round(age, 3), "dead_letters": dead,
        }).decode())  # fmt: skip
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``sync`` (and its ``status``, ``dead-letters``, ``replay``) on an argparse subparsers object."""
    p = subparsers.add_parser("sync", help="sync profile changes to email platforms (ESP destinations)")
    p.set_defaults(func=_cmd_run)
    sub = p.add_subparsers(dest="sync_cmd")
    st = sub.add_parser("status", help="per destination: lease holder, lag, pending, dead letters")
    st.set_defaults(func=_cmd_status)
    dl = sub.add_parser("dead-letters", help="print a destination's dead letters as JSON lines")
    dl.add_argument("dest")
    dl.add_argument("-n", "--count", type=int, default=None, help="at most this many (oldest first)")
    dl.set_defaults(func=_cmd_dead_letters)
    rp = sub.add_parser("replay", help="re-drive a destination's dead letters")
    rp.add_argument("dest")
    rp.add_argument("--limit", type=int, default=None)
    rp.set_defaults(func=_cmd_replay)
