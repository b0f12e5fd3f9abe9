"""operators.timeutil: every shape of timestamp trackers send, to epoch ms UTC and back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from operators.timeutil import TimestampError, iso, ms_from_datetime, parse_duration_s, parse_ts

_MIN_MS, _MAX_MS = -62135596800000, 253402300799999  # 0001-01-01 .. 9999-12-31T23:59:59.999
ms_any = st.integers(_MIN_MS, _MAX_MS)
# naive datetimes on purpose: a timestamp without a zone is read as UTC
NAIVE_LO, NAIVE_HI = datetime(1900, 1, 2), datetime(9998, 12, 30)  # noqa: DTZ001
NAIVE_EPOCH = datetime(1970, 1, 1)  # noqa: DTZ001
ms_modern = st.integers(10**11 + 1, 4_102_444_800_000)  # 1973 .. 2100: the numeric-ms range


@settings(max_examples=300, deadline=None)
@given(ms_any)
def test_iso_round_trips_every_representable_millisecond(ms: int) -> None:
    text = iso(ms)
    assert text.endswith("Z") and len(text) == 24 and text[10] == "T" and text[19] == "."
    assert parse_ts(text) == ms
    assert parse_ts(text.lower()) == ms  # lowercase 't'/'z'
    assert ms_from_datetime(datetime.fromisoformat(text)) == ms


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=NAIVE_LO, max_value=NAIVE_HI), st.integers(-14 * 60, 14 * 60))
def test_offsets_are_converted_to_utc(naive: datetime, offset_min: int) -> None:
    """An ISO string with any offset (or none: UTC) is the same instant in epoch ms; the
    fraction is truncated to the millisecond, never rounded up."""
    aware = naive.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    utc_ms = (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert parse_ts(aware.isoformat()) == utc_ms
    assert parse_ts(f"  {aware.isoformat()} ") == utc_ms
    naive_ms = (naive - NAIVE_EPOCH) // timedelta(milliseconds=1)
    assert parse_ts(naive.isoformat()) == naive_ms
    assert ms_from_datetime(naive) == naive_ms
    assert parse_ts(naive.isoformat() + "Z") == naive_ms


@settings(max_examples=300, deadline=None)
@given(ms_modern)
def test_numbers_are_seconds_below_1e11_and_milliseconds_above(ms: int) -> None:
    assert parse_ts(ms) == ms
    assert parse_ts(float(ms)) == ms
    secs = ms // 1000
    assert parse_ts(secs) == secs * 1000
    assert parse_ts(secs + 0.5) == secs * 1000 + 500


def test_number_threshold_and_edges() -> None:
    assert parse_ts(10**11) == 10**14  # exactly 1e11: still seconds
    assert parse_ts(10**11 + 1) == 10**11 + 1  # above: milliseconds
    assert parse_ts(-(10**10)) == -(10**13)
    assert parse_ts(0) == 0 and parse_ts(0.001) == 1
    assert parse_ts(_MAX_MS) == _MAX_MS and parse_ts(_MIN_MS) == _MIN_MS
    assert parse_ts("2024-05-01") == 1714521600000  # date only: midnight UTC
    assert parse_ts("2024-05-01T12:00:00.9999999Z") == 1714564800999  # truncated


@pytest.mark.parametrize(
    ("value", "match"),
    [(True, "string or number"), (None, "string or number"), ([1], "string or number"),
     (float("nan"), "not finite"), (float("inf"), "not finite"), (_MAX_MS + 1, "out of range"),
     (_MIN_MS - 1, "out of range"), (1e17, "out of range"), ("", "not an ISO"), ("   ", "not an ISO"),
     ("yesterday", "not an ISO"), ("2024-13-01", "not an ISO"), ("2" * 65, "not an ISO"),
     ("2024-05-01T12:00:00+25:00", "not an ISO"), ("10000-01-01T00:00:00Z", "not an ISO")],
)  # fmt: skip
def test_rejections(value: object, match: str) -> None:
    with pytest.raises(TimestampError, match=match):
        parse_ts(value)
    if isinstance(value, str):  # the parse cache does not turn a second try into a success
        with pytest.raises(TimestampError):
            parse_ts(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [([1], "timestamp must be a string or number, got list"), (float("nan"), "timestamp is not finite"),
     (1e17, "timestamp out of range: 1e+17"), ("nope", "not an ISO 8601 timestamp: 'nope'")],
)  # fmt: skip
def test_rejection_messages(value: object, message: str) -> None:
    with pytest.raises(TimestampError) as exc:
        parse_ts(value)
    assert str(exc.value) == message


def test_timestamp_error_is_a_value_error() -> None:
    assert issubclass(TimestampError, ValueError)


def test_iso_outside_gmtime_range_falls_back() -> None:
    assert iso(_MIN_MS) == "0001-01-01T00:00:00.000Z"
    assert iso(_MAX_MS) == "9999-12-31T23:59:59.999Z"
    assert iso(-1) == "1969-12-31T23:59:59.999Z"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("24h", 86400.0), ("7d", 604800.0),
     ("250ms", 0.25), (" 1.5M ", 90.0), ("0", 0.0), ("2H", 7200.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


def test_parse_duration_rejects_junk() -> None:
    for bad in ("", "h", "1x", "ten minutes"):
        with pytest.raises(ValueError):
            parse_duration_s(bad)


@settings(max_examples=800, deadline=None)
@given(st.one_of(
    st.integers(min_value=-62135596800000, max_value=253402300799999).map(iso),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T t][0-9]{2}:[0-9]{2}:[0-9]{2}[.,][0-9]{3}[Zz]\Z"),
    st.text(alphabet="0123456789-T:.Z+ z٣²", min_size=22, max_size=26),
    st.integers(min_value=0, max_value=2**41),
))  # fmt: skip
@example("2024-05-01 12:00:00.123Z").via("space separator")
@example("2024-05-01T12:00:00,123Z").via("comma fraction")
@example("2024-05-01T12:00:00.123z").via("lowercase z")
@example("2024-05-01T12:00:00.123+00:00").via("offset")
def test_iso_as_given_is_iso_of_what_the_value_was_read_as(value: object) -> None:
    """The reuse of a given timestamp string never changes the result: it is ``iso`` of the
    value's reading, for every value :func:`parse_ts` accepts."""
    from operators.timeutil import iso_as_given

    try:
        ms = parse_ts(value)
    except TimestampError:
        return
    assert iso_as_given(value, ms) == iso(ms)


