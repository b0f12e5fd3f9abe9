"""Unrolled snapshot packers for the per-user state classes, generated from their fields.

    python -m liveprofile.devtools.packers           # rewrite the generated blocks
    python -m liveprofile.devtools.packers --check   # exit 1 if a block is out of date

Every epoch, Bytewax snapshots each user touched in it, and on live-paced traffic (a user's
events spread over many epochs) that is about one snapshot per event: the snapshot then costs as
much as the event's whole fold. :func:`operators.snapshot.pack` is generic (an ``attrgetter`` of
all fields, a zip over the layout); the packers written here give the *same tuple* for one class
with its fields read one by one (native attribute reads once mypyc compiles them), each compared
with the same default object by the same test (``v is d or (type(v) is type(d) and v == d)``).

The blocks sit at the end of each class's module between the markers below; ``__getstate__``
calls them. A field added to a class without regenerating fails
``tests/operators/test_packers.py`` (which runs ``--check``), and that test also checks each
packer against :func:`operators.snapshot.pack` on real states.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import fields
from pathlib import Path

__all__ = ["PACKED", "block", "render", "main"]

BEGIN = "# >>> generated snapshot packers (python -m liveprofile.devtools.packers): do not edit"
END = "# <<< generated snapshot packers"

#: module -> its classes and, per class, the fields the pickled state leaves out (its own
#: ``__getstate__`` passes the same ``skip`` to :func:`operators.snapshot.pack` today)
PACKED: dict[str, list[tuple[str, str]]] = {
    "operators.profile": [("ProfileState", "")],
    "operators.interest": [("Interest", "")],
    "operators.behaviour": [("Session", ""), ("Behaviour", "_DERIVED")],
    "operators.user": [("UserState", "")],
}


def render(module: str, cls_name: str, skip_name: str) -> str:
    """The packer of one class (and its defaults constant) as source text."""
    mod = importlib.import_module(module)
    cls = getattr(mod, cls_name)
    skip: frozenset[str] = getattr(mod, skip_name) if skip_name else frozenset()
    names = [f.name for f in fields(cls)]
    const = f"_PACK_DEFAULTS_{cls_name}"
    lines = [
        f"{const} = pack_defaults({cls_name})",
        "",
        "",
        f"def _pack_{cls_name}(o: {cls_name}) -> tuple[Any, ...]:",
        f'    """``operators.snapshot.pack(o{", " + skip_name if skip_name else ""})``, field by field (generated)."""',
        f"    D = {const}",
        "    m = 0",
        "    out: list[Any] = [0]",
        "    v: Any",
        "    d: Any",
    ]
    for i, name in enumerate(names):
        if name in skip:
            continue
        lines += [
            f"    v = o.{name}",
            f"    d = D[{i}]",
            "    if not (v is d or (type(v) is type(d) and v == d)):",
            f"        m |= {1 << i}",
            "        out.append(v)",
        ]
    lines += ["    out[0] = m", "    return tuple(out)"]
    return "\n".join(lines)


def block(module: str) -> str:
    """The whole generated block of ``module`` (markers included)."""
    body = "\n\n\n".join(render(module, c, s) for c, s in PACKED[module])
    return f"{BEGIN}\n{body}\n{END}\n"


def _path(module: str) -> Path:
    """The module's source (its ``.py``, also when the compiled module is the one imported)."""
    return Path(importlib.import_module(module).__file__ or "").parent / f"{module.rsplit('.', 1)[1]}.py"


def _updated(text: str, module: str) -> str:
    new = block(module)
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END + "\n", 1)
        return head + new + tail
    return text.rstrip("\n") + "\n\n\n" + new


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` only compare) every module's generated block."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when a generated block is out of date")
    args = ap.parse_args(argv)
    stale = []
    for module in PACKED:
        path = _path(module)
        text = path.read_text()
        new = _updated(text, module)
        if new != text:
            stale.append(str(path))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"out of date (run python -m liveprofile.devtools.packers): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
