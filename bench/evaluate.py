"""Quality of the behavioural intelligence against the generator's truth.

    .venv/bin/python bench/evaluate.py [--users 2000] [--bots 40]

Runs the real pipeline (private redis-server, ``python -m bytewax.run
dataflows.profiles:flow`` with its metrics API on) over a generated stream
with labelled bots (scrapers and link scanners) and planted category
preferences, then reports:

* bot detection: ROC AUC of the profiles' ``anomaly_score`` (bots vs. the
  rest), and precision / recall of ``suspect`` at the configured threshold;
* purchase propensity: the dataflow's own prequential ROC AUC (the
  ``liveprofile_propensity_roc_auc`` gauge, averaged over shards);
* interest: share of users with >= ``--min-activity`` interest events whose
  ``top_category`` is their planted preference;
* the exact-count check: profiles equal to the generator's truth.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import redis
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.pipeline import load_buffer  # noqa: E402
from liveprofile.buffer.streams import backlog  # noqa: E402
from liveprofile.devtools.generate import GenConfig, Generated, generate  # noqa: E402
from liveprofile.store.keys import Keys  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

INTEREST_EVENTS = {"Product Viewed", "Product Added", "Checkout Started", "Order Completed", "Email Link Clicked"}


def roc_auc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    >>> roc_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False])
    1.0
    >>> roc_auc([0.5, 0.5], [True, False])
    0.5
    """
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return float("nan")
    r = sum(rk for rk, y in zip(ranks, labels, strict=True) if y)
    return (r - pos * (pos + 1) / 2) / (pos * neg)


@dataclass
class Report:
    users: int
    bots: int
    bot_auc: float
    precision: float
    recall: float
    propensity_auc: float
    top_category_accuracy: float
    top_category_users: int
    exact_profiles: int

    def table(self) -> str:
        return "\n".join([
            f"users / bots                  {self.users} / {self.bots}",
            f"bot detection ROC AUC         {self.bot_auc:.3f}",
            f"suspect precision / recall    {self.precision:.3f} / {self.recall:.3f}",
            f"propensity ROC AUC (preq.)    {self.propensity_auc:.3f}",
            f"top_category accuracy         {self.top_category_accuracy:.3f}  ({self.top_category_users} users with enough activity)",
            f"profiles equal to truth       {self.exact_profiles}/{self.users}",
        ])  # fmt: skip


def interest_activity(gen: Generated) -> dict[str, int]:
    n: dict[str, int] = {}
    for e in gen.events:
        if e.get("type") == "page" or e.get("event") in INTEREST_EVENTS:
            uid = e.get("userId") or e.get("anonymousId")
            if uid:
                n[uid] = n.get(uid, 0) + 1
    return n


def evaluate(r: redis.Redis, gen: Generated, metrics_text: str, min_activity: int = 20, keys: Keys | None = None) -> Report:
    keys = keys or Keys("lp")
    uids = list(gen.truth)
    pipe = r.pipeline(transaction=False)
    for u in uids:
        pipe.hgetall(keys.profile(u))
    profiles = {u: {k.decode(): v.decode() for k, v in p.items()} for u, p in zip(uids, pipe.execute(), strict=True)}
    bots = set(gen.bots)
    scores = [float(profiles[u].get("anomaly_score") or 0) for u in uids]
    labels = [u in bots for u in uids]
    flagged = [profiles[u].get("suspect") == "1" for u in uids]
    tp = sum(1 for f, y in zip(flagged, labels, strict=True) if f and y)
    fp = sum(1 for f, y in zip(flagged, labels, strict=True) if f and not y)
    fn = sum(1 for f, y in zip(flagged, labels, strict=True) if not f and y)
    act = interest_activity(gen)
    eligible = [u for u in uids if u not in bots and act.get(u, 0) >= min_activity and u in gen.preferences]
    hits = sum(1 for u in eligible if profiles[u].get("top_category") == gen.preferences[u])
    aucs = []
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name == "liveprofile_propensity_roc_auc":
            aucs += [s.value for s in fam.samples]
    exact = sum(1 for u in uids if all(profiles[u].get(k) == v for k, v in gen.truth[u].items()))
    return Report(
        users=len(uids), bots=len(bots), bot_auc=roc_auc(scores, labels),
        precision=tp / (tp + fp) if tp + fp else float("nan"), recall=tp / (tp + fn) if tp + fn else float("nan"),
        propensity_auc=sum(aucs) / len(aucs) if aucs else float("nan"),
        top_category_accuracy=hits / len(eligible) if eligible else float("nan"), top_category_users=len(eligible),
        exact_profiles=exact,
    )  # fmt: skip


def run(users: int, bots: int, seed: int, workdir: Path, shards: int = 4) -> Report:
    srv = RedisServer(workdir / "redis").start()
    port = free_port()
    try:
        gen = generate(GenConfig(users=users, seed=seed, end_ms=int(time.time() * 1000) - 3 * 3_600_000, days=30, bots=bots, duplicate_rate=0.02))
        load_buffer(srv.url, gen.events, shards)
        env = {**os.environ, "LIVEPROFILE_REDIS_URL": srv.url, "LIVEPROFILE_SHARDS": str(shards),
               "LIVEPROFILE_TIMESTAMP_MIN": "2000-01-01T00:00:00Z", "BYTEWAX_DATAFLOW_API_ENABLED": "1",
               "BYTEWAX_DATAFLOW_API_PORT": str(port)}  # fmt: skip
        log = (workdir / "dataflow.log").open("wb")
        p = subprocess.Popen([sys.executable, "-m", "bytewax.run", "dataflows.profiles:flow"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = redis.Redis.from_url(srv.url)
            keys = Keys("lp")
            deadline = time.monotonic() + 900
            while sum(backlog(client, keys, shards).values()) > 0 or not client.exists(keys.rfm_edges):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((workdir / "dataflow.log").read_text()[-3000:])
                time.sleep(0.5)
            time.sleep(3)  # the last epoch's writes, and the timers of idle sessions
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            return evaluate(client, gen, text)
        finally:
            p.terminate()
            p.wait(30)
    finally:
        srv.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--bots", type=int, default=40)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rep = run(args.users, args.bots, args.seed, Path(d))
    print(orjson.dumps(rep.__dict__).decode() if args.json else rep.table())


if __name__ == "__main__":
    main()
