"""Configuration: ``LIVEPROFILE_*`` environment variables, with a file alternative.

Read once at an entry point (collector, dataflow module, CLI) and passed down
explicitly; nothing below the edge reads the environment. Precedence: the
process environment, then the file named by ``LIVEPROFILE_CONFIG_FILE`` (lines
of ``NAME=value``, ``#`` comments), then the defaults here.

Every setting is listed in :data:`SETTINGS` with its default and meaning; the
table in docs/configuration.md is generated from it (``liveprofile config --markdown``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from operators.behaviour import SessionConfig
from operators.dedupe import DedupeConfig
from operators.definitions import Definitions, DefinitionsErrors, load_definitions
from operators.events import Limits
from operators.interest import InterestConfig
from operators.models import ModelConfig
from operators.timeutil import TimestampError, parse_duration_s, parse_ts
from operators.user import UserConfig

__all__ = ["Settings", "SETTINGS", "ConfigError", "load_env"]


#: computed traits and audiences are evaluated by the full per-user step (LIVEPROFILE_INTELLIGENCE=on)
DEFINITIONS_NEED_INTELLIGENCE = ("LIVEPROFILE_DEFINITIONS is set but LIVEPROFILE_INTELLIGENCE=off: computed traits and audiences "
                                 "are evaluated by the full per-user step only; turn intelligence on or unset the definitions")


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


#: name -> (default, description). Defaults are strings, parsed like the environment.
SETTINGS: dict[str, tuple[str, str]] = {
    "LIVEPROFILE_REDIS_URL": ("redis://127.0.0.1:6379/0", "Redis for buffer and profiles"),
    "LIVEPROFILE_KEY_PREFIX": ("lp", "prefix of every Redis key"),
    "LIVEPROFILE_REDIS_CLUSTER": ("off", "on: LIVEPROFILE_REDIS_URL names a node of a Redis Cluster; keys are hash-tagged by user group (see docs/redis-cluster.md)"),
    "LIVEPROFILE_CLUSTER_GROUPS": ("16", "with LIVEPROFILE_REDIS_CLUSTER=on: user groups (hash tags) profiles, segments and the change feed are split into; fixed for the life of the data"),
    "LIVEPROFILE_WRITE_KEYS": ("", "comma-separated accepted write keys; the collector refuses to start without one, except in the demo"),
    "LIVEPROFILE_BROWSER_WRITE_KEYS": ("", "comma-separated browser (public) write keys: accepted like server keys, but never trusted to merge two known users or to report email engagement (see docs/profiles.md)"),
    "LIVEPROFILE_TIMESTAMP_MIN": ("", "oldest plausible event time (ISO 8601); empty = receipt minus LIVEPROFILE_MAX_EVENT_AGE"),
    "LIVEPROFILE_MAX_EVENT_AGE": ("400d", "when TIMESTAMP_MIN is empty: oldest plausible event time relative to receipt"),
    "LIVEPROFILE_MAX_FUTURE_SKEW": ("3600", "newest plausible event time, seconds ahead of receipt"),
    "LIVEPROFILE_MAX_TRAITS": ("100", "most traits in one event (identify traits with context.traits, or a group call's traits; over it the event is the dead letter too_many_traits) and in one profile (past it the traits written longest ago, in event time, are let go)"),
    "LIVEPROFILE_MAX_TRAIT_BYTES": ("2048", "largest trait value, as JSON bytes (over it the event is the dead letter trait_too_large)"),
    "LIVEPROFILE_TRAITS_DENY": ("password,ssn", "comma-separated trait names never stored (case-insensitive, after reserved-name normalization): dropped at parse, kept out of profiles, platforms and dataflow dead letters"),
    "LIVEPROFILE_SHARDS": ("4", "number of buffer streams (shards) the events are spread over by user"),
    "LIVEPROFILE_DEDUPE_WINDOW": ("48h", "messageId de-duplication window, in event time"),
    "LIVEPROFILE_DEDUPE_MAX_IDS": ("2000", "cap on remembered messageIds per user (memory bound)"),
    "LIVEPROFILE_MAX_BACKLOG": ("2000000", "buffered events not yet processed above which the collector answers 503"),
    "LIVEPROFILE_MAX_REQUEST_BYTES": ("512000", "largest request body, after gzip inflation (413 above)"),
    "LIVEPROFILE_MAX_EVENT_BYTES": ("32768", "largest single event (413, or a dead letter inside a batch)"),
    "LIVEPROFILE_MAX_BATCH_EVENTS": ("5000", "most events in one /v1/batch or webhook request (413 too_many_events above; bounds the work and memory one request can cost)"),
    "LIVEPROFILE_RATE_LIMIT": ("0", "events per second per write key, per collector process (token bucket; 0 = no limit; over it: 429 with Retry-After)"),
    "LIVEPROFILE_RATE_BURST": ("0", "token-bucket size in events per write key (0 = the larger of LIVEPROFILE_RATE_LIMIT and 500)"),
    "LIVEPROFILE_PIXEL_SECRET": ("", "secret: HMAC key(s) of the email-open pixel, comma-separated (the first signs, all verify); empty = opens not recorded"),
    "LIVEPROFILE_PIXEL_MAX_AGE": ("90d", "how long a signed pixel URL stays valid after signing (0 = forever)"),
    "LIVEPROFILE_PIXEL_OPEN_WINDOW": ("60", "pixel reloads within this window share a messageId (de-duplicated downstream)"),
    "LIVEPROFILE_PIXEL_BASE_URL": ("http://127.0.0.1:8088", "the collector's public URL: the default base of `liveprofile pixel-url`"),
    "LIVEPROFILE_WEBHOOK_SECRETS": ("", "secret: webhook sources, a JSON object source -> secret (or list of secrets, or {\"scheme\": liveprofile|stripe|shopify|standard, \"secrets\": [...], \"mapping\": name or path}), or the path of a JSON file holding one; the names shopify and stripe are built in (their scheme and mapping)"),
    "LIVEPROFILE_WEBHOOK_MAPPINGS": ("", "a directory of webhook mapping files (<name>.yaml, docs/sources/webhooks.md) that sources in LIVEPROFILE_WEBHOOK_SECRETS name by \"mapping\"; empty = the shipped ones (shopify, stripe) and file paths only"),
    "LIVEPROFILE_WEBHOOK_INDEX_TTL": ("400d", "how long a webhook mapping's remembered values live (e.g. a Shopify order's customer, for its later refunds)"),
    "LIVEPROFILE_WEBHOOK_TOLERANCE": ("300", "seconds a webhook signature timestamp may differ from the collector's clock (replay window)"),
    "LIVEPROFILE_CORS_ORIGINS": ("", "comma-separated origins (scheme://host[:port]) whose pages may send events and read the answers (CORS), `*` for any; empty = none, no page is granted (see docs/collector.md)"),
    "LIVEPROFILE_TRUNCATE_IP": ("off", "on: truncate context.ip of ingested events (IPv4 to /24, IPv6 to /48) before storing"),
    "LIVEPROFILE_READ_BATCH": ("1000", "stream entries the dataflow reads per shard per poll"),
    "LIVEPROFILE_OVERLAP_IO": ("replies", "how a dataflow run by one worker overlaps its Redis I/O with its computing, each epoch committed only after its writes (docs/reliability.md). replies: the profile, patch and catalogue sinks send each batch at once and read its replies later, and each shard sends its next read ahead, on the worker (no thread; x1.24 on bench/pipeline.py's stream); threads: every sink writes, and each shard reads its next page, from threads of their own (0.96x on 2 shared cores: the GIL); off: every read and write on the worker, waiting for its replies"),
    "LIVEPROFILE_POLL_INTERVAL": ("0.005", "seconds the dataflow waits before polling an idle shard again (freshness floor vs idle CPU: 5 ms costs ~9 % of a core idle, 20 ms ~6 %)"),
    "LIVEPROFILE_SESSION_GAP": ("30m", "inactivity (event time) that ends a session"),
    "LIVEPROFILE_CART_ABANDON_WINDOW": ("1h", "event time after the last cart change without an order before a cart counts as abandoned"),
    "LIVEPROFILE_INTEREST_HALF_LIFE": ("30d", "half-life of category interest, in event time"),
    "LIVEPROFILE_ANOMALY_THRESHOLD": ("0.75", "HalfSpaceTrees score (0-1) at or above which a user is flagged suspect"),
    "LIVEPROFILE_CHANGES_MAXLEN": ("1000000", "approximate cap on the change-feed stream length"),
    "LIVEPROFILE_HTTP_MAX_HEADER_BYTES": ("32768", "collector and API: largest request line plus headers (431 above, refused as soon as that much arrived)"),
    "LIVEPROFILE_HTTP_HEADER_TIMEOUT": ("10", "collector and API: seconds a request head may take to arrive, from the connection or its first byte (408 after)"),
    "LIVEPROFILE_HTTP_BODY_TIMEOUT": ("30", "collector and API: seconds a request body may take to arrive after its head (408 after: a trickled body cannot hold a connection)"),
    "LIVEPROFILE_HTTP_MAX_CONNECTIONS": ("2048", "collector and API: open connections (or running requests) per process above which new requests get 503"),
    "LIVEPROFILE_DEAD_LETTER_MAXLEN": ("100000", "approximate cap on the dead-letter stream (every stage: collector, dataflow, replay, re-drive; each entry holds at most LIVEPROFILE_MAX_EVENT_BYTES of raw event)"),
    "LIVEPROFILE_TIMER_RECHECK": ("30s", "longest wait before a user's pending event-time deadline (session end, cart abandonment, a computed trait's window exit) that the wall clock has already passed is checked again: the stream clock can jump there during replays and across processes (a deadline still ahead of the wall clock is slept until: the stream clock never passes it)"),
    "LIVEPROFILE_STATE_IDLE": ("1h", "a user idle this long (wall time: no event, no timer due) is packed: the dataflow keeps their state as its compressed snapshot (about 1.2 KB instead of about 6 KB of objects) and unpacks it at their next event or due timer; memory then grows with the users active in this window, not with all users ('off': never pack)"),
    "LIVEPROFILE_BUFFER_RETAIN": ("1h", "with Bytewax recovery on: trim buffer entries durably processed and older than this ('off': never trim; without recovery the buffer is never trimmed)"),
    "LIVEPROFILE_BUFFER": ("redis", "where accepted events are buffered: redis (Redis Streams {prefix}:events:{i}) or kafka (one topic, LIVEPROFILE_SHARDS partitions)"),
    "LIVEPROFILE_KAFKA_BROKERS": ("", "with LIVEPROFILE_BUFFER=kafka: comma-separated bootstrap servers"),
    "LIVEPROFILE_KAFKA_TOPIC": ("liveprofile-events", "with LIVEPROFILE_BUFFER=kafka: the events topic (partitioned by user like the Redis shards)"),
    "LIVEPROFILE_INTELLIGENCE": ("on", "on: identity merge, sessions, interest, RFM, models; off: the core path only (counters, cart, email)"),
    "LIVEPROFILE_SYNC_DESTINATIONS": ("", "ESP sync destinations: a JSON object name -> options, or the path of a JSON file holding one (see liveprofile/sync/config.py)"),
    "LIVEPROFILE_SYNC_CONSUMER": ("", "consumer name of this sync process in the change-feed groups; empty = host-pid-random"),
    "LIVEPROFILE_SYNC_LEASE_TTL": ("15", "seconds a sync process holds a destination's lease without renewing it (failover time)"),
    "LIVEPROFILE_SYNC_METRICS_PORT": ("9108", "port of the sync process's Prometheus /metrics (0 = off)"),
    "LIVEPROFILE_SYNC_DEAD_LETTER_MAXLEN": ("1000000", "approximate cap on each destination's dead-letter stream"),
    "LIVEPROFILE_API_TOKENS": ("", "comma-separated bearer tokens accepted by the profile API; the API refuses to start without one"),
    "LIVEPROFILE_API_TEMPLATES": ("", "directory of content templates ({slot}.html) overriding or adding to the built-in ones"),
    "LIVEPROFILE_API_EXPERIMENTS": ("", "A/B experiments: a JSON object name -> {variant: weight}, or the path of a JSON file holding one"),
    "LIVEPROFILE_API_RECOMMENDATIONS": ("4", "products in a recommendations block"),
    "LIVEPROFILE_API_BESTSELLERS_TTL": ("30", "seconds the API caches the cross-category bestsellers (fallback content)"),
    "LIVEPROFILE_API_TEMPLATE_TIMEOUT": ("2", "seconds one content-template render may take (in a worker process, off the event loop); over it the worker is killed and the answer is 500 template_timeout"),
    "LIVEPROFILE_API_TEMPLATE_MAX_BYTES": ("1048576", "largest output of one content-template render (500 template_output_too_large above)"),
    "LIVEPROFILE_CONTENT_SIGNING_KEY": ("", "secret: HMAC key(s) of signed content URLs (/c/...), comma-separated (the first signs, all verify; at least 16 characters each); empty = signed content URLs are refused (403)"),
    "LIVEPROFILE_CONTENT_REDIRECT_HOSTS": ("", "hosts a signed content click (/c/{slot}/click) may redirect to when the product's url came from a browser (public) write key, comma-separated (`shop.example` also allows its subdomains); urls from server keys are always followed; empty = browser-sent urls are not followed (404 untrusted_url)"),
    "LIVEPROFILE_CONTENT_URL_TTL": ("30d", "how long a content URL minted by `liveprofile content-url` or /v1/content-urls stays valid"),
    "LIVEPROFILE_CONTENT_BASE_URL": ("http://127.0.0.1:8090", "the API's public URL: the base of minted content URLs"),
    # -- the source debugger (docs/debugger.md) --
    "LIVEPROFILE_DEBUGGER": ("off", "on: the collector writes a redacted entry per accepted or rejected event to the capped stream {prefix}:debug-events, which the API's /debugger page shows live (one extra pipelined XADD per request)"),
    "LIVEPROFILE_DEBUGGER_MAXLEN": ("1000", "approximate cap on the source debugger's stream {prefix}:debug-events (the page keeps at most its last 200 rows)"),
    "LIVEPROFILE_DEBUGGER_SHOW_VALUES": ("off", "on: the source debugger shows property and trait values (emails stay masked); off: their names only"),
    # -- computed traits and audiences (docs/audiences.md) --
    "LIVEPROFILE_DEFINITIONS": ("", "path of the definitions file (computed traits and audiences, SPEC §6; check it with `liveprofile definitions check FILE`); read by the dataflow, the API and the sync at start, which refuse to start on an invalid file; empty = none"),
    "LIVEPROFILE_CATALOGUE_TOP_MAX": ("500", "products kept in each {prefix}:category-top:{category} popularity ranking (the least popular beyond it are dropped)"),
}


def _file_values(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "=" not in s:
            msg = f"{path}:{lineno}: expected NAME=value"
            raise ConfigError(msg)
        k, v = s.split("=", 1)
        out[k.strip()] = v.strip().strip('"').strip("'")
    return out


def load_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Merge defaults, the optional config file and the environment (highest)."""
    env = os.environ if env is None else env
    values = {k: d for k, (d, _) in SETTINGS.items()}
    cfg_file = env.get("LIVEPROFILE_CONFIG_FILE")
    if cfg_file:
        values.update(_file_values(cfg_file))
    values.update({k: v for k, v in env.items() if k.startswith("LIVEPROFILE_")})
    return values


