"""DESIGN.md: `cancelled`, `postponed` and `replaced` are claim reasons only when the event's status says
so; a postponed event's last day for claims (`claims_until`) is enforced in the venue's zone."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from states.policy import EVENT_REASONS, PolicyError, Reason, ReasonNotAllowed, check_reason_for_event, reasons_for_event

MSK = ZoneInfo("Europe/Moscow")
VVO = ZoneInfo("Asia/Vladivostok")
EVENT = datetime(2026, 12, 20, 19, 0, tzinfo=MSK)
FILED = datetime(2026, 12, 1, 12, 0, tzinfo=MSK)
STATUSES = ["scheduled", "cancelled", "postponed", "replaced"]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("reason", sorted(EVENT_REASONS))
def test_an_event_reason_needs_the_event_status_that_says_so(reason, status):
    """Regression: a buyer who picked «postponed» for a scheduled event was quoted 100 %."""
    if status == reason.value:
        assert check_reason_for_event(reason=reason, event_status=status, filed_at=FILED, event_start=EVENT) is None
        return
    with pytest.raises(ReasonNotAllowed) as refused:
        check_reason_for_event(reason=reason, event_status=status, filed_at=FILED, event_start=EVENT)
    assert refused.value.field == "reason"
    assert refused.value.code == f"EVENT_NOT_{reason.value.upper()}"
    assert refused.value.message_ru.startswith("Мероприятие не ")
    assert isinstance(refused.value, PolicyError)  # callers that map policy errors to 422 keep working


@pytest.mark.parametrize("status", ["scheduled", "postponed"])
@pytest.mark.parametrize("reason", [Reason.VOLUNTARY, Reason.ILLNESS, Reason.DEATH, Reason.OTHER])
def test_the_buyers_own_reasons_stand_while_the_event_is_on(reason, status):
    """A postponed event's buyer may still choose (the tickets stay valid for the new date)."""
    assert check_reason_for_event(reason=reason, event_status=status, filed_at=FILED, event_start=EVENT,
                                  claims_until=date(2026, 1, 1)) is None


@pytest.mark.parametrize(("status", "label"), [("cancelled", "«Отмена мероприятия»"), ("replaced", "«Замена мероприятия»")])
@pytest.mark.parametrize("reason", [Reason.VOLUNTARY, Reason.ILLNESS, Reason.DEATH, Reason.OTHER])
def test_a_cancelled_or_replaced_event_takes_only_its_own_reason(reason, status, label):
    """Regression: a voluntary claim on a cancelled event two days ahead was accepted and quoted 0 %."""
    with pytest.raises(ReasonNotAllowed) as refused:
        check_reason_for_event(reason=reason, event_status=status, filed_at=FILED, event_start=EVENT)
    assert (refused.value.field, refused.value.code) == ("reason", f"EVENT_{status.upper()}")
    assert label in refused.value.message_ru and "100 %" in refused.value.message_ru


@pytest.mark.parametrize(
    ("filed_at", "allowed"),
    [
        (datetime(2026, 6, 1, 23, 59, tzinfo=MSK), True),     # the last day itself, to its end
        (datetime(2026, 6, 2, 0, 0, tzinfo=MSK), False),      # the day after
        (datetime(2026, 6, 1, 20, 59, tzinfo=ZoneInfo("UTC")), True),
        (datetime(2026, 6, 1, 21, 0, tzinfo=ZoneInfo("UTC")), False),  # 00:00 on 2 June in Moscow
    ],
)
def test_a_postponed_events_last_day_for_claims_is_enforced(filed_at, allowed):
    """Regression: `event.claims_until` (Park Live: until 1 June 2022) was stored and never read."""
    kwargs = dict(reason=Reason.POSTPONED, event_status="postponed", filed_at=filed_at, event_start=EVENT, claims_until=date(2026, 6, 1))
    if allowed:
        check_reason_for_event(**kwargs)
        return
    with pytest.raises(ReasonNotAllowed) as refused:
        check_reason_for_event(**kwargs)
    assert refused.value.code == "CLAIMS_CLOSED"
    assert "01.06.2026" in refused.value.message_ru


def test_the_last_day_is_the_venues_day():
    # 18:00 UTC on 1 June is already 2 June in Vladivostok: too late there, in time in Moscow.
    filed = datetime(2026, 6, 1, 18, 0, tzinfo=ZoneInfo("UTC"))
    check_reason_for_event(reason="postponed", event_status="postponed", filed_at=filed, event_start=EVENT, claims_until=date(2026, 6, 1))
    with pytest.raises(ReasonNotAllowed):
        check_reason_for_event(reason="postponed", event_status="postponed", filed_at=filed,
                               event_start=EVENT.astimezone(VVO), claims_until=date(2026, 6, 1))


@pytest.mark.parametrize("status", STATUSES)
def test_the_reasons_offered_are_exactly_those_taken(status):
    """The claim form (reasons_for_event) and the filing rule (check_reason_for_event) never disagree."""
    offered = reasons_for_event(status)
    for reason in Reason:
        if reason in offered:
            check_reason_for_event(reason=reason, event_status=status, filed_at=FILED, event_start=EVENT)
        else:
            with pytest.raises(ReasonNotAllowed):
                check_reason_for_event(reason=reason, event_status=status, filed_at=FILED, event_start=EVENT)
    if status != "scheduled":
        assert offered[0] == Reason(status)  # the event's own reason first
