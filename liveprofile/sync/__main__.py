"""``python -m liveprofile.sync [status | dead-letters DEST | replay DEST]`` = ``liveprofile sync ...``."""

from __future__ import annotations

import argparse
import logging
import sys

from liveprofile.settings import ConfigError, Settings
from liveprofile.sync.cli import add_commands


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    opts, rest = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m liveprofile.sync", parents=[pre])
    add_commands(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(["--log-level", opts.log_level, "sync", *rest])
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return int(args.func(args, settings))


if __name__ == "__main__":
    sys.exit(main())
