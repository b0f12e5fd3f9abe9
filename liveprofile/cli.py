"""``liveprofile`` command line: the services and tools around the dataflow.

Subcommands::

    liveprofile collector [--host H] [--port P] [--workers N]   HTTP collector (SPEC §2)
    liveprofile replay FILE.jsonl [--batch N]                   import history into the buffer
    liveprofile import FILE [--preset P | --mapping M]          CSV / NDJSON (gzip too) into the buffer
    liveprofile generate --out FILE.jsonl [--truth T.json] ...  realistic test stream
    liveprofile profile USER_ID                                 print one profile
    liveprofile demo                                            everything, locally, one command
    liveprofile sync [status | dead-letters DEST | replay DEST] ESP sync worker and its tools
    liveprofile api [--port P]                                  profile and content API
    liveprofile experiments report NAME                         A/B exposures and conversions
    liveprofile forget USER_ID / unsuppress USER_ID             GDPR erasure and its undo
    liveprofile deadletter list | show ID | replay              inspect and re-drive dead letters
    liveprofile pixel-url --user U --campaign C --email-id E    a signed email-open pixel URL
    liveprofile webhooks check FILE                             validate a webhook mapping file
    liveprofile definitions check FILE                          validate computed traits and audiences
    liveprofile definitions backfill (--buffer | --file F)...   count history into new or changed computed traits
    liveprofile privacy-requests [--apply]                      privacy requests received by webhook
    liveprofile config [--markdown]                             show effective settings
    liveprofile version                                         the version, and whether operators/ runs compiled

The dataflow itself runs with ``python -m bytewax.run dataflows.profiles:flow``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import orjson

from liveprofile.admin.deadletters import add_commands as add_deadletter_commands
from liveprofile.admin.definitions import add_commands as add_definitions_commands
from liveprofile.admin.privacy import add_commands as add_privacy_commands
from liveprofile.admin.privacy_requests import add_commands as add_privacy_request_commands
from liveprofile.collector.mapping import add_commands as add_mapping_commands
from liveprofile.collector.signing import add_commands as add_signing_commands
from liveprofile.settings import ConfigError, Settings, settings_markdown

__all__ = ["main"]


def _cmd_collector(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.collector.app import serve

    serve(settings, args.host, args.port, workers=args.workers, log_level=args.log_level)
    return 0


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.admin.history import replay_file

    stats = replay_file(settings, args.file, batch=args.batch, progress=not args.quiet)
    print(orjson.dumps(stats).decode())
    return 0 if stats["read"] else 1


def _cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.admin.imports import ImportError_, import_file
    from liveprofile.admin.mapping import MappingError, load_mapping

    try:
        mapping = load_mapping(args.preset, args.mapping) if (args.preset or args.mapping) else None
        stats = import_file(settings, args.file, mapping, batch=args.batch, progress=False if args.quiet else None)
    except (ImportError_, MappingError) as exc:
        print(f"liveprofile import: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(stats).decode())
    return 0


def _cmd_profile(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.store.connection import connect
    from liveprofile.store.keys import Keys

    client = connect(settings.redis_url, settings.redis_cluster, decode_responses=True)
    prof = client.hgetall(Keys.of(settings).profile(args.user_id))
    if not prof:
        print(f"no profile for {args.user_id!r}", file=sys.stderr)
        return 1
    print(orjson.dumps(dict(sorted(prof.items())), option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from liveprofile.devtools.generate import GenConfig, generate_to_files

    end_ms = args.end_ms if args.end_ms is not None else int(time.time() * 1000)
    cfg = GenConfig(
        users=args.users, seed=args.seed, end_ms=end_ms, days=args.days,
        duplicate_rate=args.duplicates, invalid_rate=args.invalid, bots=args.bots,
    )  # fmt: skip
    gen = generate_to_files(cfg, args.out, args.truth)
    print(f"wrote {len(gen.events)} events for {len(gen.truth)} users to {args.out}", file=sys.stderr)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from liveprofile.devtools.demo import run_demo

    return run_demo(args)


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    if args.markdown:
        print(settings_markdown(), end="")
        return 0
    print(orjson.dumps(settings.masked(), option=orjson.OPT_INDENT_2, default=str).decode())
    return 0


def _cmd_version(args: argparse.Namespace, settings: Settings) -> int:
    """``liveprofile 0.1.0`` and the operators' mode: ``compiled (N modules: ...)`` or ``pure (...)``."""
    from importlib.metadata import PackageNotFoundError, version

    import operators

    try:
        ver = version("liveprofile")
    except PackageNotFoundError:  # a source checkout that was never installed
        ver = "(not installed)"
    print(f"liveprofile {ver}")
    print(f"operators: {operators.mode()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="liveprofile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("collector", help="run the HTTP collector")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8088)
    c.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    c.set_defaults(func=_cmd_collector)

    r = sub.add_parser("replay", help="import a JSONL history into the buffer")
    r.add_argument("file")
    r.add_argument("--batch", type=int, default=1000)
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_cmd_replay)

    from liveprofile.admin.mapping import PRESETS

    im = sub.add_parser("import", help="import a CSV or NDJSON file (gzip too) into the buffer")
    im.add_argument("file")
    how = im.add_mutually_exclusive_group()
    how.add_argument("--preset", choices=PRESETS, help="a shipped mapping")
    how.add_argument("--mapping", help="a mapping file (JSON or YAML, see docs/sources/csv.md)")
    im.add_argument("--batch", type=int, default=1000)
    im.add_argument("--quiet", action="store_true", help="no progress bar (there is none unless stderr is a terminal)")
    im.set_defaults(func=_cmd_import)

    g = sub.add_parser("generate", help="write a realistic test stream (JSONL) and its truth")
    g.add_argument("--out", required=True)
    g.add_argument("--truth")
    g.add_argument("--users", type=int, default=1000)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--days", type=float, default=30.0)
    g.add_argument("--end-ms", type=int, default=None, help="latest event time (default: now)")
    g.add_argument("--duplicates", type=float, default=0.0, help="fraction of events re-sent as duplicates")
    g.add_argument("--invalid", type=float, default=0.0, help="fraction of extra invalid events")
    g.add_argument("--bots", type=int, default=0, help="number of bot-like users")
    g.set_defaults(func=_cmd_generate)

    pr = sub.add_parser("profile", help="print one profile")
    pr.add_argument("user_id")
    pr.set_defaults(func=_cmd_profile)

    d = sub.add_parser("demo", help="run the whole pipeline locally on a generated stream")
    d.add_argument("--users", type=int, default=2000)
    d.add_argument("--days", type=float, default=14.0)
    d.add_argument("--rate", type=float, default=5000.0, help="events/s fed to the collector")
    d.add_argument("--port", type=int, default=0, help="collector port (0: a free one)")
    d.add_argument("--keep-running", action="store_true", help="after feeding, keep serving until Ctrl-C")
    d.add_argument("--workdir", default=None, help="where Redis data and recovery go (default: a temp dir)")
    d.set_defaults(func=_cmd_demo)

    from liveprofile.api import add_commands as add_api_commands
    from liveprofile.sync import add_commands as add_sync_commands

    add_sync_commands(sub)
    add_api_commands(sub)
    add_privacy_commands(sub)
    add_deadletter_commands(sub)
    add_signing_commands(sub)
    add_privacy_request_commands(sub)
    add_mapping_commands(sub)
    add_definitions_commands(sub)

    v = sub.add_parser("version", help="print the version and whether operators/ runs compiled (mypyc) or pure")
    v.set_defaults(func=_cmd_version)

    cf = sub.add_parser("config", help="show the effective settings")
    cf.add_argument("--markdown", action="store_true", help="print the settings table of docs/configuration.md")
    cf.set_defaults(func=_cmd_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"liveprofile: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
