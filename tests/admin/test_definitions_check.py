"""``liveprofile definitions check FILE`` (liveprofile/admin/definitions.py), run through
``liveprofile.cli.main``: exit 0 with a summary for SPEC §6's example, exit 1 with every error as
``FILE:LINE:COL: message`` for a broken file, exit 1 for a file that cannot be read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from liveprofile.cli import main
from operators.definitions import SPEC_EXAMPLE
from tests.operators.test_definitions import BROKEN


def test_cli_check_ok_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "defs.yaml"
    good.write_text(SPEC_EXAMPLE)
    assert main(["definitions", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "3 computed traits, 1 audience" in out and "shoe_views_7d" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN)
    assert main(["definitions", "check", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 11
    assert all(re.match(rf"^{re.escape(str(bad))}:\d+:\d+: ", line) for line in err), err
    assert err[0].startswith(f"{bad}:3:11: ")
    late = tmp_path / "late.yaml"
    late.write_text("version: 1\naudiences:\n  - {name: champs, when: rfm_segment == \"champions\"}\n  - {name: carts, when: cart_value > 0}\n")
    assert main(["definitions", "check", str(late)]) == 0
    out = capsys.readouterr().out
    assert '  audience champs: rfm_segment == "champions" [late: reads RFM or model fields, decided when they are scored]' in out
    assert "  audience carts: cart_value > 0\n" in out + "\n"
    assert main(["definitions", "check", str(tmp_path / "missing.yaml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_the_docs_show_what_check_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "audiences.md").read_text()
    f = tmp_path / "definitions.yaml"
    f.write_text(SPEC_EXAMPLE)
    assert main(["definitions", "check", str(f)]) == 0
    for line in capsys.readouterr().out.splitlines()[1:]:
        assert line in page, line
    bad = tmp_path / "broken.yaml"
    bad.write_text(BROKEN)
    assert main(["definitions", "check", str(bad)]) == 1
    for line in capsys.readouterr().err.splitlines():
        shown = line.replace(str(bad), "broken.yaml")
        assert shown in page or not any(shown.split(": ", 1)[0] in p for p in page.splitlines()), shown
