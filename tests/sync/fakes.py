"""Fake email platforms: real HTTP servers on loopback that check what a vendor checks.

:class:`FakeVendor` speaks one of three dialects — ``webhook`` (HMAC-signed
batches), ``braze`` (``/users/track``, ``/users/delete``) or ``klaviyo``
(bulk profile import jobs, bulk event jobs, ``profile-import`` unsets and upserts,
deletion jobs, list membership adds (POST) and removes (DELETE), and the job status /
import-errors GETs); Braze also takes ``/v2/subscription/status/set`` and applies the audience
array attribute's ``add``/``remove`` operations (:attr:`FakeVendor.arrays`). It enforces auth, the
vendor's published contract (Klaviyo: every request's headers and body against its
OpenAPI document, :mod:`tests.sync.contracts`; Braze: the documented rules of each
endpoint page, :data:`BRAZE_DOCS`) and the vendor's batch limits (a violation is
answered 401/400/413 *and* recorded in :attr:`FakeVendor.violations`). Users in
:attr:`FakeVendor.refuse_objects` are refused object by object inside an accepted
answer, as the vendors do: Braze lists them in the 201's ``errors``, a Klaviyo import
job fails them (its import-errors, paged by ``errors_page``, after ``job_polls``
``processing`` answers). It injects faults on demand: scripted
statuses (``500``, ``429`` with ``Retry-After``), timeouts (the request hangs,
then the connection drops without applying anything), an outage (503 until
:meth:`FakeVendor.end_outage` or for N seconds), per-user refusals (400), a
``RateLimit-*`` fixed window that answers 429 when exhausted, and a *stall*
(requests are applied, then their answer is held back: what a crash of the
sender in the middle of a request leaves behind).

Nothing here uses the code under test: the webhook signature, the batch
idempotency key and every shape are checked from the documented scheme
(:mod:`liveprofile.sync.destinations.webhook`, :mod:`liveprofile.sync.destinations.braze`,
:mod:`liveprofile.sync.destinations.klaviyo` docstrings, the vendors' API references),
re-implemented with :mod:`hmac` / :mod:`hashlib`.

What the vendor *applied* is appended to :attr:`FakeVendor.applied` in
arrival order: one record per user per accepted request (``user_id``,
``version``, ``from_version``, ``key``, ``fields``, ``events``, ``deleted``,
and ``seq``/``path`` of the request). :attr:`FakeVendor.unique` is what a
webhook receiver keeps after de-duplicating on the per-item idempotency key,
as receivers are told to; :attr:`FakeVendor.duplicates` counts what it
dropped. Every request, whatever its answer, is in :attr:`FakeVendor.log`
(:class:`Req`: sequence number, path, status, the item keys it carried, the
batch key, whether it came too early).

**Pacing checks.** After answering ``RateLimit-Remaining: 0`` with
``RateLimit-Reset: s``, or ``Retry-After: s``, the vendor knows the sender
must not send before ``s`` seconds from that answer (the sender reads the
answer later than the vendor wrote it, so its deadline can only be later):
a request arriving before is marked ``early``.

**Overlap checks.** Requests are attributed to a *consumer* by their URL path
prefix (give each sender its own ``url + "/a"``); a request arriving while a
request of another consumer is still being handled (read, applied, answered)
is recorded in :attr:`FakeVendor.overlaps`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from tests.sync.contracts import klaviyo as klaviyo_contract

__all__ = ["FakeVendor", "Req", "webhook_signature"]

#: documented webhook headers (liveprofile.sync.destinations.webhook docstring), written out, not imported
TS_HEADER = "x-liveprofile-timestamp"
SIG_HEADER = "x-liveprofile-signature"
#: documented keys of one webhook item
WEBHOOK_ITEM_KEYS = frozenset({"user_id", "version", "from_version", "idempotency_key", "changed", "events", "deleted"})
#: the Braze pages whose rules the Braze dialect encodes
BRAZE_DOCS = ("https://www.braze.com/docs/api/endpoints/user_data/post_user_track/",
              "https://www.braze.com/docs/api/objects_filters/event_object/",
              "https://www.braze.com/docs/api/endpoints/user_data/post_user_delete/",
              "https://www.braze.com/docs/api/objects_filters/user_attributes_object/",
              "https://www.braze.com/docs/api/endpoints/subscription_groups/post_update_user_subscription_group_status_v2/")  # fmt: skip
#: the custom attribute array of audience names (the shared contract 4), written out, not imported
BRAZE_AUDIENCE_ARRAY = "liveprofile_audiences"
#: /v2/subscription/status/set: "batch update the subscription state of up to 50 users"
BRAZE_SUBSCRIPTION_MAX = 50
BRAZE_SUBSCRIPTION_STATES = frozenset({"subscribed", "unsubscribed"})
BRAZE_SUBSCRIPTION_KEYS = frozenset({"subscription_group_id", "subscription_state", "external_ids", "emails", "phones",
                                     "use_double_opt_in_logic"})  # fmt: skip
#: Klaviyo: Add Profiles to List / Remove Profiles from List ("a maximum of 1000 profiles per call")
_KLAVIYO_LIST = re.compile(r"^/api/lists/([^/]+)/relationships/profiles$")
KLAVIYO_LIST_MAX = 1000
#: /users/delete: "Up to 50 external_ids, user_aliases, braze_ids, email_addresses, or phone_numbers ...
#: Only one of [them] can be included in a single request."
BRAZE_DELETE_KEYS = frozenset({"external_ids", "user_aliases", "braze_ids", "email_addresses", "phone_numbers"})
#: /users/track: "one of external_id, user_alias, braze_id, email or phone is required" in every object
BRAZE_USER_IDS = frozenset({"external_id", "user_alias", "braze_id", "email", "phone"})
#: /users/track: "up to 75 events, 75 attribute updates, and 75 purchases" per request
BRAZE_TRACK_MAX = 75
#: an event's ``time``: "datetime as string in ISO 8601"
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{1,2}:?\d{2})?$")
#: Braze's user attributes object: the values of ``email_subscribe``
BRAZE_EMAIL_SUBSCRIBE = frozenset({"opted_in", "subscribed", "unsubscribed"})
#: Klaviyo's Bulk Unsubscribe Profiles (revision 2024-10-15+): profile attributes it takes, and its limit
KLAVIYO_UNSUBSCRIBE_ATTRS = frozenset({"email", "phone_number", "subscriptions"})
KLAVIYO_MAX_UNSUBSCRIBES = 100
#: Klaviyo's data-privacy-deletion-job takes exactly one of these profile identifiers
KLAVIYO_DELETE_IDS = frozenset({"email", "phone_number", "id"})
#: Klaviyo's profile ``phone_number``: "Individual's phone number in E.164 format" (the OpenAPI
#: document says only that; a bulk import job fails a profile whose number is not one)
KLAVIYO_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
#: Braze's user attributes object (https://www.braze.com/docs/api/objects_filters/user_attributes_object/):
#: standard attributes that are strings, ``dob`` "YYYY-MM-DD", ``gender`` one of these, ``country``
#: "ISO-3166-1 alpha-2"
BRAZE_STRING_ATTRS = frozenset({"first_name", "last_name", "phone", "home_city", "language"})
BRAZE_GENDERS = frozenset({"M", "F", "O", "U", "N", "P"})
_DOB = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ALPHA2 = re.compile(r"^[A-Z]{2}$")


def _check_braze_standard_attributes(attrs: list[dict[str, Any]]) -> str:
    """Braze's documented types of the standard attributes; '' when every object is fine."""
    for a in attrs:
        for k in BRAZE_STRING_ATTRS & a.keys():
            if a[k] is not None and not isinstance(a[k], str):
                return f"{k} must be a string, got {a[k]!r}"
        if a.get("dob") is not None and not (isinstance(a["dob"], str) and _DOB.match(a["dob"])):
            return f"dob must be YYYY-MM-DD, got {a['dob']!r}"
        if a.get("gender") is not None and a["gender"] not in BRAZE_GENDERS:
            return f"gender must be one of {sorted(BRAZE_GENDERS)}, got {a['gender']!r}"
        if a.get("country") is not None and not (isinstance(a["country"], str) and _ALPHA2.match(a["country"])):
            return f"country must be an ISO-3166-1 alpha-2 code, got {a['country']!r}"
        bad = [k for k in a if k.startswith("$")]
        if bad:
            return f"custom attribute names may not start with $: {bad}"
    return ""


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The documented scheme: ``v1=`` + hex HMAC-SHA256 with the secret of ``"{timestamp}." + body``."""
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Req:
    """One request as the vendor saw it."""

    seq: int
    path: str
    status: int
    keys: tuple[str, ...]
    batch_key: str
    early: bool


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

    def setup(self) -> None:
        super().setup()
        with self.server.vendor.lock:
            self.server.vendor.connections += 1

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.vendor.lock:
                self.server.vendor.connections -= 1

    def do_GET(self) -> None:  # noqa: N802
        vendor = self.server.vendor
        seq = vendor._begin(self.path)
        try:
            status, headers, out = vendor.handle_get(seq, self.path, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-type", "application/vnd.api+json" if vendor.kind == "klaviyo" else "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            self.wfile.flush()
        finally:
            vendor._end(self.path)

    def do_DELETE(self) -> None:  # noqa: N802
        self.do_POST("DELETE")

    def do_POST(self, method: str = "POST") -> None:  # noqa: N802
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n)
        vendor = self.server.vendor
        if len(body) < n:  # the sender died mid-body: nothing to handle (a vendor drops it too)
            with vendor.lock:
                vendor.truncated += 1
            self.close_connection = True
            return
        seq = vendor._begin(self.path)
        try:
            status, headers, out = vendor.handle(seq, self.path, {k.lower(): v for k, v in self.headers.items()}, body, method)
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
            self.wfile.flush()
        finally:
            vendor._end(self.path)


def _consumer(path: str) -> str:
    """The sender a request is attributed to: the first path segment when it is not an API word."""
    first = path.strip("/").split("/", 1)[0]
    return "" if first in ("", "users", "api", "v2") else first


class FakeVendor:
    """One fake vendor on a free loopback port (see module docstring)."""

    def __init__(self, kind: str, *, secret: str = "whsec", api_key: str = "key-1", max_items: int = 10_000,
                 latency: float = 0.0, timeout_hang: float = 1.0, job_polls: int = 1, errors_page: int = 100) -> None:  # fmt: skip
        self.kind = kind
        self.secret = secret
        self.api_key = api_key
        self.max_items = max_items
        self.latency = latency
        self.timeout_hang = timeout_hang
        #: Klaviyo: how many job polls answer ``processing`` before ``complete``; import errors per page
        self.job_polls = job_polls
        self.errors_page = errors_page
        #: Klaviyo import jobs by id: total, failed [(index, profile attributes)], polls left
        self.jobs: dict[str, dict[str, Any]] = {}
        #: users whose objects the vendor takes the request for, then fails one by one (Braze's ``errors``
        #: in a 201, a Klaviyo import job's import-errors)
        self.refuse_objects: set[str] = set()
        #: statuses for the next GETs (Klaviyo job polls)
        self.get_script: deque[int] = deque()
        self.gets: list[tuple[str, int]] = []
        #: external ids looked up with GET /api/profiles; how many lookups to answer 503 next
        self.lookups: list[str] = []
        self.lookup_failures = 0
        #: Braze deletions by email: (email, prioritization)
        self.email_deletions: list[tuple[str, tuple[str, ...]]] = []
        #: Klaviyo: external ids made by Create or Update Profile; list id -> member Klaviyo ids; every
        #: list membership change applied: (``add``/``remove``, list id, external id, request seq)
        self.upserted: set[str] = set()
        #: list ids this Klaviyo account does not have (answered 404, as Klaviyo does)
        self.missing_lists: set[str] = set()
        self.lists: dict[str, set[str]] = {}
        self.list_ops: list[tuple[str, str, str, int]] = []
        #: Braze: array attribute state (user -> attribute -> elements) and every element change applied
        #: (user, attribute, ``add``/``remove``, element, seq); subscription group states ((group, user)
        #: -> state) and every state set: (group, user, state, seq)
        self.arrays: dict[str, dict[str, list[str]]] = {}
        self.array_ops: list[tuple[str, str, str, str, int]] = []
        self.subscriptions: dict[tuple[str, str], str] = {}
        self.subscription_ops: list[tuple[str, str, str, int]] = []
        self.lock = threading.Lock()
        self.applied: list[dict[str, Any]] = []
        self.unique: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.violations: list[str] = []
        #: open client connections (a dead sender's go once everything it sent was handled)
        self.connections = 0
        #: requests whose body ended early (the sender died while sending)
        self.truncated = 0
        self.requests: list[tuple[str, int]] = []
        self.log: list[Req] = []
        #: (deletion job identifiers) as received by the Klaviyo dialect
        self.deletion_identifiers: list[dict[str, Any]] = []
        self.script: deque[int | str] = deque()
        self.outage_until = 0.0
        #: sequence number of the last request answered 503 by the outage (set by end_outage)
        self.outage_ended_at_seq: int | None = None
        self.refuse_users: set[str] = set()
        self.ratelimit: tuple[int, float] | None = None
        self._window = (0.0, 0)
        self.blocked_until = 0.0
        #: requests that arrived before an advertised reset / Retry-After had passed
        self.early = 0
        #: answers that advertised ``RateLimit-Remaining: 0``
        self.exhausted = 0
        self.inflight: dict[str, int] = {}
        self.overlaps: list[tuple[int, str, tuple[str, ...]]] = []
        self.stalled = 0
        self._stall = False
        self._stall_at: int | None = None
        #: only requests whose path contains this are stalled (None: every request)
        self.stall_only: str | None = None
        self._release = threading.Event()
        self._seq = 0
        self._early_seqs: set[int] = set()
        self._outage_seqs: set[int] = set()
        self._batch_keys: dict[str, tuple[str, ...]] = {}
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.vendor = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    # -- fault injection -------------------------------------------------------
    def fail_next(self, *what: int | str) -> None:
        """Answer the next requests with these statuses (``"timeout"``: hang up)."""
        with self.lock:
            self.script.extend(what)

    def outage(self, seconds: float) -> None:
        """503 for every request during the next ``seconds`` (or until :meth:`end_outage`)."""
        self.outage_until = time.monotonic() + seconds

    def end_outage(self) -> None:
        """End the outage now; requests numbered after :attr:`outage_ended_at_seq` are served."""
        with self.lock:
            self.outage_until = 0.0
            self.outage_ended_at_seq = self._seq

    def stall(self) -> None:
        """From now on apply accepted requests but hold their answers until :meth:`release`."""
        with self.lock:
            self._release.clear()
            self._stall = True

    def stall_after(self, applied: int) -> None:
        """Start stalling by itself once ``applied`` records have been applied (the request that
        reaches the count is the first held): deterministic, however fast the sender is."""
        with self.lock:
            self._release.clear()
            self._stall_at = applied

    def release(self) -> None:
        """Answer the held requests (their sender may be gone) and stop stalling."""
        with self.lock:
            self._stall = False
            self._stall_at = None
        self._release.set()

    def last_seq(self) -> int:
        """Number of the latest request received so far."""
        with self.lock:
            return self._seq

    def busy(self) -> int:
        """Requests being handled right now (read, applied or answered)."""
        with self.lock:
            return sum(self.inflight.values())

    def idle(self) -> bool:
        """No request being handled and no client connection open: after a sender died, everything
        it had sent (even bytes still queued in the socket) has been handled."""
        with self.lock:
            return self.connections == 0 and not any(self.inflight.values())

    # -- bookkeeping -----------------------------------------------------------
    def _begin(self, path: str) -> int:
        now = time.monotonic()
        with self.lock:
            self._seq += 1
            me = _consumer(path)
            others = tuple(c for c, n in self.inflight.items() if n and c != me)
            if others:
                self.overlaps.append((self._seq, me, others))
            self.inflight[me] = self.inflight.get(me, 0) + 1
            if now < self.blocked_until:
                self.early += 1
                self._early_seqs.add(self._seq)
            if now < self.outage_until:  # decided on arrival: end_outage() splits requests by number
                self._outage_seqs.add(self._seq)
            return self._seq

    def _end(self, path: str) -> None:
        with self.lock:
            self.inflight[_consumer(path)] -= 1

    def _block(self, seconds: float) -> None:
        """The sender was told not to send for ``seconds`` from now (caller holds the lock)."""
        self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)

    def _carried(self, path: str, body: bytes) -> tuple[tuple[str, ...], str]:
        """(item keys, batch key) a request carries, read leniently (for the log only)."""
        try:
            doc = json.loads(body)
        except ValueError:
            return (), ""
        try:
            if self.kind == "webhook":
                return tuple(str(it.get("idempotency_key")) for it in doc.get("items", [])), str(doc.get("batch_key", ""))
            if self.kind == "braze":
                if path.endswith("/users/delete"):
                    return tuple(f"delete:{u}" for u in doc.get("external_ids", [])), ""
                return tuple(f"{a.get('external_id')}:{a.get('lp_version')}" for a in doc.get("attributes", [])), ""
        except (AttributeError, TypeError):
            return (), ""
        return (), ""

    # -- request handling ------------------------------------------------------
    def _ratelimit(self) -> tuple[bool, dict[str, str]]:
        """Count one request in the fixed window (caller holds the lock)."""
        if self.ratelimit is None:
            return True, {}
        limit, window = self.ratelimit
        now = time.monotonic()
        start, used = self._window
        if now - start >= window:
            start, used = now, 0
        used += 1
        self._window = (start, used)
        reset = max(1, int(start + window - now + 0.999))  # delta seconds, rounded up: never too early
        remaining = max(0, limit - used)
        hdrs = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining), "RateLimit-Reset": str(reset)}
        if used > limit:
            self._block(reset)
            return False, {**hdrs, "Retry-After": str(reset)}
        if remaining == 0:
            self.exhausted += 1
            self._block(reset)
        return True, hdrs

    def handle(self, seq: int, path: str, headers: dict[str, str], body: bytes,
               method: str = "POST") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        keys, batch_key = self._carried(path, body)
        if self.latency:
            time.sleep(self.latency)
        status, hdrs, out = self._answer(seq, path, headers, body, method)
        with self.lock:
            early = seq in self._early_seqs
            self.requests.append((path, status))
            self.log.append(Req(seq, path, status, keys, batch_key, early))
        return status, hdrs, out

    def _answer(self, seq: int, path: str, headers: dict[str, str], body: bytes,
                method: str = "POST") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        with self.lock:
            injected = self.script.popleft() if self.script else None
            if injected == 429:
                self._block(1)
        if injected == "timeout":
            time.sleep(self.timeout_hang)
            return 0, {}, b""
        if injected is not None:
            hdrs = {"Retry-After": "1"} if injected == 429 else {}
            return int(injected), hdrs, b'{"error": "injected"}'
        if seq in self._outage_seqs:
            return 503, {}, b'{"error": "outage"}'
        with self.lock:
            ok_rate, rl_headers = self._ratelimit()
        if not ok_rate:
            return 429, rl_headers, b'{"error": "rate limited"}'
        status, out = self._apply(seq, path, headers, body, method)
        if 200 <= status < 300 and (self.stall_only is None or self.stall_only in path):
            with self.lock:
                if self._stall_at is not None and len(self.applied) >= self._stall_at:
                    self._stall = True
                stall = self._stall
                if stall:
                    self.stalled += 1
            if stall:
                self._release.wait(60)
                with self.lock:
                    self.stalled -= 1
        return status, rl_headers, out

    def _violation(self, status: int, msg: str) -> tuple[int, bytes]:
        with self.lock:
            self.violations.append(msg)
        return status, json.dumps({"error": msg}).encode()

    def _apply(self, seq: int, path: str, headers: dict[str, str], body: bytes, method: str = "POST") -> tuple[int, bytes]:
        try:
            doc = json.loads(body)
        except ValueError:
            return self._violation(400, "body is not JSON")
        parts = path.strip("/").split("/", 1)
        sub = ("/" + parts[1] if len(parts) > 1 else "/") if _consumer(path) else path  # without the consumer
        try:
            if method != "POST" and self.kind != "klaviyo":
                return self._violation(405, f"{self.kind} has no {method} endpoint")
            if self.kind == "webhook":
                return self._webhook(seq, path, headers, body, doc)
            if self.kind == "braze":
                return self._braze(seq, sub, path, headers, doc)
            return self._klaviyo(seq, sub, path, headers, body, doc, method)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            return self._violation(400, f"malformed {self.kind} request: {type(exc).__name__}: {exc}")

    def _record(self, seq: int, path: str, recs: list[dict[str, Any]]) -> None:
        with self.lock:
            for rec in recs:
                rec["seq"] = seq
                rec["path"] = path
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
    def _signature_ok(self, headers: dict[str, str], body: bytes) -> bool:
        """The documented scheme, checked from first principles (wall clock: it signs Unix seconds)."""
        ts, sig = headers.get(TS_HEADER, ""), headers.get(SIG_HEADER, "")
        if not ts.isdigit() or abs(time.time() - int(ts)) > 300:
            return False
        return hmac.compare_digest(webhook_signature(self.secret, ts, body), sig)

    def _webhook(self, seq: int, path: str, headers: dict[str, str], body: bytes, doc: dict[str, Any]) -> tuple[int, bytes]:
        if not self._signature_ok(headers, body):
            return self._violation(401, "bad webhook signature")
        batch_key = headers.get("idempotency-key", "")
        if not batch_key:
            return self._violation(400, "missing Idempotency-Key")
        if doc.get("batch_key") != batch_key:
            return self._violation(400, "Idempotency-Key differs from the body's batch_key")
        items = doc["items"]
        if len(items) > self.max_items:
            return self._violation(413, f"{len(items)} items > {self.max_items}")
        for it in items:
            if set(it) != WEBHOOK_ITEM_KEYS:
                return self._violation(400, f"webhook item keys {sorted(it)}")
            if it["idempotency_key"] != f"{it['user_id']}:{it['version']}":
                return self._violation(400, "bad item idempotency key")
            if it["deleted"] and (it["changed"] or it["events"]):
                return self._violation(400, "a deletion carries nothing else to apply")
        item_keys = tuple(it["idempotency_key"] for it in items)
        with self.lock:  # the batch key names the items: the same items, the same key, always
            known = self._batch_keys.setdefault(batch_key, item_keys)
        if known != item_keys:
            return self._violation(400, f"batch key {batch_key} reused for other items")
        refused = self._refused([it["user_id"] for it in items])
        if refused:
            return refused
        self._record(seq, path, [{
            "user_id": it["user_id"], "version": it["version"], "from_version": it["from_version"],
            "key": it["idempotency_key"], "fields": it["changed"], "events": it["events"], "deleted": it["deleted"],
        } for it in items])  # fmt: skip
        return 200, b'{"ok": true}'

    def _braze_identified(self, obj: Any) -> str | None:
        """The documented rule of every /users/track object: one of the user identifiers is required."""
        if not isinstance(obj, dict):
            return "an object must be a JSON object"
        if not any(isinstance(obj.get(k), str) and obj[k] for k in BRAZE_USER_IDS):
            return f"one of {sorted(BRAZE_USER_IDS)} is required"
        return None

    def _braze(self, seq: int, sub: str, path: str, headers: dict[str, str], doc: dict[str, Any]) -> tuple[int, bytes]:
        """Braze's documented request rules (:data:`BRAZE_DOCS`); per-object refusals answer 201 with ``errors``."""
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return self._violation(401, "bad braze auth")
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return self._violation(400, f"content-type {headers.get('content-type')!r}: Braze takes application/json")
        if not isinstance(doc, dict):
            return self._violation(400, "body must be a JSON object")
        if sub == "/users/delete":
            if len(doc) != 1 or not set(doc) <= BRAZE_DELETE_KEYS:  # "Only one of ... in a single request"
                return self._violation(400, f"/users/delete keys {sorted(doc)}: exactly one of {sorted(BRAZE_DELETE_KEYS)}")
            (key, ids), = doc.items()
            if not isinstance(ids, list) or not ids:
                return self._violation(400, f"{key} must be a non-empty array")
            if len(ids) > 50:
                return self._violation(400, f"{len(ids)} ids > 50")
            if key in ("external_ids", "braze_ids", "phone_numbers") and not all(isinstance(u, str) and u for u in ids):
                return self._violation(400, f"{key} must be non-empty strings")
            if key == "email_addresses" and not all(isinstance(e, dict) and isinstance(e.get("email"), str)
                                                    and isinstance(e.get("prioritization"), list) for e in ids):  # fmt: skip
                return self._violation(400, "email_addresses entries need email and a prioritization array")
            if key == "email_addresses":
                prios = {"identified", "unidentified", "most_recently_updated"}
                if not all(e["prioritization"] and set(e["prioritization"]) <= prios for e in ids):
                    return self._violation(400, f"prioritization must name some of {sorted(prios)}")
                with self.lock:
                    self.email_deletions.extend((e["email"], tuple(e["prioritization"])) for e in ids)
                return 201, b'{"deleted": 0, "message": "success"}'  # the fake holds no unidentified profiles
            if key != "external_ids":
                return self._violation(400, f"this fake applies deletions by external_ids or email_addresses only, got {key}")
            self._record(seq, path, [{"user_id": u, "version": None, "key": None, "fields": {}, "events": [],
                                      "deleted": True} for u in ids])  # fmt: skip
            return 201, b'{"deleted": %d, "message": "success"}' % len(ids)
        if sub == "/v2/subscription/status/set":
            return _braze_subscription(self, seq, doc)
        if sub != "/users/track":
            return self._violation(404, f"no endpoint {sub}")
        unknown = set(doc) - {"attributes", "events", "purchases", "partner"}
        if unknown:
            return self._violation(400, f"/users/track keys {sorted(unknown)}")
        arrays = {k: doc.get(k, []) for k in ("attributes", "events", "purchases")}
        for k, arr in arrays.items():
            if not isinstance(arr, list):
                return self._violation(400, f"{k} must be an array")
            if len(arr) > BRAZE_TRACK_MAX:  # "up to 75 events, 75 attribute updates, and 75 purchases"
                return self._violation(400, f"{len(arr)} {k} > {BRAZE_TRACK_MAX}")
        if not any(arrays.values()):
            return self._violation(400, "/users/track without attributes, events or purchases")
        for k, arr in arrays.items():
            for i, obj in enumerate(arr):
                why = self._braze_identified(obj)
                if why is None and k == "events":
                    if not isinstance(obj.get("name"), str) or not obj["name"]:
                        why = "an event needs a name (string)"
                    elif not isinstance(obj.get("time"), str) or not _ISO.match(obj["time"]):
                        why = f"an event needs time, an ISO 8601 string (got {obj.get('time')!r})"
                    elif "properties" in obj and not isinstance(obj["properties"], dict):
                        why = "event properties must be an object"
                if why is not None:
                    return self._violation(400, f"{k}[{i}]: {why}")
        for i, a in enumerate(arrays["attributes"]):
            why = _check_braze_array(a)
            if why:
                return self._violation(400, f"attributes[{i}]: {why}")
        refused = self._refused([a["external_id"] for a in arrays["attributes"]] + [e["external_id"] for e in arrays["events"]])
        if refused:
            return refused
        bad = _check_braze_subscription_states(arrays["attributes"]) or _check_braze_standard_attributes(arrays["attributes"])
        if bad:
            return self._violation(400, bad)
        errors: list[dict[str, Any]] = []  # Braze's non-fatal errors: the request succeeds, these objects do not
        recs: dict[str, dict[str, Any]] = {}
        for i, a in enumerate(arrays["attributes"]):
            if a["external_id"] in self.refuse_objects:
                errors.append({"type": f"invalid attributes object for {a['external_id']}", "input_array": "attributes", "index": i})
                continue
            fields = {k: v for k, v in a.items() if k not in ("external_id", "lp_version")}
            recs[a["external_id"]] = {"user_id": a["external_id"], "version": a.get("lp_version"), "key": None,
                                      "fields": fields, "events": [], "deleted": False}  # fmt: skip
        for i, e in enumerate(arrays["events"]):
            if e["external_id"] in self.refuse_objects:
                errors.append({"type": f"invalid event object for {e['external_id']}", "input_array": "events", "index": i})
                continue
            rec = recs.setdefault(e["external_id"], {"user_id": e["external_id"], "version": None, "key": None,
                                                    "fields": {}, "events": [], "deleted": False})  # fmt: skip
            rec["events"].append(e)
        apply_braze_arrays(self, seq, [a for a in arrays["attributes"] if a["external_id"] not in self.refuse_objects])
        self._record(seq, path, list(recs.values()))
        out: dict[str, Any] = {"message": "success"}
        if errors:
            out["errors"] = errors
        return 201, json.dumps(out).encode()

    def _klaviyo_check(self, method: str, sub: str, headers: dict[str, str], body: bytes | None) -> tuple[int, bytes] | None:
        """Auth, then the request against Klaviyo's OpenAPI document (:mod:`tests.sync.contracts`)."""
        if headers.get("authorization") != f"Klaviyo-API-Key {self.api_key}":
            return self._violation(401, "bad klaviyo auth")
        errs = klaviyo_contract().request_errors(method, sub, headers, body)
        if errs:
            return self._violation(400, "; ".join(errs[:5]))
        return None

    def _klaviyo(self, seq: int, sub: str, path: str, headers: dict[str, str], body: bytes,
                 top: dict[str, Any], method: str = "POST") -> tuple[int, bytes]:  # fmt: skip
        bad = self._klaviyo_check(method, sub, headers, body)
        if bad is not None:
            return bad
        if len(body) > 5_000_000:
            return self._violation(413, f"{len(body)} bytes > 5 MB")
        if (m := _KLAVIYO_LIST.match(sub)) is not None:
            return _klaviyo_list(self, seq, path, m.group(1), method, top)
        doc = top["data"]
        if sub == "/api/profile-bulk-import-jobs":
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
            recs, failed = [], []
            for i, p in enumerate(profiles):
                a = p["attributes"]
                if a["external_id"] in self.refuse_objects:  # the job takes the request, then fails this profile
                    failed.append((i, a))
                    continue
                if a.get("phone_number") is not None and not KLAVIYO_E164.match(str(a["phone_number"])):
                    failed.append((i, a))  # Klaviyo fails a profile whose phone number is not E.164
                    continue
                props = dict(a.get("properties", {}))
                version = props.pop("lp_version", None)
                fields = {**{k: v for k, v in a.items() if k not in ("external_id", "properties")}, **props}
                recs.append({"user_id": a["external_id"], "version": version, "key": None, "fields": fields,
                             "events": [], "deleted": False})  # fmt: skip
            self._record(seq, path, recs)
            with self.lock:
                job_id = f"job-{seq}"
                self.jobs[job_id] = {"total": len(profiles), "failed": failed, "polls_left": self.job_polls}
            return 202, json.dumps({"data": self._job_resource(job_id, "queued")}).encode()
        if sub == "/api/event-bulk-create-jobs":
            groups = doc["attributes"]["events-bulk-create"]["data"]
            n = sum(len(g["attributes"]["events"]["data"]) for g in groups)
            if n > 1000:
                return self._violation(413, f"{n} events > 1000")
            recs = []
            for g in groups:
                uid = g["attributes"]["profile"]["data"]["attributes"]["external_id"]
                evs = [e["attributes"] for e in g["attributes"]["events"]["data"]]
                recs.append({"user_id": uid, "version": None, "key": None, "fields": {}, "events": evs, "deleted": False})
            self._record(seq, path, recs)
            return 202, b""
        if sub == "/api/profile-import":
            uid = doc["attributes"]["external_id"]
            kid = self.klaviyo_id(uid)
            answer = json.dumps({"data": {"type": "profile", "id": kid, "attributes": {"external_id": uid},
                                          "links": {"self": f"https://a.klaviyo.com/api/profiles/{kid}/"}}}).encode()  # fmt: skip
            if "meta" not in doc:  # Create or Update Profile: the profile, created when Klaviyo holds none
                with self.lock:
                    created = kid not in self._held()
                    self.upserted.add(uid)
                return (201 if created else 200), answer
            unset = doc["meta"]["patch_properties"]["unset"]
            self._record(seq, path, [{"user_id": uid, "version": None, "key": None, "fields": dict.fromkeys(unset),
                                      "events": [], "deleted": False, "unset": unset}])  # fmt: skip
            return 200, answer
        if sub == "/api/data-privacy-deletion-jobs":
            prof = doc["attributes"]["profile"]["data"]
            ident = {k: v for k, v in prof["attributes"].items() if v not in (None, "")}
            if prof.get("id"):
                ident["id"] = prof["id"]
            with self.lock:
                self.deletion_identifiers.append(dict(prof["attributes"], **({"id": prof["id"]} if "id" in prof else {})))
            # the operation's description: "one of the following identifiers: email, phone_number, or id.
            # If multiple identifiers are provided, we will return an error." (the schema cannot say it)
            if len(ident) != 1 or not set(ident) <= KLAVIYO_DELETE_IDS or set(prof["attributes"]) - KLAVIYO_DELETE_IDS:
                return self._violation(400, f"deletion job identifies the profile by {sorted(prof['attributes'])}"
                                            f"{' and id' if 'id' in prof else ''}: Klaviyo takes exactly one of "
                                            "email, phone_number, id")  # fmt: skip
            ((which, value),) = ident.items()
            # Klaviyo deletes every profile matching the identifier: one record per profile it holds
            with self.lock:
                matching = sorted({rec["user_id"] for rec in self.applied if not rec["deleted"]
                                   and which == "email" and rec["fields"].get("email") == value})  # fmt: skip
                if which == "id":
                    held = self._held()
                    if value not in held:
                        return 404, b'{"errors": [{"id": "x", "status": 404, "code": "not_found", "title": "Not found", "detail": "no such profile", "source": {}}]}'
                    matching = [held[value]]
            self._record(seq, path, [{"user_id": u, "version": None, "key": None, "fields": {}, "events": [],
                                      "deleted": True, "identifier": which, "value": value}
                                     for u in matching or [str(value)]])  # fmt: skip
            return 202, b""
        if sub == "/api/profile-subscription-bulk-delete-jobs":
            return _klaviyo_unsubscribe(self, seq, path, doc)
        return self._violation(404, f"no endpoint {sub}")

    # -- Klaviyo import jobs (GET) -----------------------------------------------
    def _job_resource(self, job_id: str, status: str) -> dict[str, Any]:
        job = self.jobs[job_id]
        done = status in ("complete", "cancelled")
        return {"type": "profile-bulk-import-job", "id": job_id, "attributes": {
            "status": status, "created_at": "2024-05-01T12:00:00+00:00", "total_count": job["total"],
            "completed_count": job["total"] - len(job["failed"]) if done else 0,
            "failed_count": len(job["failed"]) if done else 0}, "links": {"self": f"{self.url}/api/profile-bulk-import-jobs/{job_id}/"}}  # fmt: skip

    @staticmethod
    def klaviyo_id(uid: str) -> str:
        """The id Klaviyo gives the profile with ``external_id`` ``uid`` (stable, 26 characters)."""
        return "01" + hashlib.sha1(uid.encode()).hexdigest()[:24].upper()  # noqa: S324 - an id, not security

    def _held(self) -> dict[str, str]:
        """Profiles this vendor holds: Klaviyo id -> external id (imported, not deleted since)."""
        held: dict[str, str] = {self.klaviyo_id(u): u for u in self.upserted}
        for rec in self.applied:
            if rec.get("path", "").endswith("/api/profile-bulk-import-jobs"):
                held[self.klaviyo_id(rec["user_id"])] = rec["user_id"]
            elif rec["deleted"]:
                held.pop(self.klaviyo_id(rec["user_id"]), None)
        return held

    def _profiles(self, query: str) -> tuple[int, bytes]:
        """``GET /api/profiles?filter=equals(external_id,"...")``: the documented filter, nothing else."""
        m = re.search(r'filter=equals\(external_id,"((?:[^"\\]|\\.)*)"\)', query)
        if m is None:
            return self._violation(400, f"this fake filters profiles by equals(external_id,...) only: {query!r}")
        uid = re.sub(r"\\(.)", r"\1", m.group(1))
        with self.lock:
            self.lookups.append(uid)
            if self.lookup_failures > 0:
                self.lookup_failures -= 1
                return 503, b'{"errors": [{"id": "x", "status": 503, "code": "unavailable", "title": "Unavailable", "detail": "injected", "source": {}}]}'

            held = self._held()
        data = [{"type": "profile", "id": kid, "attributes": {"external_id": ext},
                 "links": {"self": f"{self.url}/api/profiles/{kid}/"}} for kid, ext in held.items() if ext == uid]  # fmt: skip
        return 200, json.dumps({"data": data, "links": {"self": f"{self.url}/api/profiles/"}}).encode()

    def handle_get(self, seq: int, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        status, out = self._get(path, headers)
        with self.lock:
            self.requests.append((path, status))
            self.log.append(Req(seq, path, status, (), "", False))
            self.gets.append((path, status))
        return status, {}, out

    def _get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.kind != "klaviyo":
            return self._violation(404, f"no GET endpoint {path}")
        parts = path.strip("/").split("/", 1)
        sub = ("/" + parts[1] if len(parts) > 1 else "/") if _consumer(path) else path
        bad = self._klaviyo_check("GET", sub, headers, None)
        if bad is not None:
            return bad
        with self.lock:
            injected = self.get_script.popleft() if self.get_script else None
        if injected is not None:
            return int(injected), b'{"errors": [{"id": "x", "status": %d, "code": "injected", "title": "injected", "detail": "injected", "source": {}}]}' % int(injected)
        route, _, query = sub.partition("?")
        bits = route.strip("/").split("/")  # api, profile-bulk-import-jobs, id[, import-errors]
        if bits == ["api", "profiles"]:
            return self._profiles(unquote(query))
        with self.lock:
            job = self.jobs.get(bits[2]) if len(bits) >= 3 else None
            if job is None:
                return 404, b'{"errors": [{"id": "x", "status": 404, "code": "not_found", "title": "Not found", "detail": "no such job", "source": {}}]}'
            if len(bits) == 3:
                status = "processing"
                if job["polls_left"] <= 0:
                    status = "complete"
                job["polls_left"] -= 1
                return 200, json.dumps({"data": self._job_resource(bits[2], status)}).encode()
            failed = job["failed"]
        cursor = int(dict(q.split("=", 1) for q in query.split("&") if "=" in q).get("page[cursor]", "0") or 0)
        page = failed[cursor : cursor + self.errors_page]
        data = [{"type": "import-error", "id": f"{bits[2]}-{i}", "attributes": {
            "code": "invalid", "title": "Invalid input", "detail": f"the profile {a['external_id']} is invalid",
            "source": {"pointer": f"/data/attributes/profiles/data/{i}"}, "original_payload": a}} for i, a in page]  # fmt: skip
        base = f"{self.url}{path.split('?', 1)[0]}"
        links: dict[str, str] = {"self": base}
        if cursor + self.errors_page < len(failed):
            links["next"] = f"{base}?page[cursor]={cursor + self.errors_page}"
        return 200, json.dumps({"data": data, "links": links}).encode()


# -- unsubscribe endpoints (issue 12 item 3), apart from the dialects above ------------------------
def _check_braze_subscription_states(attrs: list[dict[str, Any]]) -> str:
    """Braze's documented ``email_subscribe`` values; '' when every attributes object is fine."""
    for a in attrs:
        if "email_subscribe" in a and a["email_subscribe"] not in BRAZE_EMAIL_SUBSCRIBE:
            return f"email_subscribe must be one of {sorted(BRAZE_EMAIL_SUBSCRIBE)}, got {a['email_subscribe']!r}"
    return ""


def _check_klaviyo_unsubscribe(doc: dict[str, Any]) -> tuple[str, list[str]]:
    """Klaviyo's Bulk Unsubscribe Profiles body, checked from its API reference: ('' or the
    violation, the unsubscribed email addresses)."""
    if doc.get("type") != "profile-subscription-bulk-delete-job":
        return f"unsubscribe job type {doc.get('type')!r}", []
    profiles = doc["attributes"]["profiles"]["data"]
    if not isinstance(profiles, list) or not profiles:
        return "unsubscribe job without profiles", []
    if len(profiles) > KLAVIYO_MAX_UNSUBSCRIBES:
        return f"{len(profiles)} profiles > {KLAVIYO_MAX_UNSUBSCRIBES} in one unsubscribe job", []
    emails = []
    for p in profiles:
        a = p.get("attributes", {})
        if p.get("type") != "profile" or not set(a) <= KLAVIYO_UNSUBSCRIBE_ATTRS:
            return f"unsubscribe profile {p.get('type')!r} with attributes {sorted(a)}", []
        if not isinstance(a.get("email"), str) or "@" not in a["email"]:
            return "an email unsubscribe names the profile by its email address", []
        consent = a.get("subscriptions", {}).get("email", {}).get("marketing", {}).get("consent")
        if consent != "UNSUBSCRIBED":
            return f"email marketing consent {consent!r}, Klaviyo takes 'UNSUBSCRIBED'", []
        emails.append(a["email"])
    return "", emails


def _klaviyo_unsubscribe(self: FakeVendor, seq: int, path: str, doc: dict[str, Any]) -> tuple[int, bytes]:
    """Apply a checked unsubscribe job: one record per address (``user_id`` None: Klaviyo knows the address)."""
    bad, emails = _check_klaviyo_unsubscribe(doc)
    if bad:
        return self._violation(400, bad)
    self._record(seq, path, [{"user_id": None, "email": e, "version": None, "key": None, "fields": {}, "events": [],
                              "deleted": False, "unsubscribed": True} for e in emails])  # fmt: skip
    return 202, b"{}"


# -- audience membership endpoints (issue 14 item 5) ------------------------------------------------
def _klaviyo_list(self: FakeVendor, seq: int, path: str, list_id: str, method: str, top: dict[str, Any]) -> tuple[int, bytes]:
    """Add Profiles to List (POST) / Remove Profiles from List (DELETE), after the OpenAPI check: the
    description's limit and the ids must name profiles Klaviyo holds (its own ids, not external ids)."""
    data = top["data"]
    if list_id in self.missing_lists:
        return 404, json.dumps({"errors": [{"id": "x", "status": 404, "code": "not_found", "title": "Not found",
                                            "detail": f"A list with id {list_id} does not exist.", "source": {}}]}).encode()  # fmt: skip
    if not data:
        return self._violation(400, "a list membership change without profiles")
    if len(data) > KLAVIYO_LIST_MAX:
        return self._violation(400, f"{len(data)} profiles > {KLAVIYO_LIST_MAX} in one list request")
    with self.lock:
        held = self._held()
    unknown = [p["id"] for p in data if p["id"] not in held]
    if unknown:
        return self._violation(400, f"no profile with id {unknown[0]!r} (list membership takes Klaviyo's profile id)")
    op = "add" if method == "POST" else "remove"
    with self.lock:
        members = self.lists.setdefault(list_id, set())
        for p in data:
            (members.add if op == "add" else members.discard)(p["id"])
            self.list_ops.append((op, list_id, held[p["id"]], seq))
    self._record(seq, path, [{"user_id": held[p["id"]], "version": None, "key": None, "fields": {}, "events": [],
                              "deleted": False, "list_op": (op, list_id)} for p in data])  # fmt: skip
    return 204, b""


def _check_braze_array(attrs: dict[str, Any]) -> str:
    """The user attributes object's array rules for the audience array: a whole array of strings, or
    the array operations ``{"add": [...], "remove": [...]}`` (at least one, each an array of strings)."""
    if BRAZE_AUDIENCE_ARRAY not in attrs:
        return ""
    v = attrs[BRAZE_AUDIENCE_ARRAY]
    if isinstance(v, list):
        return "" if all(isinstance(x, str) for x in v) else f"{BRAZE_AUDIENCE_ARRAY}: array elements must be strings"
    if not isinstance(v, dict) or not v or set(v) - {"add", "remove"}:
        return f"{BRAZE_AUDIENCE_ARRAY}: an array attribute takes an array or {{\"add\": [...], \"remove\": [...]}}, got {v!r}"
    for op, xs in v.items():
        if not isinstance(xs, list) or not xs or not all(isinstance(x, str) and x for x in xs):
            return f"{BRAZE_AUDIENCE_ARRAY}.{op} must be a non-empty array of strings, got {xs!r}"
    return ""


def apply_braze_arrays(self: FakeVendor, seq: int, attrs: list[dict[str, Any]]) -> None:
    """Apply the audience array of accepted attributes objects (elements are unique, as a set)."""
    with self.lock:
        for a in attrs:
            v = a.get(BRAZE_AUDIENCE_ARRAY)
            if v is None:
                continue
            uid = a["external_id"]
            cur = self.arrays.setdefault(uid, {}).setdefault(BRAZE_AUDIENCE_ARRAY, [])
            ops = [("add", x) for x in v] if isinstance(v, list) else [(op, x) for op in ("add", "remove") for x in v.get(op, [])]
            if isinstance(v, list):
                cur.clear()
            for op, x in ops:
                if op == "add" and x not in cur:
                    cur.append(x)
                elif op == "remove" and x in cur:
                    cur.remove(x)
                self.array_ops.append((uid, BRAZE_AUDIENCE_ARRAY, op, x, seq))


def _braze_subscription(self: FakeVendor, seq: int, doc: dict[str, Any]) -> tuple[int, bytes]:
    """/v2/subscription/status/set, checked from its page: ``subscription_groups``, each with a
    ``subscription_group_id``, a ``subscription_state`` and one kind of user identifier, up to 50."""
    if set(doc) != {"subscription_groups"} or not isinstance(doc["subscription_groups"], list) or not doc["subscription_groups"]:
        return self._violation(400, f"/v2/subscription/status/set takes {{\"subscription_groups\": [...]}}, got keys {sorted(doc)}")
    applied: list[tuple[str, str, str]] = []
    for i, g in enumerate(doc["subscription_groups"]):
        if not isinstance(g, dict) or set(g) - BRAZE_SUBSCRIPTION_KEYS:
            return self._violation(400, f"subscription_groups[{i}]: keys {sorted(g) if isinstance(g, dict) else g!r}")
        gid, state = g.get("subscription_group_id"), g.get("subscription_state")
        if not isinstance(gid, str) or not gid:
            return self._violation(400, f"subscription_groups[{i}]: subscription_group_id is required")
        if state not in BRAZE_SUBSCRIPTION_STATES:
            return self._violation(400, f"subscription_groups[{i}]: subscription_state must be one of {sorted(BRAZE_SUBSCRIPTION_STATES)}, got {state!r}")
        ids = [k for k in ("external_ids", "emails", "phones") if k in g]
        if len(ids) != 1:
            return self._violation(400, f"subscription_groups[{i}]: one of external_ids, emails, phones (got {ids})")
        users = g[ids[0]]
        if not isinstance(users, list) or not users or not all(isinstance(u, str) and u for u in users):
            return self._violation(400, f"subscription_groups[{i}].{ids[0]} must be a non-empty array of strings")
        if len(users) > BRAZE_SUBSCRIPTION_MAX:
            return self._violation(400, f"{len(users)} users > {BRAZE_SUBSCRIPTION_MAX} in one subscription request")
        applied += [(gid, u, state) for u in users]
    with self.lock:
        for gid, u, state in applied:
            self.subscriptions[(gid, u)] = state
            self.subscription_ops.append((gid, u, state, seq))
    self._record(seq, "/v2/subscription/status/set", [{"user_id": u, "version": None, "key": None, "fields": {}, "events": [],
                                                       "deleted": False, "subscription": (gid, state)} for gid, u, state in applied])  # fmt: skip
    return 201, b'{"message": "success"}'
