"""Identity merges back into the buffer: the target user's shard, as a
:attr:`~liveprofile.store.envelope.EntryKind.MERGE` entry with a deterministic id the target de-duplicates,
and items forwarded from a merged-away user (:attr:`~liveprofile.store.envelope.EntryKind.FORWARD`; the
survivor de-duplicates them by ``messageId`` / merge id)."""

from __future__ import annotations

import pickle
from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.sinks.common import with_retry
from liveprofile.store.envelope import Forwarded, Merge, encode_forward, encode_merge
from operators.routing import shard_of
from operators.user import Forward, MergeExport

__all__ = ["BufferMergeSink", "merge_entry"]


def merge_entry(m: MergeExport | Forward) -> bytes:
    """The buffer entry of the merge (or forward) ``m``."""
    if type(m) is Forward:
        return encode_forward(Forwarded(m.to_uid, m.from_uid, pickle.dumps(m.items, protocol=pickle.HIGHEST_PROTOCOL)))
    assert type(m) is MergeExport
    return encode_merge(Merge(m.to_uid, m.merge_id, m.from_uid, m.ts, m.state))


class _MergePartition(StatelessSinkPartition[MergeExport | Forward]):
    def __init__(self, write: Callable[[list[tuple[int, bytes]]], None], shards: int, retry_for: float) -> None:
        self._write = write
        self._shards = shards
        self._retry_for = retry_for

    def write_batch(self, items: list[MergeExport | Forward]) -> None:
        entries = [(shard_of(m.to_uid, self._shards), merge_entry(m)) for m in items]
        with_retry(lambda: self._write(entries), "merge sink", self._retry_for)


class BufferMergeSink(DynamicSink[MergeExport | Forward]):
    """Identity merges, appended to the target user's buffer shard (see :func:`merge_entry`).

    ``writer`` builds, in each worker, the function that appends ``(shard, raw)``
    entries to the configured buffer (Redis Streams or Kafka)."""

    def __init__(self, writer: Callable[[], Callable[[list[tuple[int, bytes]]], None]], shards: int, retry_for: float = 300.0) -> None:
        self.writer = writer
        self.shards = shards
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MergePartition:
        return _MergePartition(self.writer(), self.shards, self.retry_for)
