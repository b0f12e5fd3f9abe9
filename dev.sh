#!/usr/bin/env bash
# liveprofile developer entry point.
#   ./dev.sh demo   set everything up (venv, package, redis-server) and run the local demo
#   ./dev.sh test   set everything up and run the whole test suite (what CI runs): compiled
#                   operators, then tests/operators + tests/dataflows again with the pure ones
#                   (./dev.sh test ARGS...: pytest ARGS, compiled, only)
#   ./dev.sh setup  only set up
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq >/dev/null || true
  as_root apt-get install -y -qq "$@" >/dev/null
}

setup() {
  local need=()
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  if [ "${1:-}" = test ]; then
    command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    # tests/browser: Debian's Chromium (Playwright drives it; a browser is never downloaded)
    [ -x /usr/bin/chromium ] || need+=(chromium)
    # tests/browser and the server-SDK tests: the SDKs come from the npm registry (npm ci by the tests)
    command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
  fi
  if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then need+=(python3-venv); fi
  if [ "${LIVEPROFILE_NO_COMPILE:-0}" = 0 ]; then  # the mypyc build of operators/ (setup.py)
    command -v gcc >/dev/null 2>&1 || need+=(gcc)
    "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
      || need+=("$(basename "$PY")-dev")
  fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing system packages: ${need[*]}" >&2
    apt_install "${need[@]}"
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "creating the virtualenv .venv" >&2
    "$PY" -m venv .venv
  fi
  # the install (and the mypyc build) is skipped when nothing it depends on changed since the
  # last one: the packaging files, every operators/ source (a compiled module built from an older
  # source would be stale) and the compile switch; the rest of the tree is an editable install
  local stamp=.venv/.liveprofile-build
  local want
  want="$(cat setup.py pyproject.toml operators/*.py | sha256sum | cut -d' ' -f1) compile=${LIVEPROFILE_NO_COMPILE:-0}"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -f "$stamp"
    echo "installing liveprofile and its dependencies into .venv (quiet; first run takes a minute)" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    # also compiles operators/'s hot modules with mypyc (setup.py; a failed build fails here)
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,kafka]'
    if [ "${LIVEPROFILE_NO_COMPILE:-0}" = 0 ]; then
      .venv/bin/python -c 'import operators, sys; m = operators.compiled_modules(); sys.exit(0 if m else "the mypyc build left no compiled operators modules (see setup.py)")'
    fi
    echo "$want" > "$stamp"
  fi
  if [ "${1:-}" = test ] && ! command -v kubectl >/dev/null 2>&1 && ! command -v kustomize >/dev/null 2>&1; then
    PYTHON=.venv/bin/python bash deploy/tools/fetch-kubectl.sh >/dev/null   # kustomize for tests/deploy
  fi
}

case "${1:-demo}" in
  setup) setup test ;;
  demo)  setup demo; shift || true; exec .venv/bin/liveprofile demo "$@" ;;
  test)  setup test; shift || true
         if [ $# -gt 0 ]; then exec .venv/bin/python -m pytest -q --durations=30 "$@"; fi
         # the whole suite on the compiled operators, then the pure ones (LIVEPROFILE_PURE=1, see
         # operators/__init__.py) on the operators' and adapters' tests and doctests
         .venv/bin/python -m pytest -q --durations=30
         echo "again with the pure-Python operators (LIVEPROFILE_PURE=1): tests/operators tests/dataflows and their doctests" >&2
         LIVEPROFILE_PURE=1 exec .venv/bin/python -m pytest -q tests/operators tests/dataflows operators dataflows ;;
  *) echo "usage: $0 demo|test|setup" >&2; exit 2 ;;
esac
