"""Build of liveprofile's compiled hot path: mypyc compiles ``MYPYC_MODULES`` of ``operators/``.

Everything else about the package is in ``pyproject.toml``. ``pip install -e .`` (what
``./dev.sh`` runs) builds the extension modules next to their sources; the ``.py`` files stay
the reference and the fallback (``LIVEPROFILE_PURE=1``, see ``operators/__init__.py``).

``LIVEPROFILE_NO_COMPILE=1`` at install time skips the compiled build (a pure install, e.g. where
no C compiler exists). Otherwise a failed build fails the install: it is never silently pure.
"""

from __future__ import annotations

import os

from setuptools import setup

#: the operators modules mypyc compiles (the per-user step, its state types, the parse and the
#: computed traits/audiences, the catalogue, the HST and propensity views); left out: models (River's objects: nothing to gain), definitions
#: (YAML/JSON Schema, read once at start), __init__ (the pure-mode finder must stay Python)
MYPYC_MODULES = [
    "timeutil", "money", "names", "traits", "events", "dedupe", "interest", "behaviour",
    "identity", "profile", "rfm", "snapshot", "expr", "computed", "audiences", "user", "catalogue", "hst", "logreg",
]


def _ext_modules() -> list:
    if os.environ.get("LIVEPROFILE_NO_COMPILE", "").strip() not in ("", "0"):
        return []
    from mypyc.build import mypycify

    # multi_file: one C file per module, so the build runs on every core (`-j`, or pip's default)
    return mypycify([f"operators/{m}.py" for m in MYPYC_MODULES], opt_level="3", multi_file=True)


setup(ext_modules=_ext_modules())
