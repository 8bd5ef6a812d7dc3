"""Issue 8, policy corrections, through the database (SQLite and PostgreSQL): each test once failed on main."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from models.claim_store import TransitionRefused, apply_batch, apply_trigger, file_claims
from models.tables import Claim, Event
from states.policy import Reason, ReasonNotAllowed
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
claim_t, event_t = Claim.__table__, Event.__table__
EVENT = datetime(2026, 3, 20, 19, 0, tzinfo=MSK)
FILED = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)  # a Sunday; 10 working days later: 16.03.2026 (9 March is off)


def _ticket(conn, *, status: str = "scheduled", claims_until: date | None = None) -> int:
    event_id = factories.event(conn, starts_at=EVENT, status=status)
    if claims_until is not None:
        conn.execute(update(event_t).where(event_t.c.id == event_id).values(claims_until=claims_until))
    return factories.ticket(conn, event_id=event_id, order_id=factories.order(conn, created_at=EVENT - timedelta(days=60)))


def _claims(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(claim_t)).scalar_one()


@pytest.mark.parametrize("reason", [Reason.POSTPONED, Reason.CANCELLED, Reason.REPLACED])
def test_an_event_reason_for_a_scheduled_event_is_refused_at_filing(engine, reason):
    """Regression: «postponed» picked for a scheduled event was filed and auto-approved at 100 %."""
    with pytest.raises(ReasonNotAllowed) as refused:
        with engine.begin() as conn:
            file_claims(conn, ticket_ids=[_ticket(conn)], reason=reason, actor="buyer", now=FILED)
    assert (refused.value.field, refused.value.code) == ("reason", f"EVENT_NOT_{reason.value.upper()}")
    assert _claims(engine) == 0


def test_a_postponed_event_takes_postponed_claims_until_its_last_day(engine):
    """Regression: `event.claims_until` was never read; claims for a postponed event were taken forever."""
    with engine.begin() as conn:
        ticket_id = _ticket(conn, status="postponed", claims_until=date(2026, 3, 5))
        other = _ticket(conn, status="postponed", claims_until=date(2026, 3, 5))
    with pytest.raises(ReasonNotAllowed) as refused:
        with engine.begin() as conn:
            file_claims(conn, ticket_ids=[ticket_id], reason=Reason.POSTPONED, actor="buyer", now=datetime(2026, 3, 6, 0, 0, tzinfo=MSK))
    assert refused.value.code == "CLAIMS_CLOSED" and "05.03.2026" in refused.value.message_ru
    with engine.begin() as conn:
        (claim_id,) = file_claims(conn, ticket_ids=[other], reason=Reason.POSTPONED, actor="buyer", now=datetime(2026, 3, 5, 23, 59, tzinfo=MSK))
        assert apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=FILED).dest == "approved"


def _illness_claim(engine) -> int:
    with engine.begin() as conn:
        ticket_id = factories.ticket_for_event(conn, event_start=EVENT)
        (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=Reason.ILLNESS, actor="buyer", now=FILED)
        assert apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=FILED).dest == "awaiting_documents"
    return claim_id


def _documents_arrive(engine, claim_id: int, at: datetime) -> None:
    with engine.begin() as conn:
        factories.document(conn, claim_id=claim_id, received_at=at, sick_from=date(2026, 3, 15), sick_to=date(2026, 3, 25))
        assert apply_trigger(conn, claim_id=claim_id, trigger="submit_documents", actor="buyer", now=at).dest == "awaiting_organizer"


def test_a_claim_is_not_escalated_minutes_after_its_documents_arrive(engine):
    """Regression: the decision deadline counted from filing (due 16.03), so documents sent on 30.03 (in
    time: to 24:00 of 03.04) made the claim escalate at the next sla-watch run."""
    claim_id = _illness_claim(engine)
    arrived = datetime(2026, 3, 30, 10, 0, tzinfo=MSK)
    _documents_arrive(engine, claim_id, arrived)
    with engine.connect() as conn:
        row = conn.execute(select(claim_t.c.decidable_on, claim_t.c.decision_due).where(claim_t.c.id == claim_id)).one()
    assert tuple(row) == (date(2026, 3, 30), date(2026, 4, 13))  # 10 working days from the decidable day

    minutes_later = arrived + timedelta(minutes=5)
    result = apply_batch(engine, claim_ids=[claim_id], trigger="escalate", actor="sla-watch", now=minutes_later)
    assert dict(result.moved) == {} and [c for c, _ in result.refused[claim_id]] == ["NOT_OVERDUE"]
    with pytest.raises(TransitionRefused):
        with engine.begin() as conn:
            apply_trigger(conn, claim_id=claim_id, trigger="escalate", actor="sla-watch", now=datetime(2026, 4, 13, 23, 59, tzinfo=MSK))
    result = apply_batch(engine, claim_ids=[claim_id], trigger="escalate", actor="sla-watch", now=datetime(2026, 4, 14, 0, 1, tzinfo=MSK))
    assert dict(result.moved) == {"escalated": [claim_id]}


def test_extend_review_gives_20_working_days_from_the_decidable_day(engine):
    """Regression: the extension counted 20 working days from filing (31.03), already past when the
    documents had come on 30.03."""
    claim_id = _illness_claim(engine)
    _documents_arrive(engine, claim_id, datetime(2026, 3, 30, 10, 0, tzinfo=MSK))
    with engine.begin() as conn:
        apply_trigger(conn, claim_id=claim_id, trigger="extend_review", actor="organizer:1", now=datetime(2026, 4, 1, 9, tzinfo=MSK))
    with engine.connect() as conn:
        due = conn.execute(select(claim_t.c.decision_due).where(claim_t.c.id == claim_id)).scalar_one()
    assert due == date(2026, 4, 27)  # 20 working days after 30.03.2026


def test_documents_on_the_evening_of_the_14th_day_are_in_time(engine):
    """Regression: the window closed at the event's hour (19:00) on its 14th day, not at 24:00."""
    claim_id = _illness_claim(engine)
    evening = datetime(2026, 4, 3, 22, 30, tzinfo=MSK)
    with engine.begin() as conn:
        with pytest.raises(TransitionRefused):
            apply_trigger(conn, claim_id=claim_id, trigger="expire_documents", actor="sla-watch", now=evening)
    _documents_arrive(engine, claim_id, evening)
    with engine.begin() as conn:
        assert apply_trigger(conn, claim_id=claim_id, trigger="approve", actor="organizer:1", now=evening + timedelta(days=1)).dest == "approved"
