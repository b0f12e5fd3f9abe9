"""HMAC-SHA256 signatures for the email-open pixel and for inbound webhooks.

Email-open pixel (``GET /v1/pixel.gif``)
----------------------------------------
Query parameters (all required; ``campaign`` and ``email_id`` may be empty):

==============  ===========================================================
``user``        the recipient's userId (at most 256 characters)
``campaign``    campaign id, becomes ``properties.campaign_id`` (<= 256)
``email_id``    id of this email/send, becomes ``properties.email_id`` (<= 256)
``ts``          when the URL was signed, Unix seconds (decimal)
``sig``         lowercase hex HMAC-SHA256 of the canonical message (below)
==============  ===========================================================

Canonical message (what is signed)::

    b"liveprofile-pixel-v1\\n" + "user=U&campaign=C&email_id=E&ts=T"

where ``U``, ``C``, ``E`` are the UTF-8 values percent-encoded with
``urllib.parse.quote(value, safe="")`` (every byte but ``A-Za-z0-9_.-~``
escaped) and ``T`` is the decimal timestamp. The verifier recomputes it from
the *decoded* parameters, so how a mail client re-encodes the URL does not
matter, and the escaping makes the message unambiguous. The key is
``LIVEPROFILE_PIXEL_SECRET`` (comma-separated for rotation: the first one
signs, every one verifies). A signature is valid for ``LIVEPROFILE_PIXEL_MAX_AGE``
after ``ts``. Use :func:`signed_pixel_url` (or ``liveprofile pixel-url``) to
build URLs for email templates.

Webhooks (``POST /v1/webhooks/{source}``)
-----------------------------------------
Header ``X-Liveprofile-Signature: t=<unix seconds>,v1=<hex>`` (Stripe's
scheme), ``<hex>`` = lowercase hex HMAC-SHA256 over ``b"<t>." + body`` with
the source's secret, ``body`` being the request body after any
``Content-Encoding`` is undone. Several ``v1=`` entries may be present (key
rotation); one matching is enough. The timestamp must be within the
tolerance of the collector's clock, in either direction. :func:`sign_webhook`
builds the header.

Platforms' own schemes (:func:`verify_platform`; which one a source speaks is its
``scheme`` in ``LIVEPROFILE_WEBHOOK_SECRETS``):

* ``stripe`` — Stripe's published algorithm: header ``Stripe-Signature:
  t=<unix>,v1=<hex>[,v1=...][,v0=...]``, ``<hex>`` = hex HMAC-SHA256 of ``b"<t>." + body``
  keyed with the endpoint secret (the whole ``whsec_...`` string as UTF-8); ``v0`` and
  other schemes are ignored; the timestamp within the tolerance. The delivery id is
  the signed ``(t, body)`` (as the liveprofile scheme).
* ``shopify`` — ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the raw body>`` keyed
  with the app's client secret (UTF-8); no timestamp. The delivery id is
  ``X-Shopify-Webhook-Id`` (required: a redelivery carries the same one).
* ``standard`` — Standard Webhooks (standardwebhooks.com): ``webhook-id``,
  ``webhook-timestamp`` (Unix seconds, within the tolerance) and ``webhook-signature:
  v1,<base64> [v1,<base64> ...]`` (space-separated; other versions ignored), each
  ``<base64>`` the HMAC-SHA256 of ``b"<id>.<timestamp>." + body`` keyed with the
  base64-decoded part of the ``whsec_<base64>`` secret. The delivery id is ``webhook-id``.

Every comparison of a presented signature is constant-time
(:func:`hmac.compare_digest` over bytes), and every configured secret is tried.
Nothing here logs.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

__all__ = [
    "PIXEL_PATH",
    "PIXEL_PARAMS",
    "PixelOpen",
    "PixelError",
    "WebhookAuthError",
    "SIGNATURE_HEADER",
    "pixel_message",
    "pixel_signature",
    "signed_pixel_url",
    "verify_pixel",
    "pixel_message_id",
    "parse_pixel_query",
    "sign_webhook",
    "verify_webhook",
    "replay_digest",
    "SCHEMES",
    "PlatformDelivery",
    "verify_platform",
    "standard_secret_key",
    "add_commands",
]

PIXEL_PATH = "/v1/pixel.gif"
#: The pixel's query parameters, in canonical order (``sig`` last, not signed).
PIXEL_PARAMS = ("user", "campaign", "email_id", "ts", "sig")
SIGNATURE_HEADER = "X-Liveprofile-Signature"

_PIXEL_TAG = b"liveprofile-pixel-v1\n"
_MAX_VALUE = 256
_MAX_QUERY = 4096
#: A pixel signed this far in the signer's future is refused (clock skew allowance).
PIXEL_FUTURE_SKEW_S = 300
_MAX_WEBHOOK_HEADER = 1024
_MAX_V1 = 8


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


# ------------------------------------------------------------------------ pixel


def pixel_message(user_id: str, campaign_id: str, email_id: str, ts: int) -> bytes:
    """The canonical signed message of a pixel URL (see the module doc).

    >>> pixel_message("u 1", "spring/24", "e1", 1700000000)
    b'liveprofile-pixel-v1\\nuser=u%201&campaign=spring%2F24&email_id=e1&ts=1700000000'
    """
    q = f"user={quote(user_id, safe='')}&campaign={quote(campaign_id, safe='')}&email_id={quote(email_id, safe='')}&ts={int(ts)}"
    return _PIXEL_TAG + q.encode("ascii")


def pixel_signature(secret: str | bytes, user_id: str, campaign_id: str, email_id: str, ts: int) -> str:
    """Lowercase hex HMAC-SHA256 of :func:`pixel_message` under ``secret``."""
    return hmac.new(_secret_bytes(secret), pixel_message(user_id, campaign_id, email_id, ts), hashlib.sha256).hexdigest()


def signed_pixel_url(
    base_url: str,
    secret: str | bytes,
    user_id: str,
    campaign_id: str,
    email_id: str,
    *,
    ts: int | None = None,
) -> str:
    """A signed ``/v1/pixel.gif`` URL on the collector at ``base_url``.

    ``ts`` (Unix seconds, default now) is the signing time; the URL is valid for
    ``LIVEPROFILE_PIXEL_MAX_AGE`` after it.

    >>> signed_pixel_url("https://c.example.com/", "k" * 32, "u1", "c1", "e1", ts=1700000000)[:85]
    'https://c.example.com/v1/pixel.gif?user=u1&campaign=c1&email_id=e1&ts=1700000000&sig='
    """
    if not user_id:
        msg = "user_id must not be empty"
        raise ValueError(msg)
    for name, v in (("user_id", user_id), ("campaign_id", campaign_id), ("email_id", email_id)):
        if len(v) > _MAX_VALUE:
            msg = f"{name} is longer than {_MAX_VALUE} characters"
            raise ValueError(msg)
    t = int(time.time()) if ts is None else int(ts)
    msg_bytes = pixel_message(user_id, campaign_id, email_id, t)
    sig = hmac.new(_secret_bytes(secret), msg_bytes, hashlib.sha256).hexdigest()
    query = msg_bytes[len(_PIXEL_TAG) :].decode("ascii")
    return f"{base_url.rstrip('/')}{PIXEL_PATH}?{query}&sig={sig}"


@dataclass(frozen=True, slots=True)
class PixelOpen:
    """A verified pixel request: who opened which email, and the signing time."""

    user_id: str
    campaign_id: str
    email_id: str
    ts: int


class PixelError(Exception):
    """A pixel request that does not produce an event; ``reason`` is its metric label.

    Reasons: ``missing_parameter``, ``malformed``, ``invalid_signature``,
    ``expired``, ``not_yet_valid``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_pixel_query(query_string: bytes) -> dict[str, str]:
    """The pixel's parameters from a raw query string; :class:`PixelError` if unusable.

    Refused (``malformed``): over 4 KiB, more than 16 fields, or a pixel parameter
    given twice. Missing ones: ``missing_parameter``.

    >>> parse_pixel_query(b"user=u%201&campaign=&email_id=e&ts=1&sig=ab")["user"]
    'u 1'
    """
    if len(query_string) > _MAX_QUERY:
        raise PixelError("malformed")
    try:
        pairs = parse_qsl(query_string.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=16)
    except ValueError:
        raise PixelError("malformed") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in PIXEL_PARAMS:
            if k in out:
                raise PixelError("malformed")
            out[k] = v
    if any(p not in out for p in PIXEL_PARAMS):
        raise PixelError("missing_parameter")
    return out


