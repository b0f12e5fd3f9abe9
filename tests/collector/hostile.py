"""Hostile inputs for the collector, and the checker of its answers.

Shared by the in-suite fuzz tests (tests/collector/test_fuzz.py) and the soak
run (bench/fuzz_collector.py). Nothing here starts processes.

:func:`requests` draws whole HTTP requests (method, path, headers, body) for
every endpoint: Segment-shaped events with wrong types at every field and
timestamps of every shape, malformed/truncated/mutated JSON, deep nesting (up to
100k arrays), huge strings and arrays, invalid UTF-8, duplicate keys,
NaN/Infinity, absurd numbers, gzip bombs and broken gzip, oversized bodies,
bad auth; signed and unsigned webhooks; pixel query strings.

:class:`Checker` sends one request over a keep-alive ``httpx.Client`` and
asserts the contract: no 5xx; a 4xx carries ``{"success": false, "error",
"message"}``; a request-level refusal keeps nothing; every event is either in
the buffer or in the dead letters (counted with XLEN before/after); the pixel
always answers the GIF.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import httpx
import orjson
import redis
from hypothesis import strategies as st

from liveprofile.collector.signing import pixel_signature, sign_webhook
from liveprofile.store.keys import Keys
from operators.events import REASONS

WRITE_KEY = "fuzz-write-key-0123456789"
PIXEL_SECRET = "fuzz-pixel-secret-0123456789"
WEBHOOK_SOURCE = "esp"
WEBHOOK_SECRET = "fuzz-webhook-secret-0123456789"
MAX_REQUEST = 512_000

SECRET_ENV = {
    "LIVEPROFILE_WRITE_KEYS": WRITE_KEY,
    "LIVEPROFILE_PIXEL_SECRET": PIXEL_SECRET,
    "LIVEPROFILE_WEBHOOK_SECRETS": orjson.dumps({WEBHOOK_SOURCE: WEBHOOK_SECRET}).decode(),
    "LIVEPROFILE_MAX_BACKLOG": "1000000000",
    "LIVEPROFILE_TRUNCATE_IP": "on",
}

SINGLE = ("track", "identify", "page", "screen", "group", "alias")
_AUTH = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
GIF_MAGIC = b"GIF89a"

# ----------------------------------------------------------------- JSON values

_absurd_numbers = st.sampled_from(
    [0, -0.0, -1, 1e308, -1e308, 5e-324, 2**63 - 1, -(2**63), 2**64 - 1, 10**18, 1e11, 1e11 + 1, 99999999999.999, 0.1 + 0.2, 1e-7, 123456789.123456789]
)
_numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    _absurd_numbers,
)
_strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "\u202e", "\ufeff", "null", "NaN", "-1", "1e999", "19.99", "a" * 300, "<script>", "%00", "\\"]),
)
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _strings)
json_values = st.recursive(
    _scalars,
    lambda c: st.lists(c, max_size=5) | st.dictionaries(_strings, c, max_size=5),
    max_leaves=25,
)

_iso_variants = st.builds(
    lambda dt, fmt: fmt(dt),
    st.datetimes(min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30)),  # noqa: DTZ001 - naive on purpose
    st.sampled_from(
        [
            lambda d: d.isoformat(),
            lambda d: d.isoformat() + "Z",
            lambda d: d.isoformat() + "+02:00",
            lambda d: d.isoformat() + "-23:59",
            lambda d: d.date().isoformat(),
            lambda d: d.isoformat(sep=" "),
            lambda d: d.isoformat().lower() + "z",
            lambda d: d.strftime("%Y%m%dT%H%M%S"),
            lambda d: d.isoformat() + ".123456789Z",
        ]
    ),
)
timestamps = st.one_of(
    _iso_variants,
    st.integers(min_value=-(10**16), max_value=10**16),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "", " ", "0", "yesterday", "now", "2024-13-45T25:61:61Z", "2024-02-30", "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "+275760-09-13T00:00:00Z",
            "2024-05-01T12:00:00+25:00", "2024-05-01 12:00", "1714564800", "2024-W18-3", "  2024-05-01T12:00:00Z  ",
            "T" * 64, "2" * 65, "2024-05-01T12:00:00Z\x00", 1714564800, 1714564800123, 1e11, -1e11, 253402300799999,
            253402300800000, -62135596800001, 2**63,
        ]
    ),  # fmt: skip
    st.text(max_size=70),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_ids = st.one_of(_strings, st.integers(), st.text(min_size=255, max_size=260), json_values)
_money = st.one_of(_numbers, _strings, st.sampled_from(["1e2", "-0.01", "Infinity", "NaN", "1" * 41, "0x10"]), json_values)
_products = st.lists(
    st.one_of(
        st.fixed_dictionaries({}, optional={"product_id": _ids, "price": _money, "quantity": _money, "category": json_values, "name": json_values}),
        json_values,
    ),
    max_size=4,
)
_properties = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            **{k: _money for k in ("revenue", "total", "price", "value", "subtotal", "tax", "shipping", "discount")},
            "quantity": _money, "products": st.one_of(_products, json_values), "category": json_values,
            "product_id": _ids, "sku": _ids, "order_id": _ids,
        },
    ),  # fmt: skip
    json_values,
)
_context = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "ip": st.one_of(st.ip_addresses().map(str), _strings, json_values, st.sampled_from(["[::1]:80", "1.2.3.4:5", "fe80::1%eth0", "::ffff:1.2.3.4", "1.2.3.4, 5.6.7.8"])),
            "userAgent": json_values, "page": json_values,
        },
    ),  # fmt: skip
    json_values,
)
events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(st.sampled_from([*SINGLE, "TRACK", "", "batch"]), json_values),
        "userId": _ids, "anonymousId": _ids, "previousId": _ids, "groupId": _ids, "messageId": _ids,
        "event": st.one_of(st.sampled_from(["Order Completed", "Product Added", "Email Opened", " "]), json_values),
        "name": json_values, "timestamp": timestamps, "sentAt": timestamps, "originalTimestamp": timestamps,
        "receivedAt": timestamps, "properties": _properties,
        "traits": st.one_of(st.fixed_dictionaries({}, optional={"email": st.one_of(st.emails(), _strings, json_values)}), json_values),
        "context": _context, "integrations": json_values, "writeKey": st.one_of(st.just(WRITE_KEY), _strings),
    },
)  # fmt: skip
#: Events that pass validation (so fuzzed batches also exercise the accept path).
valid_events = st.builds(
    lambda uid, name, ip, price: {"type": "track", "userId": uid, "event": name, "context": {"ip": ip}, "properties": {"price": price}},
    st.text(min_size=1, max_size=20).filter(str.strip),
    st.sampled_from(["Product Viewed", "Order Completed", "Any Other Event"]),
    st.ip_addresses().map(str),
    st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False).map(float),
)

# ------------------------------------------------------------- raw byte bodies


def jdump(value: Any) -> bytes:
    """JSON bytes of a drawn value; integers beyond 64 bits are written too (stdlib)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """20 MB of zeros in ~20 KB of gzip."""
    return gzip.compress(b"0" * 20_000_000, 9)


