"""Sync configuration: which destinations, their credentials, limits and pacing.

Read once at the entry point from :func:`liveprofile.settings.load_env` values
and passed down; nothing else in :mod:`liveprofile.sync` reads the environment
(credentials named by ``*_env`` options are resolved here, once).

``LIVEPROFILE_SYNC_DESTINATIONS`` holds a JSON object, or the path of a JSON
file holding one, mapping a destination name (``[A-Za-z0-9_.-]+``; it appears
in Redis keys and metrics) to its options::

    {
      "hook":    {"type": "webhook", "url": "https://crm.example/hooks/lp",
                  "secret_env": "HOOK_SECRET"},
      "braze":   {"type": "braze", "url": "https://rest.iad-01.braze.com",
                  "api_key_env": "BRAZE_KEY", "channel": "email", "require_consent": true},
      "klaviyo": {"type": "klaviyo", "url": "https://a.klaviyo.com",
                  "api_key_env": "KLAVIYO_KEY", "revision": "2024-10-15", "clear": "unset"}
    }

Options (all but ``type`` and ``url`` optional):

================  ===========================================================
``api_key``       Braze/Klaviyo key (prefer ``api_key_env``: the name of an
                  environment variable holding it)
``secret``        webhook HMAC secret (prefer ``secret_env``)
``channel``       consent channel of this destination (``email``, ``sms``...)
``require_consent``  true: push only users whose profile ``consent`` says
                  ``true`` for ``channel``; false (default): push unless it
                  says ``false``
``fields``        allow-list of profile fields to push (default: all)
``events``        push trigger events (default true)
``batch_size``    most change entries taken per batch (default 1000)
``flush_interval``  seconds a change may wait for its batch to fill (1.0)
``max_items``     webhook items per request (500)
``max_bytes``     request body bound (webhook 1 MB, Klaviyo 5 MB)
``concurrency``   requests of one batch in flight at once (4)
``rate_per_s``    optional static cap on requests per second
``timeout``       seconds per HTTP request (10)
``max_attempts``  failed attempts (5xx, timeouts) before dead-lettering (20)
``max_age``       seconds of trying before dead-lettering (3600)
``backoff_base``, ``backoff_max``  exponential backoff bounds, seconds (0.5, 60)
``job_poll_interval``  seconds between polls of a vendor's asynchronous jobs
                  (Klaviyo import jobs, their per-profile errors) (5)
``version_attribute``  attribute carrying the profile version at the vendor
                  (``lp_version``; null: none)
``revision``      Klaviyo ``revision`` header (``2024-10-15``)
``clear``         Klaviyo handling of cleared fields: ``unset`` (default) or
                  ``skip`` (see :mod:`liveprofile.sync.destinations.klaviyo`)
================  ===========================================================
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from liveprofile.settings import ConfigError

__all__ = ["DestinationConfig", "SyncConfig", "TYPES", "parse_destinations"]

TYPES = ("webhook", "braze", "klaviyo")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DEFAULT_MAX_BYTES = {"webhook": 1_000_000, "braze": 1_000_000, "klaviyo": 5_000_000}


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """One destination's validated options (see the module docstring)."""

    name: str
    type: str
    url: str
    api_key: str = field(default="", repr=False)
    secret: str = field(default="", repr=False)
    channel: str | None = None
    require_consent: bool = False
    fields: tuple[str, ...] | None = None
    events: bool = True
    batch_size: int = 1000
    flush_interval: float = 1.0
    max_items: int = 500
    max_bytes: int = 1_000_000
    concurrency: int = 4
    rate_per_s: float | None = None
    timeout: float = 10.0
    max_attempts: int = 20
    max_age: float = 3600.0
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    job_poll_interval: float = 5.0
    version_attribute: str | None = "lp_version"
    revision: str = "2024-10-15"
    clear: str = "unset"

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            msg = f"sync destination name {self.name!r} must match {_NAME.pattern}"
            raise ConfigError(msg)
        if self.type not in TYPES:
            msg = f"sync destination {self.name!r}: type must be one of {TYPES}, got {self.type!r}"
            raise ConfigError(msg)
        if not self.url.startswith(("http://", "https://")):
            msg = f"sync destination {self.name!r}: url must be http(s)://..., got {self.url!r}"
            raise ConfigError(msg)
        if self.type == "webhook" and not self.secret:
            msg = f"sync destination {self.name!r}: a webhook needs `secret` or `secret_env`"
            raise ConfigError(msg)
        if self.type in ("braze", "klaviyo") and not self.api_key:
            msg = f"sync destination {self.name!r}: {self.type} needs `api_key` or `api_key_env`"
            raise ConfigError(msg)
        if self.require_consent and not self.channel:
            msg = f"sync destination {self.name!r}: require_consent needs a `channel`"
            raise ConfigError(msg)
        if self.clear not in ("unset", "skip"):
            msg = f"sync destination {self.name!r}: clear must be 'unset' or 'skip'"
            raise ConfigError(msg)
        for name in ("batch_size", "max_items", "max_bytes", "concurrency", "max_attempts"):
            if getattr(self, name) < 1:
                msg = f"sync destination {self.name!r}: {name} must be >= 1"
                raise ConfigError(msg)
        for name in ("flush_interval", "timeout", "max_age", "backoff_base", "backoff_max", "job_poll_interval"):
            if getattr(self, name) <= 0:
                msg = f"sync destination {self.name!r}: {name} must be > 0"
                raise ConfigError(msg)