def verify_pixel(
    params: Mapping[str, str],
    secrets: Sequence[bytes],
    *,
    now: float,
    max_age_s: float,
) -> PixelOpen:
    """Check a pixel's parameters; return the open, or raise :class:`PixelError`.

    Order: shape (``malformed``), signature (``invalid_signature``: so a forged
    old URL is counted as forged), then time (``expired`` after ``max_age_s``,
    0 = never; ``not_yet_valid`` when signed over 5 minutes in the future).
    With no secret configured every request is ``invalid_signature``.

    >>> from liveprofile.collector.signing import pixel_signature as sign
    >>> p = {"user": "u1", "campaign": "c", "email_id": "e", "ts": "100", "sig": sign(b"s", "u1", "c", "e", 100)}
    >>> verify_pixel(p, [b"s"], now=150, max_age_s=60).user_id
    'u1'
    >>> verify_pixel(p, [b"s"], now=500, max_age_s=60)
    Traceback (most recent call last):
    ...
    liveprofile.collector.signing.PixelError: expired
    """
    user, campaign, email_id, ts_s, sig = (params.get(p, "") for p in PIXEL_PARAMS)
    if (
        not user
        or len(user) > _MAX_VALUE
        or len(campaign) > _MAX_VALUE
        or len(email_id) > _MAX_VALUE
        or not (0 < len(ts_s) <= 12 and ts_s.isascii() and ts_s.isdigit())
        or len(sig) > 128
    ):
        raise PixelError("malformed")
    ts = int(ts_s)
    presented = sig.lower().encode("utf-8", "replace")
    msg = pixel_message(user, campaign, email_id, ts)
    ok = False
    for secret in secrets:  # constant time per secret, and every secret is tried
        expected = hmac.new(secret, msg, hashlib.sha256).hexdigest().encode()
        ok |= hmac.compare_digest(expected, presented)
    if not ok:
        raise PixelError("invalid_signature")
    if ts > now + PIXEL_FUTURE_SKEW_S:
        raise PixelError("not_yet_valid")
    if max_age_s > 0 and now - ts > max_age_s:
        raise PixelError("expired")
    return PixelOpen(user, campaign, email_id, ts)


