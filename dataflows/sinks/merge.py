"""Identity merges back into the buffer: the target user's shard, as a
:attr:`~liveprofile.store.envelope.EntryKind.MERGE` entry with a deterministic id the target de-duplicates."""

from __future__ import annotations

from collections.abc import Callable

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.sinks.common import with_retry
from liveprofile.store.envelope import Merge, encode_merge
from operators.routing import shard_of
from operators.user import MergeExport

__all__ = ["BufferMergeSink", "merge_entry"]


def merge_entry(m: MergeExport) -> bytes:
    """The buffer entry of the merge ``m``."""
    return encode_merge(Merge(m.to_uid, m.merge_id, m.from_uid, m.ts, m.state))


class _MergePartition(StatelessSinkPartition[MergeExport]):
    def __init__(self, write: Callable[[list[tuple[int, bytes]]], None], shards: int, retry_for: float) -> None:
        self._write = write
        self._shards = shards
        self._retry_for = retry_for

    def write_batch(self, items: list[MergeExport]) -> None:
        entries = [(shard_of(m.to_uid, self._shards), merge_entry(m)) for m in items]
        with_retry(lambda: self._write(entries), "merge sink", self._retry_for)


class BufferMergeSink(DynamicSink[MergeExport]):
    """Identity merges, appended to the target user's buffer shard (see :func:`merge_entry`).

    ``writer`` builds, in each worker, the function that appends ``(shard, raw)``
    entries to the configured buffer (Redis Streams or Kafka)."""

    def __init__(self, writer: Callable[[], Callable[[list[tuple[int, bytes]]], None]], shards: int, retry_for: float = 300.0) -> None:
        self.writer = writer
        self.shards = shards
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MergePartition:
        return _MergePartition(self.writer(), self.shards, self.retry_for)
