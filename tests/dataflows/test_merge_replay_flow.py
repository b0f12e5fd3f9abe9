"""A replayed identity merge through the dataflow (bytewax.testing, one worker and a 2-worker
cluster): the buffer holds the killed run's export of the anonymous profile *with* ``c0``, the
replay reads the identify before ``c0`` (so ``c0`` goes to u1 directly) and re-emits the export
without it (same ``merge_id``), which comes back from the buffer too. u1 counts ``e1`` and ``c0``
once, whichever path reaches it first (the operator-level story, both orders and a Hypothesis
property over the interleavings: tests/operators/test_merge_replay.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource

from dataflows.sinks.merge import merge_entry
from operators.events import Event, Limits, parse_event
from operators.identity import Link, anon_uid
from operators.user import MergeExport, ProfileUpdate, UserConfig, step
from tests.dataflows.test_flow import WORKERS, Out, execute, flow_of, item

A1 = anon_uid("a1")


def _killed_run_export(bodies: list[bytes]) -> MergeExport:
    """The export the killed run wrote: the anonymous profile with these events, linked to u1."""
    cfg = UserConfig()
    st = None
    for raw in bodies:
        ev = parse_event(orjson.loads(raw), Limits(timestamp_min_ms=0))
        assert isinstance(ev, Event)
        st, _, _ = step(cfg, st, A1, [ev])
    _, outs, _ = step(cfg, st, A1, [Link(A1, "u1", 1714564010000)])
    (m,) = [o for o in outs if type(o) is MergeExport]
    return m


@WORKERS
def test_a_replayed_export_holding_an_event_also_routed_directly_counts_it_once(tmp_path: Path, workers: int) -> None:
    e1 = item(1, anonymousId="a1", event="Email Opened")
    c0 = item(2, anonymousId="a1", event="Email Opened")
    ident = item(10, anonymousId="a1", userId="u1", type="identify", event=None, traits={"email": "u1@example.com"})
    killed = _killed_run_export([e1[2], c0[2]])
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    # the replay: e1 at the anonymous profile, the killed run's export still in the buffer, the
    # identify before c0 (routed to u1 directly)
    items: list = [e1, (0, b"1714564800000-50", merge_entry(killed)), ident, c0, TestingSource.EOF()]
    out = Out()
    flow = flow_of(items, out)
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    (reemitted,) = out.merges
    assert isinstance(reemitted, MergeExport) and reemitted.merge_id == killed.merge_id and reemitted.state != killed.state
    # the re-emitted copy comes back from the buffer too
    items += [(0, b"1714564800000-99", merge_entry(reemitted)), TestingSource.EOF()]
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    u1 = out.final()["u1"]
    assert isinstance(u1, ProfileUpdate)
    assert (u1.fields["event_count"], u1.fields["email_opens"]) == ("3", "2"), u1.fields  # i1, e1, c0: each once
    assert u1.fields["anonymous_ids"] == '["a1"]'