def _int(values: Mapping[str, str], name: str, lo: int = 1) -> int:
    try:
        v = int(values[name])
    except ValueError:
        msg = f"{name} must be an integer, got {values[name]!r}"
        raise ConfigError(msg) from None
    if v < lo:
        msg = f"{name} must be >= {lo}"
        raise ConfigError(msg)
    return v


def _choice(values: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    v = values[name].strip().lower()
    if v not in allowed:
        msg = f"{name} must be one of {allowed}, got {values[name]!r}"
        raise ConfigError(msg)
    return v


def _bool(values: Mapping[str, str], name: str) -> bool:
    v = values[name].strip().lower()
    if v in ("1", "on", "true", "yes"):
        return True
    if v in ("0", "off", "false", "no"):
        return False
    msg = f"{name} must be on or off, got {values[name]!r}"
    raise ConfigError(msg)


def _overlap(values: Mapping[str, str], name: str) -> str:
    """``replies``, ``threads`` or ``off`` (``on``, the older spelling of ``threads``, still read)."""
    v = values[name].strip().lower()
    if v == "on":
        return "threads"
    return _choice(values, name, ("replies", "threads", "off"))


def _float(values: Mapping[str, str], name: str) -> float:
    try:
        return float(values[name])
    except ValueError:
        msg = f"{name} must be a number, got {values[name]!r}"
        raise ConfigError(msg) from None


def _dur_ms(values: Mapping[str, str], name: str) -> int:
    try:
        return int(parse_duration_s(values[name]) * 1000)
    except ValueError:
        msg = f"{name} must be a duration like 90, 15m, 24h or 7d; got {values[name]!r}"
        raise ConfigError(msg) from None


def _definitions(path: str) -> Definitions | None:
    """Load ``LIVEPROFILE_DEFINITIONS``; every problem of an invalid file in one ConfigError."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"LIVEPROFILE_DEFINITIONS: cannot read {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    try:
        return load_definitions(text, path)
    except DefinitionsErrors as exc:
        msg = f"LIVEPROFILE_DEFINITIONS: {path} is invalid:\n{exc}"
        raise ConfigError(msg) from None


def settings_markdown() -> str:
    """The settings table of docs/configuration.md (``liveprofile config --markdown``), from :data:`SETTINGS`."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{name}` | `{default}` | {desc} |" for name, (default, desc) in SETTINGS.items()]
    return "\n".join(rows) + "\n"


