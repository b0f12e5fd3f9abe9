"""The product catalogue's Redis writes (:mod:`operators.catalogue` computes them).

Each :class:`~operators.catalogue.CatalogueOut` is absolute, so each write is idempotent (a replay
after a crash writes the same values again):

* ``HSET {p}:product:{id}`` — the product's attributes and its ``popularity``;
* ``ZADD {p}:category-top:{category} popularity id`` — the ranking the content API reads, then
  ``ZREMRANGEBYRANK ... 0 -(max+1)`` keeps its ``LIVEPROFILE_CATALOGUE_TOP_MAX`` most popular;
* ``ZREM {p}:category-top:{old}`` when the product moved category.

Every command touches one key (:class:`~liveprofile.store.keys.Keys`: the catalogue keys carry no
group tag), so the same writes work on a Redis Cluster, where the pipeline is split per node.
"""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.sinks.common import raise_errors, with_retry
from liveprofile.store.connection import connect
from liveprofile.store.keys import Keys
from operators.catalogue import CatalogueOut

__all__ = ["RedisCatalogueSink"]


class _CataloguePartition(StatelessSinkPartition[CatalogueOut]):
    def __init__(self, url: str, keys: Keys, top_max: int, retry_for: float) -> None:
        self._r = connect(url, keys.cluster, socket_timeout=10)
        self._keys = keys
        self._top_max = top_max
        self._retry_for = retry_for

    def write_batch(self, items: list[CatalogueOut]) -> None:
        last: dict[str, CatalogueOut] = {}
        left: dict[str, set[str]] = {}
        for it in items:  # the newest write per product is the whole truth; every category it left
            last[it.product_id] = it
            if it.left_category:
                left.setdefault(it.product_id, set()).add(it.left_category)
        k = self._keys

        def run() -> object:
            pipe = self._r.pipeline(transaction=False)
            for pid, it in last.items():
                pipe.hset(k.product(pid), mapping=it.fields)
                for old in left.get(pid, ()):
                    if old != it.category:
                        pipe.zrem(k.category_top(old), pid)
                if it.category:
                    top = k.category_top(it.category)
                    pipe.zadd(top, {pid: it.popularity})
                    pipe.zremrangebyrank(top, 0, -(self._top_max + 1))
            return raise_errors(pipe.execute(raise_on_error=False))

        with_retry(run, "catalogue sink", self._retry_for)

    def close(self) -> None:
        self._r.close()


class RedisCatalogueSink(DynamicSink[CatalogueOut]):
    """Idempotent catalogue writes (see module docstring)."""

    def __init__(self, url: str, keys: Keys, top_max: int = 500, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.top_max = top_max
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CataloguePartition:
        return _CataloguePartition(self.url, self.keys, self.top_max, self.retry_for)
