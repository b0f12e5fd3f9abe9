"""Content templates render off the event loop, under CPU-time and output-size limits (issue 12
item 6): the real API under uvicorn on loopback, against a real redis-server. While a template
with nested loops (or ``x ** 9999999``) renders, ``/healthz`` answers as usual; the bad render
ends in a 500 with its reason, within a bound; the next render works.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.api.conftest import ApiServer

LOOPS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}done"


def _in_background(api: ApiServer, path: str) -> tuple[threading.Thread, dict[str, httpx.Response]]:
    out: dict[str, httpx.Response] = {}

    def run() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{api.port}", headers=api.client.headers, timeout=60) as c:
            out["resp"] = c.get(path)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_a_looping_template_does_not_block_healthz_and_ends_in_500(make_api: Callable[..., ApiServer], templates: Path) -> None:
    (templates / "loops.html").write_text(LOOPS)
    (templates / "hello.html").write_text("hello {{ user_id }}")
    api = make_api(LIVEPROFILE_API_TEMPLATES=str(templates), LIVEPROFILE_API_TEMPLATE_TIMEOUT="3")
    assert api.get("/v1/content/u1/hello", timeout=60).text == "hello u1"  # the render workers are up
    t, out = _in_background(api, "/v1/content/u1/loops")
    # /healthz answers (each within its 2 s client timeout) while the looping render is outstanding
    in_flight = 0
    for _ in range(5):
        assert httpx.get(f"http://127.0.0.1:{api.port}/healthz", timeout=2).status_code == 200
        in_flight += t.is_alive() and "resp" not in out
    assert in_flight >= 1  # at least one answer came while the render ran (it runs >= the 3 s limit)
    t.join(30)
    resp = out["resp"]  # the render ended (join bounds it), refused by the 3 s CPU limit
    assert resp.status_code == 500 and resp.json()["error"] == "template_timeout", resp.text
    assert api.get("/v1/content/u2/hello", timeout=60).text == "hello u2"  # new workers (started again) render


def test_huge_numbers_and_outputs_are_refused(make_api: Callable[..., ApiServer], templates: Path) -> None:
    (templates / "power.html").write_text("{{ 10 ** 9999999 }}")
    (templates / "repeat.html").write_text("{{ 'x' * 100000000 }}")
    (templates / "flood.html").write_text("{% for a in range(100000) %}{{ 'abcdefghij' * 100 }}{% endfor %}")
    api = make_api(LIVEPROFILE_API_TEMPLATES=str(templates), LIVEPROFILE_API_TEMPLATE_TIMEOUT="5")
    assert api.get("/v1/content/u1/power", timeout=60).status_code == 500  # the render workers are up
    for slot, code in (("power", "template_error"), ("repeat", "template_error"), ("flood", "template_output_too_large")):
        resp = api.get(f"/v1/content/u1/{slot}", timeout=30)
        assert resp.status_code == 500 and resp.json()["error"] == code, (slot, resp.text)
    assert httpx.get(f"http://127.0.0.1:{api.port}/healthz", timeout=2).status_code == 200
