"""Working days left to a deadline, as the organizer page shows them (negative: overdue by that many)."""
from __future__ import annotations

from datetime import date

import pytest

from states.calendar import add_working_days, working_days_left


@pytest.mark.parametrize(("today", "due", "left"), [
    (date(2026, 12, 8), date(2026, 12, 8), 0),  # due today
    (date(2026, 12, 8), date(2026, 12, 10), 2),  # Wed, Thu
    (date(2026, 12, 11), date(2026, 12, 14), 1),  # Friday -> Monday: the weekend does not count
    (date(2026, 12, 8), date(2026, 12, 4), -2),  # due Friday: Monday and Tuesday overdue
    (date(2026, 12, 7), date(2026, 12, 4), -1),  # due Friday, Monday: one working day overdue
    (date(2026, 12, 30), date(2027, 1, 12), 2),  # across the New Year: 31 December 2026 is a day off; 11 and 12 January
])
def test_working_days_left(today, due, left):
    assert working_days_left(today, due) == left


def test_it_agrees_with_the_deadlines():
    """The n-th working day after a day is n working days away from it, whatever lies between."""
    start = date(2026, 4, 27)  # before the May holidays
    for n in (1, 5, 10, 20):
        assert working_days_left(start, add_working_days(start, n).due) == n
