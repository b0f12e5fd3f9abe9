"""``liveprofile api``, ``liveprofile content-url USER`` and ``liveprofile experiments report NAME``
(registered by :func:`add_commands`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from liveprofile.settings import ConfigError, Settings, load_env

__all__ = ["add_commands", "format_report"]


def _config() -> Any:
    from liveprofile.api.config import ApiConfig

    return ApiConfig.from_values(load_env())


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.api.app import serve

    try:
        cfg = _config()
    except ConfigError as exc:
        print(f"liveprofile api: configuration error: {exc}", file=sys.stderr)
        return 2
    if not cfg.tokens:
        print("liveprofile api: LIVEPROFILE_API_TOKENS is empty: set at least one bearer token", file=sys.stderr)
        return 2
    serve(settings, cfg, args.host, args.port, log_level=getattr(args, "log_level", "warning"))
    return 0


def format_report(name: str, rows: list[Any]) -> str:
    """The report as an aligned text table."""
    lines = [f"experiment {name}", f"{'variant':<20} {'exposures':>10} {'conversions':>12} {'conv_rate':>10} {'revenue':>14}"]
    for r in rows:
        lines.append(f"{r.variant:<20} {r.exposures:>10} {r.conversions:>12} {r.conversion_rate:>10.2%} {r.revenue:>14.2f}")
    return "\n".join(lines)


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.api.experiments import report
    from liveprofile.store.connection import connect
    from liveprofile.store.keys import Keys

    try:
        exps = _config().experiments
    except ConfigError as exc:
        print(f"liveprofile experiments: configuration error: {exc}", file=sys.stderr)
        return 2
    client = connect(settings.redis_url, settings.redis_cluster, decode_responses=True)
    rows = report(client, Keys.of(settings), exps.get(args.name, args.name))
    if not rows:
        print(f"no exposures recorded for experiment {args.name!r}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps([{"variant": r.variant, "exposures": r.exposures, "conversions": r.conversions,
                             "conversion_rate": r.conversion_rate, "revenue": f"{r.revenue:.2f}"} for r in rows]).decode())  # fmt: skip
    else:
        print(format_report(args.name, rows))
    return 0


def _cmd_content_url(args: argparse.Namespace, settings: Settings) -> int:
    """Print a signed content URL (key: the first of LIVEPROFILE_CONTENT_SIGNING_KEY)."""
    import time

    from liveprofile.api.signing import content_url
    from operators.timeutil import parse_duration_s

    try:
        cfg = _config()
        ttl = int(parse_duration_s(args.ttl)) if args.ttl else cfg.url_ttl_s
    except (ConfigError, ValueError) as exc:
        print(f"liveprofile content-url: configuration error: {exc}", file=sys.stderr)
        return 2
    if not cfg.signing_keys:
        print("liveprofile content-url: LIVEPROFILE_CONTENT_SIGNING_KEY is not set", file=sys.stderr)
        return 2
    exp = args.exp if args.exp is not None else int(time.time()) + ttl
    try:
        url = content_url(args.base or cfg.base_url, cfg.signing_keys[0], args.user, args.slot, args.format, exp)
    except ValueError as exc:
        print(f"liveprofile content-url: {exc}", file=sys.stderr)
        return 2
    print(url + ("&i=0" if args.format == "click" else ""))
    return 0


def add_commands(subparsers: Any) -> None:
    """Register ``api``, ``content-url`` and ``experiments report NAME`` on an argparse subparsers object."""
    a = subparsers.add_parser("api", help="run the profile and content API")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8090)
    a.set_defaults(func=_cmd_api)
    c = subparsers.add_parser("content-url", help="print a signed, expiring content URL for one user (for an email)")
    c.add_argument("user", help="the user id")
    c.add_argument("--slot", default="recommendations")
    c.add_argument("--format", default="png", choices=["html", "png", "json", "click"], help="click: the redirect URL (append &i=N)")
    c.add_argument("--ttl", default="", help="lifetime, e.g. 7d (default LIVEPROFILE_CONTENT_URL_TTL)")
    c.add_argument("--exp", type=int, default=None, help="expiry, Unix seconds (instead of --ttl)")
    c.add_argument("--base", default="", help="the API's public URL (default LIVEPROFILE_CONTENT_BASE_URL)")
    c.set_defaults(func=_cmd_content_url)
    e = subparsers.add_parser("experiments", help="A/B experiments")
    sub = e.add_subparsers(dest="experiments_cmd", required=True)
    r = sub.add_parser("report", help="exposures, conversions, conversion rate and revenue per variant")
    r.add_argument("name")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_report)
