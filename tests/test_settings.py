"""Settings that are printed (``liveprofile config``) must never show any part of a secret."""

from __future__ import annotations

import orjson

from liveprofile.settings import Settings, key_fingerprint


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
