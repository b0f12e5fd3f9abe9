"""``liveprofile definitions backfill [--traits a,b] [--buffer] [--file EVENTS.jsonl[.gz]]...``: history for
new or changed computed traits (docs/audiences.md, "Changing definitions and backfill").

Contract
--------
1. Refuses (exit 2, a message saying what to wait for) unless the dataflow has caught up: every
   buffer shard's backlog is 0 (:func:`liveprofile.buffer.streams.backlog`: entries added minus
   entries the dataflow read; with the Kafka buffer the lag cannot be read here), or ``--force``.
2. Reads the history: the buffer entries still retained (``--buffer``, Redis Streams; internal
   entries skipped) and/or event files in the ``liveprofile replay`` format (one Segment event a
   line, gzip when the name ends in ``.gz``; a line without ``receivedAt`` is taken as received
   at its own ``sentAt`` / ``timestamp``). Each event goes through
   :func:`operators.events.parse_event` as the flow does; invalid ones are counted and skipped.
3. Resolves identity offline as the flow would: an event's ``userId``; an anonymous-only event to
   the user its ``anonymousId`` was linked to at that point of the history (an identify/track/alias
   carrying both ids), else to the first user it was ever linked to in the history (the anonymous
   profile merges there), else to the known profile whose ``anonymous_ids`` field in Redis names it,
   else to its own anonymous profile; a known user merged away (``merged_into``) to the survivor.
4. Per user, the events that match one of the selected traits (default: all), deduplicated by
   ``messageId`` across every source, received at most at the run's horizon (the command's start),
   become :class:`operators.computed.Seed` chunks (:func:`operators.computed.plan_seeds`: stable
   ids, so a re-run writes the same ids and the user step takes none twice), written as
   ``_computed_seed`` entries (:func:`liveprofile.store.envelope.encode_seed`) to the user's
   buffer shard. Prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import redis

from liveprofile.buffer.writers import RawWriter, raw_writer
from liveprofile.settings import Settings
from liveprofile.store.connection import connect
from liveprofile.store.envelope import EntryKind, encode_seed, kind_of
from liveprofile.store.keys import Keys
from operators.computed import event_env, plan_seeds, seed_run, trait_paths
from operators.definitions import Definitions, TraitDef
from operators.events import Event, Limits, parse_event
from operators.identity import anon_uid, public_id
from operators.routing import shard_of
from operators.timeutil import iso

__all__ = ["BackfillError", "backfill", "read_buffer", "read_files", "resolve", "select_traits", "add_command"]

_PAGE = 2000


class BackfillError(Exception):
    """A refusal with the message to print (exit 2)."""


def select_traits(defs: Definitions | None, names: str | None) -> tuple[TraitDef, ...]:
    """The traits ``--traits a,b`` names (default: every computed trait)."""
    if defs is None or not defs.computed_traits:
        raise BackfillError("no computed traits: set LIVEPROFILE_DEFINITIONS to the definitions file the dataflow runs with")
    if not names:
        return defs.computed_traits
    want = [n.strip() for n in names.split(",") if n.strip()]
    known = {t.name for t in defs.computed_traits}
    unknown = [n for n in want if n not in known]
    if unknown:
        raise BackfillError(f"unknown computed trait(s) {', '.join(unknown)} (defined: {', '.join(sorted(known))})")
    return tuple(t for t in defs.computed_traits if t.name in want)


def read_buffer(client: redis.Redis, keys: Keys, shards: int, limits: Limits) -> Iterator[Event | None]:
    """Every event still in the buffer, shard by shard, oldest first (``None``: an invalid one)."""
    for shard in range(shards):
        lo: bytes = b"-"
        while True:
            page = client.xrange(keys.events(shard), min=lo, max="+", count=_PAGE)
            if not page:
                break
            for _, fields in page:
                raw = fields.get(b"e", b"")
                if kind_of(raw) is not EntryKind.EVENT:
                    continue
                res = parse_event(raw, limits)
                yield res if type(res) is Event else None
            lo = b"(" + page[-1][0]


def _open(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else Path(path).open("rb")  # noqa: SIM115


def read_files(paths: Iterable[str], limits: Limits, now_ms: int) -> Iterator[Event | None]:
    """Every event of the files (``None``: an invalid line). A line without ``receivedAt`` is
    taken as received when it was sent (``sentAt``, else ``timestamp``), its own time."""
    for path in paths:
        with _open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield None
                    continue
                if isinstance(obj, dict) and not obj.get("receivedAt"):
                    at = obj.get("sentAt") or obj.get("timestamp") or obj.get("originalTimestamp")
                    if at:
                        obj["receivedAt"] = at
                res = parse_event(obj, limits, received_at=now_ms)
                yield res if type(res) is Event else None


def _known_links(client: redis.Redis, keys: Keys) -> tuple[dict[str, str], dict[str, str]]:
    """From the known profiles: anonymous id -> user (``anonymous_ids``) and user -> survivor
    (``merged_into``)."""
    anon: dict[str, str] = {}
    merged: dict[str, str] = {}
    batch: list[bytes] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for k in batch:
            pipe.hmget(k, ["anonymous_ids", "merged_into"])
        for k, (aids, into) in zip(batch, pipe.execute(), strict=True):
            uid = k.decode("utf-8", "replace").split(":profile:", 1)[1]
            if into:
                merged[uid] = into.decode()
            if aids:
                try:
                    for a in orjson.loads(aids):
                        anon.setdefault(str(a), uid)
                except orjson.JSONDecodeError:
                    pass
        batch.clear()

    for key in client.scan_iter(match=keys.profile_pattern(), count=1000, _type="HASH"):
        batch.append(key)
        if len(batch) >= 500:
            flush()
    if batch:
        flush()
    return anon, merged


def resolve(events: Iterable[Event], anon_links: dict[str, str], merged: dict[str, str]) -> dict[str, list[Event]]:
    """Each event under the per-user key the flow counts it for (see the module doc, 3.), in
    receipt order.

    >>> import dataclasses
    >>> from operators.computed import _ev
    >>> def ev(mid, r, user=None, anon=None):
    ...     return dataclasses.replace(_ev("x", r, mid), user_id=user, anonymous_id=anon, uid=user or anon, received_at=r)
    >>> out = resolve([ev("1", 1, anon="a"), ev("2", 2, "u", "a"), ev("3", 3, anon="a"), ev("4", 4, "v", "a"),
    ...                ev("5", 5, anon="a"), ev("6", 6, anon="b"), ev("7", 7, anon="c"), ev("8", 8, "old")],
    ...               {"b": "w"}, {"old": "w"})
    >>> {k: [e.message_id for e in v] for k, v in sorted(out.items())}
    {' anon:c': ['7'], 'u': ['1', '2', '3'], 'v': ['4', '5'], 'w': ['6', '8']}
    """
    ordered = sorted(events, key=lambda e: e.received_at)
    first: dict[str, str] = {}
    for e in ordered:
        aid = e.previous_id if e.type == "alias" else e.anonymous_id
        if e.user_id is not None and aid is not None and aid != e.user_id:
            first.setdefault(aid, e.user_id)
    current: dict[str, str] = {}
    out: dict[str, list[Event]] = {}

    def survivor(uid: str) -> str:
        seen = {uid}
        while uid in merged and merged[uid] not in seen:
            uid = merged[uid]
            seen.add(uid)
        return uid

    for e in ordered:
        aid = e.previous_id if e.type == "alias" else e.anonymous_id
        if e.user_id is not None:
            if aid is not None and aid != e.user_id:
                current[aid] = e.user_id
            key = e.user_id
        else:
            assert e.anonymous_id is not None
            a = e.anonymous_id
            key = current.get(a) or first.get(a) or anon_links.get(a) or anon_uid(a)
        out.setdefault(key if key.startswith(" ") else survivor(key), []).append(e)
    return out


def backfill(settings: Settings, client: redis.Redis, traits: tuple[TraitDef, ...], *, buffer: bool, files: list[str],
             force: bool = False, write: RawWriter | None = None, now_ms: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Run one backfill (see the module doc); returns its counts. Raises :class:`BackfillError`."""
    keys = Keys.of(settings)
    if not force:
        if settings.buffer == "kafka":
            raise BackfillError("with the Kafka buffer the dataflow's lag is not checked here: check the consumer lag is 0, then pass --force")
        from liveprofile.buffer.streams import backlog

        behind = {s: n for s, n in backlog(client, keys, settings.shards).items() if n}
        if behind:
            shards = ", ".join(f"shard {s}: {n}" for s, n in sorted(behind.items()))
            raise BackfillError(f"the dataflow has not caught up ({shards} unread entries): wait until it has "
                                "(values would miss events it has not processed yet), or pass --force")  # fmt: skip
    if buffer and settings.buffer == "kafka":
        raise BackfillError("--buffer reads Redis Streams; with the Kafka buffer give the history as --file")
    upto = int(time.time() * 1000) if now_ms is None else now_ms
    stats: dict[str, Any] = {"run": seed_run(traits), "traits": [t.name for t in traits], "upto": iso(upto),
                             "read": 0, "invalid": 0, "users": 0, "events": 0, "entries": 0}  # fmt: skip

    def history() -> Iterator[Event]:
        sources: list[Iterator[Event | None]] = []
        if buffer:
            sources.append(read_buffer(client, keys, settings.shards, settings.limits))
        if files:
            sources.append(read_files(files, settings.limits, upto))
        for src in sources:
            for ev in src:
                stats["read"] += 1
                if ev is None:
                    stats["invalid"] += 1
                elif (ev.received_at <= upto and any(t.matches(ev.type, ev.name, event_env(ev)) for t in traits)) or (
                    ev.user_id is not None and (ev.anonymous_id is not None or ev.type == "alias")
                ):  # counted, or carrying an identity link (plan_seeds keeps only the counted ones)
                    yield ev

    anon_links, merged = _known_links(client, keys)
    by_user = resolve(history(), anon_links, merged)
    paths = trait_paths(traits)
    w = write or raw_writer(settings, client)
    pending: list[tuple[int, bytes]] = []
    for uid in sorted(by_user):
        seeds = plan_seeds(uid, traits, by_user[uid], upto)
        if not seeds:
            continue
        stats["users"] += 1
        shard = shard_of(public_id(uid), settings.shards)
        for seed in seeds:
            stats["events"] += len(seed.events)
            pending.append((shard, encode_seed(seed, paths)))
        if len(pending) >= 200:
            w(pending)
            stats["entries"] += len(pending)
            pending = []
    if pending:
        w(pending)
        stats["entries"] += len(pending)
    return stats


def _cmd(args: argparse.Namespace, settings: Settings) -> int:
    if not args.buffer and not args.file:
        print("liveprofile definitions backfill: give the history: --buffer, --file EVENTS.jsonl[.gz], or both", file=sys.stderr)
        return 2
    try:
        traits = select_traits(settings.definitions, args.traits)
        client = connect(settings.redis_url, settings.redis_cluster)
        stats = backfill(settings, client, traits, buffer=args.buffer, files=args.file or [], force=args.force)
    except BackfillError as exc:
        print(f"liveprofile definitions backfill: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"liveprofile definitions backfill: cannot read the history: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(stats).decode())
    return 0


def add_command(dsub: Any) -> None:
    """Register ``definitions backfill``."""
    b = dsub.add_parser("backfill", help="count history into new or changed computed traits (docs/audiences.md)")
    b.add_argument("--traits", help="comma-separated trait names (default: every computed trait)")
    b.add_argument("--buffer", action="store_true", help="the history: the events still in the buffer (Redis Streams)")
    b.add_argument("--file", action="append", help="the history: an event file (JSONL as for replay, .gz too); repeatable")
    b.add_argument("--force", action="store_true", help="run even though the dataflow has not caught up")
    b.set_defaults(func=_cmd)
