"""Fixtures of the end-to-end tests: a real Kafka-protocol broker (tansu) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_broker import TansuBroker


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[TansuBroker]:
    """A tansu broker on a free loopback port."""
    b = TansuBroker(tmp_path / "tansu").start()
    yield b
    b.stop()


@pytest.fixture
def kafka_proxied(tmp_path: Path) -> Iterator[TansuBroker]:
    """A tansu broker reached only through a TCP proxy, so a test can cut it off (``outage()``)."""
    b = TansuBroker(tmp_path / "tansu", proxied=True).start()
    yield b
    b.stop()
