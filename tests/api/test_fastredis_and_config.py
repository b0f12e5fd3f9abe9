"""The pipelined hot-path Redis client (against the real server) and the API configuration."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import hiredis
import pytest
import redis

from liveprofile.api import add_commands
from liveprofile.api.config import ApiConfig
from liveprofile.api.fastredis import from_url
from liveprofile.settings import ConfigError, Settings


def test_pipelined_client_orders_replies_and_recovers(redis_url: str, r: redis.Redis) -> None:
    for i in range(200):
        r.hset(f"lp:profile:u{i}", mapping={"user_id": f"u{i}", "n": str(i)})
    r.set("plain", "x")

    async def main() -> None:
        c = from_url(redis_url)
        assert c is not None
        got = await asyncio.gather(*(c.hgetall(f"lp:profile:u{i}") for i in range(200)))  # all in flight at once
        assert [g["n"] for g in got] == [str(i) for i in range(200)]
        with pytest.raises(hiredis.ReplyError, match="WRONGTYPE"):
            await c.hgetall("plain")
        assert await c.hgetall("missing") == {}
        r.client_kill_filter(_type="normal", skipme=True)  # the server drops our connection
        await asyncio.sleep(0.05)
        assert (await c.hgetall("lp:profile:u7"))["n"] == "7"  # reconnected
        await c.aclose()

    asyncio.run(main())


def test_api_config(tmp_path: Path) -> None:
    cfg = ApiConfig.from_values({"LIVEPROFILE_API_TOKENS": " tok-a, tok-b ,", "LIVEPROFILE_API_TEMPLATES": str(tmp_path)})
    assert cfg.tokens == ("tok-a", "tok-b") and cfg.templates_dir == str(tmp_path) and "tok-a" not in repr(cfg)
    f = tmp_path / "exp.json"
    f.write_text('{"e": {"x": 1}}')
    assert list(ApiConfig.from_values({"LIVEPROFILE_API_EXPERIMENTS": str(f)}).experiments) == ["e"]
    with pytest.raises(ConfigError):
        ApiConfig.from_values({"LIVEPROFILE_API_TEMPLATES": str(tmp_path / "nope")})
    with pytest.raises(ConfigError):
        ApiConfig.from_values({"LIVEPROFILE_API_RECOMMENDATIONS": "0"})


def test_api_command_needs_a_token(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("LIVEPROFILE_API_TOKENS", "")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["api", "--port", "1"])
    assert args.func(args, Settings.from_env({"LIVEPROFILE_REDIS_URL": redis_url})) == 2
