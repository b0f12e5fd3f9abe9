"""Exact money: amounts are integer cents, never floats.

Trackers send money as JSON numbers (``19.99``), which a float cannot hold
exactly; summing thousands of them as floats drifts. We read the *decimal text*
of the number (orjson gives a float whose ``repr`` is the shortest string that
round-trips, i.e. what the tracker wrote) and round half-even to cents once.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

__all__ = ["MoneyError", "to_cents", "format_cents", "MAX_CENTS"]

#: Largest accepted single amount: 10^13 cents (one hundred billion units).
MAX_CENTS = 10**13
_CENT = Decimal("0.01")


class MoneyError(ValueError):
    """A money field that is not a finite, non-negative number."""


def to_cents(value: object) -> int:
    """Convert a money value to integer cents.

    Numbers and numeric strings are accepted; booleans, NaN, infinities,
    negatives and absurdly large values are not.

    >>> to_cents(19.99), to_cents(3), to_cents("0.105"), to_cents("1e2")
    (1999, 300, 10, 10000)
    >>> sum(to_cents(0.1) for _ in range(10))
    100
    >>> to_cents(-1)
    Traceback (most recent call last):
    ...
    operators.money.MoneyError: must not be negative: -1
    """
    if isinstance(value, bool):
        msg = f"must be a number, got {value!r}"
        raise MoneyError(msg)
    if isinstance(value, int):
        if value < 0:
            msg = f"must not be negative: {value}"
            raise MoneyError(msg)
        if value * 100 > MAX_CENTS:
            msg = f"implausibly large: {value}"
            raise MoneyError(msg)
        return value * 100
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"must be finite, got {value!r}"
            raise MoneyError(msg)
        text = repr(value)
        # Fast exact path for the common shape "123.45" (no exponent, <= 2 decimals).
        whole, dot, frac = text.partition(".")
        if dot and len(frac) <= 2 and "e" not in frac and whole.isdigit() and len(whole) <= 11:
            return int(whole) * 100 + int(frac.ljust(2, "0"))
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 40:
            msg = "numeric string too long"
            raise MoneyError(msg)
    else:
        msg = f"must be a number, got {type(value).__name__}"
        raise MoneyError(msg)
    try:
        d = Decimal(text)
    except InvalidOperation:
        msg = f"not a number: {text[:40]!r}"
        raise MoneyError(msg) from None
    if not d.is_finite():
        msg = f"must be finite, got {text[:40]!r}"
        raise MoneyError(msg)
    if d < 0:
        msg = f"must not be negative: {text[:40]}"
        raise MoneyError(msg)
    if d > MAX_CENTS / 100:
        msg = f"implausibly large: {text[:40]}"
        raise MoneyError(msg)
    return int((d.quantize(_CENT) * 100).to_integral_value())


def format_cents(cents: int) -> str:
    """Render integer cents as a decimal string with two places.

    >>> format_cents(123456), format_cents(5), format_cents(0)
    ('1234.56', '0.05', '0.00')
    """
    sign = "-" if cents < 0 else ""
    q, r = divmod(abs(cents), 100)
    return f"{sign}{q}.{r:02d}"
