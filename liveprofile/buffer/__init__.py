"""The event buffer between the ways in and the dataflow: Redis Streams (default) or Kafka.

* :mod:`.streams` — Redis Streams sharded by user, group-commit appends, the backlog monitor.
* :mod:`.kafka` — the Kafka option (one topic, one partition per shard).
* :mod:`.writers` — :func:`~.writers.appender_for` / :func:`~.writers.writer_for`: the one place
  that turns ``LIVEPROFILE_BUFFER`` into an implementation.
* :mod:`.ingest` — the envelope checks every way in shares (stamping, limits, routing identity).

May import: :mod:`operators`, :mod:`liveprofile.settings`, :mod:`liveprofile.store`.
"""
