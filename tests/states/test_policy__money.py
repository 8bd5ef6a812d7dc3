"""Money: rubles typed by people <-> integer kopecks."""
from __future__ import annotations

import pytest

from states.money import MoneyError, format_rub, parse_rub


@pytest.mark.parametrize(
    ("text", "kopecks"),
    [("3500.00", 350000), ("3500", 350000), ("3500,5", 350050), ("0.01", 1), ("0", 0),
     (" 12.30 ", 1230)],
)
def test_parse_rub(text, kopecks):
    assert parse_rub(text) == kopecks


@pytest.mark.parametrize(
    "text", ["-1", "-0.01", "3500.001", "1e3", "", "abc", "3 500", "١٢", "12.", ".5", "NaN"],
)
def test_parse_rub_refuses_malformed(text):
    with pytest.raises(MoneyError):
        parse_rub(text)


@pytest.mark.parametrize(("kopecks", "text"), [(175000, "1750.00"), (1, "0.01"), (0, "0.00"),
                                               (10000, "100.00"), (-5, "-0.05")])
def test_format_rub(kopecks, text):
    assert format_rub(kopecks) == text
