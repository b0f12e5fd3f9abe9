"""``liveprofile definitions check FILE``: validate a definitions file (SPEC §6); ``definitions
backfill``: :mod:`liveprofile.admin.backfill`.

Contract: exit 0 and print a summary (each computed trait with its kind, event and window, each
audience in evaluation order) when the file is valid; exit 1 and print every error to stderr as
``FILE:LINE:COL: message`` (the format editors and CI annotate) otherwise, or when the file cannot
be read. The file is only read: nothing is connected to or written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from operators.definitions import DAY_MS, HOUR_MS, Definitions, DefinitionsErrors, load_definitions


def summary(defs: Definitions) -> str:
    """The lines ``check`` prints for a valid file."""
    nt, na = len(defs.computed_traits), len(defs.audiences)
    lines = [f"{defs.source}: ok: {nt} computed trait{'s' * (nt != 1)}, {na} audience{'s' * (na != 1)}"]
    for t in defs.computed_traits:
        if t.window_ms is None:
            window = "all time"
        elif t.window_ms % DAY_MS == 0:
            window = f"{t.window_ms // DAY_MS}d window"
        else:
            window = f"{t.window_ms // HOUR_MS}h window"
        value = f" of {'.'.join(t.value)}" if t.value else ""
        where = f" where {t.where}" if t.where is not None else ""
        lines.append(f"  trait {t.name}: {t.kind}{value} over {t.event!r}{where}, {window} (digest {t.digest})")
    for a in defs.audiences:
        deps = f" (after {', '.join(sorted(a.depends_on))})" if a.depends_on else ""
        late = " [late: reads RFM or model fields, decided when they are scored]" if a.name in defs.late else ""
        lines.append(f"  audience {a.name}: {a.when}{deps}{late}")
    return "\n".join(lines)


def check(path: str) -> int:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{path}:1:1: cannot read the file: {exc}", file=sys.stderr)
        return 1
    try:
        defs = load_definitions(text, path)
    except DefinitionsErrors as exc:
        for e in exc.errors:
            print(e.format(path), file=sys.stderr)
        return 1
    print(summary(defs))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser("definitions", help="computed traits and audiences (SPEC §6)")
    dsub = d.add_subparsers(dest="definitions_cmd", required=True)
    c = dsub.add_parser("check", help="validate a definitions file: FILE:LINE:COL: message per error")
    c.add_argument("file")
    c.set_defaults(func=lambda args, settings: check(args.file))
    from liveprofile.admin.backfill import add_command

    add_command(dsub)
