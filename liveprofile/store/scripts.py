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
forgotten user is not re-created by late events. Returns 1 written, 2 nothing
changed, 0 stale, 3 suppressed.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from operators.schema import lua_segment_table

__all__ = ["PROFILE_LUA", "DEAD_LETTER_LUA", "lua_source", "SCRIPT_NAMES"]

#: every script in ``liveprofile/store/lua/`` (a test checks this list against the folder)
SCRIPT_NAMES = (
    "profile", "dead_letter", "expose", "sync_redrive", "sync_commit",
    "sync_lease_acquire", "sync_lease_release", "webhook_replay_guard",
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
