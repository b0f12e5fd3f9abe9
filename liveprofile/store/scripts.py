"""Lua scripts: every script liveprofile runs in Redis, one ``.lua`` file each in ``liveprofile/store/lua/``.

:func:`lua_source` reads a script from the package (``importlib.resources``, so it works from a
checkout, an editable install and a wheel alike); the modules that run a script keep a module
constant with its source and register it once per client. Each file starts with a comment that
names its KEYS and ARGV.

Shared by the dataflow's sinks and the edge tools (privacy, re-drive):

:data:`PROFILE_LUA` is the one way a profile hash changes; see
:mod:`dataflows.sinks` for the guarantees of each mode:

* ``upsert`` — refused (0) when the incoming ``seq`` is below the stored one;
  writes changed fields only, moves segment memberships, bumps ``version`` and
  appends a change-feed entry, atomically;
* ``patch`` — model outputs and RFM rescoring: no ``seq`` guard, not on
  retired (merged) profiles;
* ``tombstone`` — a profile merged into another: only ``merged_into`` remains;
* ``delete`` — GDPR erasure: the hash and its segment memberships go, and a
  change-feed entry with ``deleted=1`` tells the email platforms (with
  ``identities``: the email and anonymous ids they may know the user by).

Every mode but ``delete`` refuses (3) users in the suppressed set, so a
forgotten user is not re-created by late events. Returns a :class:`ProfileResult`.

:data:`APPEND_LUA` is the collector's append of one request on one Redis (:func:`append_call`):
all of the request's XADDs or none, refused with ``BACKLOGFULL`` when the buffer backlog plus
the request's events would pass the bound, the dead-letter stream capped by its MAXLEN, and the
appends of suppressed (forgotten) users left out in the same atomic call.

Typed wrappers: each script's ARGV is built in one function here (:func:`profile_argv`,
:func:`dead_letter_argv`), its modes and results are enums (:class:`ProfileMode`,
:class:`ProfileResult`, :class:`DeadLetterResult`, :class:`LeaseResult`,
:class:`ReplayGuardResult`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum, StrEnum
from functools import cache
from importlib.resources import files

from operators.schema import lua_segment_table

__all__ = [
    "PROFILE_LUA", "DEAD_LETTER_LUA", "lua_source", "SCRIPT_NAMES", "ProfileMode", "ProfileResult",
    "DeadLetterResult", "LeaseResult", "ReplayGuardResult", "profile_argv", "dead_letter_argv",
    "ACCOUNT_LUA", "account_argv",
]  # fmt: skip

#: every script in ``liveprofile/store/lua/`` (a test checks this list against the folder)
SCRIPT_NAMES = (
    "profile", "dead_letter", "expose", "sync_redrive", "sync_commit",
    "sync_lease_acquire", "sync_lease_release", "webhook_replay_guard", "append", "erasure_scrub",
    "account",
)  # fmt: skip


@cache
def lua_source(name: str) -> str:
    """The source of ``liveprofile/store/lua/{name}.lua``; ``KeyError`` for a name not in :data:`SCRIPT_NAMES`.

    >>> lua_source("sync_lease_release").lstrip().startswith("--")
    True
    """
    if name not in SCRIPT_NAMES:
        raise KeyError(name)
    return files("liveprofile.store").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


SEGMENTS_MARK = "-- @segments:"


def render_profile_lua(source: str) -> str:
    """The profile script with its segment tables from :func:`operators.schema.lua_segment_table`
    (the line after the ``-- @segments:`` comment)."""
    lines = source.split("\n")
    i = next(n for n, ln in enumerate(lines) if ln.startswith(SEGMENTS_MARK))
    lines[i + 1] = lua_segment_table()
    return "\n".join(lines)


PROFILE_LUA = render_profile_lua(lua_source("profile"))

DEAD_LETTER_LUA = lua_source("dead_letter")

APPEND_LUA = lua_source("append")

#: a ``group`` call's account traits and membership (``liveprofile/store/lua/account.lua``)
ACCOUNT_LUA = lua_source("account")


def account_argv(member: str, ts: int, group_id: str, traits: Mapping[str, object]) -> list[object]:
    """ARGV of one :data:`ACCOUNT_LUA` call: each trait's JSON with sorted keys (the tie-break
    compares these bytes).

    >>> account_argv("u1", 5, "acme", {"plan": "pro", "seats": None})
    ['u1', 5, 'acme', 'plan', '"pro"', 'seats', 'null']
    """
    import orjson

    out: list[object] = [member, ts, group_id]
    for k, v in traits.items():
        out += [k, orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()]
    return out

#: the error prefix of :data:`APPEND_LUA` when the backlog bound refuses a request
BACKLOG_FULL = "BACKLOGFULL"


def append_call(progress: str, shard_streams: Sequence[str], bound: int | None, maxlens: Mapping[str, int],
                appends: Sequence[tuple[str, Mapping[str, bytes | str]]],
                suppressed: tuple[str, Sequence[Sequence[str]]] | None = None) -> tuple[list[str], list[object]]:  # fmt: skip
    """(KEYS, ARGV) of one :data:`APPEND_LUA` call: ``appends`` (stream, fields) in order, the
    buffer's ``shard_streams`` counted against ``bound`` (``None``: no bound), any other stream
    capped at ``maxlens[stream]`` entries (approximately; absent or 0: no cap). ``suppressed``:
    (the suppressed-users set, per append the members it belongs to): an append with a member in
    the set is not written (checked in the same atomic call).

    >>> append_call("lp:p", ["lp:e:0", "lp:e:1"], 10, {"lp:dl": 5}, [("lp:e:1", {"e": "x"}), ("lp:dl", {"r": "y"})])
    (['lp:p', 'lp:e:0', 'lp:e:1', 'lp:dl'], [10, 2, 1, 5, 0, 3, 0, 1, 'e', 'x', 4, 0, 1, 'r', 'y'])
    >>> append_call("lp:p", ["lp:e:0"], None, {}, [("lp:e:0", {"e": "x"})], ("lp:s", [["u1", " anon:a1"]]))
    (['lp:p', 'lp:e:0', 'lp:s'], [-1, 1, 0, 3, 2, 2, 'u1', ' anon:a1', 1, 'e', 'x'])
    """
    keys = [progress, *shard_streams]
    index = {k: i + 1 for i, k in enumerate(keys)}
    others: list[str] = []
    body: list[object] = []
    members = suppressed[1] if suppressed is not None else None
    for n, (stream, fields) in enumerate(appends):
        k = index.get(stream)
        if k is None or k == 1:
            others.append(stream)
            keys.append(stream)
            k = index[stream] = len(keys)
        body.append(k)
        ms = members[n] if members is not None and n < len(members) else ()
        body.append(len(ms))
        body.extend(ms)
        body.append(len(fields))
        for f, v in fields.items():
            body.append(f)
            body.append(v)
    sup = 0
    if suppressed is not None:
        keys.append(suppressed[0])
        sup = len(keys)
    head: list[object] = [-1 if bound is None else bound, len(shard_streams), len(others)]
    head += [maxlens.get(o, 0) for o in others]
    head.append(sup)
    return keys, head + body


class ProfileMode(StrEnum):
    """What one profile-script call does (see the module docstring)."""

    UPSERT = "upsert"
    PATCH = "patch"
    TOMBSTONE = "tombstone"
    DELETE = "delete"


class ProfileResult(IntEnum):
    """The profile script's answer."""

    STALE = 0  # an upsert older than the stored seq, or a patch of a retired profile
    WRITTEN = 1
    UNCHANGED = 2
    SUPPRESSED = 3  # the user was forgotten


