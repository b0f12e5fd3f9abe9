"""Fixtures for the API tests: the real app under uvicorn on loopback, against a real redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from liveprofile.api.app import ApiApp
from liveprofile.api.config import ApiConfig
from liveprofile.settings import Settings
from tests.redis_server import free_port

TOKEN = "tok-123"
EXPERIMENTS = '{"subject": {"control": 1, "urgent": 1}, "hero": {"variants": {"a": 70, "b": 20, "c": 10}, "salt": "s1"}}'


class ApiServer:
    """uvicorn serving :class:`ApiApp` in a thread."""

    def __init__(self, redis_url: str, **values: str) -> None:
        env = {"LIVEPROFILE_REDIS_URL": redis_url, "LIVEPROFILE_API_TOKENS": f"other-token,{TOKEN}",
               "LIVEPROFILE_API_EXPERIMENTS": EXPERIMENTS, "LIVEPROFILE_API_BESTSELLERS_TTL": "0", **values}  # fmt: skip
        self.app = ApiApp(Settings.from_env(env), ApiConfig.from_values(env))
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="on", http="httptools", loop="asyncio"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                msg = "api did not start"
                raise RuntimeError(msg)
            time.sleep(0.01)
        deadline = time.monotonic() + 60  # the template render workers are separate processes
        while not (self.app.content is not None and self.app.content.renderer.ready):
            if time.monotonic() > deadline:
                msg = "the api's render workers did not start"
                raise RuntimeError(msg)
            time.sleep(0.05)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {TOKEN}"})

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def make_api(redis_url: str) -> Iterator[Callable[..., ApiServer]]:
    made: list[ApiServer] = []

    def make(**values: str) -> ApiServer:
        s = ApiServer(redis_url, **values)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def api(make_api: Callable[..., ApiServer]) -> ApiServer:
    return make_api()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    d = tmp_path / "templates"
    d.mkdir()
    return d
