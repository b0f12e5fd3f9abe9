"""Settings that are printed (``liveprofile config``) must never show any part of a secret."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from liveprofile.settings import ConfigError, Settings, key_fingerprint


def test_masked_shows_no_character_of_a_write_key_or_url_password() -> None:
    keys = ["wk_live_9f8e7d6c5b4a", "browser-pub-0123456789"]
    s = Settings.from_env({"LIVEPROFILE_WRITE_KEYS": ",".join(keys), "LIVEPROFILE_REDIS_URL": "redis://u:hunter2pass@db:6379/0"})
    text = orjson.dumps(s.masked(), default=str).decode()
    shown = " ".join(s.masked()["write_keys"])  # type: ignore[arg-type]
    for k in keys:
        assert k[:2] not in shown.removeprefix("sha256:"), shown  # the old mask kept the first two characters
        assert not any(k[i : i + 6] in text for i in range(len(k) - 5)), k
    assert "hunter2" not in text and "db:6379/0" in text
    assert s.masked()["write_keys"] == [key_fingerprint(k) for k in keys]
    assert len(set(s.masked()["write_keys"])) == 2  # keys stay distinguishable


def test_definitions_are_loaded_at_start_and_an_invalid_file_refuses_with_every_error(tmp_path: Path) -> None:
    from operators.definitions import SPEC_EXAMPLE

    good = tmp_path / "defs.yaml"
    good.write_text(SPEC_EXAMPLE)
    s = Settings.from_env({"LIVEPROFILE_DEFINITIONS": str(good)})
    assert s.definitions is not None and s.user.definitions is s.definitions
    assert [t.name for t in s.definitions.computed_traits] == ["shoe_views_7d", "orders_7d", "spend_90d"]
    assert Settings.from_env({}).definitions is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\naudiences:\n  - {name: a, when: rfm_r.x > 1}\n  - {name: B, when: cart_items > 1}\n")
    with pytest.raises(ConfigError) as e:
        Settings.from_env({"LIVEPROFILE_DEFINITIONS": str(bad)})
    assert f"{bad}:3:" in str(e.value) and f"{bad}:4:" in str(e.value)
    with pytest.raises(ConfigError, match="cannot read"):
        Settings.from_env({"LIVEPROFILE_DEFINITIONS": str(tmp_path / "missing.yaml")})


def test_overlap_io_reads_its_three_modes_and_the_older_on() -> None:
    read = lambda v: Settings.from_env({"LIVEPROFILE_OVERLAP_IO": v}).overlap_io  # noqa: E731
    assert Settings.from_env({}).overlap_io == "replies"
    assert [read(v) for v in ("replies", "Threads", "off", "on")] == ["replies", "threads", "off", "threads"]
    with pytest.raises(ConfigError, match="LIVEPROFILE_OVERLAP_IO must be one of"):
        read("yes")
