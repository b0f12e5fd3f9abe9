"""The README documents every setting (the table is generated: liveprofile config --markdown)."""

from __future__ import annotations

from pathlib import Path

from liveprofile.settings import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name in SETTINGS if f"`{name}`" not in README]
    assert not missing, f"README lacks {missing}: regenerate the table with `liveprofile config --markdown`"


def test_readme_starts_with_the_two_commands() -> None:
    head = README.split("## ", 1)[0]
    assert "./dev.sh demo" in head and "./dev.sh test" in head
