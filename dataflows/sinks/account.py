"""Account profiles from ``group`` calls (SPEC §1): ``{p}:account:{groupId}`` holds the group's
traits (last writer by event time, per trait) and ``{p}:account-members:{groupId}`` the users
whose group calls named it, written by :data:`~liveprofile.store.scripts.ACCOUNT_LUA`.

Every write is idempotent and order-insensitive in Redis (the script's per-trait time rule and a
set add), so this sink takes the parsed ``group`` events straight from the parse step: a replay
after recovery, or a duplicate delivery, changes nothing. A member is the event's user id (or the
anonymous id of an anonymous caller)."""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.sinks.common import Writer, raise_errors
from liveprofile.store.connection import load_scripts, run_script
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import ACCOUNT_LUA, account_argv
from operators.events import Event

__all__ = ["RedisAccountSink"]


class _AccountPartition(StatelessSinkPartition[Event]):
    def __init__(self, w: Writer) -> None:
        self._w = w
        self._script = w.client.register_script(ACCOUNT_LUA)

    def write_batch(self, items: list[Event]) -> None:
        w = self._w
        keys = w.keys

        def run() -> None:
            load_scripts(w.client, [self._script])
            pipe = w.client.pipeline(transaction=False)
            for ev in items:
                assert ev.group_id is not None
                run_script(self._script, keys.account_keys(ev.group_id), account_argv(ev.uid, ev.ts, ev.group_id, ev.group_traits or {}), pipe)
            raise_errors(pipe.execute())

        w.retry(run, "account sink")

    def close(self) -> None:
        self._w.close()


class RedisAccountSink(DynamicSink[Event]):
    """Account traits and members of ``group`` events (see module docstring)."""

    def __init__(self, url: str, keys: Keys, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _AccountPartition:
        return _AccountPartition(Writer(self.url, self.keys, 0, self.retry_for))
