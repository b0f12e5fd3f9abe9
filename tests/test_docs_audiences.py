"""docs/audiences.md's marketer walk-through works as written: its definitions file (the yaml
block under "Walk-through") loads, holds the issue's three example audiences, and
``liveprofile definitions check`` prints exactly the output the page shows, exit code 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from operators.definitions import load_definitions

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "audiences.md"


def _walkthrough() -> str:
    text = PAGE.read_text()
    start = text.index("## Walk-through")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def test_every_yaml_block_of_the_page_loads() -> None:
    blocks = _blocks(PAGE.read_text(), "yaml")
    assert len(blocks) >= 2
    for b in blocks:
        load_definitions(b)


def test_the_walkthrough_file_has_the_three_audiences_and_checks_as_shown(tmp_path: Path) -> None:
    section = _walkthrough()
    (yaml_block,) = _blocks(section, "yaml")
    defs = load_definitions(yaml_block)
    assert [a.name for a in defs.audiences] == ["shoe_browsers_no_order", "spent_500_90d", "email_dormant_30d"]
    # the three example audiences, at the values a marketer would try
    assert defs.memberships({}, {"shoe_views_7d": 3, "orders_7d": 0, "spend_90d": 0, "emails_opened_30d": 1}) == ("shoe_browsers_no_order",)
    assert defs.memberships({}, {"shoe_views_7d": 2, "orders_7d": 0, "spend_90d": 500.01, "emails_opened_30d": 1}) == ("spent_500_90d",)
    assert defs.memberships({"email": "a@example.com"}, {"shoe_views_7d": 0, "orders_7d": 1, "spend_90d": 500, "emails_opened_30d": 0}) == ("email_dormant_30d",)
    assert defs.memberships({}, {"shoe_views_7d": 0, "orders_7d": 1, "spend_90d": 500, "emails_opened_30d": 0}) == ()
    console = next(b for b in _blocks(section, "console") if "definitions check" in b)
    cmd, _, shown = console.partition("\n")
    name = cmd.split()[-1]
    (tmp_path / name).write_text(yaml_block)
    out = subprocess.run([sys.executable, "-m", "liveprofile.cli", "definitions", "check", name], cwd=tmp_path,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == shown, out.stdout
