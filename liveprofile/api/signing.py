"""Signed, expiring content URLs: open-time content an email can load without a bearer token.

A content URL names one user, one slot, one format and an expiry, and carries an HMAC-SHA256 of
exactly those, so whoever holds the URL can load that user's slot in that format until it expires
and nothing else (another user's content needs another signature, which needs the key)::

    {base}/c/{slot}?user={U}&format={F}&exp={E}&sig={S}           # F: html, png or json
    {base}/c/{slot}/click?user={U}&exp={E}&sig={S}&i={N}          # signed with F = click

Canonical message (what is signed)::

    "lpc1|" + slot + "|" + format + "|" + exp + "|" + user

``slot`` (``[A-Za-z0-9_-]``, at most 64), ``format`` (a word) and ``exp`` (Unix seconds, decimal)
cannot hold ``|``, and the user id comes last, so the message is unambiguous whatever the user id
holds; the verifier rebuilds it from the *decoded* query, so a mail client's re-encoding does not
matter. ``S`` is the lowercase hex HMAC-SHA256 of the UTF-8 message under a key of
``LIVEPROFILE_CONTENT_SIGNING_KEY`` (comma-separated for rotation: the first signs, every one
verifies; each at least 16 characters). ``i`` of a click URL is not signed: it picks one of the same
user's recommendations. Every comparison is constant-time (:func:`hmac.compare_digest`) and every
key is tried.

The message is simple enough to build inside an ESP template: Braze's Liquid has
``hmac_sha256_hex`` (docs/content.md, "Signed URLs in an email template").

Refusals (:class:`SignatureError`, answered ``403`` with the reason as the error code):
``signature_missing`` (a parameter absent or malformed), ``signing_not_configured`` (no key),
``bad_signature``, ``expired``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["FORMATS", "SignatureError", "ContentGrant", "content_message", "content_signature", "content_url", "verify", "parse_keys"]

#: formats a signed URL can name (``click``: the redirect route)
FORMATS = ("html", "png", "json", "click")
_SLOT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SIG = re.compile(r"^[0-9a-f]{64}$")
_MAX_USER = 256
MIN_KEY_CHARS = 16


class SignatureError(Exception):
    """A signed content URL refused: ``reason`` is the error code, ``message`` readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ContentGrant:
    """What a valid signature allows: one user's slot, in one format, until ``exp``."""

    user_id: str
    slot: str
    format: str
    exp: int


def parse_keys(text: str) -> tuple[bytes, ...]:
    """Keys from ``LIVEPROFILE_CONTENT_SIGNING_KEY`` (comma-separated; ``ValueError`` if one is short).

    >>> parse_keys(" 0123456789abcdef , fedcba9876543210fedc"), parse_keys("")
    ((b'0123456789abcdef', b'fedcba9876543210fedc'), ())
    """
    keys = tuple(k.strip().encode() for k in text.split(",") if k.strip())
    if any(len(k) < MIN_KEY_CHARS for k in keys):
        msg = f"LIVEPROFILE_CONTENT_SIGNING_KEY: every key must be at least {MIN_KEY_CHARS} characters"
        raise ValueError(msg)
    return keys


def content_message(user_id: str, slot: str, fmt: str, exp: int) -> bytes:
    """The signed message.

    >>> content_message("u|1", "recommendations", "png", 1767225600)
    b'lpc1|recommendations|png|1767225600|u|1'
    """
    return f"lpc1|{slot}|{fmt}|{exp}|{user_id}".encode()


def content_signature(key: bytes, user_id: str, slot: str, fmt: str, exp: int) -> str:
    """Lowercase hex HMAC-SHA256 of :func:`content_message`."""
    return hmac.new(key, content_message(user_id, slot, fmt, exp), hashlib.sha256).hexdigest()


def content_url(base: str, key: bytes, user_id: str, slot: str, fmt: str, exp: int) -> str:
    """A signed URL (``fmt`` ``click``: the redirect route, without ``&i=``: append it).

    >>> content_url("https://c.example/", b"k" * 16, "u 1", "cart", "html", 2000000000)[:67]
    'https://c.example/c/cart?user=u%201&format=html&exp=2000000000&sig='
    """
    if not _SLOT.match(slot) or fmt not in FORMATS or not user_id or len(user_id) > _MAX_USER:
        msg = f"cannot sign slot {slot!r}, format {fmt!r} for a user id of {len(user_id)} characters"
        raise ValueError(msg)
    sig = content_signature(key, user_id, slot, fmt, exp)
    u = quote(user_id, safe="")
    root = base.rstrip("/")
    if fmt == "click":
        return f"{root}/c/{slot}/click?user={u}&exp={exp}&sig={sig}"
    return f"{root}/c/{slot}?user={u}&format={fmt}&exp={exp}&sig={sig}"


def verify(keys: Sequence[bytes], slot: str, query: Mapping[str, str], *, now: float, click: bool = False) -> ContentGrant:
    """The grant of a signed URL's query, or :class:`SignatureError` (see module docstring).

    >>> k = b"0123456789abcdef"
    >>> q = {"user": "u1", "format": "png", "exp": "2000000000", "sig": content_signature(k, "u1", "cart", "png", 2000000000)}
    >>> verify([k], "cart", q, now=1.0)
    ContentGrant(user_id='u1', slot='cart', format='png', exp=2000000000)
    >>> verify([k], "cart", {**q, "user": "u2"}, now=1.0)
    Traceback (most recent call last):
    ...
    liveprofile.api.signing.SignatureError: the signature does not match this user, slot, format and expiry
    """
    user = query.get("user", "")
    fmt = "click" if click else query.get("format", "html")
    exp_s = query.get("exp", "")
    sig = query.get("sig", "")
    if not user or len(user) > _MAX_USER or not exp_s.isascii() or not exp_s.isdigit() or len(exp_s) > 12 or not _SIG.match(sig):
        raise SignatureError("signature_missing", "a signed content URL needs user, exp (Unix seconds) and sig (64 hex digits)")
    if fmt not in FORMATS or (fmt == "click") != click or not _SLOT.match(slot):
        raise SignatureError("signature_missing", f"format must be one of {', '.join(f for f in FORMATS if f != 'click')}")
    if not keys:
        raise SignatureError("signing_not_configured", "signed content URLs are off (LIVEPROFILE_CONTENT_SIGNING_KEY is empty)")
    exp = int(exp_s)
    presented = sig.encode()
    ok = False
    for key in keys:  # constant time per key, and every key is tried
        ok |= hmac.compare_digest(presented, content_signature(key, user, slot, fmt, exp).encode())
    if not ok:
        raise SignatureError("bad_signature", "the signature does not match this user, slot, format and expiry")
    if now > exp:
        raise SignatureError("expired", "this content URL has expired")
    return ContentGrant(user, slot, fmt, exp)
