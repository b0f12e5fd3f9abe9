"""Start and stop a real ``redis-server`` on a free loopback port (test helper)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server process in ``workdir`` (AOF optional)."""

    def __init__(self, workdir: Path, port: int | None = None, *, appendonly: bool = False) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            msg = "redis-server is not installed (apt-get install -y redis-server)"
            raise RuntimeError(msg)
        self.exe = exe
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--protected-mode", "no", "--logfile", "redis.log",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        while True:
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.RedisError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    msg = f"redis-server did not start on port {self.port}"
                    raise RuntimeError(msg) from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL (crash) the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
