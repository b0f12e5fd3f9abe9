"""operators.money: exact cents from what trackers send, and back."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.money import MAX_CENTS, MoneyError, format_cents, to_cents

cents = st.integers(0, MAX_CENTS)


@settings(max_examples=300, deadline=None)
@given(cents)
def test_two_place_amounts_are_exact_in_every_shape(c: int) -> None:
    """An amount of whole cents reads back exactly as a float (what orjson gives for a JSON
    number), as its decimal text, padded, or in exponent form, and formats back to that text."""
    text = format_cents(c)
    assert Decimal(text) == Decimal(c) / 100
    assert to_cents(float(text)) == c
    assert to_cents(text) == c
    assert to_cents(f"  {text}  ") == c
    assert to_cents(f"{Decimal(text):E}") == c
    assert format_cents(to_cents(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX_CENTS // 100))
def test_integers_are_whole_units(n: int) -> None:
    assert to_cents(n) == 100 * n
    assert to_cents(float(n)) == 100 * n
    assert format_cents(to_cents(n)) == f"{n}.00"


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=0, max_value=10**9, places=4, allow_nan=False, allow_infinity=False))
def test_more_places_round_half_even_once(d: Decimal) -> None:
    """Sub-cent amounts round half-even to cents, exactly once, from the decimal text."""
    want = int(d.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN) * 100)
    assert to_cents(str(d)) == want
    assert to_cents(float(str(d))) == want


@pytest.mark.parametrize(
    ("value", "cents_"),
    [("0.105", 10), ("0.115", 12), ("0.125", 12), (0.005, 0), (0.015, 2), ("1e2", 10000), (19.99, 1999),
     (0.1, 10), (1.5, 150), (1.05, 105), (123.4, 12340), ("007.50", 750), (0, 0), (-0.0, 0)],
)  # fmt: skip
def test_known_values(value: object, cents_: int) -> None:
    assert to_cents(value) == cents_
    assert type(to_cents(value)) is int


def test_sum_of_many_floats_does_not_drift() -> None:
    assert sum(to_cents(0.1) for _ in range(1000)) == 10_000
    assert sum(to_cents(19.99) for _ in range(1000)) == 1_999_000


def test_bounds() -> None:
    assert to_cents(MAX_CENTS // 100) == MAX_CENTS
    assert to_cents(str(MAX_CENTS // 100)) == MAX_CENTS
    assert to_cents(float(MAX_CENTS // 100)) == MAX_CENTS
    for too_big in (MAX_CENTS // 100 + 1, str(MAX_CENTS // 100 + 1), float(MAX_CENTS // 100 + 1), 1e300):
        with pytest.raises(MoneyError, match="large"):
            to_cents(too_big)


@pytest.mark.parametrize(
    ("value", "match"),
    [(True, "number"), (False, "number"), (None, "number"), ([1], "number"), ({"a": 1}, "number"),
     (-1, "negative"), (-0.01, "negative"), ("-3", "negative"), (float("nan"), "finite"),
     (float("inf"), "finite"), ("inf", "finite"), ("NaN", "finite"), ("abc", "not a number"),
     ("", "not a number"), ("1" * 41, "too long"), ("1,5", "not a number")],
)  # fmt: skip
def test_rejections(value: object, match: str) -> None:
    with pytest.raises(MoneyError, match=match):
        to_cents(value)


def test_numeric_strings_up_to_40_characters() -> None:
    assert to_cents("0." + "0" * 37 + "1") == 0  # 40 characters: read
    assert to_cents(" " * 10 + "12.5" + " " * 30) == 1250  # padding does not count
    with pytest.raises(MoneyError, match="^numeric string too long$"):
        to_cents("0." + "0" * 38 + "1")


@pytest.mark.parametrize(
    ("value", "message"),
    [([1], "must be a number, got list"), (None, "must be a number, got NoneType"),
     (True, "must be a number, got True"), (-2, "must not be negative: -2"),
     (" -2.5 ", "must not be negative: -2.5"), ("x1", "not a number: 'x1'"),
     ("inf", "must be finite, got 'inf'"), (float("nan"), "must be finite, got nan"),
     (10**12, "implausibly large: 1000000000000"), ("1e12", "implausibly large: 1e12")],
)  # fmt: skip
def test_rejection_messages(value: object, message: str) -> None:
    """The message is what a dead letter shows: it names the offending value."""
    with pytest.raises(MoneyError) as exc:
        to_cents(value)
    assert str(exc.value) == message


def test_money_error_is_a_value_error() -> None:
    assert issubclass(MoneyError, ValueError)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**15), 10**15))
def test_format_cents_is_exact_and_signed(c: int) -> None:
    text = format_cents(c)
    assert Decimal(text) == Decimal(c) / 100
    assert text.split(".")[1].isdigit() and len(text.split(".")[1]) == 2
    assert text.startswith("-") == (c < 0)
