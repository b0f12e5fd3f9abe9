"""The docs cannot rot: the README's first screen is the quick start and its links resolve, the
settings table in docs/configuration.md is exactly what the code generates, and the docs site
(mkdocs-material) builds with ``--strict`` (a broken link, a page missing from the nav or a bad
anchor fails the build)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from liveprofile.settings import SETTINGS, settings_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONFIG_PAGE = (ROOT / "docs" / "configuration.md").read_text()
#: a first screen: what it is, the two commands and what they do, before any section
FIRST_SCREEN_LINES = 30


def test_readme_first_screen_is_the_quick_start() -> None:
    head = README.split("\n## ", 1)[0]
    assert "./dev.sh demo" in head and "./dev.sh test" in head
    assert head.count("\n") <= FIRST_SCREEN_LINES, "the README's first screen must be the quick start"
    assert len(README) < 8_000, "the README is the front page; the rest belongs in docs/"


def test_readme_links_resolve() -> None:
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert local, "the README points to the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing


def test_the_settings_table_is_generated_from_the_code() -> None:
    assert settings_markdown() in CONFIG_PAGE, "regenerate docs/configuration.md's table: liveprofile config --markdown"
    assert all(f"`{name}`" in CONFIG_PAGE for name in SETTINGS)


def test_docs_site_builds_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    built = {p.relative_to(tmp_path / "site").parts[0] for p in (tmp_path / "site").rglob("index.html")}
    pages = {p.stem for p in (ROOT / "docs").glob("*.md") if p.stem != "index"}
    assert pages <= built, pages - built
