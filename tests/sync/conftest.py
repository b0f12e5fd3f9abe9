"""Fixtures for the sync tests: fake vendors (real HTTP servers) and the feed writer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.sync.fakes import FakeVendor
from tests.sync.helpers import Feed


@pytest.fixture
def feed(r: redis.Redis) -> Feed:
    return Feed(r)


@pytest.fixture
def make_vendor() -> Iterator[Callable[..., FakeVendor]]:
    made: list[FakeVendor] = []

    def make(kind: str, **kw: Any) -> FakeVendor:
        v = FakeVendor(kind, **kw)
        made.append(v)
        return v

    yield make
    for v in made:
        v.close()
