"""Architecture rules (docs/architecture.md): imports point only down the layers
operators -> settings -> store -> buffer -> services -> devtools -> cli; services never import
each other; operators/ stays engine-free; the code is ruff-clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"bytewax", "redis", "httpx", "requests", "starlette", "uvicorn", "confluent_kafka", "prometheus_client", "aiohttp", "liveprofile", "dataflows"}

#: package -> (rank, group). A module may import its own package and packages of a lower rank;
#: packages of one rank (the services) may not import each other.
LAYERS: dict[str, tuple[int, str]] = {
    "operators": (0, "operators"),
    "liveprofile.settings": (1, "settings"),
    "liveprofile.store": (2, "store"),
    "liveprofile.buffer": (3, "buffer"),
    "liveprofile.asgi": (4, "asgi"),
    "liveprofile.collector": (5, "collector"),
    "liveprofile.api": (5, "api"),
    "liveprofile.sync": (5, "sync"),
    "liveprofile.admin": (5, "admin"),
    "dataflows": (5, "dataflows"),
    "liveprofile.devtools": (6, "devtools"),
    "liveprofile.cli": (7, "cli"),
    "liveprofile": (7, "cli"),  # the package docstring only
}


def layer_of(module: str) -> tuple[int, str] | None:
    """The layer of a dotted module name (the longest matching package), or ``None`` if not ours."""
    best = None
    for pkg, layer in LAYERS.items():
        if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[0])):
            best = (pkg, layer)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every absolute module ``path`` imports (also inside functions: a lazy import is an import)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def imports_of(path: Path) -> set[str]:
    return {m.split(".")[0] for m in imported_modules(path)}


def violations(files: list[Path]) -> list[str]:
    bad = []
    for p in files:
        me = layer_of(module_name(p))
        assert me is not None, f"{p} is in no layer: add its package to LAYERS and docs/architecture.md"
        for m in imported_modules(p):
            it = layer_of(m)
            if it is None or it[1] == me[1]:
                continue
            if it[0] >= me[0]:
                bad.append(f"{module_name(p)} ({me[1]}) imports {m} ({it[1]})")
    return sorted(set(bad))


def production_files() -> list[Path]:
    return [p for d in ("operators", "dataflows", "liveprofile") for p in (ROOT / d).rglob("*.py")]


def test_imports_point_only_down_the_layers() -> None:
    assert violations(production_files()) == []


def test_the_rule_catches_an_upward_and_a_sideways_import(tmp_path: Path) -> None:
    """The checker itself: a store module importing the buffer, and a service importing another."""
    up = ROOT / "liveprofile" / "store" / "_layering_probe.py"
    side = ROOT / "liveprofile" / "api" / "_layering_probe.py"
    try:
        up.write_text("from liveprofile.buffer.streams import Append\n")
        side.write_text("def f():\n    from liveprofile.collector.app import CollectorApp\n")
        assert violations([up, side]) == [
            "liveprofile.api._layering_probe (api) imports liveprofile.collector.app (collector)",
            "liveprofile.api._layering_probe (api) imports liveprofile.collector.app.CollectorApp (collector)",
            "liveprofile.store._layering_probe (store) imports liveprofile.buffer.streams (buffer)",
            "liveprofile.store._layering_probe (store) imports liveprofile.buffer.streams.Append (buffer)",
        ]
    finally:
        up.unlink(missing_ok=True)
        side.unlink(missing_ok=True)


def test_every_package_is_in_a_layer() -> None:
    pkgs = {module_name(p.parent / "__init__.py") for p in production_files() if p.name == "__init__.py"}
    assert all(layer_of(p) is not None for p in pkgs), pkgs


def test_operators_import_no_engine_or_io() -> None:
    bad = {str(p.relative_to(ROOT)): sorted(imports_of(p) & FORBIDDEN) for p in (ROOT / "operators").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