def key_fingerprint(secret: str) -> str:
    """A loggable stand-in for a secret: ``sha256:`` and the first 8 hex digits of its digest.

    >>> key_fingerprint("test-key")
    'sha256:62af8704'
    """
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated configuration shared by every component."""

    redis_url: str
    key_prefix: str
    redis_cluster: bool
    cluster_groups: int
    write_keys: tuple[str, ...]
    limits: Limits
    shards: int
    dedupe: DedupeConfig
    max_backlog: int
    max_request_bytes: int
    read_batch: int
    poll_interval_s: float
    user: UserConfig
    models: ModelConfig
    changes_maxlen: int
    intelligence: bool
    buffer_retain_ms: int | None
    buffer: str
    kafka_brokers: str
    kafka_topic: str
    timer_recheck_s: float
    #: wall seconds a user is idle before the dataflow packs their state (``None``: never)
    state_idle_s: float | None = 3600.0
    dead_letter_maxlen: int = 100_000
    http_max_header_bytes: int = 32768
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_max_connections: int = 2048
    public_write_keys: tuple[str, ...] = ()  # LIVEPROFILE_BROWSER_WRITE_KEYS (browser keys are public)
    catalogue_top_max: int = 500
    debugger: bool = False  # LIVEPROFILE_DEBUGGER
    debugger_maxlen: int = 1000
    debugger_show_values: bool = False
    overlap_io: str = "replies"  # LIVEPROFILE_OVERLAP_IO: replies, threads or off
    #: the loaded definitions file (``LIVEPROFILE_DEFINITIONS``); ``None``: none configured
    definitions: Definitions | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build from the environment (see :data:`SETTINGS`); keyword overrides win."""
        v = load_env(env)
        ts_min = None
        if v["LIVEPROFILE_TIMESTAMP_MIN"].strip():
            try:
                ts_min = parse_ts(v["LIVEPROFILE_TIMESTAMP_MIN"])
            except TimestampError as exc:
                msg = f"LIVEPROFILE_TIMESTAMP_MIN: {exc}"
                raise ConfigError(msg) from None
        limits = Limits(
            timestamp_min_ms=ts_min,
            max_age_ms=_dur_ms(v, "LIVEPROFILE_MAX_EVENT_AGE"),
            max_future_skew_ms=_dur_ms(v, "LIVEPROFILE_MAX_FUTURE_SKEW"),
            max_event_bytes=_int(v, "LIVEPROFILE_MAX_EVENT_BYTES"),
            max_traits=_int(v, "LIVEPROFILE_MAX_TRAITS"),
            max_trait_bytes=_int(v, "LIVEPROFILE_MAX_TRAIT_BYTES"),
            traits_deny=frozenset(n.strip().lower() for n in v["LIVEPROFILE_TRAITS_DENY"].split(",") if n.strip()),
        )
        dedupe = DedupeConfig(
            window_ms=_dur_ms(v, "LIVEPROFILE_DEDUPE_WINDOW"),
            max_ids=_int(v, "LIVEPROFILE_DEDUPE_MAX_IDS"),
        )
        prefix = v["LIVEPROFILE_KEY_PREFIX"].strip()
        if not prefix or any(c.isspace() for c in prefix):
            msg = "LIVEPROFILE_KEY_PREFIX must be a non-empty word"
            raise ConfigError(msg)
        cluster = _bool(v, "LIVEPROFILE_REDIS_CLUSTER")
        if cluster and ("{" in prefix or "}" in prefix):
            msg = "LIVEPROFILE_KEY_PREFIX must not contain { or } with LIVEPROFILE_REDIS_CLUSTER=on (hash tags)"
            raise ConfigError(msg)
        try:
            poll = float(v["LIVEPROFILE_POLL_INTERVAL"])
        except ValueError:
            msg = "LIVEPROFILE_POLL_INTERVAL must be a number of seconds"
            raise ConfigError(msg) from None
        definitions = _definitions(v["LIVEPROFILE_DEFINITIONS"].strip())
        if definitions is not None and not _bool(v, "LIVEPROFILE_INTELLIGENCE"):
            raise ConfigError(DEFINITIONS_NEED_INTELLIGENCE)
        s = cls(
            redis_url=v["LIVEPROFILE_REDIS_URL"],
            key_prefix=prefix,
            redis_cluster=cluster,
            cluster_groups=_int(v, "LIVEPROFILE_CLUSTER_GROUPS"),
            write_keys=tuple(k.strip() for k in v["LIVEPROFILE_WRITE_KEYS"].split(",") if k.strip()),
            limits=limits,
            shards=_int(v, "LIVEPROFILE_SHARDS"),
            dedupe=dedupe,
            max_backlog=_int(v, "LIVEPROFILE_MAX_BACKLOG"),
            max_request_bytes=_int(v, "LIVEPROFILE_MAX_REQUEST_BYTES"),
            read_batch=_int(v, "LIVEPROFILE_READ_BATCH"),
            poll_interval_s=poll,
            user=UserConfig(
                dedupe=dedupe,
                interest=InterestConfig(half_life_ms=_dur_ms(v, "LIVEPROFILE_INTEREST_HALF_LIFE")),
                session=SessionConfig(gap_ms=_dur_ms(v, "LIVEPROFILE_SESSION_GAP")),
                abandon_ms=_dur_ms(v, "LIVEPROFILE_CART_ABANDON_WINDOW"),
                max_traits=limits.max_traits,
                definitions=definitions,
            ),
            models=ModelConfig(threshold=_float(v, "LIVEPROFILE_ANOMALY_THRESHOLD")),
            changes_maxlen=_int(v, "LIVEPROFILE_CHANGES_MAXLEN"),
            dead_letter_maxlen=_int(v, "LIVEPROFILE_DEAD_LETTER_MAXLEN"),
            http_max_header_bytes=_int(v, "LIVEPROFILE_HTTP_MAX_HEADER_BYTES", 1024),
            http_header_timeout_s=_float(v, "LIVEPROFILE_HTTP_HEADER_TIMEOUT"),
            http_body_timeout_s=_float(v, "LIVEPROFILE_HTTP_BODY_TIMEOUT"),
            http_max_connections=_int(v, "LIVEPROFILE_HTTP_MAX_CONNECTIONS"),
            intelligence=_bool(v, "LIVEPROFILE_INTELLIGENCE"),
            timer_recheck_s=_dur_ms(v, "LIVEPROFILE_TIMER_RECHECK") / 1000,
            buffer=_choice(v, "LIVEPROFILE_BUFFER", ("redis", "kafka")),
            kafka_brokers=v["LIVEPROFILE_KAFKA_BROKERS"].strip(),
            kafka_topic=v["LIVEPROFILE_KAFKA_TOPIC"].strip(),
            public_write_keys=tuple(k.strip() for k in v["LIVEPROFILE_BROWSER_WRITE_KEYS"].split(",") if k.strip()),
            catalogue_top_max=_int(v, "LIVEPROFILE_CATALOGUE_TOP_MAX", 1),
            debugger=_bool(v, "LIVEPROFILE_DEBUGGER"),
            debugger_maxlen=_int(v, "LIVEPROFILE_DEBUGGER_MAXLEN"),
            debugger_show_values=_bool(v, "LIVEPROFILE_DEBUGGER_SHOW_VALUES"),
            overlap_io=_overlap(v, "LIVEPROFILE_OVERLAP_IO"),
            definitions=definitions,
            state_idle_s=None if v["LIVEPROFILE_STATE_IDLE"].strip().lower() == "off" else _dur_ms(v, "LIVEPROFILE_STATE_IDLE") / 1000,
            buffer_retain_ms=None if v["LIVEPROFILE_BUFFER_RETAIN"].strip().lower() == "off" else _dur_ms(v, "LIVEPROFILE_BUFFER_RETAIN"),
        )
        if overrides:
            known = {f.name for f in fields(cls)}
            bad = set(overrides) - known
            if bad:
                msg = f"unknown settings: {sorted(bad)}"
                raise ConfigError(msg)
            d = {f.name: getattr(s, f.name) for f in fields(cls)}
            d.update(overrides)
            s = cls(**d)  # type: ignore[arg-type]
        return s

    def masked(self) -> dict[str, object]:
        """Settings as a dict safe to log: secrets (write keys, URL passwords) masked.

        A write key is shown as a fingerprint (``sha256:`` and 8 hex digits of its SHA-256) so an
        operator can tell keys apart without any character of the key itself being printed."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["write_keys"] = [key_fingerprint(k) for k in self.write_keys]
        d["public_write_keys"] = [key_fingerprint(k) for k in self.public_write_keys]
        url = self.redis_url
        if "@" in url:
            scheme, rest = url.split("://", 1) if "://" in url else ("", url)
            d["redis_url"] = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return d
