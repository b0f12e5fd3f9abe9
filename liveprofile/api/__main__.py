"""``python -m liveprofile.api [--host H] [--port P]`` = ``liveprofile api``; ``python -m liveprofile.api experiments report NAME``."""

from __future__ import annotations

import argparse
import logging
import sys

from liveprofile.api.cli import add_commands
from liveprofile.settings import ConfigError, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liveprofile.api")
    add_commands(parser.add_subparsers(dest="cmd", required=True))
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("api", "experiments"):
        argv = ["api", *argv]
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return int(args.func(args, settings))


if __name__ == "__main__":
    sys.exit(main())
