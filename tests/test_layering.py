"""Architecture rules: operators/ stays engine-free; the code is ruff-clean."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"bytewax", "redis", "httpx", "requests", "starlette", "uvicorn", "confluent_kafka", "prometheus_client", "aiohttp", "liveprofile", "dataflows"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_operators_import_no_engine_or_io() -> None:
    bad = {str(p.relative_to(ROOT)): sorted(imports_of(p) & FORBIDDEN) for p in (ROOT / "operators").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_dataflows_do_not_import_services() -> None:
    services = {"liveprofile.collector", "liveprofile.cli", "liveprofile.demo", "liveprofile.replay"}
    for p in (ROOT / "dataflows").rglob("*.py"):
        tree = ast.parse(p.read_text())
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not mods & services, p


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