def pixel_message_id(open_: PixelOpen, now: float, bucket_s: float) -> str:
    """Deterministic ``messageId`` of an open: the signed parameters plus a time bucket.

    Reloads of the same pixel within one ``bucket_s`` window share the id, so the
    dataflow's messageId de-duplication counts them once.

    >>> o = PixelOpen("u1", "c", "e", 100)
    >>> pixel_message_id(o, 1000.0, 60) == pixel_message_id(o, 1019.9, 60) != pixel_message_id(o, 1020.0, 60)
    True
    """
    bucket = int(now // bucket_s) if bucket_s > 0 else 0
    h = hashlib.blake2b(pixel_message(open_.user_id, open_.campaign_id, open_.email_id, open_.ts), digest_size=16)
    h.update(b"|%d|%d" % (int(bucket_s), bucket))
    return "px-" + h.hexdigest()


# --------------------------------------------------------------------- webhooks


class WebhookAuthError(Exception):
    """A webhook whose signature does not authenticate it.

    ``code``: ``missing_signature``, ``invalid_signature`` (malformed header or no
    matching ``v1``) or ``stale_signature`` (timestamp outside the tolerance).
    ``message`` never contains the presented signature or a secret.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def sign_webhook(secret: str | bytes, body: bytes, ts: int | None = None) -> str:
    """The ``X-Liveprofile-Signature`` header value for ``body``.

    >>> sign_webhook("whsec", b"{}", ts=1700000000)[:16]
    't=1700000000,v1='
    """
    t = int(time.time()) if ts is None else int(ts)
    mac = hmac.new(_secret_bytes(secret), b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _parse_header(value: bytes, name: str = SIGNATURE_HEADER) -> tuple[int, list[bytes]]:
    if len(value) > _MAX_WEBHOOK_HEADER:
        raise WebhookAuthError("invalid_signature", f"{name} is too long")
    t: int | None = None
    v1: list[bytes] = []
    for part in value.split(b","):
        k, eq, v = part.strip().partition(b"=")
        if not eq:
            continue
        k, v = k.strip(), v.strip()
        if k == b"t":
            if t is not None or not (0 < len(v) <= 12 and v.isdigit()):
                raise WebhookAuthError("invalid_signature", f"{name}: t must be one Unix timestamp in seconds")
            t = int(v)
        elif k == b"v1" and len(v1) < _MAX_V1:
            v1.append(v.lower())
    if t is None or not v1:
        raise WebhookAuthError("invalid_signature", f"{name} must be t=<unix seconds>,v1=<hex hmac-sha256>")
    return t, v1


def verify_webhook(header: bytes | str | None, body: bytes, secrets: Sequence[bytes], *, now: float, tolerance_s: float,
                   name: str = SIGNATURE_HEADER) -> int:  # fmt: skip
    """Authenticate a webhook body; return its signed timestamp or raise :class:`WebhookAuthError`.

    The signature is checked before the time, so only genuinely signed requests
    are reported ``stale_signature``.

    >>> h = sign_webhook(b"s", b"{}", ts=1000).encode()
    >>> verify_webhook(h, b"{}", [b"s"], now=1100, tolerance_s=300)
    1000
    >>> verify_webhook(h, b"{} ", [b"s"], now=1100, tolerance_s=300)
    Traceback (most recent call last):
    ...
    liveprofile.collector.signing.WebhookAuthError: no v1 signature matches the body
    """
    if isinstance(header, str):
        header = header.encode("latin-1", "replace")
    if not header or not header.strip():
        raise WebhookAuthError("missing_signature", f"the {name} header is required")
    t, presented = _parse_header(header, name)
    msg = b"%d." % t + body
    ok = False
    for secret in secrets:  # every secret against every presented v1, each in constant time
        expected = hmac.new(secret, msg, hashlib.sha256).hexdigest().encode()
        for p in presented:
            ok |= hmac.compare_digest(expected, p)
    if not ok:
        raise WebhookAuthError("invalid_signature", "no v1 signature matches the body")
    if abs(now - t) > tolerance_s:
        raise WebhookAuthError("stale_signature", f"the signature timestamp is more than {int(tolerance_s)} s from the collector's clock")
    return t


def replay_digest(source: str, ts: int, body: bytes) -> str:
    """Key of one signed delivery in the shared replay cache (not the signature itself).

    The same ``(source, t, body)`` is one delivery whichever of its ``v1``
    signatures is presented, so rotating keys cannot be used to replay it.
    """
    h = hashlib.sha256(source.encode("utf-8", "surrogatepass") + b"\x00%d\x00" % ts)
    h.update(body)
    return h.hexdigest()


# ------------------------------------------------------------ platform schemes

#: the signature schemes a webhook source may speak
SCHEMES = ("liveprofile", "stripe", "shopify", "standard")
STRIPE_HEADER = "Stripe-Signature"
_MAX_ID = 256


@dataclass(frozen=True, slots=True)
class PlatformDelivery:
    """An authenticated delivery: its id (the replay/dedupe key: the platform's delivery id, or
    the signed ``(t, body)`` digest), whether a second one with this id is a redelivery to answer
    200 (``True``) or a replay to refuse (``False``), its signing time (``None``: unsigned time),
    and the topic header when the scheme has one."""

    delivery_id: str
    redelivery_ok: bool
    ts: int | None
    topic: str | None = None


def standard_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ``whsec_<base64>`` (the prefix is optional).

    >>> len(standard_secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    24
    """
    b64 = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        msg = "a Standard Webhooks secret is whsec_ followed by base64"
        raise ValueError(msg) from None


def _h(headers: Mapping[bytes, bytes], name: str) -> bytes | None:
    return headers.get(name.lower().encode())


def _text_id(raw: bytes | None, name: str) -> str:
    if raw is None or not raw.strip():
        raise WebhookAuthError("missing_signature", f"the {name} header is required")
    if len(raw) > _MAX_ID:
        raise WebhookAuthError("invalid_signature", f"{name} is too long")
    try:
        text = raw.strip().decode("ascii")
    except UnicodeDecodeError:
        raise WebhookAuthError("invalid_signature", f"{name} must be ASCII") from None
    if not text.isprintable():
        raise WebhookAuthError("invalid_signature", f"{name} must be printable")
    return text


def _verify_shopify(headers: Mapping[bytes, bytes], body: bytes, secrets: Sequence[bytes]) -> PlatformDelivery:
    raw = _h(headers, "X-Shopify-Hmac-Sha256")
    if raw is None or not raw.strip():
        raise WebhookAuthError("missing_signature", "the X-Shopify-Hmac-Sha256 header is required")
    if len(raw) > 128:
        raise WebhookAuthError("invalid_signature", "X-Shopify-Hmac-Sha256 is too long")
    presented = raw.strip()
    ok = False
    for secret in secrets:  # the base64 text compared in constant time, every secret tried
        expected = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest())
        ok |= hmac.compare_digest(expected, presented)
    if not ok:
        raise WebhookAuthError("invalid_signature", "X-Shopify-Hmac-Sha256 does not match the body")
    wid = _text_id(_h(headers, "X-Shopify-Webhook-Id"), "X-Shopify-Webhook-Id")
    topic_raw = _h(headers, "X-Shopify-Topic")
    topic = topic_raw.decode("ascii", "replace").strip()[:128] if topic_raw else None
    return PlatformDelivery("id:" + wid, True, None, topic)


