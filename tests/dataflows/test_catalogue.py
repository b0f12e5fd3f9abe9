"""The catalogue branch of the dataflow (bytewax.testing) and its Redis sink (a real redis-server):
products seen in the stream become ``{p}:product:{id}`` hashes and ``{p}:category-top:{cat}``
rankings, and neither a duplicate delivery nor a recovery re-read counts twice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import redis
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource

from dataflows.build import Sinks, build_flow
from dataflows.clock import StreamClock
from dataflows.sinks.catalogue import RedisCatalogueSink
from liveprofile.settings import Settings
from liveprofile.store.keys import Keys
from operators.catalogue import CatalogueOut
from tests.dataflows.test_flow import SETTINGS, FakeWall, execute, item


def flow_with_catalogue(items: list, got: list, settings: Settings = SETTINGS, batch_size: int = 100) -> object:
    sinks = Sinks(TestingSink([]), TestingSink([]), TestingSink([]), TestingSink([]), TestingSink([]), TestingSink(got))
    return build_flow(settings, TestingSource(items, batch_size=batch_size), sinks, StreamClock(FakeWall()))


def final(got: list[CatalogueOut]) -> dict[str, CatalogueOut]:
    return {o.product_id: o for o in got}


def view(i: int, pid: str, **props: object) -> tuple[int, bytes, bytes]:
    return item(i, userId=f"u{i % 3}", properties={"product_id": pid, **props})


STREAM = [
    view(1, "p1", name="Trail Shoe", category="Shoes", price=89, url="https://shop.example/p1"),
    view(2, "p1"),
    view(2, "p1"),  # a duplicate delivery of the same messageId
    view(3, "p2", name="Road Shoe", category="Shoes", price=99, url="https://shop.example/p2"),
    item(4, userId="u1", event="Order Completed", properties={"order_id": "o1", "products": [
        {"product_id": "p2", "name": "Road Shoe", "category": "Shoes", "price": 99, "quantity": 1},
        {"product_id": "b1", "name": "Novel", "category": "Books", "price": 12}]}),
    item(5, userId="u1", event="Page Viewed"),  # no product: nothing
]


def test_products_of_the_stream_become_catalogue_writes_in_both_flow_modes() -> None:
    for settings in (SETTINGS, Settings.from_env({"LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z",
                                                 "LIVEPROFILE_INTELLIGENCE": "off"}, shards=1)):  # fmt: skip
        got: list = []
        execute(flow_with_catalogue(STREAM, got, settings, batch_size=1), 1)
        f = final(got)
        assert set(f) == {"p1", "p2", "b1"}
        assert f["p1"].fields == {"name": "Trail Shoe", "category": "shoes", "price": "89.00",
                                  "url": "https://shop.example/p1", "url_trusted": "1", "popularity": "2"}  # fmt: skip
        assert (f["p2"].popularity, f["b1"].popularity, f["b1"].category) == (1 + 5, 5, "books")


def test_recovery_re_read_does_not_double_count(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    rc = RecoveryConfig(str(tmp_path))
    items = [view(i, f"p{i % 2}", category="Shoes") for i in range(30)]
    items.insert(17, TestingSource.ABORT())
    got: list = []
    flow = flow_with_catalogue(items, got, batch_size=4)
    execute(flow, 1, recovery_config=rc, epoch_interval=timedelta(seconds=10))
    assert sum(o.popularity for o in final(got).values()) < 30
    execute(flow, 1, recovery_config=rc, epoch_interval=timedelta(seconds=10))
    assert {p: o.popularity for p, o in final(got).items()} == {"p0": 15, "p1": 15}


def test_sink_writes_absolute_values_bounded_rankings_and_moves(redis_url: str, r: redis.Redis) -> None:
    keys = Keys("lp")
    part = RedisCatalogueSink(redis_url, keys, top_max=2).build("catalogue_out", 0, 1)
    writes = [CatalogueOut(f"p{i}", {"name": f"P{i}", "category": "shoes", "popularity": str(i)}, "shoes", i) for i in range(1, 5)]
    part.write_batch(writes)
    part.write_batch(writes)  # a replayed epoch: the same state
    assert r.zrevrange(keys.category_top("shoes"), 0, -1, withscores=True) == [(b"p4", 4.0), (b"p3", 3.0)]
    assert r.hgetall(keys.product("p4")) == {b"name": b"P4", b"category": b"shoes", b"popularity": b"4"}
    part.write_batch([CatalogueOut("p4", {"name": "P4", "category": "boots", "popularity": "5"}, "boots", 5, "shoes")])
    assert r.zrange(keys.category_top("shoes"), 0, -1) == [b"p3"]
    assert r.zrange(keys.category_top("boots"), 0, -1, withscores=True) == [(b"p4", 5.0)]
    part.close()