def _by_fromisoformat(value: str) -> int | None:
    """What read_ts_str read every string as before its canonical-shape reader: fromisoformat
    (and its lower-case retry), then ms_from_datetime; ``None`` where that raises."""
    s = value.strip()
    for text in (s, s.replace("z", "Z").replace("t", "T")):
        try:
            return ms_from_datetime(datetime.fromisoformat(text))
        except ValueError:
            continue
        except OverflowError:
            return None
    return None


_canonical_texts = st.builds(
    lambda y, mo, d, h, mi, s, ms: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z",
    st.one_of(st.integers(0, 9999), st.sampled_from([0, 1, 4, 100, 400, 1600, 1900, 1969, 1970, 2000, 2024, 2100, 9999])),
    st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61), st.integers(0, 61), st.integers(0, 999),
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    _canonical_texts,
    st.tuples(_canonical_texts, st.integers(0, 23), st.sampled_from(list("0:-.TZz /+a\u0663\uff12"))).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]),
))  # fmt: skip
@example("2024-02-29T23:59:59.999Z")
@example("1900-02-29T00:00:00.000Z")
@example("0000-01-01T00:00:00.000Z")
@example("1969-12-31T23:59:59.999Z")
@example("2024-05-01T24:00:00.000Z")
@example("2024-05-01T12:00:60.000Z")
@example("\uff12024-05-01T12:00:00.000Z")
def test_read_ts_str_reads_the_canonical_shape_as_fromisoformat_does(value: str) -> None:
    """The canonical shape's own reader (``YYYY-MM-DDTHH:MM:SS.fffZ``, computed from the digits)
    gives what fromisoformat gives, and a text it does not take still reads (or fails) as before."""
    from operators.timeutil import NOT_CANONICAL, _canonical_ms, read_ts_str

    want = _by_fromisoformat(value)
    got = _canonical_ms(value)
    if got != NOT_CANONICAL:
        assert got == want, value
    if want is None:
        with pytest.raises(TimestampError):
            read_ts_str(value)
    else:
        assert read_ts_str(value) == want