def _verify_standard(headers: Mapping[bytes, bytes], body: bytes, secrets: Sequence[bytes], now: float, tolerance_s: float) -> PlatformDelivery:
    mid = _text_id(_h(headers, "webhook-id"), "webhook-id")
    ts_raw = _h(headers, "webhook-timestamp")
    sig_raw = _h(headers, "webhook-signature")
    if ts_raw is None or sig_raw is None or not sig_raw.strip():
        raise WebhookAuthError("missing_signature", "the webhook-timestamp and webhook-signature headers are required")
    ts_raw = ts_raw.strip()
    if not (0 < len(ts_raw) <= 12 and ts_raw.isdigit()):
        raise WebhookAuthError("invalid_signature", "webhook-timestamp must be Unix seconds")
    if len(sig_raw) > _MAX_WEBHOOK_HEADER:
        raise WebhookAuthError("invalid_signature", "webhook-signature is too long")
    ts = int(ts_raw)
    presented = [v for k, sep, v in (p.partition(b",") for p in sig_raw.split()) if sep and k == b"v1"][:_MAX_V1]
    if not presented:
        raise WebhookAuthError("invalid_signature", "webhook-signature must hold v1,<base64> signatures")
    msg = mid.encode() + b"." + ts_raw + b"." + body
    ok = False
    for secret in secrets:
        expected = base64.b64encode(hmac.new(secret, msg, hashlib.sha256).digest())
        for p in presented:
            ok |= hmac.compare_digest(expected, p)
    if not ok:
        raise WebhookAuthError("invalid_signature", "no v1 signature in webhook-signature matches")
    if abs(now - ts) > tolerance_s:
        raise WebhookAuthError("stale_signature", f"webhook-timestamp is more than {int(tolerance_s)} s from the collector's clock")
    return PlatformDelivery("id:" + mid, True, ts)


