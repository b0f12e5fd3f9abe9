"""Start and stop a real 3-master Redis Cluster on loopback (test helper).

Three ``redis-server --cluster-enabled yes`` processes in a private directory,
joined with ``redis-cli --cluster create ... --cluster-replicas 0`` (the slots
split in three contiguous ranges), ready once every node reports
``cluster_state:ok``. Nothing persists (``--appendonly no --save ''``).
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

__all__ = ["RedisCluster3", "cluster_port"]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port(taken: set[int] | None = None) -> int:
    """A free port <= 55535 whose cluster bus port (+10000) is free too."""
    taken = taken or set()
    for _ in range(1000):
        p = random.randint(20000, 55535)
        if p not in taken and p + 10000 not in taken and _bindable(p) and _bindable(p + 10000):
            return p
    msg = "no free port pair for a cluster node"
    raise RuntimeError(msg)


class RedisCluster3:
    """Three cluster-enabled masters on free loopback ports, all 16384 slots assigned."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        exe, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if exe is None or cli is None:
            msg = "redis-server/redis-cli are not installed (apt-get install -y redis-server)"
            raise RuntimeError(msg)
        self.exe, self.cli = exe, cli
        self.workdir = workdir
        self.ports: list[int] = []
        for _ in range(masters):
            self.ports.append(cluster_port({q for p in self.ports for q in (p, p + 10000)}))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """A URL of one node: cluster clients discover the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 30.0) -> RedisCluster3:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for p in self.ports:
            args = [
                self.exe, "--port", str(p), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{p}.conf", "--cluster-node-timeout", "5000",
                "--appendonly", "no", "--save", "", "--protected-mode", "no", "--logfile", f"redis-{p}.log",
            ]  # fmt: skip
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for p in self.ports:
            self._wait(lambda p=p: redis.Redis(port=p, socket_connect_timeout=0.2).ping(), deadline, f"node {p}")
        out = subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            self.stop()
            msg = f"redis-cli --cluster create failed: {out.stdout[-2000:]} {out.stderr[-2000:]}"
            raise RuntimeError(msg)

        def ok() -> bool:
            for p in self.ports:
                info = redis.Redis(port=p, socket_connect_timeout=0.2, decode_responses=True).cluster("INFO")
                if info.get("cluster_state") != "ok":
                    return False
            return True

        self._wait(ok, deadline, "cluster_state:ok")
        return self

    def _wait(self, pred, deadline: float, what: str) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                if pred():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline or any(pr.poll() is not None for pr in self.procs):
                self.stop()
                msg = f"redis cluster: timed out waiting for {what}"
                raise RuntimeError(msg)
            time.sleep(0.05)

    def node_clients(self) -> list[redis.Redis]:
        """A plain client per master (for per-node checks such as DBSIZE)."""
        return [redis.Redis(port=p) for p in self.ports]

    def flushall(self) -> None:
        for c in self.node_clients():
            c.flushall()
            c.close()

    def stop(self) -> None:
        for pr in self.procs:
            if pr.poll() is None:
                pr.terminate()
        for pr in self.procs:
            try:
                pr.wait(10)
            except subprocess.TimeoutExpired:
                pr.kill()
                pr.wait(10)
        self.procs = []
