"""Write a Bytewax recovery store with the code of a checkout, for the snapshot-compatibility test.

    python tests/dataflows/snapshots/make_recovery_store.py CHECKOUT OUT_DIR

Runs the flow of ``CHECKOUT`` (its ``build_flow`` from ``dataflows.build``, or from
``dataflows.profiles`` in layouts before it moved) over :func:`items` with recovery on, aborting
at :data:`ABORT_AT`, so ``OUT_DIR/part-0.sqlite3`` holds that layout's snapshots of every step
(identity links, user states, models, the RFM population) and the input position. The committed
store ``v0/`` was made from 037e423, the last layout with bare-pickle snapshots; ``v1/`` from
8fe6588, the last snapshot version 1; ``v2/`` from 4d4b0d1, the last snapshot version 2; ``v3/`` from 1fe9579, the last snapshot version 3; ``v5/`` from 8e5bb0a, the last snapshot version 5; ``v7/`` from bc19ee6, the last snapshot version 7; ``v8/`` from 7ce027b, the last snapshot version 8 (run with the checkout as the working directory, so its code
is imported).
"""

from __future__ import annotations

import inspect
import sys
from datetime import timedelta
from pathlib import Path

import orjson

REC = "2024-05-02T00:00:00.000Z"
ABORT_AT = 24


def items() -> list[tuple[int, bytes, bytes]]:
    """A stream that gives every step state: anonymous visitors who identify later (identity
    links and merges), buyers (RFM population), a long session (scored by the models)."""
    out = []
    i = 0

    def add(**ev: object) -> None:
        nonlocal i
        i += 1
        body = {"type": "track", "event": "Product Viewed", "messageId": f"m{i}", "receivedAt": REC,
                "timestamp": 1714564000 + i * 30, "properties": {"category": "shoes"}, **ev}  # fmt: skip
        out.append((0, f"1714564800000-{i}".encode(), orjson.dumps({k: v for k, v in body.items() if v is not None})))

    for u in range(6):
        add(userId=f"u{u}")
        add(userId=f"u{u}", event="Order Completed", properties={"revenue": 10 + u, "order_id": f"o{u}"})
    for a in range(3):
        add(anonymousId=f"a{a}", event="Product Added", properties={"product_id": f"p{a}", "price": 5})
    for _ in range(12):
        add(userId="u0", properties={"category": "books"})
    add(anonymousId="a0", userId="u1", type="identify", event=None, traits={"email": "u1@example.com"}, properties=None)
    for u in range(6):
        add(userId=f"u{u}", event="Order Completed", properties={"revenue": 3, "order_id": f"o{u}b"})
    add(anonymousId="a1", userId="u2", type="identify", event=None, traits={"email": "u2@example.com"}, properties=None)
    for a in range(3):
        add(anonymousId=f"a{a}", properties={"category": "hats"})
    return out


def main(checkout: str, out_dir: str) -> None:
    sys.path.insert(0, checkout)
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.testing import TestingSink, TestingSource, run_main

    try:
        from dataflows.build import Sinks, build_flow
    except ImportError:  # layouts before dataflows/build.py
        from dataflows.profiles import Sinks, build_flow  # type: ignore[no-redef]
    from liveprofile.settings import Settings

    assert Path(inspect.getfile(build_flow)).resolve().is_relative_to(Path(checkout).resolve()), "not the checkout's code"
    settings = Settings.from_env({"LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z"}, shards=1)
    stream: list = items()
    stream.insert(ABORT_AT, TestingSource.ABORT())
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    init_db_dir(out_dir, 1)
    sinks = Sinks(*(TestingSink([]) for _ in range(5)))
    args: list = [settings, TestingSource(stream, batch_size=4), sinks]
    if "clock" in inspect.signature(build_flow).parameters:
        from dataflows.clock import StreamClock

        args.append(StreamClock(lambda: 1714564800.0))
    run_main(build_flow(*args), recovery_config=RecoveryConfig(out_dir), epoch_interval=timedelta(0))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
