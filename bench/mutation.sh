#!/usr/bin/env bash
# Mutation testing of operators/ with mutmut 3 (issue 10), reproducibly, outside the checkout.
#
#   bench/mutation.sh                      # every module
#   bench/mutation.sh profile user         # only these modules' mutants (operators.<name>.*)
#
# Needs mutmut in the venv (.venv/bin/pip install 'mutmut>=3.8,<4'). It copies operators/,
# tests/operators/ and a minimal pytest/mutmut config into $MUTATION_DIR (default
# /tmp/liveprofile-mutation, wiped first), so nothing is written into the checkout and
# pyproject.toml's pytest setup is untouched. mutmut then works in $MUTATION_DIR/mutants/.
# Only tests/operators and the operators' doctests run (a few seconds per mutant: mutmut
# runs only the tests that reach the mutated function). Hypothesis runs with a fixed seed
# (--hypothesis-seed=0) and no example database, so a rerun gives the same verdicts.
# CPU: nice -n 10 and one worker (MUTATION_JOBS to change); the full run takes ~1-2 h on
# one core. Results: $MUTATION_DIR/results.txt (every mutant and its verdict) and a score
# per module on stdout; `cd $MUTATION_DIR && mutmut show <name>` shows one mutant's diff.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
MUTMUT="${MUTMUT:-$(dirname "$PY")/mutmut}"
WORK="${MUTATION_DIR:-/tmp/liveprofile-mutation}"
JOBS="${MUTATION_JOBS:-1}"

case "$WORK" in /|"$ROOT"|"$ROOT"/*) echo "MUTATION_DIR must be outside the checkout" >&2; exit 2 ;; esac
rm -rf "$WORK"
mkdir -p "$WORK/tests"
cp -r "$ROOT/operators" "$WORK/operators"
cp "$ROOT/tests/__init__.py" "$WORK/tests/"
cp -r "$ROOT/tests/operators" "$WORK/tests/operators"
find "$WORK" -name __pycache__ -prune -exec rm -rf {} +
# No example database: a failure Hypothesis saved for one mutant must not be replayed
# against the next (verdicts would depend on the order mutants ran in). Property tests run
# at most MUTATION_MAX_EXAMPLES examples (default 50) so a surviving mutant costs seconds,
# not the suite's full 20 s; set it to 0 for the tests' own counts.
cat >"$WORK/tests/conftest.py" <<'EOF'
import os

import pytest
from hypothesis import settings

settings.register_profile("mutation", database=None)
settings.load_profile("mutation")
CAP = int(os.environ.get("MUTATION_MAX_EXAMPLES", "50"))


def pytest_collection_modifyitems(items):
    # mutmut keeps a copy of every function per mutant, docstring included: run each doctest
    # once (from the public name, which calls the mutant under test), not once per copy
    items[:] = [i for i in items if "__mutmut_" not in i.nodeid]
    for item in items:
        fn = getattr(item, "obj", None)
        s = getattr(fn, "_hypothesis_internal_use_settings", None)
        if CAP and s is not None and s.max_examples > CAP:
            fn._hypothesis_internal_use_settings = settings(s, max_examples=CAP)


@pytest.fixture(autouse=True)
def _cold_caches():
    """mutmut forks each mutant's run from a process that already ran the tests: empty the
    operators' lru_caches, or a cached result from the original code hides the mutant."""
    import operators.events
    import operators.timeutil

    for f in (operators.events._cached_category, operators.timeutil._parse_ts_str, operators.timeutil.iso):
        if hasattr(f, "cache_clear"):
            f.cache_clear()
EOF

cat >"$WORK/pyproject.toml" <<'EOF'
[tool.pytest.ini_options]
addopts = "-p no:cacheprovider"
doctest_optionflags = "NORMALIZE_WHITESPACE ELLIPSIS NUMBER"
EOF
cat >"$WORK/setup.cfg" <<'EOF'
[mutmut]
source_paths = operators/
pytest_add_cli_args_test_selection =
    tests/operators
    operators
pytest_add_cli_args =
    --doctest-modules
    --hypothesis-seed=0
use_git_change_detection = false
# a mutant that loops forever is killed after 3x its tests' clean time (+1 s), not 15x
timeout_multiplier = 3.0
EOF

names=()
for m in "$@"; do names+=("operators.${m}.*"); done

cd "$WORK"
nice -n 10 "$MUTMUT" run --max-children "$JOBS" ${names[@]+"${names[@]}"}
"$MUTMUT" results --all true >"$WORK/results.txt"

"$PY" - "$WORK/results.txt" "$@" <<'EOF'
"""Score per module from `mutmut results --all`: killed / (total - not covered by any test)."""
import collections
import re
import sys

path, mods = sys.argv[1], sys.argv[2:]
by = collections.defaultdict(collections.Counter)
for line in open(path):
    m = re.match(r"\s*(operators\.(\w+)\.\S+):\s*(.+)$", line)
    if m and (not mods or m.group(2) in mods):
        by[m.group(2)][m.group(3).strip()] += 1
print(f"{'module':12} {'killed':>7} {'total':>6} {'score':>6}  other verdicts")
for mod in sorted(by):
    c = by[mod]
    total = sum(c.values())
    killed = c["killed"]
    rest = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "killed")
    print(f"{mod:12} {killed:7d} {total:6d} {killed / total:6.1%}  {rest}")
EOF
