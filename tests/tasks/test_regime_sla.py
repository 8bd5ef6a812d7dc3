"""sla-watch's Decree 442 alerts (tasks/sla.py), the clock passed in: the 14-day publication and the 180-day refund."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from models.claim_store import apply_trigger, claim_t, file_claims, outbox_t
from states.policy import Reason
from tasks.postponement import record_postponement
from tasks.regimes import add_regime, end_regime
from tasks.sla import regime_deadline_alerts
from tests import factories as f

MSK = ZoneInfo("Europe/Moscow")
OPS = "ops@example.ru"
REGIME_ENDS = date(2026, 4, 30)  # publication due 14 May, refunds due 27 October


def _at(day: date, hour: int = 10) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=MSK).replace(hour=hour)


def _world(engine):
    with engine.begin() as conn:
        org = f.organizer(conn, email="org@example.ru", name="Агентство")
        here, there = f.venue(conn, region="77"), f.venue(conn, region="50")
        stuck = f.event(conn, starts_at=datetime(2026, 4, 10, 19, 0, tzinfo=MSK), organizer_id=org, venue_id=here, title="Несостоявшийся концерт")
        f.event(conn, starts_at=datetime(2026, 4, 11, 19, 0, tzinfo=MSK), organizer_id=org, venue_id=there, title="В другом регионе")
        f.event(conn, starts_at=datetime(2026, 6, 11, 19, 0, tzinfo=MSK), organizer_id=org, venue_id=here, title="После режима")
    regime = add_regime(engine, region="77", starts_on=date(2026, 3, 16), actor="staff:supervisor:s@example.ru", now=_at(date(2026, 3, 16)))
    end_regime(engine, regime_id=regime.id, ends_on=REGIME_ENDS, actor="staff:supervisor:s@example.ru", now=_at(REGIME_ENDS))
    return org, stuck


def _notices(engine, kind: str):
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_t.c.recipient, outbox_t.c.payload).where(outbox_t.c.template == "regime_deadline_notice")
                            .order_by(outbox_t.c.id)).all()
    return [(r.recipient, r.payload["alert"], r.payload["days"]) for r in rows if r.payload["kind"] == kind]


@pytest.mark.parametrize(("day", "expected"), [
    (date(2026, 5, 6), []),
    (date(2026, 5, 7), [("warning", 7)]),
    (date(2026, 5, 14), [("warning", 1)]),  # the last day: warned, still in time
    (date(2026, 5, 15), [("overdue", 1)]),  # the next day: escalated
])
def test_publication_within_14_days_of_the_regimes_end(engine, day, expected):
    _world(engine)
    report = regime_deadline_alerts(engine, now=_at(day), ops_email=OPS)
    assert [(p["alert"], p["days"]) for p in report.publication] == expected  # only the unpublished event of the regime's region
    assert sorted(_notices(engine, "publication")) == sorted((who, a, d) for a, d in expected for who in ("org@example.ru", OPS))
    regime_deadline_alerts(engine, now=_at(day, hour=18), ops_email=OPS)  # sla-watch runs again that day: nothing new
    assert len(_notices(engine, "publication")) == 2 * len(expected)


def test_a_published_postponement_stops_the_publication_alerts(engine):
    _, stuck = _world(engine)
    record_postponement(engine, event_id=stuck, new_starts_at=_at(date(2027, 4, 10), 19), claims_until=None, actor="organizer:1", now=_at(date(2026, 5, 5)))
    assert regime_deadline_alerts(engine, now=_at(date(2026, 5, 13)), ops_email=OPS).publication == []


def test_an_event_postponed_without_a_date_is_still_to_publish(engine):
    _, stuck = _world(engine)
    record_postponement(engine, event_id=stuck, new_starts_at=None, claims_until=None, actor="organizer:1", now=_at(date(2026, 4, 5)))
    assert [p["event_id"] for p in regime_deadline_alerts(engine, now=_at(date(2026, 5, 13)), ops_email=OPS).publication] == [stuck]


@pytest.mark.parametrize(("day", "expected"), [
    (date(2026, 9, 26), []),
    (date(2026, 9, 27), [("warning", 30)]),
    (date(2026, 10, 20), [("warning", 7)]),
    (date(2026, 10, 28), [("overdue", 1)]),
])
def test_refund_within_180_days_of_the_regimes_end_warned_at_30_and_7_days(engine, day, expected):
    """A regime that ends while claims are open: the claim approved during the regime (10 working days)
    gets the 180-day deadline when the regime ends; unpaid, sla-watch warns and then escalates."""
    with engine.begin() as conn:
        org = f.organizer(conn, email="org@example.ru")
        regime = f.regime(conn, region="77", starts_on=date(2026, 3, 16))
        venue = f.venue(conn, region="77")
        event = f.event(conn, starts_at=datetime(2026, 4, 10, 19, 0, tzinfo=MSK), organizer_id=org, venue_id=venue, status="cancelled", regime_id=regime)
        ticket = f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=datetime(2026, 2, 1, tzinfo=MSK), payment_method="cash"))
        (claim,) = file_claims(conn, ticket_ids=[ticket], reason=Reason.CANCELLED, actor="buyer", now=_at(date(2026, 4, 1)))
        apply_trigger(conn, claim_id=claim, trigger="assess", actor="system", now=_at(date(2026, 4, 1)))
        apply_trigger(conn, claim_id=claim, trigger="start_payout", actor="system", now=_at(date(2026, 4, 1)))  # cash: waits for bank details
        assert conn.execute(select(claim_t.c.regime_refund_due).where(claim_t.c.id == claim)).scalar_one() is None  # regime in force
    end_regime(engine, regime_id=regime, ends_on=REGIME_ENDS, actor="staff:supervisor:s@example.ru", now=_at(REGIME_ENDS))
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.state, claim_t.c.regime_refund_due).where(claim_t.c.id == claim)).one() == (
            "needs_bank_details", date(2026, 10, 27))
    report = regime_deadline_alerts(engine, now=_at(day), ops_email=OPS)
    assert [(r["alert"], r["days"]) for r in report.refunds] == expected
    assert sorted(_notices(engine, "refund")) == sorted((who, a, d) for a, d in expected for who in ("org@example.ru", OPS))
