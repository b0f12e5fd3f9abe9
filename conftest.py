"""Root pytest configuration: what the doctest collection of ``operators/`` leaves out.

A module running compiled (mypyc, ``setup.py``) has no doctests to collect (compiled functions
keep no docstrings' examples as code, and pytest refuses a module whose ``__file__`` is the
extension, not the ``.py`` it collects): its doctests run in the pure pass of ``./dev.sh test``
(``LIVEPROFILE_PURE=1``, ``operators/__init__.py``), where every module is its source.
"""

from __future__ import annotations

import operators

collect_ignore = [f"operators/{name}.py" for name in operators.compiled_modules()]
