"""tasks.intake.file_buyer_claim: a cancelled or replaced event takes only its own reason (states.policy);
a postponed event's buyer may still choose. Both backends."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from models.claim_store import claim_t
from tasks.intake import IntakeError, file_buyer_claim
from tests import factories as f

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def _ticket(engine, status: str) -> int:
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + timedelta(days=2), status=status)
        order = f.order(conn, created_at=NOW - timedelta(days=30))
        return f.ticket(conn, event_id=event, order_id=order)


@pytest.mark.parametrize(("status", "label"), [("cancelled", "«Отмена мероприятия»"), ("replaced", "«Замена мероприятия»")])
@pytest.mark.parametrize("reason", ["voluntary", "illness", "other"])
def test_a_personal_reason_on_a_cancelled_or_replaced_event_is_refused(engine, status, label, reason):
    """Regression: a voluntary claim on an event cancelled two days ahead was filed and quoted 0 %."""
    ticket = _ticket(engine, status)
    with pytest.raises(IntakeError) as refused:
        file_buyer_claim(engine, ticket_id=ticket, reason=reason, now=NOW, actor="buyer:order:1", start_flow=False)
    assert (refused.value.field, refused.value.status) == ("reason", 422)
    assert label in refused.value.message_ru and "100 %" in refused.value.message_ru
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(claim_t)).scalar_one() == 0
    filed = file_buyer_claim(engine, ticket_id=ticket, reason=status, now=NOW, actor="buyer:order:1", start_flow=False)
    assert filed.quote["percent"] == 100


def test_a_postponed_events_buyer_may_still_choose_a_voluntary_refund(engine):
    ticket = _ticket(engine, "postponed")
    filed = file_buyer_claim(engine, ticket_id=ticket, reason="voluntary", now=NOW, actor="buyer:order:1", start_flow=False)
    assert filed.quote["percent"] == 0  # two days before: Art. 52.1, the buyer's own choice
