"""Every Lua script lives in its own file under ``liveprofile/store/lua/`` and is loaded from there.

Fails when a script is written back into a Python string, when a ``.lua`` file is added but not
listed (or listed but missing), when a file does not document its KEYS, or when a script does
not compile in a real redis-server."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
import redis

from liveprofile.store.scripts import SCRIPT_NAMES, lua_source

ROOT = Path(__file__).resolve().parent.parent
LUA_DIR = ROOT / "liveprofile" / "store" / "lua"
#: what only Lua says; a Python string holding one of these is a script in the wrong home
LUA_MARKERS = ("redis.call(", "redis.pcall(", "cjson.", "KEYS[1]", "ARGV[1]")


def _python_strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }  # fmt: skip
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]  # fmt: skip


def test_no_lua_in_python_strings() -> None:
    found = []
    for folder in ("liveprofile", "dataflows", "operators"):
        for path in (ROOT / folder).rglob("*.py"):
            for line, text in _python_strings(path):
                if any(m in text for m in LUA_MARKERS):
                    found.append(f"{path.relative_to(ROOT)}:{line}")
    assert not found, f"Lua belongs in liveprofile/store/lua/*.lua: {found}"


def test_every_script_file_is_listed_documented_and_packaged() -> None:
    assert sorted(p.stem for p in LUA_DIR.glob("*.lua")) == sorted(SCRIPT_NAMES)
    for name in SCRIPT_NAMES:
        src = lua_source(name)
        assert src.startswith("--") and "KEYS[1]" in src.split("\n\n")[0], f"{name}.lua: header must name its KEYS/ARGV"
    with pytest.raises(KeyError):
        lua_source("nope")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "lua/*.lua" in data["liveprofile.store"]  # a wheel (the Docker image) ships them


def test_every_script_compiles_in_redis(r: redis.Redis) -> None:
    for name in SCRIPT_NAMES:
        sha = r.script_load(lua_source(name))
        assert r.script_exists(sha) == [True], name
