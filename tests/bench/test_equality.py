"""``bench/equality.py``: the cross-version comparison really compares.

Real redis-servers and real dataflow processes of two git worktrees. The committed HEAD (its
pure-Python operators: a fresh worktree has no compiled modules) against this tree (compiled
where built) must be equal key by key; a tree whose profile sink drops a field must not be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "equality.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip


@pytest.mark.slow
def test_head_equals_itself_and_a_dropped_field_is_found(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    out = _run("HEAD", "--users", "80")
    assert out.returncode == 0 and "equal: yes" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    # a mutated version (its profile sink loses the RFM fields) in a worktree of its own
    tree = tmp_path / "mutant"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), "HEAD"], check=True)
    try:
        sink = tree / "dataflows" / "sinks" / "profile.py"
        text = sink.read_text()
        assert "fields.update(rfm_fields(edges, out.rfm))" in text
        sink.write_text(text.replace("fields.update(rfm_fields(edges, out.rfm))", "pass"))
        ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
        rev = subprocess.run(["git", "-C", str(tree), "stash", "create"], capture_output=True, text=True, check=True,
                             env={**os.environ, **ident}).stdout.strip()  # a commit object of the mutant, no branch  # fmt: skip
        assert rev
        out = _run("HEAD", "--head", rev, "--users", "80")
        assert out.returncode == 1 and "equal: NO" in out.stdout and "rfm_" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
