"""The main dataflow: ``python -m bytewax.run dataflows.profiles:flow``.

Wiring only; the logic lives in :mod:`operators`::

    inp (Redis Streams, one partition per shard; resume id in the snapshot)
      -> parse (flat_map_batch: orjson + validate + normalize; merges from the buffer)
      -> valid? --no--> dead_letter (idempotent Redis stream)
      -> anonymous id? --yes--> identity (keyed by anonymous id: link state) --+
      -> user (keyed by canonical user: dedupe, counters, cart, sessions,      <-+
               interest, bot features, timers)
           -> profile_out (Lua upsert: seq guard, changed fields, segments, change feed, RFM scores)
           -> models (keyed by shard: HalfSpaceTrees + propensity) -> patch_out (+ anomalies)
           -> population (one key: RFM histograms) -> edges_out (+ bounded rescoring)
           -> merge_out (anonymous state into the known user's buffer shard)

Step ids are part of the recovery state (guide §6.4): renaming one orphans
its state. Treat them as a schema.
"""

from __future__ import annotations

import gc
import logging
import os
import sys

from bytewax.dataflow import Dataflow

from dataflows.build import Sinks, buffer_source, build_flow, redis_sinks
from dataflows.clock import StreamClock
from dataflows.parse import parse_batch
from liveprofile.settings import Settings

__all__ = ["Sinks", "build_flow", "get_flow", "parse_batch", "flow"]


def tune_gc() -> None:
    """Collect young garbage less often: the process holds millions of long-lived state
    objects, and CPython's default thresholds (700, 10, 10) would re-scan them constantly.
    Measured: ~25% of parse time went to the collector with the defaults."""
    gc.set_threshold(100_000, 50, 100)


def recovery_enabled(argv: list[str] | None = None, env: dict[str, str] | None = None) -> bool:
    """Whether this process runs with Bytewax recovery (``-r DIR`` or its environment
    variable): only then is it safe to trim the buffer.

    >>> recovery_enabled(["x", "-r", "/rec"], {}), recovery_enabled(["x"], {})
    (True, False)
    """
    argv = sys.argv if argv is None else argv
    env = dict(os.environ) if env is None else env
    return any(a in ("-r", "--recovery-directory") or a.startswith("--recovery-directory=") for a in argv) or bool(
        env.get("BYTEWAX_RECOVERY_DIRECTORY")
    )


def single_worker(argv: list[str] | None = None, env: dict[str, str] | None = None) -> bool:
    """Whether this process is the only worker of its dataflow (``bytewax.run`` without ``-w``
    above 1 and without ``-i``/``-a``, nor their environment variables): only then do the sinks
    overlap the computing (:mod:`dataflows.sinks.overlap`; with more workers they would route
    every write to one of them).

    >>> single_worker(["run.py", "m:flow", "-r", "/rec"], {}), single_worker(["run.py", "m:flow", "-w", "2"], {})
    (True, False)
    >>> single_worker(["run.py", "m:flow", "-i", "0", "-a", "h:1;h:2"], {}), single_worker(["run.py"], {"BYTEWAX_WORKERS_PER_PROCESS": "1"})
    (False, True)
    """
    argv = sys.argv if argv is None else argv
    env = dict(os.environ) if env is None else env
    workers = env.get("BYTEWAX_WORKERS_PER_PROCESS", "1")
    for i, a in enumerate(argv):
        if a in ("-w", "--workers-per-process") and i + 1 < len(argv):
            workers = argv[i + 1]
        elif a.startswith("--workers-per-process="):
            workers = a.split("=", 1)[1]
        elif a.startswith("-w") and a[2:].isdigit():
            workers = a[2:]
        elif a in ("-i", "-a", "--process-id", "--addresses") or a.startswith(("--process-id=", "--addresses=")):
            return False
    if any(env.get(k) for k in ("BYTEWAX_ADDRESSES", "BYTEWAX_HOSTFILE_PATH", "BYTEWAX_PROCESS_ID")):
        return False
    return workers.strip() == "1"


def get_flow(stop_at_end: bool = False) -> Dataflow:
    """The production flow, configured from ``LIVEPROFILE_*`` (see docs/configuration.md); run by
    one worker (:func:`single_worker`) with ``LIVEPROFILE_OVERLAP_IO`` on, its sinks and its
    shards' reads overlap the computing."""
    tune_gc()
    import operators

    logging.getLogger(__name__).info("operators: %s", operators.mode())  # compiled or pure (operators/__init__.py)
    s = Settings.from_env()
    trim = s.buffer_retain_ms if s.buffer_retain_ms is not None and recovery_enabled() else None
    if s.buffer_retain_ms is not None and trim is None:
        logging.getLogger(__name__).info("recovery is off: the buffer is the log and is not trimmed")
    clock = StreamClock()
    overlap = s.overlap_io if single_worker() else "off"
    sinks = redis_sinks(s, overlap=overlap)
    source = buffer_source(s, clock, stop_at_end, trim, read_ahead=overlap == "threads", send_ahead=overlap == "replies",
                           on_poll=sinks.on_poll)  # fmt: skip
    return build_flow(s, source, sinks, clock)


flow = get_flow()
