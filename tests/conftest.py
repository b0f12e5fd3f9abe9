"""Shared fixtures: a real redis-server per test session, flushed per test; a real 3-master
Redis Cluster per session (started on first use), flushed per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.redis_cluster import RedisCluster3
from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of a real, empty Redis database."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster3]:
    """Three cluster-enabled redis-servers joined by ``redis-cli --cluster create`` (all slots assigned)."""
    cl = RedisCluster3(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cl
    cl.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster3) -> Iterator[str]:
    """URL of one node of a real, empty 3-master Redis Cluster."""
    redis_cluster.flushall()
    yield redis_cluster.url


@pytest.fixture
def rc(cluster_url: str) -> Iterator[redis.RedisCluster]:
    """A cluster client (redis-py ``RedisCluster``) on the empty cluster."""
    client = redis.RedisCluster.from_url(cluster_url)
    yield client
    client.close()