def deep(n: int, inner: bytes = b"1") -> bytes:
    return b"[" * n + inner + b"]" * n


def deep_event(n: int, message_id: bool) -> bytes:
    mid = b'"messageId":"deep",' if message_id else b""
    return b'{"type":"track","userId":"u-deep","event":"Deep",' + mid + b'"properties":{"x":' + deep(n) + b"}}"


_DEPTHS = st.sampled_from([1, 100, 252, 253, 254, 255, 256, 300, 1000, 1021, 1022, 1023, 1024, 1025, 100_000])


@st.composite
def _mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """Byte-level damage to a valid body: truncate, flip, insert, splice."""
    b = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "splice"]))
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        if op == "truncate":
            del b[i:]
        elif op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            b[i:i] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b'"', b"{", b"]", b",", b"NaN", b"Infinity", b"-", b"\\u", b"\\ud800"]))
        elif op == "delete":
            del b[i : i + draw(st.integers(1, 8))]
        else:
            b[i:i] = draw(st.binary(max_size=16))
    return bytes(b)


def _dup_keys(ev: dict[str, Any]) -> bytes:
    body = jdump(ev)
    return body[:-1] + (b',"type":"identify","userId":{},"type":"track"}' if len(body) > 2 else b'"type":1,"type":2}')


