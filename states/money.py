"""Money as integer kopecks: parse rubles typed by people, format kopecks for people and JSON.

Pure: no I/O. Decimal is used only at the text boundary; everything inside is `int` kopecks.
"""
from __future__ import annotations

import re
from decimal import Decimal

__all__ = ["MoneyError", "parse_rub", "format_rub"]

# Digits, then optionally a point or comma and 1-2 digits. No sign, no exponent, no spaces inside.
_RUB_PATTERN = re.compile(r"(?P<rub>[0-9]+)(?:[.,](?P<kop>[0-9]{1,2}))?")


class MoneyError(ValueError):
    """A money amount that is not a non-negative ruble amount with at most two decimals."""


def parse_rub(text: str) -> int:
    """Parse a ruble amount ("3500.00", "3500", "3500,5") into integer kopecks.

    Refuses negative amounts, more than two decimals, exponents, and anything that is not a number.
    """
    if not isinstance(text, str):
        raise MoneyError(f"amount must be text, got {type(text).__name__}")
    cleaned = text.strip()
    if cleaned.startswith("-"):
        raise MoneyError(f"amount must not be negative: {text!r}")
    match = _RUB_PATTERN.fullmatch(cleaned)
    if match is None:
        raise MoneyError(f"malformed ruble amount {text!r} (expected e.g. 3500.00, at most 2 decimals)")
    amount = Decimal(match["rub"] + "." + (match["kop"] or "0"))
    return int(amount * 100)


def format_rub(kopecks: int) -> str:
    """Format integer kopecks as rubles with two decimals: 175000 -> "1750.00"."""
    if isinstance(kopecks, bool) or not isinstance(kopecks, int):
        raise MoneyError(f"kopecks must be an int, got {type(kopecks).__name__}")
    sign = "-" if kopecks < 0 else ""
    rub, kop = divmod(abs(kopecks), 100)
    return f"{sign}{rub}.{kop:02d}"
