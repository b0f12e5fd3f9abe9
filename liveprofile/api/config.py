"""API configuration, read once at the entry point from :func:`liveprofile.settings.load_env` values.

* ``LIVEPROFILE_API_TOKENS`` — comma-separated bearer tokens (required).
* ``LIVEPROFILE_API_TEMPLATES`` — optional directory of ``{slot}.html`` templates.
* ``LIVEPROFILE_API_EXPERIMENTS`` — JSON, or the path of a JSON file, mapping an
  experiment name to its variants and weights, either directly or under
  ``variants`` with an optional ``salt`` (changing the salt reshuffles users)::

      {"subject_line": {"control": 50, "urgent": 50},
       "hero": {"variants": {"a": 0.7, "b": 0.2, "c": 0.1}, "salt": "2024-06"}}

  Weights are positive numbers, normalized to sum 1; variants keep their order.
* ``LIVEPROFILE_API_RECOMMENDATIONS`` — products per recommendations block.
* ``LIVEPROFILE_API_BESTSELLERS_TTL`` — seconds the fallback bestsellers are cached.
* ``LIVEPROFILE_API_TEMPLATE_TIMEOUT`` / ``LIVEPROFILE_API_TEMPLATE_MAX_BYTES`` — the limits of one
  template render (:mod:`liveprofile.api.render`).
* ``LIVEPROFILE_CONTENT_SIGNING_KEY`` (secret), ``LIVEPROFILE_CONTENT_URL_TTL``,
  ``LIVEPROFILE_CONTENT_BASE_URL`` — signed content URLs (:mod:`liveprofile.api.signing`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from liveprofile.api.signing import parse_keys
from liveprofile.settings import ConfigError
from operators.timeutil import parse_duration_s

__all__ = ["ApiConfig", "Experiment", "parse_experiments"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Experiment:
    """A multivariate experiment: variant names with normalized cumulative weights."""

    name: str
    variants: tuple[str, ...]
    weights: tuple[float, ...]
    salt: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            msg = f"experiment name {self.name!r} must match {_NAME.pattern}"
            raise ConfigError(msg)
        if not self.variants or len(self.variants) != len(self.weights):
            msg = f"experiment {self.name!r} needs at least one variant with a weight"
            raise ConfigError(msg)
        if any(not (w > 0) for w in self.weights):
            msg = f"experiment {self.name!r}: weights must be positive numbers"
            raise ConfigError(msg)

    @property
    def shares(self) -> dict[str, float]:
        """Variant -> its share of users (weights normalized to sum 1)."""
        total = sum(self.weights)
        return {v: w / total for v, w in zip(self.variants, self.weights, strict=True)}


def parse_experiments(text: str) -> dict[str, Experiment]:
    """Experiments from JSON text or a JSON file path (empty: none).

    >>> parse_experiments('{"s": {"a": 3, "b": 1}}')["s"].shares
    {'a': 0.75, 'b': 0.25}
    """
    text = text.strip()
    if not text:
        return {}
    if not text.startswith(("{", "[")):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            msg = f"LIVEPROFILE_API_EXPERIMENTS: cannot read {text!r}: {exc}"
            raise ConfigError(msg) from None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        msg = f"LIVEPROFILE_API_EXPERIMENTS is not valid JSON: {exc}"
        raise ConfigError(msg) from None
    if not isinstance(doc, dict):
        msg = "LIVEPROFILE_API_EXPERIMENTS must be a JSON object of name -> variants"
        raise ConfigError(msg)
    out = {}
    for name, spec in doc.items():
        if not isinstance(spec, dict):
            msg = f"experiment {name!r} must be an object"
            raise ConfigError(msg)
        salt = ""
        if "variants" in spec:
            salt = str(spec.get("salt", ""))
            spec = spec["variants"]
        if not isinstance(spec, dict) or not all(isinstance(w, int | float) and not isinstance(w, bool) for w in spec.values()):
            msg = f"experiment {name!r}: variants must map names to numeric weights"
            raise ConfigError(msg)
        out[name] = Experiment(name, tuple(spec), tuple(float(w) for w in spec.values()), salt)
    return out


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """Validated API options."""

    tokens: tuple[str, ...] = field(repr=False)
    templates_dir: str | None = None
    experiments: dict[str, Experiment] = field(default_factory=dict)
    recommendations: int = 4
    bestsellers_ttl: float = 30.0
    template_timeout_s: float = 2.0
    template_max_bytes: int = 1 << 20
    signing_keys: tuple[bytes, ...] = field(default=(), repr=False)
    url_ttl_s: int = 30 * 86400
    base_url: str = "http://127.0.0.1:8090"
    redirect_hosts: tuple[str, ...] = ()

    def redirect_allowed(self, url: str, trusted: bool) -> bool:
        """Whether a content click may redirect to ``url`` (an absolute http(s) URL): always for a
        url from a server key, else only to a host in :attr:`redirect_hosts` or one of its subdomains.

        >>> c = ApiConfig(tokens=(), redirect_hosts=("shop.example",))
        >>> [c.redirect_allowed(u, False) for u in ("https://shop.example/p", "https://eu.shop.example/p",
        ...                                          "https://shop.example.evil.test/p", "https://evil.test/p")]
        [True, True, False, False]
        >>> c.redirect_allowed("https://evil.test/p", True)
        True
        """
        if trusted:
            return True
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        return any(host == h or host.endswith("." + h) for h in self.redirect_hosts)

    @classmethod
    def from_values(cls, values: Mapping[str, str]) -> ApiConfig:
        """Build from :func:`liveprofile.settings.load_env` output."""
        try:
            n = int(values.get("LIVEPROFILE_API_RECOMMENDATIONS", "4"))
            ttl = float(values.get("LIVEPROFILE_API_BESTSELLERS_TTL", "30"))
            t_timeout = float(values.get("LIVEPROFILE_API_TEMPLATE_TIMEOUT", "2"))
            t_max = int(values.get("LIVEPROFILE_API_TEMPLATE_MAX_BYTES", str(1 << 20)))
        except ValueError:
            msg = "LIVEPROFILE_API_RECOMMENDATIONS / _BESTSELLERS_TTL / _TEMPLATE_TIMEOUT / _TEMPLATE_MAX_BYTES must be numbers"
            raise ConfigError(msg) from None
        if t_timeout <= 0 or t_max < 1024:
            msg = "LIVEPROFILE_API_TEMPLATE_TIMEOUT must be > 0 and LIVEPROFILE_API_TEMPLATE_MAX_BYTES >= 1024"
            raise ConfigError(msg)
        if not 1 <= n <= 50:
            msg = "LIVEPROFILE_API_RECOMMENDATIONS must be within 1..50"
            raise ConfigError(msg)
        try:
            keys = parse_keys(values.get("LIVEPROFILE_CONTENT_SIGNING_KEY", ""))
            ttl_s = int(parse_duration_s(values.get("LIVEPROFILE_CONTENT_URL_TTL", "30d")))
        except ValueError as exc:
            msg = f"{exc} (LIVEPROFILE_CONTENT_URL_TTL is a duration like 7d)"
            raise ConfigError(msg) from None
        if ttl_s <= 0:
            msg = "LIVEPROFILE_CONTENT_URL_TTL must be > 0"
            raise ConfigError(msg)
        tdir = values.get("LIVEPROFILE_API_TEMPLATES", "").strip() or None
        if tdir is not None and not Path(tdir).is_dir():
            msg = f"LIVEPROFILE_API_TEMPLATES: {tdir!r} is not a directory"
            raise ConfigError(msg)
        return cls(
            tokens=tuple(t.strip() for t in values.get("LIVEPROFILE_API_TOKENS", "").split(",") if t.strip()),
            templates_dir=tdir,
            experiments=parse_experiments(values.get("LIVEPROFILE_API_EXPERIMENTS", "")),
            recommendations=n,
            bestsellers_ttl=ttl,
            template_timeout_s=t_timeout,
            template_max_bytes=t_max,
            signing_keys=keys,
            url_ttl_s=ttl_s,
            base_url=values.get("LIVEPROFILE_CONTENT_BASE_URL", "").strip() or "http://127.0.0.1:8090",
            redirect_hosts=tuple(h.strip().lower().rstrip(".") for h in values.get("LIVEPROFILE_CONTENT_REDIRECT_HOSTS", "").split(",") if h.strip()),
        )
