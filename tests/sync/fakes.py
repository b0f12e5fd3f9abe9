"""Fake email platforms: real HTTP servers on loopback that check what a vendor checks.

:class:`FakeVendor` speaks one of three dialects — ``webhook`` (HMAC-signed
batches), ``braze`` (``/users/track``, ``/users/delete``) or ``klaviyo``
(bulk profile import jobs, bulk event jobs, ``profile-import`` unsets,
deletion jobs). It enforces auth and the vendor's batch limits (a violation
is answered 401/400/413 *and* recorded in :attr:`FakeVendor.violations`), and
injects faults on demand: scripted statuses (``500``, ``429`` with
``Retry-After``), timeouts (the request hangs, then the connection drops
without applying anything), an outage window (503 for N seconds, the same
code path as a multi-minute outage), per-user refusals (400) and a
``RateLimit-*`` fixed window that answers 429 when exhausted.

What the vendor *applied* is appended to :attr:`FakeVendor.applied` in
arrival order: one record per user per accepted request
(``user_id``, ``version``, ``from_version``, ``key``, ``fields``, ``events``,
``deleted``). A webhook vendor also de-duplicates on the per-item
idempotency key, as receivers are told to (:attr:`FakeVendor.unique`).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from liveprofile.sync.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

__all__ = ["FakeVendor"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    vendor: FakeVendor

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out or are killed mid-request: expected here


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n)
        status, headers, out = self.server.vendor.handle(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        if status == 0:  # timeout: hang up without answering
            self.close_connection = True
            return
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class FakeVendor:
    """One fake vendor on a free loopback port (see module docstring)."""

    def __init__(self, kind: str, *, secret: str = "whsec", api_key: str = "key-1", max_items: int = 10_000,
                 latency: float = 0.0, timeout_hang: float = 1.0) -> None:  # fmt: skip
        self.kind = kind
        self.secret = secret
        self.api_key = api_key
        self.max_items = max_items
        self.latency = latency
        self.timeout_hang = timeout_hang
        self.lock = threading.Lock()
        self.applied: list[dict[str, Any]] = []
        self.unique: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.violations: list[str] = []
        self.requests: list[tuple[str, int]] = []
        self.script: deque[int | str] = deque()
        self.outage_until = 0.0
        self.refuse_users: set[str] = set()
        self.ratelimit: tuple[int, float] | None = None
        self._window = (0.0, 0)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.vendor = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- fault injection -------------------------------------------------------
    def fail_next(self, *what: int | str) -> None:
        """Answer the next requests with these statuses (``"timeout"``: hang up)."""
        with self.lock:
            self.script.extend(what)

    def outage(self, seconds: float) -> None:
        """503 for every request during the next ``seconds``."""
        self.outage_until = time.monotonic() + seconds

    # -- request handling ------------------------------------------------------
    def _ratelimit_headers(self) -> tuple[bool, dict[str, str]]:
        if self.ratelimit is None:
            return True, {}
        limit, window = self.ratelimit
        now = time.monotonic()
        start, used = self._window
        if now - start >= window:
            start, used = now, 0
        used += 1
        self._window = (start, used)
        reset = max(1, int(start + window - now + 0.999))
        hdrs = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(max(0, limit - used)), "RateLimit-Reset": str(reset)}
        if used > limit:
            return False, {**hdrs, "Retry-After": str(reset)}
        return True, hdrs

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.latency:
            time.sleep(self.latency)
        with self.lock:
            injected = self.script.popleft() if self.script else None
            ok_rate, rl_headers = self._ratelimit_headers()
        if injected == "timeout":
            time.sleep(self.timeout_hang)
            self.requests.append((path, 0))
            return 0, {}, b""
        if injected is not None:
            hdrs = {"Retry-After": "1"} if injected == 429 else {}
            self.requests.append((path, int(injected)))
            return int(injected), hdrs, b'{"error": "injected"}'
        if time.monotonic() < self.outage_until:
            self.requests.append((path, 503))
            return 503, {}, b'{"error": "outage"}'
        if not ok_rate:
            self.requests.append((path, 429))
            return 429, rl_headers, b'{"error": "rate limited"}'
        status, out = self._apply(path, headers, body)
        self.requests.append((path, status))
        return status, rl_headers, out

    def _violation(self, status: int, msg: str) -> tuple[int, bytes]:
        with self.lock:
            self.violations.append(msg)
        return status, json.dumps({"error": msg}).encode()

    def _apply(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self.kind == "webhook":
            return self._webhook(path, headers, body)
        if self.kind == "braze":
            return self._braze(path, headers, body)
        return self._klaviyo(path, headers, body)

    def _record(self, recs: list[dict[str, Any]]) -> None:
        with self.lock:
            for rec in recs:
                self.applied.append(rec)
                key = rec.get("key")
                if key:
                    if key in self.unique:
                        self.duplicates += 1
                    else:
                        self.unique[key] = rec

    def _refused(self, users: list[str]) -> tuple[int, bytes] | None:
        bad = sorted(set(users) & self.refuse_users)
        if bad:
            return 400, json.dumps({"error": f"invalid user {bad[0]}"}).encode()
        return None

    # -- dialects --------------------------------------------------------------
    def _webhook(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        ts = headers.get(TIMESTAMP_HEADER.lower(), "")
        sig = headers.get(SIGNATURE_HEADER.lower(), "")
        if not verify_signature(self.secret, ts, body, sig):
            return self._violation(401, "bad webhook signature")
        if not headers.get("idempotency-key"):
            return self._violation(400, "missing Idempotency-Key")
        doc = json.loads(body)
        items = doc["items"]
        if len(items) > self.max_items:
            return self._violation(413, f"{len(items)} items > {self.max_items}")
        refused = self._refused([it["user_id"] for it in items])
        if refused:
            return refused
        for it in items:
            if it["idempotency_key"] != f"{it['user_id']}:{it['version']}":
                return self._violation(400, "bad item idempotency key")
        self._record([{
            "user_id": it["user_id"], "version": it["version"], "from_version": it["from_version"],
            "key": it["idempotency_key"], "fields": it["changed"], "events": it["events"], "deleted": it["deleted"],
        } for it in items])  # fmt: skip
        return 200, b'{"ok": true}'

    def _braze(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return self._violation(401, "bad braze auth")
        doc = json.loads(body)
        if path == "/users/delete":
            ids = doc.get("external_ids", [])
            if len(ids) > 50:
                return self._violation(400, f"{len(ids)} external_ids > 50")
            self._record([{"user_id": u, "version": None, "key": None, "fields": {}, "events": [], "deleted": True} for u in ids])
            return 201, b'{"message": "success"}'
        if path != "/users/track":
            return self._violation(404, f"no endpoint {path}")
        attrs, events, purchases = doc.get("attributes", []), doc.get("events", []), doc.get("purchases", [])
        if len(attrs) + len(events) + len(purchases) > 75:
            return self._violation(400, f"{len(attrs) + len(events) + len(purchases)} objects > 75")
        refused = self._refused([a["external_id"] for a in attrs] + [e["external_id"] for e in events])
        if refused:
            return refused
        recs: dict[str, dict[str, Any]] = {}
        for a in attrs:
            fields = {k: v for k, v in a.items() if k not in ("external_id", "lp_version")}
            recs[a["external_id"]] = {"user_id": a["external_id"], "version": a.get("lp_version"), "key": None,
                                      "fields": fields, "events": [], "deleted": False}  # fmt: skip
        for e in events:
            rec = recs.setdefault(e["external_id"], {"user_id": e["external_id"], "version": None, "key": None,
                                                    "fields": {}, "events": [], "deleted": False})  # fmt: skip
            rec["events"].append(e)
        self._record(list(recs.values()))
        return 201, b'{"message": "success"}'

    def _klaviyo(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if headers.get("authorization") != f"Klaviyo-API-Key {self.api_key}":
            return self._violation(401, "bad klaviyo auth")
        if not headers.get("revision"):
            return self._violation(400, "missing revision header")
        if len(body) > 5_000_000:
            return self._violation(413, f"{len(body)} bytes > 5 MB")
        doc = json.loads(body)["data"]
        if path == "/api/profile-bulk-import-jobs":
            profiles = doc["attributes"]["profiles"]["data"]
            if len(profiles) > 10_000:
                return self._violation(413, f"{len(profiles)} profiles > 10000")
            for p in profiles:
                for v in p["attributes"].get("properties", {}).values():
                    if v is None:
                        return self._violation(400, "null in bulk import (cannot clear)")
            refused = self._refused([p["attributes"]["external_id"] for p in profiles])
            if refused:
                return refused
            recs = []
            for p in profiles:
                a = p["attributes"]
                props = dict(a.get("properties", {}))
                version = props.pop("lp_version", None)
                fields = {**{k: v for k, v in a.items() if k not in ("external_id", "properties")}, **props}
                recs.append({"user_id": a["external_id"], "version": version, "key": None, "fields": fields,
                             "events": [], "deleted": False})  # fmt: skip
            self._record(recs)
            return 202, b'{"data": {"type": "profile-bulk-import-job", "id": "job"}}'
        if path == "/api/event-bulk-create-jobs":
            groups = doc["attributes"]["events-bulk-create"]["data"]
            n = sum(len(g["attributes"]["events"]["data"]) for g in groups)
            if n > 1000:
                return self._violation(413, f"{n} events > 1000")
            recs = []
            for g in groups:
                uid = g["attributes"]["profile"]["data"]["attributes"]["external_id"]
                evs = [e["attributes"] for e in g["attributes"]["events"]["data"]]
                recs.append({"user_id": uid, "version": None, "key": None, "fields": {}, "events": evs, "deleted": False})
            self._record(recs)
            return 202, b"{}"
        if path == "/api/profile-import":
            uid = doc["attributes"]["external_id"]
            unset = doc["meta"]["patch_properties"]["unset"]
            self._record([{"user_id": uid, "version": None, "key": None, "fields": dict.fromkeys(unset),
                           "events": [], "deleted": False, "unset": unset}])  # fmt: skip
            return 200, b"{}"
        if path == "/api/data-privacy-deletion-jobs":
            uid = doc["attributes"]["profile"]["data"]["attributes"]["external_id"]
            self._record([{"user_id": uid, "version": None, "key": None, "fields": {}, "events": [], "deleted": True}])
            return 202, b"{}"
        return self._violation(404, f"no endpoint {path}")
