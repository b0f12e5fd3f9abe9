"""Traits through the dataflow wiring (bytewax.testing, 1 and 2 workers): an anonymous visitor's
``context.traits`` and the identified user's identify traits fold into one profile after the
merge, by event time whatever the order; a trait bound or a deny-listed name is handled at
parse (a dead letter with its reason, or nothing stored)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource

from dataflows.sinks.merge import merge_entry
from liveprofile.settings import Settings
from tests.dataflows.test_flow import WORKERS, Out, execute, flow_of, item

SETTINGS = Settings.from_env({"LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "LIVEPROFILE_MAX_TRAITS": "4",
                              "LIVEPROFILE_TRAITS_DENY": "password"}, shards=1)  # fmt: skip


def _run(items: list, workers: int, store: Path) -> Out:
    """Run to the end; merges the run exported come back through the "buffer" (as the merge sink
    writes them) in a resumed run, as in production."""
    store.mkdir()
    init_db_dir(store, 1)
    rc = RecoveryConfig(str(store))
    out = Out()
    src = [*items, TestingSource.EOF()]
    flow = flow_of(src, out, batch_size=1, settings=SETTINGS)
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    src += [(0, f"1714564800000-{900 + i}".encode(), merge_entry(m)) for i, m in enumerate(out.merges)]
    src.append(TestingSource.EOF())
    execute(flow, workers, recovery_config=rc, epoch_interval=timedelta(0))
    return out


@WORKERS
def test_traits_fold_across_an_identity_merge_by_event_time(tmp_path: Path, workers: int) -> None:
    items = [
        # anonymous browsing with RudderStack-style context.traits (newest first_name: t+5)
        item(1, anonymousId="a1", context={"traits": {"firstName": "Annie", "plan": "free"}}, timestamp=1714564005),
        # the identify: older first_name (t+2) links a1 to u1; newer plan (t+9); a denied password
        item(2, type="identify", userId="u1", anonymousId="a1", event=None, timestamp=1714564009,
             traits={"plan": "pro", "password": "hunter2"}),  # fmt: skip
        item(3, type="identify", userId="u1", event=None, timestamp=1714564002, traits={"first_name": "Ann"}),
        item(4, type="identify", userId="u1", event=None, traits={f"t{i}": i for i in range(5)}),  # 5 > 4
    ]
    for n, order in enumerate((items, items[::-1])):
        out = _run(order, workers, tmp_path / str(n))
        f = out.final()["u1"].fields  # type: ignore[union-attr]
        assert orjson.loads(f["traits"]) == {"first_name": "Annie", "plan": "pro"}, order
        assert [d.rejected.reason for d in out.dead] == ["too_many_traits"]
        assert all(b"hunter2" not in orjson.dumps(p.fields) for _, p in out.profiles if hasattr(p, "fields"))
