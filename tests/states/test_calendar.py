"""Russian production calendar (holidays.RU): working days, deadlines, provisional years."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from holidays.countries.russia import RussiaStaticHolidays

from states.calendar import (
    PUBLISHED_YEARS,
    CalendarError,
    Deadline,
    add_working_days,
    decision_deadline,
    is_published,
    is_working_day,
    payout_deadline,
)

FIRST_UNPUBLISHED = max(PUBLISHED_YEARS) + 1


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2024, 12, 27), True),
        (date(2024, 12, 28), True),    # working Saturday (moved to 30 December)
        (date(2024, 12, 29), False),
        (date(2024, 12, 30), False),   # day off moved from 28 December
        (date(2024, 12, 31), False),   # day off moved from 7 January
        (date(2025, 1, 8), False),
        (date(2025, 1, 9), True),
        (date(2025, 11, 1), True),     # working Saturday 2025
        (date(2025, 11, 3), False),
        (date(2025, 12, 31), False),
        (date(2026, 1, 9), False),     # moved from Saturday 3 January
        (date(2026, 1, 12), True),
        (date(2026, 3, 9), False),     # 8 March 2026 is a Sunday: Monday 9 March is off
        (date(2026, 3, 10), True),
        (date(2026, 12, 31), False),   # moved from Sunday 4 January 2026
    ],
)
def test_is_working_day(day, working):
    assert is_working_day(day) is working


@pytest.mark.parametrize(
    ("start", "n", "due"),
    [
        (date(2024, 12, 26), 10, date(2025, 1, 20)),  # across the working Saturday and NY 2025
        (date(2024, 12, 26), 2, date(2024, 12, 28)),  # the working Saturday counts
        (date(2024, 12, 28), 1, date(2025, 1, 9)),
        (date(2025, 1, 1), 1, date(2025, 1, 9)),      # start on a holiday: not counted
        (date(2025, 12, 30), 1, date(2026, 1, 12)),   # New Year 2026, with 9 January off
        (date(2025, 12, 26), 10, date(2026, 1, 21)),
        (date(2026, 3, 6), 1, date(2026, 3, 10)),     # skips the weekend and 9 March
        (date(2026, 12, 30), 1, date(2027, 1, 11)),
    ],
)
def test_add_working_days(start, n, due):
    assert add_working_days(start, n) == Deadline(due=due, provisional=False)


def test_published_years_come_from_the_holidays_data():
    last_transfer_year = max(RussiaStaticHolidays.special_public_holidays)
    assert max(PUBLISHED_YEARS) == last_transfer_year
    assert {2024, 2025, 2026} <= PUBLISHED_YEARS
    assert is_published(2026) and not is_published(FIRST_UNPUBLISHED)


def test_a_deadline_reaching_an_unpublished_year_is_provisional():
    last = max(PUBLISHED_YEARS)
    inside = add_working_days(date(last, 6, 1), 10)
    across = add_working_days(date(last, 12, 20), 20)
    beyond = add_working_days(date(FIRST_UNPUBLISHED, 3, 2), 1)
    assert not inside.provisional
    assert across.due.year == FIRST_UNPUBLISHED and across.provisional
    assert beyond.provisional
    # Provisional is still not weekends-only: fixed New Year holidays are skipped.
    new_year = add_working_days(date(FIRST_UNPUBLISHED - 1, 12, 31), 1)
    assert new_year.provisional and new_year.due >= date(FIRST_UNPUBLISHED, 1, 9)


@pytest.mark.parametrize(
    ("filed_on", "extended", "due"),
    [
        (date(2024, 12, 26), False, date(2025, 1, 20)),
        (date(2024, 12, 26), True, date(2025, 2, 3)),
        (date(2026, 2, 27), False, date(2026, 3, 16)),  # 9 March off
    ],
)
def test_decision_deadline(filed_on, extended, due):
    assert decision_deadline(filed_on, extended=extended).due == due


def test_payout_deadline_is_ten_working_days_after_the_decision():
    # May 2025: 1, 2 (moved from 4 January), 8 (moved from 23 February) and 9 May are off.
    assert payout_deadline(date(2025, 4, 28)) == Deadline(date(2025, 5, 16), provisional=False)


@pytest.mark.parametrize("n", [0, -1, True, 1.5])
def test_working_days_must_be_at_least_one(n):
    with pytest.raises(CalendarError):
        add_working_days(date(2025, 1, 9), n)


# --- Art. 112 of the Labour Code for a year without published transfers ----------------------------

FIXED_HOLIDAYS = [(2, 23), (3, 8), (5, 1), (5, 9), (6, 12), (11, 4)]  # Art. 112, outside January


@pytest.mark.parametrize("year", range(FIRST_UNPUBLISHED, FIRST_UNPUBLISHED + 6))
def test_an_unpublished_year_moves_a_weekend_holiday_to_the_next_working_day(year):
    """Regression: a provisional year counted only weekends and fixed holidays, so a holiday on a Saturday
    or Sunday gave no day off and deadlines fell a day early."""
    for month, day in FIXED_HOLIDAYS:
        holiday = date(year, month, day)
        assert not is_working_day(holiday)
        if holiday.weekday() < 5:
            continue
        moved = holiday + timedelta(days=1)
        while moved.weekday() >= 5 or (moved.month, moved.day) in FIXED_HOLIDAYS:
            moved += timedelta(days=1)
        assert not is_working_day(moved), (holiday, moved)
        assert is_working_day(moved + timedelta(days=1)) or (moved + timedelta(days=1)).weekday() >= 5


@pytest.mark.parametrize("year", range(FIRST_UNPUBLISHED, FIRST_UNPUBLISHED + 6))
def test_an_unpublished_year_does_not_move_the_january_holidays(year):
    """Art. 112 excepts 1-8 January: only the yearly decree moves those, so the first weekday after them works."""
    first_weekday = next(date(year, 1, d) for d in range(9, 16) if date(year, 1, d).weekday() < 5)
    assert is_working_day(first_weekday)


def test_unity_day_on_a_saturday_in_an_unpublished_year_gives_monday_off_provisionally():
    """Art. 112: 4 November on a Saturday moves the day off to Monday 6 November (2028 is the first such
    year now; taken from the unpublished years, so the test keeps meaning once 2028's decree is out)."""
    year = next(y for y in range(FIRST_UNPUBLISHED, FIRST_UNPUBLISHED + 30) if date(y, 11, 4).weekday() == 5)
    assert not is_published(year)
    # One working day after Friday 3 November is Tuesday 7 November; ten after 27 October is 13 November.
    assert add_working_days(date(year, 11, 3), 1) == Deadline(date(year, 11, 7), provisional=True)
    assert decision_deadline(date(year, 10, 27)) == Deadline(date(year, 11, 13), provisional=True)


def test_a_published_year_is_left_to_its_decree():
    # 2026: 8 March is a Sunday and the decree gives Monday 9 March; 4 January's move went to 31 December.
    assert not is_working_day(date(2026, 3, 9)) and not is_working_day(date(2026, 12, 31))
    assert is_working_day(date(2026, 1, 12))


@pytest.mark.parametrize(("start", "n"), [(date(9999, 12, 20), 10), (date(9999, 12, 31), 1), (date.max, 20)])
def test_a_deadline_past_the_end_of_the_calendar_is_a_calendar_error(start, n):
    """Regression: an OverflowError escaped from holidays' date arithmetic (a traceback in `vozvrat deadline`)."""
    with pytest.raises(CalendarError, match="beyond the end of the calendar"):
        add_working_days(start, n)
