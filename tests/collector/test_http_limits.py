"""HTTP limits of both servers (collector and API), as real processes over raw loopback sockets
(issue 12 item 6): a 64 MB request header is refused early (431), a trickled body and a
connection that never sends its head are cut (408) within their timeouts, and a server at its
connection limit answers 503. Each refusal has a JSON reason.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.procs import Proc, base_env, wait_for
from tests.redis_server import RedisServer, free_port

LIMITS = {
    "LIVEPROFILE_HTTP_MAX_HEADER_BYTES": "16384",
    "LIVEPROFILE_HTTP_HEADER_TIMEOUT": "2",
    "LIVEPROFILE_HTTP_BODY_TIMEOUT": "2",
    "LIVEPROFILE_HTTP_MAX_CONNECTIONS": "6",
}
#: (command, the path of a POST endpoint that reads a body)
SERVERS = {"collector": ("collector", "/v1/batch"), "api": ("api", "/v1/profiles")}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """One server process per module (these tests keep nothing in Redis)."""
    cmd, path = SERVERS[request.param]
    port = free_port()
    env = base_env(redis_server.url, LIVEPROFILE_API_TOKENS="tok-0123456789", **LIMITS)
    proc = Proc([sys.executable, "-m", "liveprofile.cli", cmd, "--port", str(port)], env, tmp_path_factory.mktemp(cmd) / f"{cmd}.log")

    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(proc.output())
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_for(up, 30, what=cmd)
    yield port, path
    proc.stop()


def _answer(s: socket.socket, timeout: float) -> bytes:
    """What the server sent before closing (or within ``timeout``)."""
    s.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def _refusal(data: bytes, status: int, code: str) -> None:
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["error"] == code


def test_a_64_mb_header_is_refused_early(server: tuple[int, str]) -> None:
    port, path = server
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Padding: ")
    sent, answer, chunk = 0, b"", b"a" * 65536
    try:
        while sent < 64 * 2**20:
            s.sendall(chunk)
            sent += len(chunk)
            if select.select([s], [], [], 0)[0]:
                answer = _answer(s, 5)
                break
    except (BrokenPipeError, ConnectionResetError):
        answer = answer or _answer(s, 1)
    s.close()
    assert sent < 4 * 2**20, f"the server read {sent} bytes of header"
    if answer:  # the answer may be lost to the connection's reset; the early cut is the point
        _refusal(answer, 431, "headers_too_large")


def test_a_trickled_body_is_cut_within_the_timeout(server: tuple[int, str]) -> None:
    """The connection is closed (the collector answers 408 first; the API, which reads no body,
    has answered 405 and still must not be held by the rest of it)."""
    port, path = server
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
    started, answer, closed = time.monotonic(), b"", False
    try:
        while not closed and time.monotonic() - started < 20:  # the unpatched servers held it 40 s+
            s.sendall(b" ")
            if select.select([s], [], [], 0.2)[0]:
                chunk = s.recv(65536)
                answer += chunk
                closed = not chunk
    except (BrokenPipeError, ConnectionResetError):
        closed = True
    s.close()
    assert closed, f"the trickled body held the connection for 20 s (answer: {answer[:80]!r})"
    if path == "/v1/batch" and answer:
        _refusal(answer, 408, "body_timeout")


def test_a_connection_that_never_sends_its_head_is_closed(server: tuple[int, str]) -> None:
    port, _ = server
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost:")  # and nothing more
        _refusal(_answer(s, 20), 408, "header_timeout")


def test_at_the_connection_limit_new_requests_get_503(server: tuple[int, str]) -> None:
    port, _ = server
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(6)]
    try:
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # heads not finished: connections held

        answers: list[bytes] = []

        def refused() -> bool:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answers.append(_answer(s, 5))
                return answers[-1].startswith(b"HTTP/1.1 503 ")

        wait_for(refused, 10, what="a 503 at the connection limit")
        _refusal(answers[-1], 503, "too_many_connections")  # JSON like every other refusal (was uvicorn's plain text)
        assert b"\r\nretry-after: 1\r\n" in answers[-1].lower()
    finally:
        for s in held:
            s.close()
    wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (200, 503), 10, what="served again")
