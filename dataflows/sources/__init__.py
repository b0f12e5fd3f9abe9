"""Bytewax inputs of the flow: :mod:`.streams` (Redis Streams, one partition per shard) and
:mod:`.kafka` (the Kafka option). Both hand on ``(shard, entry id, raw bytes)`` items and keep the
resume position in the snapshot."""