_FIELD_TYPES: dict[str, type] = {
    "type": str, "url": str, "api_key": str, "secret": str, "channel": str, "require_consent": bool,
    "fields": list, "events": bool, "batch_size": int, "flush_interval": float, "max_items": int,
    "max_bytes": int, "concurrency": int, "rate_per_s": float, "timeout": float, "max_attempts": int,
    "max_age": float, "backoff_base": float, "backoff_max": float, "job_poll_interval": float, "version_attribute": str,
    "revision": str, "clear": str,
}  # fmt: skip


def _one(name: str, raw: Mapping[str, Any], env: Mapping[str, str]) -> DestinationConfig:
    opts: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("api_key_env", "secret_env"):
            target = key.removesuffix("_env")
            if value not in env:
                msg = f"sync destination {name!r}: environment variable {value!r} ({key}) is not set"
                raise ConfigError(msg)
            opts[target] = env[value]
            continue
        want = _FIELD_TYPES.get(key)
        if want is None:
            msg = f"sync destination {name!r}: unknown option {key!r}"
            raise ConfigError(msg)
        if value is None and key in ("channel", "rate_per_s", "version_attribute", "fields"):
            opts[key] = None
            continue
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            msg = f"sync destination {name!r}: option {key!r} must be {want.__name__}, got {value!r}"
            raise ConfigError(msg)
        opts[key] = tuple(str(f) for f in value) if key == "fields" else value
    if "type" not in opts or "url" not in opts:
        msg = f"sync destination {name!r}: `type` and `url` are required"
        raise ConfigError(msg)
    opts.setdefault("max_bytes", _DEFAULT_MAX_BYTES[opts["type"]] if opts["type"] in TYPES else 1_000_000)
    opts["url"] = opts["url"].rstrip("/")
    return DestinationConfig(name=name, **opts)


def parse_destinations(text: str, env: Mapping[str, str] | None = None) -> dict[str, DestinationConfig]:
    """Destinations from JSON text or a JSON file path (empty text: none).

    >>> d = parse_destinations('{"h": {"type": "webhook", "url": "http://x/", "secret": "s"}}')
    >>> d["h"].url, d["h"].batch_size
    ('http://x', 1000)
    """
    env = os.environ if env is None else env
    text = text.strip()
    if not text:
        return {}
    if not text.startswith(("{", "[")):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            msg = f"LIVEPROFILE_SYNC_DESTINATIONS: cannot read {text!r}: {exc}"
            raise ConfigError(msg) from None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        msg = f"LIVEPROFILE_SYNC_DESTINATIONS is not valid JSON: {exc}"
        raise ConfigError(msg) from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        msg = "LIVEPROFILE_SYNC_DESTINATIONS must be a JSON object of name -> options object"
        raise ConfigError(msg)
    return {name: _one(name, raw, env) for name, raw in doc.items()}


def _num(values: Mapping[str, str], name: str, lo: float) -> float:
    try:
        v = float(values[name])
    except ValueError:
        msg = f"{name} must be a number, got {values[name]!r}"
        raise ConfigError(msg) from None
    if v < lo:
        msg = f"{name} must be >= {lo}"
        raise ConfigError(msg)
    return v


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """Process-level sync options plus the destinations."""

    destinations: dict[str, DestinationConfig]
    consumer: str
    lease_ttl: float = 15.0
    metrics_port: int = 9108
    dead_letter_maxlen: int = 1_000_000

    @classmethod
    def from_values(cls, values: Mapping[str, str], env: Mapping[str, str] | None = None) -> SyncConfig:
        """Build from :func:`liveprofile.settings.load_env` output."""
        consumer = values.get("LIVEPROFILE_SYNC_CONSUMER", "").strip()
        if not consumer:
            consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        return cls(
            destinations=parse_destinations(values.get("LIVEPROFILE_SYNC_DESTINATIONS", ""), env),
            consumer=consumer,
            lease_ttl=_num(values, "LIVEPROFILE_SYNC_LEASE_TTL", 0.5),
            metrics_port=int(_num(values, "LIVEPROFILE_SYNC_METRICS_PORT", 0)),
            dead_letter_maxlen=int(_num(values, "LIVEPROFILE_SYNC_DEAD_LETTER_MAXLEN", 1)),
        )
