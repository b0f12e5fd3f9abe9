"""The collector's edge settings: rate limits, pixel and webhook secrets, IP truncation.

Read once at the collector's entry point from :func:`liveprofile.settings.load_env`
values (like the API's and the sync's own configuration):

* ``LIVEPROFILE_MAX_BATCH_EVENTS`` — most events in one request (413 above):
  every event, even an invalid one, costs a dead letter, so without it 500 KB of
  ``[1,1,...]`` would cost ~250k appends and gigabytes of memory.
* ``LIVEPROFILE_RATE_LIMIT`` — events per second per write key, **per collector
  process** (0 = no limit); ``LIVEPROFILE_RATE_BURST`` — bucket size in events
  (0 = the larger of the rate and 500, so one full batch always fits).
* ``LIVEPROFILE_PIXEL_SECRET`` — HMAC key(s) of the email-open pixel,
  comma-separated for rotation (the first signs); empty = opens are not recorded
  (every pixel request is still answered with the GIF). Secret.
* ``LIVEPROFILE_PIXEL_MAX_AGE`` — how long a pixel URL stays valid after signing
  (``0`` = forever). ``LIVEPROFILE_PIXEL_OPEN_WINDOW`` — reloads within one window
  share a messageId (de-duplicated downstream). ``LIVEPROFILE_PIXEL_BASE_URL`` —
  the collector's public URL, the default base of ``liveprofile pixel-url``.
* ``LIVEPROFILE_WEBHOOK_SECRETS`` — JSON object ``{source: secret}`` (or
  ``{source: [secret, ...]}`` for rotation), or the path of a file holding one.
  Secret. A source may instead be an object ``{"scheme": "liveprofile|stripe|shopify|standard",
  "secrets": [...] (or "secret"), "mapping": NAME-or-PATH}`` (:func:`parse_webhook_sources`):
  its signature scheme and the declarative mapping its payloads go through. A plain secret is
  the ``liveprofile`` scheme with Segment bodies, except for the built-in source names
  ``shopify`` and ``stripe`` (their own scheme and shipped mapping, SPEC §2); the ``shopify`` and
  ``stripe`` schemes default to their shipped mapping, the others to Segment bodies.
  ``LIVEPROFILE_WEBHOOK_MAPPINGS`` — a directory of user mapping files (``<name>.yaml``).
  ``LIVEPROFILE_WEBHOOK_INDEX_TTL`` — how long a mapping's remembered values live. ``LIVEPROFILE_WEBHOOK_TOLERANCE`` — accepted distance between the
  signature timestamp and the collector's clock (also the replay-cache TTL).
* ``LIVEPROFILE_CORS_ORIGINS`` — origins whose browsers get a CORS grant
  (:mod:`liveprofile.collector.browser`), ``*`` for any; empty = none.
* ``LIVEPROFILE_TRUNCATE_IP`` — ``on``: ``context.ip`` truncated (IPv4 /24, IPv6 /48)
  before anything is stored.

Secrets must be at least 16 bytes. :meth:`CollectorConfig.masked` is safe to log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from liveprofile.collector.mapping import Mapping as WebhookMapping
from liveprofile.collector.mapping import MappingError, load_mapping
from liveprofile.collector.signing import SCHEMES, standard_secret_key
from liveprofile.settings import ConfigError, _bool
from operators.timeutil import parse_duration_s

__all__ = ["CollectorConfig", "WebhookSource", "parse_webhook_sources", "parse_webhook_secrets", "parse_pixel_secrets",
           "MIN_SECRET_BYTES", "SOURCE_RE", "BUILTIN_SOURCES", "parse_cors_origins"]  # fmt: skip

MIN_SECRET_BYTES = 16
#: Webhook source names (the ``{source}`` path segment).
SOURCE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ORIGIN_RE = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def _check_secret(secret: str, what: str) -> bytes:
    b = secret.encode("utf-8")
    if len(b) < MIN_SECRET_BYTES:
        msg = f"{what}: every secret must be at least {MIN_SECRET_BYTES} bytes (got one of {len(b)})"
        raise ConfigError(msg)
    return b


def parse_pixel_secrets(text: str) -> tuple[bytes, ...]:
    """``LIVEPROFILE_PIXEL_SECRET``: comma-separated secrets, the first one signs.

    >>> parse_pixel_secrets(" new-secret-0123456789, old-secret-0123456789 ")
    (b'new-secret-0123456789', b'old-secret-0123456789')
    >>> parse_pixel_secrets("")
    ()
    """
    return tuple(_check_secret(s.strip(), "LIVEPROFILE_PIXEL_SECRET") for s in text.split(",") if s.strip())


#: source names with a built-in scheme and mapping when given a plain secret
BUILTIN_SOURCES = {"shopify": ("shopify", "shopify"), "stripe": ("stripe", "stripe")}


@dataclass(frozen=True)
class WebhookSource:
    """A configured webhook source: its signature scheme, HMAC keys and mapping (``None``:
    the body is Segment events)."""

    name: str
    scheme: str
    secrets: tuple[bytes, ...] = field(repr=False)
    mapping: WebhookMapping | None = None


def parse_webhook_secrets(text: str) -> dict[str, tuple[bytes, ...]]:
    """``LIVEPROFILE_WEBHOOK_SECRETS``: each source's HMAC keys (:func:`parse_webhook_sources`).

    >>> parse_webhook_secrets('{"sendgrid": "0123456789abcdef", "shop": ["aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"]}')["shop"]
    (b'aaaaaaaaaaaaaaaa', b'bbbbbbbbbbbbbbbb')
    """
    return {name: src.secrets for name, src in parse_webhook_sources(text).items()}


def _source_secret(scheme: str, value: str, where: str) -> bytes:
    if scheme != "standard":
        return _check_secret(value, where)
    try:
        key = standard_secret_key(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"{where}: a Standard Webhooks key must be at least {MIN_SECRET_BYTES} bytes (got {len(key)})")
    return key


def parse_webhook_sources(text: str, mappings_dir: str = "") -> dict[str, WebhookSource]:
    """``LIVEPROFILE_WEBHOOK_SECRETS``: JSON ``{source: secret | [secrets] | {scheme, secrets, mapping}}``
    or a file path holding it; mappings are loaded (and checked) here, ``mappings_dir`` being
    ``LIVEPROFILE_WEBHOOK_MAPPINGS``.

    >>> s = parse_webhook_sources('{"shopify": "0123456789abcdef", "esp": "0123456789abcdef",'
    ...     ' "svix": {"scheme": "standard", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "mapping": "stripe"}}')
    >>> [(n, v.scheme, v.mapping.name if v.mapping else None) for n, v in s.items()]
    [('shopify', 'shopify', 'shopify'), ('esp', 'liveprofile', None), ('svix', 'standard', 'stripe')]
    """
    text = text.strip()
    if not text:
        return {}
    if not text.startswith("{"):
        try:
            text = Path(text).read_text()
        except (OSError, ValueError) as exc:
            # the value may be the (malformed) secret itself: never echo it
            msg = f"LIVEPROFILE_WEBHOOK_SECRETS is neither a JSON object nor a readable file ({type(exc).__name__})"
            raise ConfigError(msg) from None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        msg = "LIVEPROFILE_WEBHOOK_SECRETS is not valid JSON"  # no position: it would point into a secret
        raise ConfigError(msg) from None
    if not isinstance(doc, dict):
        msg = "LIVEPROFILE_WEBHOOK_SECRETS must be a JSON object {source: secret}"
        raise ConfigError(msg)
    out: dict[str, WebhookSource] = {}
    for source, val in doc.items():
        if not SOURCE_RE.match(source):
            msg = f"LIVEPROFILE_WEBHOOK_SECRETS: source name {source[:64]!r} must match {SOURCE_RE.pattern}"
            raise ConfigError(msg)
        where = f"LIVEPROFILE_WEBHOOK_SECRETS[{source}]"
        scheme, mapping_ref = BUILTIN_SOURCES.get(source, ("liveprofile", None))
        if isinstance(val, dict):
            extra = sorted(set(val) - {"scheme", "secret", "secrets", "mapping"})
            if extra:
                raise ConfigError(f"{where}: unknown keys {extra} (known: scheme, secret, secrets, mapping)")
            scheme = val.get("scheme", scheme)
            if scheme not in SCHEMES:
                raise ConfigError(f"{where}: scheme must be one of {', '.join(SCHEMES)}")
            # the shopify and stripe schemes default to their shipped mapping
            mapping_ref = val.get("mapping", scheme if scheme in BUILTIN_SOURCES else None)
            if mapping_ref is not None and (not isinstance(mapping_ref, str) or not mapping_ref):
                raise ConfigError(f"{where}: mapping must be a mapping name or a file path")
            val = val.get("secrets", val.get("secret"))
        vals = [val] if isinstance(val, str) else val
        if not isinstance(vals, list) or not vals or not all(isinstance(v, str) for v in vals):
            msg = f"LIVEPROFILE_WEBHOOK_SECRETS: source {source!r} needs a secret string or a non-empty list of them"
            raise ConfigError(msg)
        secrets = tuple(_source_secret(scheme, v, where) for v in vals)
        try:
            mapping = load_mapping(mapping_ref, mappings_dir) if mapping_ref is not None else None
        except MappingError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out[source] = WebhookSource(source, scheme, secrets, mapping)
    return out

def parse_cors_origins(text: str) -> tuple[str, ...]:
    """``LIVEPROFILE_CORS_ORIGINS``: origins ``scheme://host[:port]`` (lower-cased, a trailing ``/``
    dropped) or ``*``.

    >>> parse_cors_origins(" https://Shop.example/, http://127.0.0.1:8000 ")
    ('https://shop.example', 'http://127.0.0.1:8000')
    >>> parse_cors_origins("")
    ()
    >>> parse_cors_origins("shop.example")
    Traceback (most recent call last):
    ...
    liveprofile.settings.ConfigError: LIVEPROFILE_CORS_ORIGINS: 'shop.example' is not an origin like https://shop.example[:port] (or *)
    """
    out: list[str] = []
    for raw in text.split(","):
        o = raw.strip().rstrip("/").lower()
        if not o:
            continue
        if o != "*" and not _ORIGIN_RE.match(o):
            msg = f"LIVEPROFILE_CORS_ORIGINS: {raw.strip()!r} is not an origin like https://shop.example[:port] (or *)"
            raise ConfigError(msg)
        out.append(o)
    return tuple(out)


def _num(values: Mapping[str, str], name: str) -> float:
    try:
        v = float(values[name])
    except ValueError:
        msg = f"{name} must be a number, got {values[name]!r}"
        raise ConfigError(msg) from None
    if not math.isfinite(v) or v < 0:
        msg = f"{name} must be a finite number >= 0"
        raise ConfigError(msg)
    return v


def _dur(values: Mapping[str, str], name: str) -> float:
    try:
        v = parse_duration_s(values[name])
    except ValueError:
        msg = f"{name} must be a duration like 90, 15m, 24h or 7d; got {values[name]!r}"
        raise ConfigError(msg) from None
    if not math.isfinite(v) or v < 0:
        msg = f"{name} must be a duration >= 0"
        raise ConfigError(msg)
    return v


@dataclass(frozen=True)
class CollectorConfig:
    """Edge settings of the collector; the defaults are everything off."""

    max_batch_events: int = 5000
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    pixel_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    pixel_max_age_s: float = 90 * 86400.0
    pixel_open_window_s: float = 60.0
    pixel_base_url: str = "http://127.0.0.1:8088"
    webhook_sources: dict[str, WebhookSource] = field(default_factory=dict, repr=False)
    webhook_tolerance_s: float = 300.0
    webhook_index_ttl_s: float = 400 * 86400.0
    truncate_ip: bool = False
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> CollectorConfig:
        """Build from merged setting values (:func:`liveprofile.settings.load_env`)."""
        tol = _dur(values, "LIVEPROFILE_WEBHOOK_TOLERANCE")
        if tol < 1:
            msg = "LIVEPROFILE_WEBHOOK_TOLERANCE must be at least 1 second"
            raise ConfigError(msg)
        base = values["LIVEPROFILE_PIXEL_BASE_URL"].strip()
        if not base.startswith(("http://", "https://")):
            msg = f"LIVEPROFILE_PIXEL_BASE_URL must be an http(s) URL, got {base!r}"
            raise ConfigError(msg)
        max_batch = _num(values, "LIVEPROFILE_MAX_BATCH_EVENTS")
        if max_batch < 1 or not max_batch.is_integer():
            msg = "LIVEPROFILE_MAX_BATCH_EVENTS must be a whole number >= 1"
            raise ConfigError(msg)
        return cls(
            max_batch_events=int(max_batch),
            rate_limit=_num(values, "LIVEPROFILE_RATE_LIMIT"),
            rate_burst=_num(values, "LIVEPROFILE_RATE_BURST"),
            pixel_secrets=parse_pixel_secrets(values["LIVEPROFILE_PIXEL_SECRET"]),
            pixel_max_age_s=_dur(values, "LIVEPROFILE_PIXEL_MAX_AGE"),
            pixel_open_window_s=_dur(values, "LIVEPROFILE_PIXEL_OPEN_WINDOW"),
            pixel_base_url=base,
            webhook_sources=parse_webhook_sources(values["LIVEPROFILE_WEBHOOK_SECRETS"], values["LIVEPROFILE_WEBHOOK_MAPPINGS"].strip()),
            webhook_tolerance_s=tol,
            webhook_index_ttl_s=max(1.0, _dur(values, "LIVEPROFILE_WEBHOOK_INDEX_TTL")),
            truncate_ip=_bool(values, "LIVEPROFILE_TRUNCATE_IP"),
            cors_origins=parse_cors_origins(values["LIVEPROFILE_CORS_ORIGINS"]),
        )

    @property
    def webhook_secrets(self) -> dict[str, tuple[bytes, ...]]:
        """Each configured webhook source's HMAC keys."""
        return {n: s.secrets for n, s in self.webhook_sources.items()}

    def masked(self) -> dict[str, object]:
        """A loggable view: secret counts and source names, never the secrets."""
        return {
            "max_batch_events": self.max_batch_events,
            "rate_limit": self.rate_limit,
            "rate_burst": self.rate_burst,
            "pixel_secrets": len(self.pixel_secrets),
            "pixel_max_age_s": self.pixel_max_age_s,
            "pixel_open_window_s": self.pixel_open_window_s,
            "pixel_base_url": self.pixel_base_url,
            "webhook_sources": {n: s.scheme for n, s in sorted(self.webhook_sources.items())},
            "webhook_tolerance_s": self.webhook_tolerance_s,
            "truncate_ip": self.truncate_ip,
            "cors_origins": list(self.cors_origins),
        }