def verify_platform(scheme: str, source: str, headers: Mapping[bytes, bytes], body: bytes, secrets: Sequence[bytes], *,
                    now: float, tolerance_s: float) -> PlatformDelivery:  # fmt: skip
    """Authenticate one delivery by ``scheme`` (see the module doc; ``headers`` lower-case
    names); raise :class:`WebhookAuthError` (never anything else, whatever the headers hold).

    >>> h = {b"x-shopify-hmac-sha256": base64.b64encode(hmac.new(b"s", b"{}", hashlib.sha256).digest()),
    ...      b"x-shopify-webhook-id": b"w1", b"x-shopify-topic": b"orders/create"}
    >>> verify_platform("shopify", "shop", h, b"{}", [b"s"], now=0, tolerance_s=300)
    PlatformDelivery(delivery_id='id:w1', redelivery_ok=True, ts=None, topic='orders/create')
    """
    if scheme == "shopify":
        return _verify_shopify(headers, body, secrets)
    if scheme == "standard":
        return _verify_standard(headers, body, secrets, now, tolerance_s)
    name = STRIPE_HEADER if scheme == "stripe" else SIGNATURE_HEADER
    ts = verify_webhook(_h(headers, name), body, secrets, now=now, tolerance_s=tolerance_s, name=name)
    return PlatformDelivery("sig:" + replay_digest(source, ts, body), False, ts)