def profile_argv(seq: int, updated_at: str, changes_maxlen: int, user_id: str, event: bytes | str,
                 key_prefix: str, mode: ProfileMode, packed_fields: bytes | str, anonymous: bool = False,
                 event_at: str = "") -> list[object]:  # fmt: skip
    """ARGV of one profile-script call (KEYS: :meth:`~liveprofile.store.keys.Keys.profile_keys`);
    ``packed_fields`` is the JSON array ``[field, value, ...]`` or ``""``, ``event`` the trigger
    event's JSON or ``""``, ``key_prefix`` :meth:`~liveprofile.store.keys.Keys.script_prefix`;
    ``anonymous``: the profile is an anonymous visitor's (KEYS from
    :meth:`~liveprofile.store.keys.Keys.profile_anon_keys`): no segment sets, no suppression
    check (the suppressed set holds user ids), no audience sets, and its change-feed entries carry
    ``anonymous=1``. ``event_at``: the ISO time of the event that caused the write (``""``:
    ``updated_at``), carried by an entry with audience transitions.

    Audiences: from the old and new ``audiences`` field of a known profile the script moves the
    ``{p}:audience:{name}`` sets (:meth:`~liveprofile.store.keys.Keys.audience_in`) and writes
    ``audiences_entered`` / ``audiences_exited`` (sorted JSON arrays, omitted when empty) and
    ``event_at`` into the entry; ``tombstone`` and ``delete`` leave every set, the entry carrying
    ``audiences_exited`` with all of them.

    >>> profile_argv(3, "t", 10, "u1", "", "lp", ProfileMode.DELETE, "")
    [3, 't', 10, 'u1', '', 'lp', 'delete', '', '', '']
    """
    return [seq, updated_at, changes_maxlen, user_id, event, key_prefix, mode.value, packed_fields, "1" if anonymous else "", event_at]


class DeadLetterResult(IntEnum):
    """The dead-letter script's answer."""

    ALREADY_WRITTEN = 0
    WRITTEN = 1


