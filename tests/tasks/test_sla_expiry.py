"""sla-watch's documents window (issue 9): a claim still awaiting documents when its window closes is
refused in batch with the policy's code and an email, and its waiting run is asked to go on."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from models.claim_store import apply_batch, apply_trigger, audit_t, claim_t, file_claims, file_claims_batch, outbox_t
from states.policy import documents_deadline
from tasks.emails import render_parts
from tasks.sla import ExpiryReport, end_expired_runs, expire_documents
from tests import factories as f

MSK = ZoneInfo("Europe/Moscow")
EVENT = datetime(2026, 3, 1, 19, 0, tzinfo=MSK)
FILED = EVENT - timedelta(days=3)
NO_DOCUMENTS = "Документы не поступили в течение 14 дней после мероприятия."


def illness_claim(engine, *, event_start: datetime = EVENT, with_document: bool = False) -> int:
    """An illness claim filed before its event and assessed: awaiting documents (or the organizer)."""
    with engine.begin() as conn:
        ticket = f.ticket_for_event(conn, event_start=event_start, bought_at=FILED - timedelta(days=30))
        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason="illness", actor="buyer", now=FILED)
        apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=FILED)
        if with_document:
            f.document(conn, claim_id=claim_id, received_at=FILED + timedelta(hours=1), sick_from=FILED.date(),
                       sick_to=(event_start + timedelta(days=3)).date())
            apply_trigger(conn, claim_id=claim_id, trigger="submit_documents", actor="buyer", now=FILED + timedelta(hours=1))
    return claim_id


def claim(engine, claim_id: int):
    with engine.connect() as conn:
        return conn.execute(select(claim_t).where(claim_t.c.id == claim_id)).one()


def emails(engine, claim_id: int) -> list[tuple[str, str, dict]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(outbox_t.c.template, outbox_t.c.recipient, outbox_t.c.payload).where(outbox_t.c.claim_id == claim_id).order_by(outbox_t.c.id))]


def test_a_claim_without_documents_is_refused_once_its_window_has_closed(engine):
    """Used to wait forever: nothing fired `expire_documents`, so the claim stayed awaiting documents."""
    claim_id = illness_claim(engine)
    assert claim(engine, claim_id).state == "awaiting_documents"
    deadline = documents_deadline(EVENT)

    on_the_last_moment = expire_documents(engine, now=deadline - timedelta(seconds=1))  # 23:59:59 of the 14th day
    assert on_the_last_moment.refused == [] and on_the_last_moment.still_open == 1
    assert claim(engine, claim_id).state == "awaiting_documents"

    report = expire_documents(engine, now=deadline)  # 24:00: the window has closed
    assert report.refused == [claim_id]
    row = claim(engine, claim_id)
    assert (row.state, row.refusal_code, row.refusal_message) == ("rejected", "DOCUMENTS_LATE", NO_DOCUMENTS)
    assert row.decided_at is not None
    with engine.connect() as conn:
        last = conn.execute(select(audit_t.c.trigger, audit_t.c.from_state, audit_t.c.to_state, audit_t.c.actor)
                            .where(audit_t.c.claim_id == claim_id).order_by(audit_t.c.id.desc()).limit(1)).one()
    assert tuple(last) == ("expire_documents", "awaiting_documents", "rejected", "sla-watch")

    (template, recipient, payload), = [e for e in emails(engine, claim_id) if e[0] == "decision_rejected"]
    assert recipient == "buyer@example.ru"
    subject, text, _ = render_parts(template, payload)
    assert f"Причина отказа: {NO_DOCUMENTS}" in text
    # Used to go wrong: sla-watch's refusal told the buyer «организатор отказал», which he never did.
    assert "организатор" not in subject + text and "в возврате отказано" in subject + text

    # A second pass finds nothing to do and sends nothing twice.
    assert expire_documents(engine, now=deadline + timedelta(days=1)) == ExpiryReport()
    assert len([e for e in emails(engine, claim_id) if e[0] == "decision_rejected"]) == 1


def test_claims_with_documents_or_still_in_their_window_are_left_alone(engine):
    with_documents = illness_claim(engine, with_document=True)
    recent = illness_claim(engine, event_start=EVENT + timedelta(days=10))
    assert claim(engine, with_documents).state == "awaiting_organizer"

    report = expire_documents(engine, now=documents_deadline(EVENT) + timedelta(days=1))
    assert report.refused == []
    assert claim(engine, with_documents).state == "awaiting_organizer"
    assert claim(engine, recent).state == "awaiting_documents"


def test_a_whole_hall_of_expired_claims_is_refused_in_one_batch(engine):
    with engine.begin() as conn:
        event = f.event(conn, starts_at=EVENT)
        tickets = f.tickets_bulk(conn, event_id=event, count=600)
    ids = file_claims_batch(engine, ticket_ids=tickets, reason="illness", actor="buyer", now=FILED)
    apply_batch(engine, claim_ids=ids, trigger="assess", actor="system", now=FILED)

    report = expire_documents(engine, now=documents_deadline(EVENT) + timedelta(hours=1))
    assert report.refused == sorted(ids)
    with engine.connect() as conn:
        states = dict(conn.execute(select(claim_t.c.state, func.count()).group_by(claim_t.c.state)).all())
        mails = conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.template == "decision_rejected")).scalar_one()
    assert states == {"rejected": 600} and mails == 600


def test_each_refused_claims_run_is_asked_to_go_on(engine):
    first, second = illness_claim(engine), illness_claim(engine)
    report = expire_documents(engine, now=documents_deadline(EVENT) + timedelta(hours=1))
    asked: list[tuple[int, str, str]] = []

    def resume(engine_, claim_id, run_input):
        asked.append((claim_id, run_input.decision, run_input.decided_by))
        return claim_id == first  # the second run has not reached its wait: its claim stays recorded

    assert end_expired_runs(engine, report, now=documents_deadline(EVENT), resume=resume) == 1
    assert asked == [(first, "expire_documents", "sla-watch"), (second, "expire_documents", "sla-watch")]
    assert claim(engine, second).state == "rejected"


@pytest.mark.parametrize("zone", ["Europe/Kaliningrad", "Asia/Kamchatka"])
def test_the_window_closes_by_the_venues_clock(engine, zone):
    """Stored in UTC, judged in the venue's zone: refused one minute after its window, not one minute before."""
    event_start = datetime(2026, 3, 1, 19, 0, tzinfo=ZoneInfo(zone))
    with engine.begin() as conn:
        ticket = f.ticket_for_event(conn, event_start=event_start, tz=zone, bought_at=FILED - timedelta(days=30))
        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason="illness", actor="buyer", now=FILED)
        apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=FILED)
    deadline = documents_deadline(event_start)
    assert expire_documents(engine, now=deadline - timedelta(minutes=1)).refused == []
    assert expire_documents(engine, now=deadline + timedelta(minutes=1)).refused == [claim_id]
