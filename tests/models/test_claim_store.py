"""Every path of DESIGN.md through the database (SQLite and PostgreSQL): state, audit trail, outbox, effects."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from models.claim_store import (
    ClaimNotFound,
    ConflictError,
    TransitionRefused,
    apply_batch,
    apply_trigger,
    file_claims,
)
from models.tables import Claim, ClaimTransition, OutboxMessage, Ticket
from states.lifecycle import InvalidTrigger
from states.policy import Reason
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
claim_t, audit_t, outbox_t, ticket_t = Claim.__table__, ClaimTransition.__table__, OutboxMessage.__table__, Ticket.__table__

EVENT = datetime(2026, 3, 20, 19, 0, tzinfo=MSK)
FILED = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)  # d = 18: voluntary gives 100 %


# --- helpers -------------------------------------------------------------------------------------

def new_claim(engine, *, reason=Reason.VOLUNTARY, event_start=EVENT, filed_at=FILED, actor="buyer", **ticket_kw) -> tuple[int, int]:
    """One event, one order, one ticket and a filed claim for it: (claim id, ticket id)."""
    with engine.begin() as conn:
        ticket_id = factories.ticket_for_event(conn, event_start=event_start, **ticket_kw)
        (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=reason, actor=actor, now=filed_at)
    return claim_id, ticket_id


def step(engine, claim_id: int, trigger: str, now: datetime, actor: str = "organizer:1", **kw):
    with engine.begin() as conn:
        return apply_trigger(conn, claim_id=claim_id, trigger=trigger, actor=actor, now=now, **kw)


def claim(engine, claim_id: int):
    with engine.connect() as conn:
        return conn.execute(select(claim_t).where(claim_t.c.id == claim_id)).mappings().one()


def audit(engine, claim_id: int) -> list[tuple[str, str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(audit_t).where(audit_t.c.claim_id == claim_id).order_by(audit_t.c.id)).mappings()
        return [(r["trigger"], r["from_state"], r["to_state"], r["actor"]) for r in rows]


def outbox(engine, claim_id: int) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(outbox_t).where(outbox_t.c.claim_id == claim_id).order_by(outbox_t.c.id)).mappings())


def barcode(engine, ticket_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(ticket_t.c.barcode_status).where(ticket_t.c.id == ticket_id)).scalar_one()


def codes(exc_info) -> list[str]:
    return [code for code, _ in exc_info.value.refusals]


def illness_documents(engine, claim_id: int, received_at: datetime) -> None:
    with engine.begin() as conn:
        factories.document(conn, claim_id=claim_id, received_at=received_at, sick_from=date(2025, 12, 24), sick_to=date(2026, 1, 20))


# --- voluntary -----------------------------------------------------------------------------------

def test_voluntary_far_ahead_is_approved_automatically(engine):
    claim_id, _ = new_claim(engine)
    outcome = step(engine, claim_id, "assess", FILED, actor="system")

    assert (outcome.source, outcome.dest) == ("filed", "approved")
    c = claim(engine, claim_id)
    assert c["state"] == "approved" and c["version"] == 2
    assert c["amount"] == 350000  # 100 % of what was paid (below nominal); the service fee stays
    assert c["payout_due"] == date(2026, 3, 16)  # 10 working days; 9 March 2026 is a day off
    assert c["decided_at"] == FILED
    assert audit(engine, claim_id) == [("file", "", "filed", "buyer"), ("assess", "filed", "approved", "system")]
    (msg,) = outbox(engine, claim_id)
    assert (msg["template"], msg["status"], msg["recipient"]) == ("decision_approved", "pending", "buyer@example.ru")
    assert msg["payload"]["claim_number"] == claim(engine, claim_id)["number"]
    assert msg["dedup_key"] == f"claim:{claim_id}:v1:decision_approved"


def test_voluntary_less_than_three_days_ahead_is_rejected_with_a_code(engine):
    claim_id, _ = new_claim(engine, filed_at=datetime(2026, 3, 17, 12, tzinfo=MSK))  # d = 2
    assert step(engine, claim_id, "assess", datetime(2026, 3, 17, 12, tzinfo=MSK)).dest == "rejected"
    c = claim(engine, claim_id)
    assert (c["state"], c["refusal_code"]) == ("rejected", "TOO_LATE")
    assert c["refusal_message"]
    assert [m["template"] for m in outbox(engine, claim_id)] == ["decision_rejected"]


def test_scanned_ticket_is_rejected(engine):
    claim_id, ticket_id = new_claim(engine)
    with engine.begin() as conn:  # scanned at the door after filing (a scanned ticket takes no new claim)
        conn.execute(update(ticket_t).where(ticket_t.c.id == ticket_id).values(barcode_status="scanned"))
    step(engine, claim_id, "assess", FILED)
    c = claim(engine, claim_id)
    assert (c["state"], c["refusal_code"]) == ("rejected", "TICKET_SCANNED")


# --- illness, the organizer, the decision SLA ----------------------------------------------------

ILL_EVENT = datetime(2026, 1, 15, 19, 0, tzinfo=MSK)
ILL_FILED = datetime(2025, 12, 25, 10, 0, tzinfo=MSK)  # Thursday before the New Year holidays


def _illness_awaiting_organizer(engine) -> int:
    claim_id, _ = new_claim(engine, reason=Reason.ILLNESS, event_start=ILL_EVENT, filed_at=ILL_FILED,
                            bought_at=datetime(2025, 11, 1, tzinfo=MSK))
    assert step(engine, claim_id, "assess", ILL_FILED, actor="system").dest == "awaiting_documents"
    illness_documents(engine, claim_id, datetime(2025, 12, 26, 9, tzinfo=MSK))
    assert step(engine, claim_id, "submit_documents", datetime(2025, 12, 26, 9, tzinfo=MSK), actor="buyer").dest == "awaiting_organizer"
    return claim_id


def test_illness_without_documents_waits_then_goes_to_the_organizer(engine):
    claim_id, _ = new_claim(engine, reason=Reason.ILLNESS, event_start=ILL_EVENT, filed_at=ILL_FILED,
                            bought_at=datetime(2025, 11, 1, tzinfo=MSK))
    step(engine, claim_id, "assess", ILL_FILED, actor="system")
    assert claim(engine, claim_id)["state"] == "awaiting_documents"
    assert [m["template"] for m in outbox(engine, claim_id)] == ["documents_needed"]

    with pytest.raises(TransitionRefused) as refused:
        step(engine, claim_id, "submit_documents", datetime(2025, 12, 26, 9, tzinfo=MSK), actor="buyer")
    assert codes(refused) == ["NO_DOCUMENTS"]

    illness_documents(engine, claim_id, datetime(2025, 12, 26, 9, tzinfo=MSK))
    step(engine, claim_id, "submit_documents", datetime(2025, 12, 26, 9, tzinfo=MSK), actor="buyer")
    c = claim(engine, claim_id)
    assert c["state"] == "awaiting_organizer"
    # Decidable on 26.12.2025, when the documents came (docs/rules.md): 10 working days from that day,
    # 31.12.2025 and 1-11.01.2026 being days off.
    assert (c["decidable_on"], c["decision_due"]) == (date(2025, 12, 26), date(2026, 1, 21))
    assert [a[:3] for a in audit(engine, claim_id)] == [
        ("file", "", "filed"), ("assess", "filed", "awaiting_documents"), ("submit_documents", "awaiting_documents", "awaiting_organizer"),
    ]


def test_extend_review_gives_20_working_days_once(engine):
    claim_id = _illness_awaiting_organizer(engine)
    at = datetime(2026, 1, 13, 10, tzinfo=MSK)
    outcome = step(engine, claim_id, "extend_review", at, data={"extension_reason": "Проверяем больничный"})
    assert (outcome.source, outcome.dest) == ("awaiting_organizer", "awaiting_organizer")
    c = claim(engine, claim_id)
    # 20 working days from the decidable day (26.12.2025, documents complete), not from filing.
    assert (c["extended"], c["decision_due"], c["extension_reason"]) == (True, date(2026, 2, 4), "Проверяем больничный")
    assert audit(engine, claim_id)[-1][:3] == ("extend_review", "awaiting_organizer", "awaiting_organizer")
    assert outbox(engine, claim_id)[-1]["template"] == "review_extended"

    with pytest.raises(TransitionRefused) as refused:
        step(engine, claim_id, "extend_review", at + timedelta(days=1))
    assert codes(refused) == ["ALREADY_EXTENDED"]
    assert claim(engine, claim_id)["decision_due"] == date(2026, 2, 4)


def test_escalate_is_refused_until_the_deadline_passes_across_new_year(engine):
    claim_id = _illness_awaiting_organizer(engine)
    # Counting weekends only, the 10th working day would be 9 January: the holidays must not be counted.
    # Due 21.01.2026: 10 working days from 26.12.2025, the day the documents made it decidable.
    for not_yet in (datetime(2026, 1, 12, 10, tzinfo=MSK), datetime(2026, 1, 21, 23, 59, tzinfo=MSK)):
        with pytest.raises(TransitionRefused) as refused:
            step(engine, claim_id, "escalate", not_yet, actor="sla-watch")
        assert codes(refused) == ["NOT_OVERDUE"]
    assert claim(engine, claim_id)["state"] == "awaiting_organizer"

    late = datetime(2026, 1, 22, 0, 1, tzinfo=MSK)
    assert step(engine, claim_id, "escalate", late, actor="sla-watch").dest == "escalated"
    c = claim(engine, claim_id)
    assert (c["state"], c["escalated_at"]) == ("escalated", late)
    # Once escalated, the supervisor still decides.
    assert step(engine, claim_id, "approve", late + timedelta(hours=1), actor="supervisor").dest == "approved"


def test_illness_filed_after_the_event_is_rejected(engine):
    after = ILL_EVENT + timedelta(hours=2)
    claim_id, _ = new_claim(engine, reason=Reason.ILLNESS, event_start=ILL_EVENT, filed_at=after)
    step(engine, claim_id, "assess", after, actor="system")
    c = claim(engine, claim_id)
    assert (c["state"], c["refusal_code"]) == ("rejected", "FILED_AFTER_EVENT")


def test_other_reason_rejected_by_the_organizer(engine):
    claim_id, _ = new_claim(engine, reason=Reason.OTHER)
    assert step(engine, claim_id, "assess", FILED, actor="system").dest == "awaiting_organizer"
    data = {"refusal_code": "ORGANIZER_REFUSED", "refusal_message": "Организатор отказал в возврате.", "decision_note": "нет оснований"}
    step(engine, claim_id, "reject", FILED + timedelta(days=2), data=data, note="bulk")
    c = claim(engine, claim_id)
    assert (c["state"], c["refusal_code"], c["refusal_message"], c["decision_note"]) == (
        "rejected", "ORGANIZER_REFUSED", "Организатор отказал в возврате.", "нет оснований")
    assert c["decision_due"] is None
    msg = outbox(engine, claim_id)[-1]
    assert (msg["template"], msg["payload"]["note"]) == ("decision_rejected", "bulk")
    assert audit(engine, claim_id)[-1] == ("reject", "awaiting_organizer", "rejected", "organizer:1")


def test_withdraw_before_a_decision_then_no_decision_is_possible(engine):
    claim_id, _ = new_claim(engine, reason=Reason.OTHER)
    step(engine, claim_id, "assess", FILED, actor="system")
    assert step(engine, claim_id, "withdraw", FILED + timedelta(days=1), actor="buyer").dest == "withdrawn"
    with pytest.raises(InvalidTrigger):
        step(engine, claim_id, "approve", FILED + timedelta(days=2))
    assert claim(engine, claim_id)["state"] == "withdrawn"
    assert audit(engine, claim_id)[-1][:3] == ("withdraw", "awaiting_organizer", "withdrawn")


# --- event cancelled -----------------------------------------------------------------------------

def test_cancellation_files_claims_without_the_buyer_and_approves_them_in_batch(engine):
    now = datetime(2026, 3, 5, 10, tzinfo=MSK)
    with engine.begin() as conn:
        event_id = factories.event(conn, starts_at=EVENT, status="cancelled")
        tickets = factories.tickets_bulk(conn, event_id=event_id, count=7)
        ids = file_claims(conn, ticket_ids=tickets, reason=Reason.CANCELLED, actor="system", now=now)
    result = apply_batch(engine, claim_ids=ids, trigger="assess", actor="system", now=now)

    assert sorted(result.moved["approved"]) == sorted(ids)
    assert (result.refused, result.conflicts, result.invalid) == ({}, [], {})
    for claim_id in ids:
        c = claim(engine, claim_id)
        assert (c["state"], c["filed_by"], c["amount"]) == ("approved", "system", 350000)
        assert audit(engine, claim_id) == [("file", "", "filed", "system"), ("assess", "filed", "approved", "system")]


# --- money ---------------------------------------------------------------------------------------

def test_card_payout_voids_the_barcode_and_pays(engine):
    claim_id, ticket_id = new_claim(engine)
    step(engine, claim_id, "assess", FILED, actor="system")
    assert barcode(engine, ticket_id) == "valid"
    assert step(engine, claim_id, "start_payout", FILED + timedelta(hours=1), actor="system").dest == "payout_pending"
    assert barcode(engine, ticket_id) == "void"

    done = FILED + timedelta(days=1)
    assert step(engine, claim_id, "payout_succeeded", done, actor="acquirer").dest == "paid"
    c = claim(engine, claim_id)
    assert (c["state"], c["paid_at"], c["payout_due"]) == ("paid", done, None)
    assert outbox(engine, claim_id)[-1]["template"] == "refund_sent"
    with pytest.raises(InvalidTrigger):  # paid is final: `close` has no driver, so no row (issue 9)
        step(engine, claim_id, "close", done + timedelta(days=30), actor="system")


def test_ticket_scanned_after_approval_is_refused_instead_of_paid(engine):
    """Regression: an approved claim whose ticket was used at the door had no way out of `approved`."""
    claim_id, ticket_id = new_claim(engine)
    step(engine, claim_id, "assess", FILED, actor="system")
    with engine.begin() as conn:
        conn.execute(update(ticket_t).where(ticket_t.c.id == ticket_id).values(barcode_status="scanned"))
    with pytest.raises(TransitionRefused) as refused:
        step(engine, claim_id, "start_payout", FILED + timedelta(hours=1), actor="system")
    assert "TICKET_SCANNED" in codes(refused)
    assert step(engine, claim_id, "refuse_scanned", FILED + timedelta(hours=1), actor="system").dest == "rejected"
    c = claim(engine, claim_id)
    assert (c["state"], c["refusal_code"]) == ("rejected", "TICKET_SCANNED")
    assert outbox(engine, claim_id)[-1]["template"] == "decision_rejected"
    assert barcode(engine, ticket_id) == "scanned"


def test_cash_order_without_bank_details_waits_for_them(engine):
    claim_id, ticket_id = new_claim(engine, payment_method="cash")
    step(engine, claim_id, "assess", FILED, actor="system")
    assert step(engine, claim_id, "start_payout", FILED, actor="system").dest == "needs_bank_details"
    assert barcode(engine, ticket_id) == "valid"
    assert outbox(engine, claim_id)[-1]["template"] == "bank_details_needed"

    with pytest.raises(TransitionRefused) as refused:
        step(engine, claim_id, "bank_details_received", FILED + timedelta(hours=1), actor="buyer")
    assert codes(refused) == ["BANK_DETAILS_MISSING"]

    with engine.begin() as conn:
        conn.execute(update(claim_t).where(claim_t.c.id == claim_id).values(bank_details="gAAAA-encrypted"))
    assert step(engine, claim_id, "bank_details_received", FILED + timedelta(hours=2), actor="buyer").dest == "payout_pending"
    assert barcode(engine, ticket_id) == "void"


def test_payout_failed_then_retried(engine):
    claim_id, _ = new_claim(engine)
    step(engine, claim_id, "assess", FILED, actor="system")
    step(engine, claim_id, "start_payout", FILED, actor="system")
    assert step(engine, claim_id, "payout_failed", FILED + timedelta(hours=1), actor="acquirer").dest == "payout_failed"
    assert step(engine, claim_id, "retry_payout", FILED + timedelta(hours=2), actor="system").dest == "payout_pending"
    assert [a[1:3] for a in audit(engine, claim_id)][-3:] == [
        ("approved", "payout_pending"), ("payout_pending", "payout_failed"), ("payout_failed", "payout_pending")]
    assert claim(engine, claim_id)["version"] == 5


def test_payout_overdue_is_flagged_without_changing_state(engine):
    claim_id, _ = new_claim(engine)
    step(engine, claim_id, "assess", FILED, actor="system")  # payout due 16.03.2026
    with pytest.raises(TransitionRefused) as refused:
        step(engine, claim_id, "flag_payout_overdue", datetime(2026, 3, 16, 20, tzinfo=MSK), actor="sla-watch")
    assert codes(refused) == ["PAYOUT_NOT_OVERDUE"]
    late = datetime(2026, 3, 17, 9, tzinfo=MSK)
    assert step(engine, claim_id, "flag_payout_overdue", late, actor="sla-watch").dest == "approved"
    assert claim(engine, claim_id)["escalated_at"] == late


# --- one open claim per ticket -------------------------------------------------------------------

def test_one_open_claim_per_ticket_then_a_new_one_after_rejection(engine):
    late = datetime(2026, 3, 18, 10, tzinfo=MSK)  # d = 1: the voluntary claim will be rejected
    claim_id, ticket_id = new_claim(engine, filed_at=late)
    first_number = claim(engine, claim_id)["number"]

    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            file_claims(conn, ticket_ids=[ticket_id], reason=Reason.OTHER, actor="buyer", now=late)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.ticket_id == ticket_id)).scalar_one() == 1

    step(engine, claim_id, "assess", late, actor="system")
    assert claim(engine, claim_id)["state"] == "rejected"
    with engine.begin() as conn:
        (second,) = file_claims(conn, ticket_ids=[ticket_id], reason=Reason.VOLUNTARY, actor="buyer", now=late + timedelta(minutes=5))
    assert second != claim_id
    assert claim(engine, second)["number"] != first_number
    assert (first_number[-2:], claim(engine, second)["number"][-2:]) == ("-1", "-2")
    assert claim(engine, second)["state"] == "filed"


def test_unknown_ticket_and_unknown_claim(engine):
    with pytest.raises(ClaimNotFound):
        with engine.begin() as conn:
            file_claims(conn, ticket_ids=[987654], reason=Reason.VOLUNTARY, actor="buyer", now=FILED)
    with pytest.raises(ClaimNotFound):
        step(engine, 987654, "assess", FILED)


# --- optimistic concurrency (single connection) ----------------------------------------------------

def test_expected_version_mismatch_writes_nothing(engine):
    claim_id, ticket_id = new_claim(engine)
    with pytest.raises(ConflictError):
        step(engine, claim_id, "assess", FILED, expected_version=7)
    assert claim(engine, claim_id)["state"] == "filed"
    assert claim(engine, claim_id)["version"] == 1
    assert len(audit(engine, claim_id)) == 1
    assert outbox(engine, claim_id) == []

    assert step(engine, claim_id, "assess", FILED, expected_version=1).dest == "approved"
    with pytest.raises(ConflictError):
        step(engine, claim_id, "start_payout", FILED, expected_version=1)  # read before the assessment
    assert (claim(engine, claim_id)["state"], barcode(engine, ticket_id)) == ("approved", "valid")
    assert len(audit(engine, claim_id)) == 2


def test_refused_and_invalid_triggers_write_nothing(engine):
    claim_id, _ = new_claim(engine, reason=Reason.OTHER)
    step(engine, claim_id, "assess", FILED, actor="system")
    with pytest.raises(TransitionRefused):
        step(engine, claim_id, "escalate", FILED)
    with pytest.raises(InvalidTrigger):
        step(engine, claim_id, "payout_succeeded", FILED)
    assert claim(engine, claim_id)["version"] == 2
    assert len(audit(engine, claim_id)) == 2


# --- batch ---------------------------------------------------------------------------------------

def _other_claims_awaiting_organizer(engine, filed_days: list[datetime]) -> list[int]:
    with engine.begin() as conn:
        event_id = factories.event(conn, starts_at=datetime(2026, 6, 1, 19, tzinfo=MSK))
        tickets = factories.tickets_bulk(conn, event_id=event_id, count=len(filed_days))
        ids = [file_claims(conn, ticket_ids=[t], reason=Reason.OTHER, actor="buyer", now=at)[0] for t, at in zip(tickets, filed_days)]
    for claim_id, at in zip(ids, filed_days):
        assert step(engine, claim_id, "assess", at, actor="system").dest == "awaiting_organizer"
    return ids


def test_batch_escalate_partitions_moved_refused_and_invalid(engine):
    early = datetime(2026, 3, 2, 10, tzinfo=MSK)  # due 16.03.2026
    later = datetime(2026, 3, 12, 10, tzinfo=MSK)  # due 26.03.2026
    overdue = _other_claims_awaiting_organizer(engine, [early] * 4)
    in_time = _other_claims_awaiting_organizer(engine, [later] * 3)
    filed_only, _ = new_claim(engine, reason=Reason.OTHER)  # never assessed: escalate does not exist from filed
    ids = overdue + in_time + [filed_only]
    now = datetime(2026, 3, 18, 10, tzinfo=MSK)

    result = apply_batch(engine, claim_ids=ids, trigger="escalate", actor="sla-watch", now=now, chunk_size=3)

    assert dict(result.moved) == {"escalated": overdue}
    assert set(result.refused) == set(in_time)
    assert all([code for code, _ in r] == ["NOT_OVERDUE"] for r in result.refused.values())
    assert set(result.invalid) == {filed_only}
    assert result.conflicts == []
    assert set(overdue) | set(result.refused) | set(result.invalid) == set(ids)
    for claim_id in overdue:
        assert claim(engine, claim_id)["state"] == "escalated"
        assert audit(engine, claim_id)[-1] == ("escalate", "awaiting_organizer", "escalated", "sla-watch")
        assert len(audit(engine, claim_id)) == 3
    for claim_id in in_time:
        assert claim(engine, claim_id)["state"] == "awaiting_organizer"
        assert len(audit(engine, claim_id)) == 2
    assert len(audit(engine, filed_only)) == 1


def test_batch_hold_notifications_stores_held_outbox_rows(engine):
    now = datetime(2026, 3, 5, 10, tzinfo=MSK)
    with engine.begin() as conn:
        event_id = factories.event(conn, starts_at=EVENT, status="cancelled")
        ids = file_claims(conn, ticket_ids=factories.tickets_bulk(conn, event_id=event_id, count=5), reason=Reason.CANCELLED, actor="system", now=now)
    apply_batch(engine, claim_ids=ids, trigger="assess", actor="system", now=now, hold_notifications=True)
    rows = [m for claim_id in ids for m in outbox(engine, claim_id)]
    assert len(rows) == 5
    assert {(m["template"], m["status"]) for m in rows} == {("decision_approved", "held")}
    assert len({m["dedup_key"] for m in rows}) == 5


def test_batch_reports_a_claim_moved_since_the_read_as_invalid_not_moved_twice(engine):
    early = datetime(2026, 3, 2, 10, tzinfo=MSK)
    ids = _other_claims_awaiting_organizer(engine, [early] * 3)
    step(engine, ids[0], "reject", early + timedelta(days=1))
    result = apply_batch(engine, claim_ids=ids, trigger="approve", actor="organizer:1", now=early + timedelta(days=2))
    assert dict(result.moved) == {"approved": ids[1:]}
    assert set(result.invalid) == {ids[0]}
    assert claim(engine, ids[0])["state"] == "rejected"
    assert [claim(engine, i)["version"] for i in ids] == [3, 3, 3]
