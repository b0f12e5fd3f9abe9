"""Deterministic A/B assignment, exposure recording and the per-variant report.

**Assignment** (pure): ``u = SHA-256(name, salt, user id)[:8] / 2**64`` (the
UTF-8 of the three joined by U+001F; the first 8 bytes big-endian) is
uniform in [0, 1) and stable; the variant is the first whose cumulative share
exceeds ``u``. No state: every process, every day, gives a user the same
variant as long as the experiment's variants, weights and salt stay the same.

**Exposures.** The first time a user is exposed to an experiment, one Lua
script writes ``{p}:experiment:{name}:exposures`` HASH field ``user_id`` =
JSON ``{"v": variant, "at": time, "pc": purchase_count, "rev": revenue_total}``
(the user's purchases *at exposure*; ``HSETNX``, so later exposures change
nothing) and the API appends a Segment ``track`` event ``Experiment Viewed``
(properties ``experiment``/``variant`` and Segment's ``experiment_name``/
``variation_name``; ``messageId`` ``exp:{name}:{user}`` so the dataflow
de-duplicates it) to the buffer, like the collector does. A suppressed (forgotten) user is never
recorded (the script checks ``{p}:suppressed``), and ``liveprofile forget`` deletes the user's
exposures of every experiment.

**Report** (:func:`report`): per variant, exposed users; conversions = users
whose ``purchase_count`` grew after exposure; conversion rate; revenue =
growth of ``revenue_total`` after exposure (exact decimals).

With a Redis Cluster the exposures hash is per user group
(``{p}:{g}:experiment:{name}:exposures``, in the slot of the group's profiles:
the script reads the profile and writes the exposures together); the report
reads every group's.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from itertools import accumulate

import orjson
import redis

from liveprofile.api.config import Experiment
from liveprofile.store.keys import Keys
from liveprofile.store.scripts import lua_source
from operators.names import EventName

__all__ = ["assign", "assign_all", "exposures_key", "EXPOSE_LUA", "VariantStats", "report", "exposure_event"]

EXPOSE_LUA = lua_source("expose")


def _unit(exp: Experiment, user_id: str) -> float:
    h = hashlib.sha256(f"{exp.name}\x1f{exp.salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign(exp: Experiment, user_id: str) -> str:
    """The variant of ``user_id`` in ``exp`` (deterministic).

    >>> e = Experiment("subject", ("a", "b"), (1.0, 1.0))
    >>> assign(e, "u1") == assign(e, "u1")
    True
    >>> assign(Experiment("x", ("only",), (5.0,)), "anyone")
    'only'
    """
    cum = list(accumulate(exp.weights))
    i = bisect_right(cum, _unit(exp, user_id) * cum[-1])
    return exp.variants[min(i, len(exp.variants) - 1)]


def assign_all(experiments: Iterable[Experiment], user_id: str) -> dict[str, str]:
    """Variant per experiment for one user."""
    return {e.name: assign(e, user_id) for e in experiments}


def exposures_key(prefix: str, name: str) -> str:
    """The exposures hash of experiment ``name`` in the single-Redis layout (:meth:`Keys.exposures_in`)."""
    return Keys(prefix).exposures_in(0, name)


def exposure_event(name: str, variant: str, user_id: str, ts: str) -> dict[str, object]:
    """The Segment ``Experiment Viewed`` track event of a first exposure."""
    return {
        "type": "track", "userId": user_id, "event": EventName.EXPERIMENT_VIEWED, "timestamp": ts,
        "messageId": f"exp:{name}:{user_id}",
        "properties": {"experiment": name, "variant": variant, "experiment_name": name, "variation_name": variant},
        "context": {"library": {"name": "liveprofile-api"}},
    }  # fmt: skip


@dataclass(slots=True)
class VariantStats:
    """One variant's line of the report."""

    variant: str
    exposures: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal("0.00")

    @property
    def conversion_rate(self) -> float:
        return self.conversions / self.exposures if self.exposures else 0.0


def _dec(v: object) -> Decimal:
    try:
        return Decimal(str(v)) if v not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def report(client: redis.Redis, keys: Keys | str, exp: Experiment | str, *, chunk: int = 1000) -> list[VariantStats]:
    """Exposures, conversions, conversion rate and revenue after exposure, per variant
    (``keys``: the layout, or a prefix for the single-Redis one)."""
    keys = Keys(keys) if isinstance(keys, str) else keys
    name = exp if isinstance(exp, str) else exp.name
    stats: dict[str, VariantStats] = {}
    if not isinstance(exp, str):
        for v in exp.variants:
            stats[v] = VariantStats(v)
    for g in keys.groups:
        cursor = 0
        while True:
            cursor, batch = client.hscan(keys.exposures_in(g, name), cursor, count=chunk)
            if batch:
                users = list(batch)
                pipe = client.pipeline(transaction=False)
                for u in users:
                    pipe.hmget(keys.profile(_s(u) or ""), "purchase_count", "revenue_total")
                for u, (pc, rev) in zip(users, pipe.execute(), strict=True):
                    rec = orjson.loads(batch[u])
                    st = stats.setdefault(rec["v"], VariantStats(rec["v"]))
                    st.exposures += 1
                    if _dec(_s(pc)) > _dec(rec.get("pc")):
                        st.conversions += 1
                        st.revenue += max(Decimal(0), _dec(_s(rev)) - _dec(rec.get("rev")))
            if cursor == 0:
                break
    return list(stats.values())


def _s(v: object) -> str | None:
    return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))