def dead_letter_argv(source: str, position: tuple[int, int], maxlen: int, fields: Mapping[str, bytes | str]) -> list[object]:
    """ARGV of one dead-letter-script call (KEYS: the dead-letter stream and its high-water marks).

    >>> dead_letter_argv("events:0", (5, 1), 100, {"reason": "x"})
    ['events:0', 5, 1, 100, 'reason', 'x']
    """
    out: list[object] = [source, position[0], position[1], maxlen]
    for k, v in fields.items():
        out.append(k)
        out.append(v)
    return out


class LeaseResult(IntEnum):
    """``sync_lease_acquire``: whether this consumer holds the lease now; ``sync_lease_release``:
    whether it gave it back."""

    HELD_BY_OTHER = 0
    HELD = 1


class ReplayGuardResult(IntEnum):
    """``webhook_replay_guard``'s answer."""

    REPLAY = 0
    APPENDED = 1


def webhook_replay_guard_argv(ttl_s: int, appends: list[tuple[str, dict[str, bytes | str]]],
                              maxlens: Mapping[str, int] | None = None) -> list[object]:  # fmt: skip
    """ARGV of one ``webhook_replay_guard`` call (KEYS: the delivery's replay key, then the stream
    of each append, in the same order); the script answers a :class:`ReplayGuardResult`.
    A stream in ``maxlens`` (the dead letters) is capped at its MAXLEN (approximately), as the
    collector's other appends are.

    >>> webhook_replay_guard_argv(360, [("lp:events:0", {"e": "{}"}), ("lp:dead-letter", {"e": "[]", "k": "m"})],
    ...                           {"lp:dead-letter": 1000})
    [360, 0, 1, 'e', '{}', 1000, 2, 'e', '[]', 'k', 'm']
    """
    caps = maxlens or {}
    out: list[object] = [ttl_s]
    for stream, fields in appends:
        out.append(caps.get(stream, 0))
        out.append(len(fields))
        for k, v in fields.items():
            out.append(k)
            out.append(v)
    return out


def expose_argv(user_id: str, at: str, variants: list[str]) -> list[object]:
    """ARGV of one ``expose`` call (KEYS: the profile, the user's suppressed set, then each
    experiment's exposures hash, in the order of ``variants``); the script answers the 1-based
    positions of the first exposures (none for a suppressed user: nothing is recorded).

    >>> expose_argv("u1", "2024-01-01T00:00:00.000Z", ["a", "control"])
    ['u1', '2024-01-01T00:00:00.000Z', 'a', 'control']
    """
    return [user_id, at, *variants]


__all__ += ["webhook_replay_guard_argv", "expose_argv", "APPEND_LUA", "BACKLOG_FULL", "append_call"]


def lease_acquire_argv(consumer: str, ttl_ms: int) -> list[object]:
    """ARGV of one ``sync_lease_acquire`` call (KEYS: the destination's lease key); the script
    answers a :class:`LeaseResult`.

    >>> lease_acquire_argv("host-1:42", 15000)
    ['host-1:42', 15000]
    """
    return [consumer, ttl_ms]


def lease_release_argv(consumer: str) -> list[object]:
    """ARGV of one ``sync_lease_release`` call (KEYS: the destination's lease key); the script
    answers :attr:`LeaseResult.HELD` when it gave the lease back, else
    :attr:`LeaseResult.HELD_BY_OTHER`.

    >>> lease_release_argv("host-1:42")
    ['host-1:42']
    """
    return [consumer]


def sync_commit_argv(maxlen: int, at: str, rows: list[tuple[str, int, bytes | str, str, str, int]]) -> list[object]:
    """ARGV of one ``sync_commit`` call (KEYS: the destination's watermark hash and dead-letter
    stream of one group): the dead-letter MAXLEN, the time, then per row ``(user, version, item
    JSON or '' when delivered, reason, status, attempts)``; the script raises each user's
    watermark to ``version`` (a deletion's row has version ``-1``: the user's watermark field is
    deleted, so nothing there names an erased user) and appends a dead letter for each row with an item.

    >>> sync_commit_argv(100, "t", [("u1", 3, "", "", "", 0), ("u2", 0, b"{}", "malformed", "", 0)])
    [100, 't', 'u1', 3, '', '', '', 0, 'u2', 0, b'{}', 'malformed', '', 0]
    """
    out: list[object] = [maxlen, at]
    for row in rows:
        out += row
    return out


def sync_redrive_argv(entry_ids: list[str]) -> list[object]:
    """ARGV of one ``sync_redrive`` call (KEYS: a destination's dead-letter stream and redrive
    stream of one group): the dead-letter entry ids to move; the script answers how many moved.

    >>> sync_redrive_argv(["1-0", "2-0"])
    ['1-0', '2-0']
    """
    return list(entry_ids)


__all__ += ["lease_acquire_argv", "lease_release_argv", "sync_commit_argv", "sync_redrive_argv", "ERASURE_SCRUB_LUA"]

#: ``erasure_scrub``: KEYS a change-feed stream, ARGV deletion entry ids; deletes each entry every
#: consumer group (sync destination) has read and acknowledged; answers how many it deleted
ERASURE_SCRUB_LUA = lua_source("erasure_scrub")
