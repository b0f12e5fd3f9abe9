"""Time parsing and formatting for event timestamps.

Contract: every time inside liveprofile is an ``int`` of **milliseconds since the
Unix epoch, UTC**. Cheap to compare, subtract, pickle and hash; converted to ISO
8601 with a ``Z`` only at the edges. Nothing here reads the wall clock: callers
pass ``now`` in.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from time import gmtime as _gmtime
from typing import Final

__all__ = ["TimestampError", "parse_ts", "read_ts_str", "iso", "iso_as_given", "ms_from_datetime", "parse_duration_s"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Years 1..9999 are all that datetime can represent; anything outside is nonsense.
_MIN_MS = -62135596800000
_MAX_MS = 253402300799999


class TimestampError(ValueError):
    """A timestamp that cannot be read as a point in time."""


def ms_from_datetime(dt: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (naive ones are taken as UTC).

    >>> ms_from_datetime(datetime(2024, 1, 1, tzinfo=UTC))
    1704067200000
    """
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    d = dt - _EPOCH  # seconds and microseconds are normalized >= 0, so this is the floor of the ms
    return d.days * 86_400_000 + d.seconds * 1000 + d.microseconds // 1000


def parse_ts(value: object) -> int:
    """Read a timestamp in any shape trackers send, as epoch milliseconds UTC.

    Accepted: ISO 8601 strings (``Z``, offsets, any fraction, date only,
    no zone = UTC) and numbers of epoch seconds or, above 1e11, milliseconds.

    >>> parse_ts("2024-05-01T12:00:00.123456Z")
    1714564800123
    >>> parse_ts("2024-05-01T14:00:00+02:00") == parse_ts("2024-05-01T12:00:00Z")
    True
    >>> parse_ts(1714564800), parse_ts(1714564800123)
    (1714564800000, 1714564800123)
    >>> parse_ts("yesterday")
    Traceback (most recent call last):
    ...
    operators.timeutil.TimestampError: not an ISO 8601 timestamp: 'yesterday'
    """
    if isinstance(value, str):
        return _parse_ts_str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"timestamp must be a string or number, got {type(value).__name__}"
        raise TimestampError(msg)
    if isinstance(value, float) and not math.isfinite(value):
        msg = "timestamp is not finite"
        raise TimestampError(msg)
    ms = int(value) if abs(value) > 1e11 else int(value * 1000)
    if not _MIN_MS <= ms <= _MAX_MS:
        msg = f"timestamp out of range: {value!r}"
        raise TimestampError(msg)
    return ms


#: ASCII digits to ``0``, every other byte as it is: a canonical timestamp becomes _CANONICAL
_DIGITS_TO_0: Final = bytes.maketrans(b"123456789", b"000000000")
_CANONICAL: Final = b"0000-00-00T00:00:00.000Z"
#: what _canonical_ms returns for any other text
NOT_CANONICAL: Final = -(1 << 62)


