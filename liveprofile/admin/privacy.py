"""GDPR erasure: ``liveprofile forget USER_ID`` and ``liveprofile unsuppress USER_ID``.

``forget(...)`` erases a user everywhere liveprofile keeps them and keeps them
erased:

1. the user joins ``{p}:suppressed`` first, so nothing new is written for
   them from here on (the profile script refuses suppressed users; the ESP sync
   never pushes them);
2. the profile hash goes, with its segment memberships and RFM index entry,
   and one change-feed entry ``deleted=1`` (with the email and anonymous ids
   the platforms may know the user by) tells the email platforms to delete too;
   profiles of the user's anonymous ids (merged tombstones, in the ``profile-anon`` key family:
   an anonymous id never names another known user's profile) go as well;
3. buffered events of the user (``userId`` or one of their anonymous ids), their
   dead letters, anomaly records and older change-feed entries are deleted;
4. a :attr:`~liveprofile.store.envelope.EntryKind.FORGET` control entry in the user's buffer shard makes the dataflow
   drop the user's state and ignore their later events.

``unsuppress`` lifts the suppression (and tells the dataflow with an
``_unsuppress`` control entry): later events build a new profile.
Scanning the streams costs O(buffer length); erasure requests are rare.

Keys come from :class:`~liveprofile.store.keys.Keys`: with a Redis Cluster, each id's
profile, suppressed set, segments, RFM index and change feed are those of its
own group (the user and their anonymous ids may be in different groups).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import orjson
import redis

from liveprofile.buffer.writers import RawWriter, raw_writer
from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.envelope import EntryKind, encode_control
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import PROFILE_LUA, ProfileMode, profile_argv
from operators.routing import shard_of
from operators.timeutil import iso

__all__ = ["forget", "unsuppress", "add_commands", "scan_stream"]

_PAGE = 2000


def scan_stream(client: redis.Redis, stream: str, page: int = _PAGE) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of ``stream``, oldest first, fetched a page at a time."""
    lo: bytes = b"-"
    while True:
        entries = client.xrange(stream, min=lo, max="+", count=page)
        if not entries:
            return
        yield from entries
        lo = b"(" + entries[-1][0]


def _event_identities(raw: bytes) -> set[str]:
    try:
        ev = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return set()
    if not isinstance(ev, dict):
        return set()
    return {str(ev[k]) for k in ("userId", "anonymousId", "previousId") if isinstance(ev.get(k), str | int)}


def forget(client: redis.Redis, keys: Keys, shards: int, user_id: str, changes_maxlen: int = 1_000_000,
           write: RawWriter | None = None) -> dict[str, Any]:  # fmt: skip
    """Erase ``user_id`` (see module docstring); returns what was deleted.

    ``write`` appends the control entry to the buffer (default: the Redis shard;
    with the Kafka buffer, the caller passes :func:`liveprofile.buffer.writers.raw_writer`)."""
    client.sadd(keys.suppressed_for(user_id), user_id)
    raw_aliases = client.hget(keys.profile(user_id), "anonymous_ids")
    aliases: list[str] = orjson.loads(raw_aliases) if raw_aliases else []
    ids = {user_id, *aliases}
    script = client.register_script(PROFILE_LUA)
    now = iso(int(time.time() * 1000))
    profiles = 0
    if client.exists(keys.profile(user_id)):
        script(keys=keys.profile_keys(user_id), args=profile_argv(0, now, changes_maxlen, user_id, "", keys.script_prefix(user_id), ProfileMode.DELETE, ""))
        profiles += 1
    for aid in aliases:  # anonymous profiles live in their own key family (never a known user's)
        if client.exists(keys.profile_anon(aid)):
            script(keys=keys.profile_anon_keys(aid), args=profile_argv(0, now, changes_maxlen, aid, "", keys.script_prefix(aid), ProfileMode.DELETE, "", anonymous=True))
            profiles += 1
    by_group: dict[int, list[str]] = {}
    for uid in ids:
        by_group.setdefault(keys.group(uid), []).append(uid)
    for g, members in by_group.items():
        client.srem(keys.rfm_customers_in(g), *members)
    stats = {"profiles": profiles, "buffered_events": 0, "dead_letters": 0, "anomalies": 0, "change_entries": 0}
    for shard in range(shards):
        stream = keys.events(shard)
        doomed = [eid for eid, f in scan_stream(client, stream) if _event_identities(f.get(b"e", b"")) & ids]
        if doomed:
            stats["buffered_events"] += client.xdel(stream, *doomed)
    doomed = [eid for eid, f in scan_stream(client, keys.dead_letter) if _event_identities(f.get(b"raw", b"")) & ids]
    if doomed:
        stats["dead_letters"] = client.xdel(keys.dead_letter, *doomed)
    doomed = [eid for eid, f in scan_stream(client, keys.anomalies) if f.get(b"user_id", b"").decode() in ids]
    if doomed:
        stats["anomalies"] = client.xdel(keys.anomalies, *doomed)
    for g in sorted(by_group):
        changes = keys.changes_in(g)
        doomed = [eid for eid, f in scan_stream(client, changes) if f.get(b"user_id", b"").decode() in ids and f.get(b"deleted") != b"1"]
        if doomed:
            stats["change_entries"] += client.xdel(changes, *doomed)
    control = encode_control(EntryKind.FORGET, user_id, now)
    if write is None:
        client.xadd(keys.events(shard_of(user_id, shards)), {"e": control})
    else:
        write([(shard_of(user_id, shards), control)])
    stats["anonymous_ids"] = aliases
    return stats


def unsuppress(client: redis.Redis, keys: Keys, shards: int, user_id: str, write: RawWriter | None = None) -> bool:
    """Allow ``user_id`` to be profiled again; ``False`` if they were not suppressed.

    The dataflow, which ignores a forgotten user's events, is told through an
    ``_unsuppress`` control entry in the user's buffer shard."""
    was = bool(client.srem(keys.suppressed_for(user_id), user_id))
    control = encode_control(EntryKind.UNSUPPRESS, user_id, iso(int(time.time() * 1000)))
    if write is None:
        client.xadd(keys.events(shard_of(user_id, shards)), {"e": control})
    else:
        write([(shard_of(user_id, shards), control)])
    return was


def _cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    client = connect(settings.redis_url, settings.redis_cluster)
    stats = forget(client, Keys.of(settings), settings.shards, args.user_id, settings.changes_maxlen, raw_writer(settings, client))
    print(orjson.dumps({"forgotten": args.user_id, **stats}).decode())
    return 0


def _cmd_unsuppress(args: argparse.Namespace, settings: Settings) -> int:
    client = connect(settings.redis_url, settings.redis_cluster)
    ok = unsuppress(client, Keys.of(settings), settings.shards, args.user_id, raw_writer(settings, client))
    print(orjson.dumps({"unsuppressed": args.user_id, "was_suppressed": ok}).decode())
    return 0


def add_commands(sub: Any) -> None:
    """Register ``forget`` and ``unsuppress`` on the ``liveprofile`` CLI."""
    f = sub.add_parser("forget", help="erase a user everywhere (GDPR) and keep them erased")
    f.add_argument("user_id")
    f.set_defaults(func=_cmd_forget)
    u = sub.add_parser("unsuppress", help="let a forgotten user be profiled again")
    u.add_argument("user_id")
    u.set_defaults(func=_cmd_unsuppress)
