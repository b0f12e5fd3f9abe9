"""Run liveprofile's real processes (collector, dataflow) for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["Proc", "start_collector", "start_dataflow", "base_env", "wait_for"]


def base_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVEPROFILE_", "BYTEWAX_"))}
    env.update({"LIVEPROFILE_REDIS_URL": redis_url, "LIVEPROFILE_WRITE_KEYS": "test-key", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def wait_for(pred, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what}"
            raise TimeoutError(msg)
        time.sleep(interval)


class Proc:
    """A child process with its output captured to a log file."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.log = log
        self._fh = log.open("ab")
        self.p = subprocess.Popen(self.args, env=dict(env), cwd=ROOT, stdout=self._fh, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.p.poll() is None

    def kill9(self) -> None:
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(30)

    def interrupt(self, timeout: float = 30) -> int:
        if self.alive():
            self.p.send_signal(signal.SIGINT)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait(10)

    def wait(self, timeout: float) -> int:
        return self.p.wait(timeout)

    def output(self) -> str:
        self._fh.flush()
        return self.log.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        self.interrupt(10)
        self._fh.close()


def start_collector(env: Mapping[str, str], tmp: Path, port: int | None = None) -> tuple[Proc, str]:
    port = port or free_port()
    proc = Proc([sys.executable, "-m", "liveprofile.cli", "collector", "--port", str(port)], env, tmp / f"collector-{port}.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            msg = f"collector exited: {proc.output()}"
            raise RuntimeError(msg)
        try:
            return httpx.get(url + "/metrics", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 30, what="collector")
    return proc, url


def start_dataflow(env: Mapping[str, str], tmp: Path, *, recovery: Path | None = None, flow: str = "dataflows.profiles:flow",
                   extra: Sequence[str] = (), name: str = "dataflow") -> Proc:  # fmt: skip
    args = [sys.executable, "-m", "bytewax.run", flow]
    if recovery is not None:
        args += ["-r", str(recovery), "-s", "1", "-b", "0"]
    args += list(extra)
    return Proc(args, env, tmp / f"{name}.log")
