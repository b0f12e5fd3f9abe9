"""Prometheus series of the dataflow process.

They live in ``prometheus_client``'s default registry, which Bytewax serves on
its own ``/metrics`` endpoint when ``BYTEWAX_DATAFLOW_API_ENABLED=1`` (port
``BYTEWAX_DATAFLOW_API_PORT``, default 3030). No second HTTP server.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "EVENTS_READ",
    "EVENTS_VALID",
    "EVENTS_REJECTED",
    "EVENTS_DUPLICATE",
    "PROFILE_WRITES",
    "FRESHNESS",
    "SINK_SECONDS",
    "SOURCE_ERRORS",
    "BACKLOG",
    "TRIMMED",
    "RFM_RESCORED",
    "FLAGGED",
    "ANOMALY_SCORES",
    "PROPENSITY_AUC",
    "SESSIONS_CLOSED",
    "CARTS_ABANDONED",
    "MERGES",
    "WRITES_BLOCKED",
    "BLOCKED_RETRIES",
    "USER_STATES",
]

EVENTS_READ = Counter("liveprofile_dataflow_events_read_total", "Buffer entries read", ["shard"])
EVENTS_VALID = Counter("liveprofile_dataflow_events_valid_total", "Events that passed validation")
EVENTS_REJECTED = Counter(
    "liveprofile_dataflow_events_rejected_total", "Events dead-lettered by the dataflow", ["reason"]
)
EVENTS_DUPLICATE = Counter(
    "liveprofile_dataflow_events_duplicate_total", "Events dropped as duplicate messageIds"
)
PROFILE_WRITES = Counter(
    "liveprofile_profile_writes_total",
    "Profile upserts by result (written, or stale: version guard refused a replayed write)",
    ["result"],
)
FRESHNESS = Histogram(
    "liveprofile_freshness_seconds",
    "Collector receipt of a user's newest event -> that profile version visible in Redis (writes by timers are not samples)",
    buckets=(0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SINK_SECONDS = Histogram(
    "liveprofile_sink_batch_seconds", "Duration of one sink batch, from building it to its replies read (deferred replies: sent meanwhile)", ["sink"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
SOURCE_ERRORS = Counter(
    "liveprofile_source_errors_total", "Buffer read errors (Redis unreachable); the source retries", ["shard"]
)
RFM_RESCORED = Counter(
    "liveprofile_rfm_rescored_total", "Idle customers whose RFM scores the refresher changed"
)
FLAGGED = Counter("liveprofile_dataflow_events_flagged_total", "User batches flagged anomalous (suspect)")
ANOMALY_SCORES = Histogram(
    "liveprofile_anomaly_score", "HalfSpaceTrees anomaly scores of user batches",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
PROPENSITY_AUC = Gauge(
    "liveprofile_propensity_roc_auc", "Running (prequential) ROC AUC of the purchase-propensity model", ["shard"]
)
SESSIONS_CLOSED = Counter("liveprofile_sessions_closed_total", "Sessions closed", ["converted"])
CARTS_ABANDONED = Counter("liveprofile_carts_abandoned_total", "Cart Abandoned triggers emitted")
MERGES = Counter("liveprofile_identity_merges_total", "Anonymous profiles merged into known users")
TRIMMED = Counter("liveprofile_buffer_trimmed_total", "Buffer entries trimmed after durable processing", ["shard"])
BACKLOG = Gauge("liveprofile_buffer_backlog", "Entries in a buffer shard after the read position", ["shard"])
WRITES_BLOCKED = Gauge(
    "liveprofile_dataflow_redis_writes_blocked",
    "1 while a sink of this process waits for Redis to take writes again (reason: oom = maxmemory reached, "
    "readonly = a read-only replica); the dataflow holds its position and loses nothing",
    ["reason"],
)
BLOCKED_RETRIES = Counter(
    "liveprofile_dataflow_redis_blocked_retries_total", "Sink writes Redis refused (OOM/READONLY) and that were retried", ["reason"]
)
USER_STATES = Gauge(
    "liveprofile_user_states",
    "Per-user states this process holds, by form: resident (live objects, the users active within "
    "LIVEPROFILE_STATE_IDLE) or packed (idle users: their compressed snapshot bytes)",
    ["form"],
)
