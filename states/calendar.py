"""The Russian production calendar: working days, and deadlines counted in working days.

Source of truth: `holidays.RU` (fixed holidays, holidays moved off weekends, and the government's
yearly transfers of days off, with working Saturdays). A year whose transfers the installed
`holidays` release does not know yet gives a *provisional* deadline, flagged, never silently
presented as final: computed with the statutory rule of Art. 112 of the Labour Code (a holiday on a
Saturday or Sunday moves the day off to the next working day; the January holidays excepted, since
only the yearly decree moves those), applied by the library's own observed-holiday rule.

Pure: no I/O, no clock. The holidays object is built once per process and shared.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache

import holidays
from holidays.countries.russia import Russia
from holidays.observed_holiday_base import SAT_SUN_TO_NEXT_WORKDAY

__all__ = [
    "CalendarError",
    "Deadline",
    "PUBLISHED_YEARS",
    "DECISION_WORKING_DAYS",
    "DECISION_WORKING_DAYS_EXTENDED",
    "PAYOUT_WORKING_DAYS",
    "is_published",
    "is_working_day",
    "add_working_days",
    "decision_deadline",
    "payout_deadline",
]

DECISION_WORKING_DAYS = 10
DECISION_WORKING_DAYS_EXTENDED = 20
PAYOUT_WORKING_DAYS = 10


class CalendarError(ValueError):
    """Bad input to a working-day computation (e.g. a count below 1, or a date past the calendar's end)."""


def _published_years() -> frozenset[int]:
    """Years whose production calendar (transfers of days off) `holidays.RU` knows.

    `holidays` encodes each year's government decree on transfers as an entry of
    `special_public_holidays` keyed by year (every year since 2005 has one, because the New Year
    holidays always cover a weekend). A year is published when it is not later than the last year
    with such an entry; derived from the data so a `holidays` upgrade extends it without code.
    """
    transfer_years = [
        year
        for year, entries in Russia(years=[]).special_public_holidays.items()
        if entries
    ]
    return frozenset(range(Russia.start_year, max(transfer_years) + 1))


PUBLISHED_YEARS: frozenset[int] = _published_years()

# `holidays` fills years lazily on first lookup (a dict mutation); lookups share one lock so
# threads (Prefect task runners) never see a half-filled year.
_LOCK = threading.Lock()


class ProductionCalendar(Russia):
    """`holidays.RU`, and for a year without published transfers, Art. 112 of the Labour Code: a
    non-working holiday on a Saturday or Sunday gives a day off on the next working day (the library's
    SAT_SUN_TO_NEXT_WORKDAY rule), except the January holidays (Art. 112 excepts 1-8 January)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, observed_rule=SAT_SUN_TO_NEXT_WORKDAY, **kwargs)

    def _populate_public_holidays(self) -> None:
        super()._populate_public_holidays()
        if is_published(self._year):
            return  # the government's decree for the year (special holidays) decides
        for day in sorted(d for d in list(self) if d.year == self._year and d.month != 1):
            self._add_observed(day)


@cache
def _russian_calendar() -> holidays.HolidayBase:
    return ProductionCalendar(years=range(min(PUBLISHED_YEARS) + 20, max(PUBLISHED_YEARS) + 6))


@dataclass(frozen=True)
class Deadline:
    """A due date; `provisional` when it depends on a year whose transfers are not yet published."""

    due: date
    provisional: bool

    def to_json(self) -> dict:
        return {"deadline": self.due.isoformat(), "provisional": self.provisional}


def is_published(year: int) -> bool:
    """Whether the production calendar (transfers of days off) of `year` is known."""
    return year in PUBLISHED_YEARS


def is_working_day(day: date) -> bool:
    """Russian production calendar: weekends and holidays are off, working Saturdays are on."""
    with _LOCK:
        return _russian_calendar().is_working_day(day)


def add_working_days(start: date, n: int) -> Deadline:
    """The n-th working day after `start` (`start` itself is not counted, whatever it is).

    Provisional when any year from `start` to the due date has no published transfers.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CalendarError(f"working days must be an integer of at least 1, got {n!r}")
    if n > (date.max - start).days:  # n working days take at least n calendar days: fail before walking them
        raise CalendarError(f"{n} working days after {start.isoformat()} fall beyond the end of the calendar")
    return _add_working_days(start, n)


@lru_cache(maxsize=4096)
def _add_working_days(start: date, n: int) -> Deadline:
    # Cached: a batch of thousands of claims decided on one day asks for the same deadline.
    try:
        with _LOCK:
            due = _russian_calendar().get_nth_working_day(start, n)
    except (OverflowError, ValueError):
        raise CalendarError(f"{n} working days after {start.isoformat()} fall beyond the end of the calendar") from None
    provisional = any(not is_published(year) for year in range(start.year, due.year + 1))
    return Deadline(due=due, provisional=provisional)


def decision_deadline(filed_on: date, *, extended: bool = False) -> Deadline:
    """Decree 1491: the organizer decides within 10 working days of the claim, 20 if extended."""
    days = DECISION_WORKING_DAYS_EXTENDED if extended else DECISION_WORKING_DAYS
    return add_working_days(filed_on, days)


def payout_deadline(decided_on: date) -> Deadline:
    """Decree 1491: money is paid within 10 working days of the decision to refund."""
    return add_working_days(decided_on, PAYOUT_WORKING_DAYS)


def working_days_left(today: date, due: date) -> int:
    """Working days from `today` (not counted) to `due` (counted): 0 when due today, negative past it
    (how many working days overdue). Counts the Russian production calendar, like the deadlines."""
    if due == today:
        return 0
    step = 1 if due > today else -1
    count, day = 0, today
    while day != due:
        day = date.fromordinal(day.toordinal() + step)
        # Past the due date, the due day itself is the first day overdue only if it is a working day.
        if is_working_day(day if step > 0 else date.fromordinal(day.toordinal() + 1)):
            count += step
    return count
