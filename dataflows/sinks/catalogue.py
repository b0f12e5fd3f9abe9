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

from itertools import chain

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from dataflows.sinks.common import Batch, Writer
from liveprofile.store.keys import Keys
from operators.catalogue import CatalogueOut

__all__ = ["RedisCatalogueSink"]


class _CataloguePartition(StatelessSinkPartition[CatalogueOut]):
    def __init__(self, url: str, keys: Keys, top_max: int, retry_for: float) -> None:
        self._w = Writer(url, keys, 0, retry_for)
        self._top_max = top_max

    def write_batch(self, items: list[CatalogueOut]) -> None:
        self.prepare(items).run()

    def prepare(self, items: list[CatalogueOut]) -> Batch:
        """The batch writing ``items`` (the newest write per product, every category it left)."""
        last: dict[str, CatalogueOut] = {}
        left: dict[str, set[str]] = {}
        for it in items:  # the newest write per product is the whole truth; every category it left
            last[it.product_id] = it
            if it.left_category:
                left.setdefault(it.product_id, set()).add(it.left_category)
        w = self._w
        k = w.keys
        command = w.command
        bound = -(self._top_max + 1)

        def build() -> object:
            pipe = w.pipe()
            for pid, it in last.items():
                command(pipe, "HSET", k.product(pid), *chain.from_iterable(it.fields.items()))
                for old in left.get(pid, ()):
                    if old != it.category:
                        command(pipe, "ZREM", k.category_top(old), pid)
                if it.category:
                    top = k.category_top(it.category)
                    command(pipe, "ZADD", top, it.popularity, pid)
                    command(pipe, "ZREMRANGEBYRANK", top, 0, bound)
            return pipe

        return Batch(w, build, None, "catalogue sink")

    def close(self) -> None:
        self._w.close()


class RedisCatalogueSink(DynamicSink[CatalogueOut]):
    """Idempotent catalogue writes (see module docstring)."""

    def __init__(self, url: str, keys: Keys, top_max: int = 500, retry_for: float = 300.0) -> None:
        self.url = url
        self.keys = keys
        self.top_max = top_max
        self.retry_for = retry_for

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CataloguePartition:
        return _CataloguePartition(self.url, self.keys, self.top_max, self.retry_for)
