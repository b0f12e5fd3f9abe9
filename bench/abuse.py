"""Abuse detection on the labelled abuse stream: ROC AUC per kind, recall, false flags.

    .venv/bin/python bench/abuse.py [--users 400] [--per-kind 25] [--seeds 11 12 13] [--shards 4]

Generates :func:`liveprofile.devtools.abuse.generate_abuse` streams (human-paced crawlers, card
testers, identity bombs and normal shoppers, 14 days ending 2026-01-01) and runs each through the
dataflow's own operators (:func:`liveprofile.devtools.abuse.detect`: validation, the per-user
step with stream-time session timers, the models stage per model shard). Prints, per seed, each
kind's ROC AUC of ``anomaly_score`` against normal users and its recall (share flagged
``suspect``), and the false-flag rate of ``suspect`` on normal users. The fast, fixed-seed
version of this is tests/dataflows/test_abuse_detection.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from liveprofile.devtools.abuse import ABUSE_KINDS, AbuseConfig, detect, generate_abuse, report  # noqa: E402

END_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--per-kind", type=int, default=25)
    ap.add_argument("--days", type=float, default=14.0)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    args = ap.parse_args()
    head = "seed  events " + " ".join(f"{k + ' AUC/recall':>26}" for k in ABUSE_KINDS) + "  false flags"
    print(head)
    for seed in args.seeds:
        t = time.perf_counter()
        stream = generate_abuse(AbuseConfig(end_ms=END_MS, users=args.users, per_kind=args.per_kind, seed=seed, days=args.days))
        rep = report(stream, detect(stream, shards=args.shards))
        cols = " ".join(f"{rep[k + '_auc']:>17.3f} / {rep[k + '_recall']:.2f}" for k in ABUSE_KINDS)
        ff = f"{int(rep['false_flags'])}/{args.users} ({rep['false_flag_rate']:.3f})"
        print(f"{seed:>4} {len(stream.events):>7} {cols}  {ff}   [{time.perf_counter() - t:.0f} s]")


if __name__ == "__main__":
    main()
