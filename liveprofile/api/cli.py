"""``liveprofile api`` and ``liveprofile experiments report NAME`` (registered by :func:`add_commands`)."""

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


def add_commands(subparsers: Any) -> None:
    """Register ``api`` and ``experiments report NAME`` on an argparse subparsers object."""
    a = subparsers.add_parser("api", help="run the profile and content API")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8090)
    a.set_defaults(func=_cmd_api)
    e = subparsers.add_parser("experiments", help="A/B experiments")
    sub = e.add_subparsers(dest="experiments_cmd", required=True)
    r = sub.add_parser("report", help="exposures, conversions, conversion rate and revenue per variant")
    r.add_argument("name")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_report)
