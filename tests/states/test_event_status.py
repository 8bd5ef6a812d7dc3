"""states.event_status: which mass step an event's status and date allow (pure; time passed in)."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from states.event_status import EventDate, mass_status_step, postponement_refusal, taken_place

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 12, 8, 12, 0, tzinfo=MSK)
FUTURE = EventDate(NOW + timedelta(days=2))
PAST = EventDate(NOW - timedelta(days=2))


@pytest.mark.parametrize("action", ["cancelled", "replaced"])
@pytest.mark.parametrize("status", ["scheduled", "postponed"])
def test_an_event_that_has_taken_place_is_not_cancelled_or_replaced(status, action):
    """Regression: a past `scheduled` event could be cancelled and every ticket refunded."""
    step = mass_status_step(status, action, when=PAST, now=NOW)
    assert step.new_status is None and step.refusal is not None
    code, message = step.refusal
    assert code == "EVENT_TAKEN_PLACE" and message.startswith("Мероприятие уже состоялось (06.12.2026 12:00)")
    assert mass_status_step(status, action, when=FUTURE, now=NOW).new_status == action


def test_the_start_itself_counts_as_taken_place():
    assert taken_place(EventDate(NOW), NOW)
    assert not taken_place(EventDate(NOW + timedelta(minutes=1)), NOW)


@pytest.mark.parametrize("when", [EventDate(NOW - timedelta(days=30), dated=False),
                                  EventDate(NOW - timedelta(days=30), regime_on_the_day=True)])
def test_an_event_that_could_not_take_place_may_still_be_cancelled(when):
    """Postponed without a new date, or dated inside a high-alert regime (Decree 442): it did not happen."""
    assert mass_status_step("postponed" if not when.dated else "scheduled", "cancelled", when=when, now=NOW).new_status == "cancelled"
    assert postponement_refusal("scheduled", when=when, now=NOW) is None


def test_a_resumed_run_is_let_through_whatever_the_date_until_it_is_done():
    resumed = mass_status_step("cancelled", "cancelled", when=PAST, now=NOW)
    assert resumed.already and resumed.refusal is None and resumed.new_status is None
    done = mass_status_step("cancelled", "cancelled", when=FUTURE, now=NOW, run_done=True)
    assert done.refusal is not None and done.refusal[0] == "ALREADY_DONE" and done.refusal[1].startswith("Мероприятие уже отменено")
    replaced = mass_status_step("replaced", "replaced", when=FUTURE, now=NOW, run_done=True)
    assert replaced.refusal is not None and replaced.refusal[1].startswith("Мероприятие уже заменено")


def test_postponement_is_refused_for_a_past_or_finished_event():
    assert postponement_refusal("scheduled", when=FUTURE, now=NOW) is None
    refusal = postponement_refusal("scheduled", when=PAST, now=NOW)
    assert refusal is not None and refusal[0] == "EVENT_TAKEN_PLACE" and "перенести его нельзя" in refusal[1]
    assert postponement_refusal("cancelled", when=FUTURE, now=NOW) == ("EVENT_STATUS", "Мероприятие отменено или заменено: перенести его нельзя.")


def test_naive_time_is_refused():
    with pytest.raises(ValueError):
        taken_place(EventDate(datetime(2026, 12, 1)), NOW)
