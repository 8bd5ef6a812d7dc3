"""The sales feed's upsert (tasks/sales.py) on SQLite and PostgreSQL: idempotent, field-level updates, and
the lifecycle hearing of scanned and refunded-elsewhere tickets."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from models.claim_store import apply_trigger, file_claims, unclaimable_tickets
from models.tables import Claim, ClaimTransition, Event, Order, Organizer, OutboxMessage, RunAction, Ticket, Venue
from states.policy import Reason
from tasks.sales import ValidationError, error_details, parse_order, upsert_orders
from tests import factories as f

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ACTOR = "service:sales"


def upsert(engine, *payloads, line: int | None = None):
    with engine.begin() as conn:
        return upsert_orders(conn, [(line, parse_order(p)) for p in payloads], actor=ACTOR, now=NOW)


def counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.__tablename__: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (Organizer, Venue, Event, Order, Ticket, Claim)}


def ticket_row(engine, barcode: str):
    with engine.connect() as conn:
        return conn.execute(select(Ticket.__table__).where(Ticket.__table__.c.barcode == barcode)).one()


def claim_row(engine, claim_id: int):
    with engine.connect() as conn:
        return conn.execute(select(Claim.__table__).where(Claim.__table__.c.id == claim_id)).one()


def open_claim(engine, barcode: str, reason: Reason = Reason.OTHER) -> int:
    """A «Прочее» claim waiting for the organizer (awaiting_organizer)."""
    ticket_id = ticket_row(engine, barcode).id
    with engine.begin() as conn:
        (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=reason, actor="buyer:order:K-1", now=NOW)
        apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=NOW)
    return claim_id


def test_the_same_order_twice_is_created_then_unchanged(engine):
    order = f.sales_order(barcodes=("BC-1", "BC-2"))
    (first,) = upsert(engine, order)
    assert first.outcome == "created"
    after_first = counts(engine)
    assert after_first == {"organizer": 1, "venue": 1, "event": 1, "ticket_order": 1, "ticket": 2, "claim": 0}
    (second,) = upsert(engine, order)
    assert (second.outcome, second.changed) == ("unchanged", [])
    assert counts(engine) == after_first
    with engine.connect() as conn:
        row = conn.execute(select(Order.__table__).where(Order.__table__.c.number == "K-1000001")).one()
        event = conn.execute(select(Event.__table__)).one()
    assert (row.payment_amount, row.status, row.payment_method, row.acquirer_payment_id) == (770000, "paid", "card", "pay-K-1000001")
    assert event.starts_at == datetime(2026, 12, 20, 16, 0, tzinfo=UTC)  # +03:00 stored as the same instant


def test_changed_fields_are_updated_and_named(engine):
    upsert(engine, f.sales_order())
    changed = f.sales_order(event_status="postponed")
    changed["event"]["new_starts_at"] = "2027-03-01T19:00:00+03:00"
    changed["buyer"]["phone"] = "+7 999 111-11-11"
    changed["venue"]["timezone"] = "Europe/Samara"
    (result,) = upsert(engine, changed)
    assert result.outcome == "updated"
    assert set(result.changed) == {"event.status", "event.new_starts_at", "order.buyer_phone", "venue.timezone"}
    with engine.connect() as conn:
        event = conn.execute(select(Event.__table__)).one()
        venue = conn.execute(select(Venue.__table__)).one()
    assert (event.status, event.new_starts_at, venue.timezone) == ("postponed", datetime(2027, 3, 1, 16, 0, tzinfo=UTC), "Europe/Samara")
    assert counts(engine)["event"] == 1


def test_a_ticket_added_to_a_known_order_is_an_update(engine):
    upsert(engine, f.sales_order(barcodes=("BC-1",)))
    (result,) = upsert(engine, f.sales_order(barcodes=("BC-1", "BC-2")))
    assert result.outcome == "updated" and "tickets[BC-2]" in result.changed
    assert counts(engine)["ticket"] == 2


def test_one_batch_applies_repeated_orders_in_order(engine):
    results = upsert(engine, f.sales_order(), f.sales_order(), f.sales_order(ticket_status="scanned"))
    assert [r.outcome for r in results] == ["created", "unchanged", "updated"]
    assert ticket_row(engine, "BC-1000001-1").barcode_status == "scanned"


def test_a_scanned_barcode_refuses_the_open_claim_and_any_new_one(engine):
    upsert(engine, f.sales_order(barcodes=("BC-1",)))
    claim_id = open_claim(engine, "BC-1")
    assert claim_row(engine, claim_id).state == "awaiting_organizer"

    (result,) = upsert(engine, f.sales_order(barcodes=("BC-1",), ticket_status="scanned"))

    assert result.outcome == "updated" and result.changed == ["tickets[BC-1].barcode_status"]
    claim = claim_row(engine, claim_id)
    assert (claim.state, claim.refusal_code) == ("rejected", "TICKET_SCANNED")
    assert claim.refusal_message == "Билет уже прошёл контроль на входе, вернуть его нельзя."
    assert result.claims_refused == [claim.number]
    with engine.connect() as conn:
        audit = conn.execute(select(ClaimTransition.__table__).where(ClaimTransition.__table__.c.trigger == "refuse_scanned")).one()
        mail = conn.execute(select(OutboxMessage.__table__.c.template).where(OutboxMessage.__table__.c.claim_id == claim_id)).scalars().all()
        resume = conn.execute(select(RunAction.__table__).where(RunAction.__table__.c.claim_id == claim_id)).one()
        refusals = unclaimable_tickets(conn, ticket_ids=[claim.ticket_id], reason=Reason.VOLUNTARY)
    assert (audit.from_state, audit.to_state, audit.actor) == ("awaiting_organizer", "rejected", ACTOR)
    assert "decision_rejected" in mail
    assert (resume.kind, resume.payload["decision"]) == ("resume", "recheck")  # the waiting run reads the claim again
    assert refusals[claim.ticket_id][0] == "TICKET_SCANNED"


def test_refunded_elsewhere_voids_the_ticket_and_closes_the_claim(engine):
    upsert(engine, f.sales_order(barcodes=("BC-1", "BC-2")))
    claim_id = open_claim(engine, "BC-1")

    (result,) = upsert(engine, f.sales_order(barcodes=("BC-1", "BC-2"), order_status="refunded"))

    assert result.outcome == "updated"
    assert {ticket_row(engine, b).barcode_status for b in ("BC-1", "BC-2")} == {"void"}
    claim = claim_row(engine, claim_id)
    assert (claim.state, claim.refusal_code) == ("closed", "REFUNDED_ELSEWHERE")
    assert "возвращён в другом месте" in claim.refusal_message
    assert result.claims_closed == [claim.number]
    with engine.connect() as conn:
        mail = conn.execute(select(OutboxMessage.__table__.c.template).where(OutboxMessage.__table__.c.claim_id == claim_id)).scalars().all()
        refusals = unclaimable_tickets(conn, ticket_ids=[claim.ticket_id], reason=Reason.VOLUNTARY)
    assert "claim_closed" in mail
    assert refusals[claim.ticket_id][0] == "TICKET_VOID"

    # Used to be possible: a later feed line saying "valid" would have made the void barcode open the door again.
    (again,) = upsert(engine, f.sales_order(barcodes=("BC-1", "BC-2")), line=7)
    assert again.outcome == "refused" and again.line == 7
    assert {e["type"] for e in again.errors} == {"ticket_void"}
    assert {ticket_row(engine, b).barcode_status for b in ("BC-1", "BC-2")} == {"void"}


def test_a_ticket_refunded_by_us_is_never_unvoided_nor_refunded_again(engine):
    upsert(engine, f.sales_order(barcodes=("BC-1",)))
    claim_id = open_claim(engine, "BC-1", reason=Reason.VOLUNTARY)  # 24 days ahead: approved at once
    with engine.begin() as conn:
        apply_trigger(conn, claim_id=claim_id, trigger="start_payout", actor="system", now=NOW)
    assert claim_row(engine, claim_id).state == "payout_pending"
    assert ticket_row(engine, "BC-1").barcode_status == "void"
    number = claim_row(engine, claim_id).number
    before = counts(engine)

    (valid,) = upsert(engine, f.sales_order(barcodes=("BC-1",), email="changed@example.ru"))
    (elsewhere,) = upsert(engine, f.sales_order(barcodes=("BC-1",), ticket_status="refunded"))

    assert valid.outcome == "refused" and valid.errors[0]["loc"] == ["tickets", 0, "status"]
    assert number in valid.errors[0]["msg"] and "нельзя сделать снова действительным" in valid.errors[0]["msg"]
    assert elsewhere.outcome == "refused" and elsewhere.errors[0]["type"] == "ticket_refunded_by_us"
    assert claim_row(engine, claim_id).state == "payout_pending"
    assert counts(engine) == before
    with engine.connect() as conn:  # a refused line writes nothing, not even its other fields
        assert conn.execute(select(Order.__table__.c.buyer_email)).scalar_one() == "anna@example.ru"


def test_a_barcode_of_another_order_or_an_event_of_another_organizer_is_refused(engine):
    upsert(engine, f.sales_order("K-1", barcodes=("BC-1",)))
    (stolen,) = upsert(engine, f.sales_order("K-2", barcodes=("BC-1",)))
    (moved,) = upsert(engine, f.sales_order("K-3", barcodes=("BC-3",), organizer_id="org-2"))
    assert stolen.errors == [{"loc": ["tickets", 0, "barcode"], "type": "barcode_taken", "msg": "Штрихкод BC-1 уже принадлежит заказу K-1."}]
    assert moved.errors[0]["loc"] == ["event", "id"]
    assert counts(engine)["ticket_order"] == 1


@pytest.mark.parametrize(("change", "loc", "msg"), [
    (lambda o: o["event"].update(starts_at="2026-12-20T19:00:00"), ["event", "starts_at"], "с часовым поясом"),
    (lambda o: o["venue"].update(timezone="Europe/Moskow"), ["venue", "timezone"], "IANA"),
    (lambda o: o["buyer"].update(email="anna@"), ["buyer", "email"], "электронной почты"),
    (lambda o: o["tickets"][0].update(price_paid=3500.5), ["tickets", 0, "price_paid"], "целое число"),
    (lambda o: o["tickets"][0].update(price_paid="350000"), ["tickets", 0, "price_paid"], "целое число"),
    (lambda o: o["payment"].update(amount=1), [], "не равна сумме билетов"),
    (lambda o: o["payment"].update(acquirer_payment_id=None), [], "идентификатор платежа"),
    (lambda o: o["tickets"][0].update(status="lost"), ["tickets", 0, "status"], "Недопустимое значение"),
    (lambda o: o.update(colour="red"), ["colour"], "Неизвестное поле"),
])
def test_bad_orders_are_refused_field_by_field_in_russian(change, loc, msg):
    order = f.sales_order()
    change(order)
    with pytest.raises(ValidationError) as caught:
        parse_order(order)
    (error,) = error_details(caught.value)
    assert error["loc"] == loc and msg in error["msg"]
