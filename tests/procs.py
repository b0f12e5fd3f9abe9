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

__all__ = ["Proc", "start_collector", "start_dataflow", "base_env", "wait_for", "dataflow_reads", "dataflow_series"]


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
        self.api_port: int | None = None  # a dataflow's API port (start_dataflow(api=True))

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
                   extra: Sequence[str] = (), name: str = "dataflow", api: bool = False) -> Proc:  # fmt: skip
    """``python -m bytewax.run`` the flow (snapshots every second with ``recovery``).

    ``api``: serve Bytewax's dataflow API (its ``/metrics`` carries the dataflow's own
    Prometheus series) on a free port, kept in ``proc.api_port``; see :func:`dataflow_reads`."""
    args = [sys.executable, "-m", "bytewax.run", flow]
    if recovery is not None:
        args += ["-r", str(recovery), "-s", "1", "-b", "0"]
    args += list(extra)
    api_port = None
    if api:
        api_port = free_port()
        env = {**env, "BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(api_port),
               "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp)}  # fmt: skip
    proc = Proc(args, env, tmp / f"{name}.log")
    proc.api_port = api_port
    return proc


def dataflow_series(procs: Sequence[Proc], series: str) -> dict[str, float] | None:
    """One Prometheus series of these dataflow processes (Bytewax's dataflow API,
    ``start_dataflow(api=True)``): value per label set (e.g. ``'shard="0"'``), summed over
    the processes; ``None`` while one of them does not answer yet. Raises if one has exited."""
    out: dict[str, float] = {}
    prefix = series + "{"
    for p in procs:
        if not p.alive():
            msg = f"dataflow exited ({p.p.returncode}): {p.output()}"
            raise RuntimeError(msg)
        assert p.api_port is not None, "start_dataflow(..., api=True)"
        try:
            text = httpx.get(f"http://127.0.0.1:{p.api_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith(prefix):
                labels, _, value = line.rpartition(" ")
                key = labels[len(prefix) : -1]
                out[key] = out.get(key, 0.0) + float(value)
    return out


def dataflow_reads(procs: Sequence[Proc]) -> dict[str, int] | None:
    """Buffer entries read per shard (``"0"``, ``"1"``...) by these dataflow processes since
    they started (``liveprofile_dataflow_events_read_total``), or ``None`` while one of them
    does not answer yet."""
    got = dataflow_series(procs, "liveprofile_dataflow_events_read_total")
    if got is None:
        return None
    return {k.removeprefix('shard="').removesuffix('"'): int(v) for k, v in got.items()}
