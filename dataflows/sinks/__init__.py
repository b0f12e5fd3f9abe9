"""Redis outputs of the dataflow: profile upserts, model patches, RFM edges, merges, dead letters.

One module per sink: :mod:`.profile` (upserts, tombstones, patches), :mod:`.rfm` (edges and
rescoring), :mod:`.merge`, :mod:`.deadletter`, :mod:`.catalogue` (products and their popularity
rankings: absolute values, so a replayed write changes nothing); :mod:`.common` holds the retries and the writer.

Bytewax sinks are at-least-once: after a crash the outputs of up to one epoch
are written again. Every write here is therefore idempotent *in Redis*, inside
one Lua script per item:

* **Profile upsert** (:data:`~liveprofile.store.scripts.PROFILE_LUA`, mode ``upsert``): refuses an incoming
  ``seq`` (the user's input sequence, a pure function of the input) lower than
  the stored one; writes only the fields whose value changed; moves segment
  memberships (``rfm_segment``, ``top_category`` -> ``interest:{cat}``,
  ``cart_abandoned``, ``suspect``); bumps ``version`` (a per-profile write
  counter, strictly increasing) and appends one change-feed entry naming the
  changed fields — all or nothing. A replayed write changes nothing and adds no
  entry. Mode ``patch`` (model outputs) skips the ``seq`` guard; mode
  ``tombstone`` retires a profile merged into another.
* **Dead letter** (:data:`~liveprofile.store.scripts.DEAD_LETTER_LUA`): a high-water mark of source
  positions per partition; an entry at or below it was already written.
* **Accounts** (:mod:`.account`, :data:`~liveprofile.store.scripts.ACCOUNT_LUA`): per-trait
  event times decide each write, so a replay or a late older ``group`` call changes nothing.
* **Merges** go back into the buffer (the shard of the target user) with a
  deterministic id the target de-duplicates.

RFM scores are computed here, from the profile's raw values and the current
population edges (``{p}:rfm:edges``, written by :class:`RfmEdgesSink`), so a
stored profile is always scored against the newest edges the writer knew; the
edges sink rescans the customers in bounded slices so idle customers follow
population shifts too.

Transient Redis errors are retried with backoff for up to ``retry_for``
seconds before the sink gives up (the dataflow then stops; recovery resumes it).

**Redis Cluster** (``keys.cluster``): the same writes through a cluster client;
every key one script touches carries the user's group tag
(:meth:`Keys.profile_keys`, :meth:`Keys.script_prefix`), so each script runs on
one slot, and a pipeline is split per node. Scripts are ``SCRIPT LOAD``-ed on
every primary first; a node that lost them (``NoScriptError``) gets them again
and the batch is re-run (every write is idempotent). The RFM refresher walks
the customer index group by group.
"""

from __future__ import annotations

from dataflows.sinks.account import RedisAccountSink
from dataflows.sinks.catalogue import RedisCatalogueSink
from dataflows.sinks.deadletter import RedisDeadLetterSink
from dataflows.sinks.merge import BufferMergeSink
from dataflows.sinks.profile import RedisPatchSink, RedisProfileSink
from dataflows.sinks.rfm import RfmEdgesSink

__all__ = ["RedisAccountSink", "RedisProfileSink", "RedisPatchSink", "RfmEdgesSink", "BufferMergeSink", "RedisDeadLetterSink", "RedisCatalogueSink"]