def _canonical_ms(value: str) -> int:
    """Epoch ms of ``YYYY-MM-DDTHH:MM:SS.fffZ`` (ASCII digits, a date and time that exist: what
    ``datetime.fromisoformat`` reads it as), computed straight from the digits;
    :data:`NOT_CANONICAL` for any other text (the caller then reads it with ``fromisoformat``).
    The shape analytics.js and the server SDKs send: ``fromisoformat`` and the datetime
    arithmetic cost more.

    >>> _canonical_ms("2024-05-01T12:00:00.123Z"), _canonical_ms("2024-02-30T12:00:00.123Z") == NOT_CANONICAL
    (1714564800123, True)
    """
    if len(value) != 24:
        return NOT_CANONICAL
    try:
        b = value.encode("ascii")
    except UnicodeEncodeError:
        return NOT_CANONICAL
    if b.translate(_DIGITS_TO_0) != _CANONICAL:
        return NOT_CANONICAL
    y = b[0] * 1000 + b[1] * 100 + b[2] * 10 + b[3] - 53328  # 48 * 1111: the digits' codes
    mo = b[5] * 10 + b[6] - 528  # 48 * 11
    d = b[8] * 10 + b[9] - 528
    h = b[11] * 10 + b[12] - 528
    mi = b[14] * 10 + b[15] - 528
    sec = b[17] * 10 + b[18] - 528
    if y < 1 or mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or sec > 59:
        return NOT_CANONICAL
    if mo == 2:
        if d > (29 if y % 4 == 0 and (y % 100 != 0 or y % 400 == 0) else 28):
            return NOT_CANONICAL
    elif d > (30 if mo == 4 or mo == 6 or mo == 9 or mo == 11 else 31):
        return NOT_CANONICAL
    # days since 1970-01-01 (proleptic Gregorian, as datetime counts: H. Hinnant's days_from_civil)
    yy = y - 1 if mo <= 2 else y
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * (mo - 3 if mo > 2 else mo + 9) + 2) // 5 + d - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    frac = b[20] * 100 + b[21] * 10 + b[22] - 5328  # 48 * 111
    return ((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + frac


def read_ts_str(value: str) -> int:
    """The string case of :func:`parse_ts`, not cached (for values that rarely repeat, such as
    an event's own ``timestamp``; :func:`parse_ts` caches: batches repeat ``receivedAt``/``sentAt``)."""
    ms = _canonical_ms(value)
    if ms != NOT_CANONICAL:
        return ms
    s = value.strip()
    if not s or len(s) > 64:
        msg = f"not an ISO 8601 timestamp: {value[:64]!r}"
        raise TimestampError(msg)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        # Python 3.11 reads most shapes; fall back for a lowercase 'z'/'t'
        try:
            dt = datetime.fromisoformat(s.replace("z", "Z").replace("t", "T"))
        except ValueError:
            msg = f"not an ISO 8601 timestamp: {value[:64]!r}"
            raise TimestampError(msg) from None
    try:
        return ms_from_datetime(dt)
    except OverflowError:
        msg = f"timestamp out of range: {value[:64]!r}"
        raise TimestampError(msg) from None


@lru_cache(maxsize=16384)
def iso(ms: int) -> str:
    """Format epoch milliseconds as ISO 8601 UTC with millisecond precision and ``Z``.

    >>> iso(1714564800123)
    '2024-05-01T12:00:00.123Z'
    """
    try:
        t = _gmtime(ms // 1000)
        return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t[0], t[1], t[2], t[3], t[4], t[5], ms % 1000)  # noqa: UP031 - 2.5x faster than datetime formatting
    except (OverflowError, ValueError, OSError):
        dt = _EPOCH + timedelta(milliseconds=ms)
        return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


_parse_ts_str = lru_cache(maxsize=8192)(read_ts_str)


def iso_as_given(value: object, ms: int) -> str:
    """``iso(ms)`` for the ``ms`` that ``value`` was read as, reusing ``value`` when it is
    already in that exact shape (``YYYY-MM-DDTHH:MM:SS.fffZ``, what analytics.js and the
    server SDKs send): formatting a fresh timestamp costs about a microsecond, the check a
    few comparisons. The caller guarantees ``ms == parse_ts(value)``.

    >>> iso_as_given("2024-05-01T12:00:00.123Z", 1714564800123)
    '2024-05-01T12:00:00.123Z'
    >>> iso_as_given("2024-05-01T14:00:00.123+02:00", 1714564800123)
    '2024-05-01T12:00:00.123Z'
    """
    if type(value) is str and len(value) == 24 and value[23] == "Z" and value[19] == "." and value[10] == "T" \
            and value[4] == "-" and value[7] == "-" and value[13] == ":" and value[16] == ":":  # fmt: skip
        return value
    return iso(ms)


def parse_duration_s(value: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"15m"``, ``"24h"`` or ``"7d"``.

    >>> parse_duration_s("24h"), parse_duration_s("90"), parse_duration_s("1.5m")
    (86400.0, 90.0, 90.0)
    """
    s = value.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    for suffix in ("ms", "s", "m", "h", "d"):
        if s.endswith(suffix):
            return float(s[: -len(suffix)]) * units[suffix]
    return float(s)
