"""Pure logic: everything liveprofile decides, with no engine, Redis, HTTP or clock reads.

Events (:mod:`.events`, :mod:`.names`), the profile schema (:mod:`.schema`), identity, dedupe,
money and time, the per-user state and its step (:mod:`.profile`, :mod:`.behaviour`,
:mod:`.interest`, :mod:`.user`), RFM, the online models, versioned snapshots (:mod:`.snapshot`).
Time is always passed in (event times and the stream clock's reading), so every function here is
deterministic and doctested.

May import: the standard library, ``orjson`` and ``river``; nothing of liveprofile, dataflows or
any I/O library (``tests/test_layering.py``).

Compiled or pure
----------------
The hot modules (``setup.py``'s ``MYPYC_MODULES``) are compiled by mypyc into extension modules
next to their sources when the package is installed (``pip install -e .``, which ``./dev.sh``
runs). The ``.py`` sources stay the reference and the fallback:

* ``LIVEPROFILE_PURE=1`` (read **once**, when this package is first imported): every
  ``operators.*`` module is imported from its ``.py`` source even where a compiled one exists
  (a finder put first on ``sys.meta_path``); the suite runs ``tests/operators``,
  ``tests/dataflows`` and these doctests that way too.
* Without a compiler (or after ``rm operators/*.so``) the sources are imported, as in any
  package.

What compiling changes, and how the sources keep both modes one program:

* mypyc checks declared types at run time (an ``int`` variable given a ``str`` raises
  ``TypeError``; a ``float`` attribute stores an ``int`` as a float; an ``int`` one a ``bool``
  as an int), so a value of unknown type (``Any``: decoded JSON) is only bound to an untyped name
  until it has been checked; ``mypy operators/`` must pass (``[tool.mypy]`` in pyproject.toml).
* The frozen dataclasses (the items, outputs, configs, expression nodes and stubs) stay Python
  classes, ``@mypyc_attr(native_class=False)``: a compiled frozen class cannot be unpickled
  (its ``__setattr__`` refuses the restore), and they cross processes pickled. The mutable state
  classes are native; their ``__getstate__``/``__setstate__`` (:mod:`.snapshot`) write the same
  bytes in both modes.
* The msgspec struct of the parse's fast path is in :mod:`.wire`, which is not compiled.
* Doctests run on the sources (``LIVEPROFILE_PURE=1``): compiled functions have none to collect.

:data:`PURE` says whether the pure mode was asked for; :func:`built_modules` which modules have
an extension built; :func:`compiled_modules` which modules
are running compiled (imports them); :func:`mode` a one-line summary (``liveprofile version``
and the dataflow's start log print it). A compiled module and its source behave the same and
pickle the same bytes (``tests/operators/test_compiled_mode.py``).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["PURE", "built_modules", "compiled_modules", "mode"]

_HERE = Path(__file__).resolve().parent
#: ``LIVEPROFILE_PURE=1``: import every ``operators.*`` module from its ``.py`` source
PURE: bool = os.environ.get("LIVEPROFILE_PURE", "").strip().lower() not in ("", "0", "false", "no")


class _SourceFinder:
    """A meta-path finder that resolves ``operators.<name>`` to ``operators/<name>.py`` (the pure
    mode): put before the standard path finder, it shadows the extension modules."""

    @classmethod
    def find_spec(cls, fullname: str, path: object = None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        pkg, _, name = fullname.partition(".")
        if pkg != __name__ or not name or "." in name:
            return None
        src = _HERE / f"{name}.py"
        if not src.is_file():
            return None
        loader = importlib.machinery.SourceFileLoader(fullname, str(src))
        return importlib.util.spec_from_file_location(fullname, src, loader=loader)


if PURE and not any(f is _SourceFinder for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceFinder)


def built_modules() -> list[str]:
    """The modules with a compiled extension next to their source (whether in use or not)."""
    out = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for p in _HERE.glob(f"*{suffix}"):
            name = p.name[: -len(suffix)]
            if (_HERE / f"{name}.py").is_file():
                out.append(name)
    return sorted(set(out))


def compiled_modules() -> list[str]:
    """The ``operators`` modules running compiled in this process (each one is imported to
    look: a module is compiled when its ``__file__`` is an extension module).
    Empty in the pure mode or when nothing was built."""
    out = []
    for name in built_modules():
        mod = importlib.import_module(f"{__name__}.{name}")
        if not str(getattr(mod, "__file__", "")).endswith(".py"):
            out.append(name)
    return out


def mode() -> str:
    """One line: ``compiled (N modules: a, b, ...)`` or ``pure (LIVEPROFILE_PURE=1)`` /
    ``pure (no compiled modules built)``."""
    if PURE:
        return "pure (LIVEPROFILE_PURE=1)"
    mods = compiled_modules()
    if not mods:
        return "pure (no compiled modules built)"
    return f"compiled ({len(mods)} modules: {', '.join(mods)})"
