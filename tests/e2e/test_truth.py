"""The change feed's ``Cart Abandoned`` triggers against the independent truth, through the
real dataflow process replaying a buffer (``get_flow(stop_at_end=True)``).

The profiles of a replay equal the truth in every field (``test_intelligence.py``, and the
live runs of ``test_pipeline.py``); docs/intelligence.md also promises one ``Cart Abandoned`` trigger per
abandoned cart. Two ways a replay breaks that promise are pinned here as strict expected
failures (issue 10 findings): each test states the truth's answer, fails on today's code, and
turns into an unexpected pass (a failure, being strict) once the pipeline is fixed.

Fixed clocks: event times are anchored at a fixed instant; nothing here depends on when the
test runs (finite replays decide timers at the newest event time, not by wall time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from liveprofile.devtools.generate import expected_profiles
from operators.routing import shard_of
from operators.timeutil import iso
from tests.e2e.helpers import K, abandoned_feed, abandonment_mismatches, profile_mismatches
from tests.procs import base_env, start_dataflow

T = 1_714_564_800_000  # 2024-05-01T12:00:00Z
HOUR = 3_600_000
SHARDS = 4


def _ev(uid: str, ms: int, name: str | None, n: int, /, **props: Any) -> dict[str, Any]:
    base = {"userId": uid, "messageId": f"{uid}-{n}", "timestamp": iso(ms), "receivedAt": iso(T + 24 * HOUR)}
    if name is None:
        return {**base, "type": "page", "name": "Home", "properties": props}
    return {**base, "type": "track", "event": name, "properties": props}


_LINE = {"product_id": "p1", "name": "Kite", "category": "Toys", "price": 20.0, "quantity": 1}


def _replay(redis_url: str, r: redis.Redis, tmp: Path, events: list[dict[str, Any]], read_batch: int = 1000) -> None:
    """Append ``events`` to their shards in this order, then replay the buffer to its end."""
    pipe = r.pipeline(transaction=False)
    for ev in events:
        pipe.xadd(K.events(shard_of(ev["userId"], SHARDS)), {"e": orjson.dumps(ev)})
    pipe.execute()
    env = base_env(redis_url, LIVEPROFILE_TIMESTAMP_MIN="2000-01-01T00:00:00Z", LIVEPROFILE_SHARDS=str(SHARDS),
                   LIVEPROFILE_READ_BATCH=str(read_batch))  # fmt: skip
    df = start_dataflow(env, tmp, flow="dataflows.profiles:get_flow(stop_at_end=True)")
    assert df.wait(120) == 0, df.output()


@pytest.mark.xfail(strict=True, reason="issue 10 finding: operators.user.step keeps one trigger per batch "
                   "(and the profile sink one per user per batch), so a replay that reads two abandonments "
                   "of a user in one batch puts only the last into the change feed")  # fmt: skip
def test_a_replay_puts_every_abandonment_into_the_feed(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """A user abandons a cart, comes back two hours later, fills it again and abandons it
    again: two abandoned carts, two triggers — read in one batch, as a replay reads them."""
    events = [
        _ev("y", T, "Product Added", 1, **_LINE),
        _ev("y", T + 2 * HOUR, None, 2),  # decides the first abandonment (deadline T + 1 h)
        _ev("y", T + 2 * HOUR + 1, "Product Added", 3, **_LINE),
        _ev("y", T + 4 * HOUR, None, 4),  # decides the second (deadline T + 3 h)
    ]
    want = expected_profiles(events)
    assert [a["ts"] for a in want.abandonments] == [iso(T + HOUR), iso(T + 3 * HOUR + 1)]
    _replay(redis_url, r, tmp_path, events)
    assert profile_mismatches(r, want.truth) == []  # the profile itself is right
    assert abandonment_mismatches(r, want.abandonments) == {}


@pytest.mark.xfail(strict=True, reason="issue 10 finding: the shared stream clock is the newest event time of "
                   "any shard, so during a replay a timer fires on it while the user's own next events are "
                   "still unread in the buffer: a Cart Abandoned trigger for a cart the user emptied a minute "
                   "later (in event time) and never abandoned")  # fmt: skip
def test_a_timer_waits_for_the_users_events_already_in_the_buffer(redis_url: str, r: redis.Redis, tmp_path: Path) -> None:
    """Another user's event three hours ahead is read first (arrival order is not event
    order across users); user y adds to the cart and, one minute later in event time, removes
    it — that removal sits behind 3,000 other entries of y's shard. y never abandoned a cart."""
    shard = shard_of("y", SHARDS)
    same = [u for u in (f"f{i}" for i in range(400)) if shard_of(u, SHARDS) == shard]
    ahead = same[0]
    fillers = same[1:31]
    events = [_ev(ahead, T + 3 * HOUR, None, 1), _ev("y", T, "Product Added", 1, **_LINE)]
    events += [_ev(fillers[i % len(fillers)], T - HOUR + i, None, 100 + i) for i in range(3000)]
    events.append(_ev("y", T + 60_000, "Product Removed", 2, **_LINE))
    want = expected_profiles(events)
    assert not [a for a in want.abandonments if a["user_id"] == "y"]
    _replay(redis_url, r, tmp_path, events, read_batch=100)
    assert profile_mismatches(r, {"y": want.truth["y"]}) == []  # the profile itself is right
    assert [a for a in abandoned_feed(r) if a["user_id"] == "y"] == []