@st.composite
def bodies(draw: st.DrawFn, batch: bool) -> tuple[bytes, dict[str, str]]:
    """(body bytes, extra headers) of one ingest request."""
    shape = draw(
        st.sampled_from(
            ["event", "event", "event", "valid", "mutated", "mutated", "raw_json", "deep", "deep_event", "huge_string",
             "huge_array", "dup_keys", "nan", "invalid_utf8", "gzip", "gzip_bomb", "gzip_broken", "oversize",
             "bad_encoding", "empty", "binary", "numbers"]
        )
    )  # fmt: skip
    headers: dict[str, str] = {}

    def wrap(evs: list[Any]) -> bytes:
        return jdump({"batch": evs, "sentAt": draw(timestamps), "context": draw(_context)}) if batch else jdump(evs[0])

    if shape == "event":
        evs = draw(st.lists(st.one_of(events, valid_events, json_values), min_size=1, max_size=8 if batch else 1))
        body = wrap(evs)
    elif shape == "valid":
        body = wrap(draw(st.lists(valid_events, min_size=1, max_size=20 if batch else 1)))
    elif shape == "mutated":
        body = draw(_mutated(wrap(draw(st.lists(st.one_of(events, valid_events), min_size=1, max_size=4 if batch else 1)))))
    elif shape == "raw_json":
        body = jdump(draw(json_values))
    elif shape == "deep":
        body = deep(draw(_DEPTHS))
    elif shape == "deep_event":
        one = deep_event(draw(_DEPTHS), draw(st.booleans()))
        body = b'{"batch":[' + one + b"]}" if batch else one
    elif shape == "huge_string":
        n = draw(st.sampled_from([33_000, 400_000, 600_000]))
        one = b'{"type":"track","userId":"u","event":"' + b"x" * n + b'"}'
        body = b'{"batch":[' + one + b"]}" if batch else one
    elif shape == "huge_array":
        n = draw(st.sampled_from([1_000, 10_000, 100_000]))
        body = b'{"batch":[' + b",".join([b"1"] * n) + b"]}" if batch else b'{"type":"track","userId":"u","event":"e","properties":{"products":[' + b",".join([b"{}"] * n) + b"]}}"
    elif shape == "dup_keys":
        body = _dup_keys(draw(events))
        body = b'{"batch":[' + body + b"]}" if batch else body
    elif shape == "nan":
        tok = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 400, b"-0", b"0e-999999"]))
        one = b'{"type":"track","userId":"u","event":"e","timestamp":' + tok + b',"properties":{"price":' + tok + b"}}"
        body = b'{"batch":[' + one + b"]}" if batch else one
    elif shape == "invalid_utf8":
        body = b'{"type":"track","userId":"' + draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"])) + b'","event":"e"}'
    elif shape == "gzip":
        body = gzip.compress(wrap(draw(st.lists(st.one_of(events, valid_events), min_size=1, max_size=5 if batch else 1))))
        headers["Content-Encoding"] = draw(st.sampled_from(["gzip", "GZIP", "Gzip"]))
    elif shape == "gzip_bomb":
        body = gzip_bomb()
        headers["Content-Encoding"] = "gzip"
    elif shape == "gzip_broken":
        good = gzip.compress(wrap(draw(st.lists(valid_events, min_size=1, max_size=3 if batch else 1))))
        body = draw(st.one_of(_mutated(good), st.just(good[: len(good) // 2]), st.binary(max_size=64)))
        headers["Content-Encoding"] = "gzip"
    elif shape == "oversize":
        body = b'{"batch":["' + b"y" * (MAX_REQUEST + draw(st.integers(1, 5000))) + b'"]}'
    elif shape == "bad_encoding":
        body = jdump(draw(valid_events))
        headers["Content-Encoding"] = draw(st.sampled_from(["br", "deflate", "x-gzip", "gzip, br", "identity, gzip"]))
    elif shape == "empty":
        body = b""
    elif shape == "numbers":
        one = jdump({"type": "track", "userId": draw(_numbers), "event": "e", "messageId": draw(_numbers), "timestamp": draw(_numbers), "properties": {"price": draw(_numbers), "quantity": draw(_numbers)}})
        body = b'{"batch":[' + one + b"]}" if batch else one
    else:
        body = draw(st.binary(max_size=200))
    return body, headers


_auths = st.sampled_from(["ok", "ok", "ok", "ok", "ok", "body", "missing", "wrong", "malformed", "bearer"])


def _auth_headers(kind: str) -> dict[str, str]:
    if kind == "ok":
        return {"Authorization": _AUTH}
    if kind == "wrong":
        return {"Authorization": "Basic " + base64.b64encode(b"not-the-key:").decode()}
    if kind == "malformed":
        return {"Authorization": "Basic !!!not base64***"}
    if kind == "bearer":
        return {"Authorization": "Bearer " + WRITE_KEY}
    return {}


@dataclass
class Req:
    """One HTTP request to send."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    kind: str  # ingest | webhook | pixel | other

    def __repr__(self) -> str:  # short, for Hypothesis' falsifying examples
        return f"Req({self.method} {self.path[:120]!r} headers={self.headers!r} body[{len(self.body)}]={self.body[:300]!r})"


@st.composite
def ingest_requests(draw: st.DrawFn) -> Req:
    kind = draw(st.sampled_from([*SINGLE, "batch", "batch", "batch"]))
    body, headers = draw(bodies(kind == "batch"))
    auth = draw(_auths)
    headers.update(_auth_headers(auth))
    if auth == "body" and body.startswith(b"{") and len(body) > 2:
        body = b'{"writeKey":"' + WRITE_KEY.encode() + b'",' + body[1:]
    return Req("POST", f"/v1/{kind}", headers, body, "ingest")


@st.composite
def webhook_requests(draw: st.DrawFn) -> Req:
    source = draw(st.sampled_from([WEBHOOK_SOURCE] * 12 + ["unknown", "", "..", "esp%00", "a" * 100]))
    body, headers = draw(bodies(draw(st.booleans())))
    sig = draw(st.sampled_from(["valid", "valid", "valid", "none", "garbage", "stale", "future", "wrong_key", "multi"]))
    now = int(time.time())
    if sig == "valid":
        headers["X-Liveprofile-Signature"] = sign_webhook(WEBHOOK_SECRET, body if "Content-Encoding" not in headers else _maybe_gunzip(body), now)
    elif sig == "stale":
        headers["X-Liveprofile-Signature"] = sign_webhook(WEBHOOK_SECRET, body, now - 10_000)
    elif sig == "future":
        headers["X-Liveprofile-Signature"] = sign_webhook(WEBHOOK_SECRET, body, now + 10_000)
    elif sig == "wrong_key":
        headers["X-Liveprofile-Signature"] = sign_webhook("some-other-secret-0123", body, now)
    elif sig == "multi":
        good = sign_webhook(WEBHOOK_SECRET, body, now).split(",")[1]
        headers["X-Liveprofile-Signature"] = f"t={now},v1={'0' * 64},{good},v1=zz,x=1"
    elif sig == "garbage":
        headers["X-Liveprofile-Signature"] = draw(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120))
    return Req("POST", f"/v1/webhooks/{source}", headers, body, "webhook")


def _maybe_gunzip(body: bytes) -> bytes:
    try:
        return gzip.decompress(body)
    except Exception:
        return body


@st.composite
def pixel_requests(draw: st.DrawFn) -> Req:
    from urllib.parse import quote

    shape = draw(st.sampled_from(["valid", "valid", "forged", "expired", "random", "binary", "dup", "long"]))
    user = draw(st.one_of(st.text(max_size=30), st.text(min_size=250, max_size=260)))
    camp, eid = draw(st.text(max_size=20)), draw(st.text(max_size=20))
    ts = int(time.time()) - (draw(st.integers(0, 3600)) if shape != "expired" else 400 * 86400)
    if shape in ("valid", "expired", "forged", "dup"):
        key = PIXEL_SECRET if shape != "forged" else "forged-secret-0123456789"
        sig = pixel_signature(key, user, camp, eid, ts)
        q = f"user={quote(user, safe='')}&campaign={quote(camp, safe='')}&email_id={quote(eid, safe='')}&ts={ts}&sig={sig}"
        if shape == "dup":
            q += "&user=someone-else"
    elif shape == "long":
        q = "user=" + "u" * 5000
    elif shape == "binary":
        q = quote(draw(st.binary(max_size=80)), safe="=&%")
    else:
        q = draw(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="#"), max_size=200))
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD"]))
    return Req(method, "/v1/pixel.gif?" + q, {"User-Agent": draw(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=600))}, b"", "pixel")


@st.composite
def other_requests(draw: st.DrawFn) -> Req:
    method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "POST"]))
    path = draw(st.sampled_from(["/", "/v1/", "/v1/trackx", "/v1/batch/", "/v1/webhooks", "/healthz", "/metrics", "/v1/pixel.gif", "/v2/track", "/%00"]))
    if method == "GET" and path in ("/healthz", "/metrics", "/v1/pixel.gif"):
        method = "PUT"
    return Req(method, path, {}, draw(st.binary(max_size=50)) if method != "GET" else b"", "other")


requests = st.one_of(
    ingest_requests(), ingest_requests(), ingest_requests(), ingest_requests(),
    webhook_requests(), webhook_requests(), pixel_requests(), other_requests(),
)  # fmt: skip

# ------------------------------------------------------------------- checking


def _n_events(req: Req) -> int | None:
    """How many events the collector will see in an accepted request (None: unknown)."""
    body = req.body
    if req.headers.get("Content-Encoding", "").strip().lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except Exception:
            return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    batch_shape = req.path == "/v1/batch" or (req.kind == "webhook" and "batch" in doc)
    if batch_shape:
        return len(doc["batch"]) if isinstance(doc.get("batch"), list) else None
    return 1


@dataclass
class Checker:
    """Sends requests and checks every answer against the collector's contract."""

    url: str
    redis_url: str
    client: httpx.Client = field(init=False)
    r: redis.Redis = field(init=False)
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    _last: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.r = redis.Redis.from_url(self.redis_url)
        self.keys = Keys("lp")
        self._last = self._counts()

    def close(self) -> None:
        self.client.close()
        self.r.close()

    def _counts(self) -> tuple[int, int]:
        pipe = self.r.pipeline(transaction=False)
        for i in range(4):
            pipe.xlen(self.keys.events(i))
        pipe.xlen(self.keys.dead_letter)
        res = pipe.execute()
        return sum(res[:4]), res[4]

    def check(self, req: Req) -> None:
        """Send ``req``; raise AssertionError when the answer breaks the contract."""
        # HTTP clients cannot send header values with surrounding whitespace: the server never sees them
        headers = {k: v.strip() for k, v in req.headers.items()}
        resp = self.client.request(req.method, req.path, headers=headers, content=req.body)
        self.sent += 1
        self.statuses[(req.kind, resp.status_code)] += 1
        before = self._last
        after = self._last = self._counts()
        d_events, d_dead = after[0] - before[0], after[1] - before[1]
        assert resp.status_code < 500, f"{resp.status_code} {resp.text[:300]} for {req!r}"
        if req.kind == "pixel":
            assert resp.status_code == 200 and resp.headers["content-type"] == "image/gif", req
            assert "no-store" in resp.headers["cache-control"]
            if req.method == "GET":
                assert resp.content.startswith(GIF_MAGIC) and len(resp.content) == 43
            assert d_events + d_dead <= 1 and d_events >= 0 and d_dead >= 0, (d_events, d_dead, req)
            return
        if req.kind == "other":
            assert resp.status_code in (404, 405), (resp.status_code, req)
            assert d_events == d_dead == 0
            return
        j = resp.json()
        if resp.status_code == 200:
            assert j["success"] is True, j
            rejected = j.get("rejected", [])
            for rej in rejected:
                assert rej["reason"] in REASONS, rej
            assert d_dead == len(rejected), (d_dead, j, req)
            n = _n_events(req)
            want = j.get("accepted", n)
            if want is not None:
                assert d_events == want, (d_events, want, j, req)
            if n is not None:
                assert d_events + d_dead == n, (d_events, d_dead, n, req)
            return
        assert 400 <= resp.status_code < 500, resp.status_code
        assert j["success"] is False and isinstance(j["error"], str) and isinstance(j["message"], str) and j["message"], j
        self.errors[j["error"]] += 1
        if req.kind == "ingest" and j["error"] in REASONS and req.path != "/v1/batch" and j["error"] not in ("malformed_json", "not_object"):
            # an event-level problem on a single-event endpoint: 400/413 and one dead letter
            assert d_events == 0 and d_dead == 1, (d_events, d_dead, j, req)
        else:  # request-level: nothing of the request is kept
            assert d_events == 0 and d_dead == 0, (d_events, d_dead, j, req)

    def summary(self) -> str:
        by_kind = Counter[str]()
        for (kind, _), n in self.statuses.items():
            by_kind[kind] += n
        st_s = ", ".join(f"{k}:{s}={n}" for (k, s), n in sorted(self.statuses.items()))
        return f"{self.sent} requests ({dict(by_kind)}); statuses {st_s}; error codes {dict(self.errors.most_common())}"


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in kB, from /proc/PID/status."""
    vals = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0])
    return vals["VmRSS"], vals["VmHWM"]


__all__ = [
    "Checker", "Req", "SECRET_ENV", "requests", "ingest_requests", "webhook_requests", "pixel_requests",
    "events", "json_values", "timestamps", "deep", "deep_event", "gzip_bomb", "rss_kb",
]  # fmt: skip
