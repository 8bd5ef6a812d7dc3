"""`vozvrat deadline`: working days on the Russian production calendar."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from states.calendar import PUBLISHED_YEARS

runner = CliRunner()


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        ("2024-12-26", "10", {"deadline": "2025-01-20", "provisional": False}),
        ("2024-12-26", "2", {"deadline": "2024-12-28", "provisional": False}),
        ("2026-03-06", "1", {"deadline": "2026-03-10", "provisional": False}),
        (f"{max(PUBLISHED_YEARS)}-12-20", "20", None),
    ],
)
def test_deadline_json(start, n, expected):
    result = runner.invoke(app, ["deadline", "--from", start, "--working-days", n, "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    if expected is None:  # spans into the first year without published transfers
        assert data["provisional"] is True
        assert data["deadline"].startswith(str(max(PUBLISHED_YEARS) + 1))
    else:
        assert data == expected


def test_deadline_human_output():
    result = runner.invoke(app, ["deadline", "--from", "2024-12-26", "--working-days", "10"])
    assert result.exit_code == 0 and "2025-01-20" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2024-12-26", "--working-days", "0"], "at least 1"),
        (["--from", "2024-12-26", "--working-days", "-3"], "at least 1"),
        (["--from", "2024-12-26", "--working-days", "ten"], "whole number"),
        (["--from", "26.12.2024", "--working-days", "10"], "--from: malformed date"),
        (["--from", "2024-02-30", "--working-days", "10"], "--from: malformed date"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    result = runner.invoke(app, ["deadline", *args, "--json"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.parametrize(
    ("start", "n"),
    [("9999-12-20", "10"), ("9999-12-31", "1"), ("2026-01-01", "3000000"), ("2026-01-01", "99999999999999999999")],
)
def test_dates_past_the_end_of_the_calendar_are_one_line_and_exit_code_2(start, n):
    """Regression: 9999-12-20 + 10 working days raised OverflowError out of holidays (a traceback)."""
    result = runner.invoke(app, ["deadline", "--from", start, "--working-days", n, "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "beyond the end of the calendar" in lines[0]


def test_an_unpublished_year_follows_art_112_and_stays_provisional():
    """Regression: for a year without published transfers a holiday on a weekend gave no day off."""
    from datetime import date, timedelta

    from states.calendar import is_working_day

    year = next(y for y in range(max(PUBLISHED_YEARS) + 1, max(PUBLISHED_YEARS) + 12) if date(y, 11, 4).weekday() == 5)
    friday = date(year, 11, 3)
    result = runner.invoke(app, ["deadline", "--from", friday.isoformat(), "--working-days", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    # Saturday 4 November moves the day off to Monday 6 November: the next working day is Tuesday.
    assert json.loads(result.stdout) == {"deadline": (friday + timedelta(days=4)).isoformat(), "provisional": True}
    assert not is_working_day(friday + timedelta(days=3))
