"""Changing definitions on a running state, then a backfill, through the real Bytewax flow
(``bytewax.testing``, recovery on): a flow runs under one definitions file, then resumes from its
recovery store under another (a new windowed trait, a new all-time trait, an audience over them, an
unchanged trait); live events, the backfill's ``_computed_seed`` entries (made by the command's own
resolution and planning from the history the buffer holds) and more live events follow. The values
equal the counts by hand over history + live, the audience is entered, the unchanged trait is not
counted twice, and the same entries again (a re-run) change nothing: no profile update at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import run_main

from dataflows.sinks.merge import merge_entry
from liveprofile.admin.backfill import resolve
from liveprofile.store.envelope import encode_seed
from operators.computed import plan_seeds, trait_paths
from operators.definitions import Definitions, load_definitions
from operators.events import Event, parse_event
from operators.timeutil import iso
from operators.user import ProfileUpdate
from tests.dataflows.test_flow import SETTINGS, Out, flow_of

BASE_MS = 1714564000000
OLD = load_definitions("version: 1\ncomputed_traits:\n  - {name: views, kind: count, event: Product Viewed}\n")
NEW = load_definitions("""\
version: 1
computed_traits:
  - {name: views, kind: count, event: Product Viewed}
  - {name: shoe_views_7d, kind: count, event: Product Viewed, where: 'properties.category == "shoes"', window: 7d}
  - {name: spend, kind: sum, event: Order Completed, value: properties.revenue}
audiences:
  - {name: shoe_fans, when: computed.shoe_views_7d >= 3}
""")


class Stream:
    """Buffer entries with increasing receipt times (1 s apart), as the collector stamps them."""

    def __init__(self) -> None:
        self.n = 0

    def ev(self, **ev: object) -> tuple[int, bytes, bytes]:
        self.n += 1
        at = BASE_MS + self.n * 1000
        body = {"type": "track", "event": "Product Viewed", "messageId": f"m{self.n}", "receivedAt": iso(at),
                "timestamp": iso(at - 500), "properties": {"category": "shoes"}, **ev}  # fmt: skip
        return (0, f"{at}-{self.n}".encode(), orjson.dumps({k: v for k, v in body.items() if v is not None}))


def _settings(defs: Definitions) -> object:
    return replace(SETTINGS, user=replace(SETTINGS.user, definitions=defs), definitions=defs)


def _seeds(history: list[tuple[int, bytes, bytes]], upto: int) -> list[tuple[int, bytes, bytes]]:
    """What ``liveprofile definitions backfill --buffer`` writes for ``history``."""
    events = [e for _, _, raw in history if type(e := parse_event(raw, SETTINGS.limits)) is Event]
    paths = trait_paths(NEW.computed_traits)
    out = []
    for uid, evs in sorted(resolve(events, {}, {}).items()):
        out += [(0, b"0-1", encode_seed(s, paths)) for s in plan_seeds(uid, NEW.computed_traits, evs, upto, max_events=2)]
    return out


def _computed(out: Out) -> dict[str, dict]:
    return {u: orjson.loads(p.fields["computed"]) for u, p in out.final().items() if type(p) is ProfileUpdate and "computed" in p.fields}


def test_new_definitions_on_a_running_state_then_a_backfill_give_exact_values_and_a_rerun_changes_nothing(tmp_path: Path) -> None:
    s = Stream()
    history = [
        s.ev(userId="u1"), s.ev(userId="u1"), s.ev(userId="u1"), s.ev(userId="u1", properties={"category": "hats"}),
        s.ev(userId="u1", event="Order Completed", properties={"revenue": 10}),
        s.ev(userId="u2"), s.ev(userId="u2"), s.ev(userId="u2", event="Order Completed", properties={"revenue": 5}),
        s.ev(anonymousId="a1"),  # an anonymous shoe view, merged into u1 by the identify
        s.ev(type="identify", userId="u1", anonymousId="a1", event=None, properties=None),
    ]  # fmt: skip
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    first = Out()
    items = list(history)
    run_main(flow_of(items, first, batch_size=3, settings=_settings(OLD)), recovery_config=rc, epoch_interval=timedelta(0))
    assert _computed(first)["u1"] == {"views": 4}
    # the anonymous profile's merge comes back from the buffer (the merge sink's entry)
    items += [(0, b"1-1", merge_entry(m)) for m in first.merges]
    live1 = [s.ev(userId="u1")]  # u1 touched under the new definitions before the backfill
    seeds = _seeds(history + live1, BASE_MS + s.n * 1000)  # the buffer holds history and that live event
    live2 = [s.ev(userId="u2")]  # u2 untouched until after its seeds
    items += live1 + seeds + live2
    second = Out()
    run_main(flow_of(items, second, batch_size=3, settings=_settings(NEW)), recovery_config=rc, epoch_interval=timedelta(0))
    got = _computed(second)
    assert got["u1"] == {"views": 6, "shoe_views_7d": 5, "spend": 10}, "3 + the anonymous one + 1 live; views not counted twice"
    assert got["u2"] == {"views": 3, "shoe_views_7d": 3, "spend": 5}
    final = second.final()
    assert orjson.loads(final["u1"].fields["audiences"]) == ["shoe_fans"]  # type: ignore[union-attr]
    assert orjson.loads(final["u2"].fields["audiences"]) == ["shoe_fans"]  # type: ignore[union-attr]

    items += seeds  # a re-run of the backfill: the same entries
    third = Out()
    run_main(flow_of(items, third, batch_size=3, settings=_settings(NEW)), recovery_config=rc, epoch_interval=timedelta(0))
    assert [u for u, p in third.profiles if type(p) is ProfileUpdate] == [], "a re-run writes nothing"