# -------------------------------------------------------------------------- CLI


def _cmd_pixel_url(args: argparse.Namespace, settings: Any) -> int:
    """``liveprofile pixel-url``: print a signed pixel URL (secret from the settings)."""
    from liveprofile.collector.config import CollectorConfig
    from liveprofile.settings import ConfigError, load_env

    try:
        cfg = CollectorConfig.from_values(load_env())
    except ConfigError as exc:
        print(f"liveprofile pixel-url: configuration error: {exc}", file=sys.stderr)
        return 2
    if not cfg.pixel_secrets:
        print("liveprofile pixel-url: LIVEPROFILE_PIXEL_SECRET is not set", file=sys.stderr)
        return 2
    base = args.base if args.base is not None else cfg.pixel_base_url
    try:
        url = signed_pixel_url(base, cfg.pixel_secrets[0], args.user, args.campaign, args.email_id, ts=args.ts)
    except ValueError as exc:
        print(f"liveprofile pixel-url: {exc}", file=sys.stderr)
        return 2
    print(url)
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``pixel-url`` on the ``liveprofile`` CLI's subparsers.

    ``liveprofile pixel-url --user U --campaign C --email-id E [--base URL] [--ts T]``
    prints a signed ``/v1/pixel.gif`` URL for an email template. The key is
    ``LIVEPROFILE_PIXEL_SECRET`` (its first entry); the base defaults to
    ``LIVEPROFILE_PIXEL_BASE_URL``. Handler signature: ``(args, settings) -> int``.
    """
    p = subparsers.add_parser("pixel-url", help="print a signed email-open pixel URL")
    p.add_argument("--user", required=True, help="the recipient's userId")
    p.add_argument("--campaign", required=True, help="campaign id (properties.campaign_id)")
    p.add_argument("--email-id", required=True, dest="email_id", help="email/send id (properties.email_id)")
    p.add_argument("--base", default=None, help="the collector's public base URL (default LIVEPROFILE_PIXEL_BASE_URL)")
    p.add_argument("--ts", type=int, default=None, help="signing time, Unix seconds (default now)")
    p.set_defaults(func=_cmd_pixel_url)
