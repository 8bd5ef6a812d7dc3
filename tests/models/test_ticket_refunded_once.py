"""A ticket is refunded at most once, whatever happens (DESIGN "The rules"), held by the database
(uq_claim_ticket_refund over claim.refund_granted) on SQLite and PostgreSQL, for one claim and a batch."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from models.claim_store import (
    TicketNotClaimable,
    TransitionRefused,
    apply_batch,
    apply_trigger,
    claim_number,
    claim_t,
    file_claims,
    file_claims_batch,
    ticket_t,
)
from models.crypto import encrypt_text
from models.tables import Event
from states.policy import Reason
from tasks.intake import IntakeError, file_buyer_claim
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)  # claim_in_payout's event is 19 days later: voluntary pays 100 %


def paid_claim(engine, *, payment_method: str = "card") -> tuple[int, int]:
    """A voluntary claim paid in full (to the card, or by bank transfer for cash): (claim id, ticket id)."""
    with engine.begin() as conn:
        details = encrypt_text('{"bik": "044525225"}', key=Fernet.generate_key().decode()) if payment_method != "card" else None
        claim_id = factories.claim_in_payout(conn, payment_method=payment_method, now=NOW, bank_details=details,
                                             acquirer_payment_id="2d1f5a0e-000f-5000-9000-1b2c3d4e5f60" if payment_method == "card" else None)
        apply_trigger(conn, claim_id=claim_id, trigger="payout_succeeded", actor="acquirer", now=NOW + timedelta(hours=1))
        ticket_id = conn.execute(select(claim_t.c.ticket_id).where(claim_t.c.id == claim_id)).scalar_one()
    return claim_id, ticket_id


def claims_of(engine, ticket_id: int) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.ticket_id == ticket_id)).scalar_one()


def smuggle_claim(engine, ticket_id: int, *, state: str = "filed", seq: int = 2) -> int:
    """A claim row written past the filing checks (an old bug, a hand-made fix): only the database stands."""
    with engine.begin() as conn:
        event_id = conn.execute(select(ticket_t.c.event_id).where(ticket_t.c.id == ticket_id)).scalar_one()
        return conn.execute(insert(claim_t).values(
            number=claim_number(ticket_id, seq), ticket_id=ticket_id, event_id=event_id, reason="voluntary", state=state, version=1,
            filed_at=NOW, updated_at=NOW, filed_by="buyer", description="", quote={}, amount=350000,
        )).inserted_primary_key[0]


def test_a_paid_card_ticket_takes_no_second_claim_and_the_buyer_gets_409_in_russian(engine):
    # Used to go wrong: each new voluntary claim on a paid ticket was auto-approved and paid to the card again.
    _, ticket_id = paid_claim(engine)
    with pytest.raises(IntakeError) as refused:
        file_buyer_claim(engine, ticket_id=ticket_id, reason="voluntary", actor="service:test", now=NOW + timedelta(days=1), start_flow=False)
    assert (refused.value.status, refused.value.code) == (409, "TICKET_ALREADY_REFUNDED")
    assert "только один раз" in refused.value.message_ru
    assert claims_of(engine, ticket_id) == 1


def test_a_cash_ticket_paid_by_bank_transfer_takes_no_second_claim(engine):
    # Used to go wrong: a cash ticket already paid by bank transfer took a second claim.
    _, ticket_id = paid_claim(engine, payment_method="cash")
    for reason in (Reason.VOLUNTARY, Reason.OTHER):
        with pytest.raises(TicketNotClaimable) as refused:
            with engine.begin() as conn:
                file_claims(conn, ticket_ids=[ticket_id], reason=reason, actor="buyer", now=NOW + timedelta(days=1))
        assert refused.value.refusals[ticket_id][0] == "TICKET_ALREADY_REFUNDED"
    assert claims_of(engine, ticket_id) == 1


@pytest.mark.parametrize("barcode_status, code", [("scanned", "TICKET_SCANNED"), ("void", "TICKET_VOID")])
def test_a_scanned_or_void_ticket_takes_no_claim(engine, barcode_status, code):
    # Used to go wrong: a scanned ticket took a claim (refused only later), a void one was paid.
    with engine.begin() as conn:
        ticket_id = factories.ticket_for_event(conn, event_start=NOW + timedelta(days=19), barcode_status=barcode_status)
    with pytest.raises(IntakeError) as refused:
        file_buyer_claim(engine, ticket_id=ticket_id, reason="voluntary", actor="service:test", now=NOW, start_flow=False)
    assert (refused.value.status, refused.value.code) == (409, code)
    assert claims_of(engine, ticket_id) == 0


def test_after_a_refusal_only_the_voluntary_fallback_is_filed_and_then_nothing_more(engine):
    with engine.begin() as conn:
        ticket_id = factories.ticket_for_event(conn, event_start=NOW + timedelta(days=19))
        (first,) = file_claims(conn, ticket_ids=[ticket_id], reason=Reason.OTHER, actor="buyer", now=NOW)
        apply_trigger(conn, claim_id=first, trigger="assess", actor="system", now=NOW)
        apply_trigger(conn, claim_id=first, trigger="reject", actor="organizer:1", now=NOW + timedelta(days=1),
                      data={"refusal_code": "ORGANIZER_REFUSED", "refusal_message": "Нет оснований."})
    with pytest.raises(TicketNotClaimable) as refused:
        with engine.begin() as conn:
            file_claims(conn, ticket_ids=[ticket_id], reason=Reason.ILLNESS, actor="buyer", now=NOW + timedelta(days=2))
    assert refused.value.refusals[ticket_id][0] == "FALLBACK_ONLY"
    with engine.begin() as conn:
        (fallback,) = file_claims(conn, ticket_ids=[ticket_id], reason=Reason.VOLUNTARY, actor="buyer", now=NOW + timedelta(days=2))
        assert apply_trigger(conn, claim_id=fallback, trigger="assess", actor="system", now=NOW + timedelta(days=2)).dest == "approved"
    with pytest.raises(TicketNotClaimable):
        with engine.begin() as conn:
            file_claims(conn, ticket_ids=[ticket_id], reason=Reason.VOLUNTARY, actor="buyer", now=NOW + timedelta(days=3))
    assert claims_of(engine, ticket_id) == 2


def test_a_claim_smuggled_past_filing_is_refused_at_approval_with_a_reason(engine):
    _, ticket_id = paid_claim(engine)
    second = smuggle_claim(engine, ticket_id)
    with pytest.raises(TransitionRefused) as refused:
        with engine.begin() as conn:
            apply_trigger(conn, claim_id=second, trigger="assess", actor="system", now=NOW + timedelta(days=1))
    assert [code for code, _ in refused.value.refusals] == ["TICKET_ALREADY_REFUNDED"]
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.state).where(claim_t.c.id == second)).scalar_one() == "filed"


def test_the_database_refuses_a_second_claim_in_a_money_state_even_after_the_first_is_closed(engine):
    first, ticket_id = paid_claim(engine)
    with engine.begin() as conn:  # closed (a stored state with no driver yet) leaves the money states, the flag stays
        conn.execute(update(claim_t).where(claim_t.c.id == first).values(state="closed"))
    second = smuggle_claim(engine, ticket_id)
    for state in ("approved", "payout_pending", "paid", "voucher_issued"):
        with pytest.raises(IntegrityError):
            with engine.begin() as conn:
                conn.execute(update(claim_t).where(claim_t.c.id == second).values(state=state))
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(update(claim_t).where(claim_t.c.id == second).values(refund_granted=True))
    with pytest.raises(IntegrityError):
        smuggle_claim(engine, ticket_id, state="paid", seq=3)


def test_a_batch_refuses_the_claim_whose_ticket_was_refunded_and_moves_the_others(engine):
    _, refunded_ticket = paid_claim(engine)
    smuggled = smuggle_claim(engine, refunded_ticket)
    with engine.begin() as conn:
        event_id = factories.event(conn, starts_at=NOW + timedelta(days=19))
        others = file_claims(conn, ticket_ids=factories.tickets_bulk(conn, event_id=event_id, count=3), reason=Reason.VOLUNTARY,
                             actor="buyer", now=NOW)
    result = apply_batch(engine, claim_ids=[smuggled, *others], trigger="assess", actor="system", now=NOW)
    assert sorted(result.moved["approved"]) == sorted(others)
    assert result.refused[smuggled][0][0] == "TICKET_ALREADY_REFUNDED"
    with engine.connect() as conn:
        flags = dict(conn.execute(select(claim_t.c.id, claim_t.c.refund_granted).where(claim_t.c.id.in_([smuggled, *others]))).all())
    assert flags == {smuggled: False, **{i: True for i in others}}


def test_a_mass_filing_leaves_out_refunded_tickets_and_files_the_rest(engine):
    _, refunded_ticket = paid_claim(engine)
    with engine.begin() as conn:
        event_id = conn.execute(select(ticket_t.c.event_id).where(ticket_t.c.id == refunded_ticket)).scalar_one()
        fresh = factories.tickets_bulk(conn, event_id=event_id, count=4)
        conn.execute(update(Event.__table__).where(Event.__table__.c.id == event_id).values(status="cancelled"))
    filed = file_claims_batch(engine, ticket_ids=[refunded_ticket, *fresh], reason=Reason.CANCELLED, actor="system", now=NOW)
    assert len(filed) == 4
    assert claims_of(engine, refunded_ticket) == 1


def _claim_0003(conn, ticket_id: int, seq: int, state: str) -> int:
    from models.tables import ClaimTransition

    event_id = conn.execute(select(ticket_t.c.event_id).where(ticket_t.c.id == ticket_id)).scalar_one()
    claim_id = conn.execute(insert(claim_t).values(
        number=claim_number(ticket_id, seq), ticket_id=ticket_id, event_id=event_id, reason="voluntary", state=state, version=1,
        filed_at=NOW, updated_at=NOW, filed_by="buyer", description="", quote={}, amount=350000)).inserted_primary_key[0]
    conn.execute(insert(ClaimTransition.__table__).values(claim_id=claim_id, trigger="payout_succeeded", from_state="payout_pending",
                                                          to_state="paid", actor="acquirer", at=NOW))
    return claim_id


def _at_0003(db_url):
    """A database at revision 0003 (before this guard), written with the columns it had then."""
    from alembic import command

    from models.db import make_engine
    from models.migrate import alembic_config

    command.downgrade(alembic_config(db_url), "0003")
    return make_engine(db_url)


def test_the_upgrade_flags_claims_that_were_paid_before_and_keeps_their_tickets_refunded(db_url):
    from models.migrate import upgrade

    engine = _at_0003(db_url)
    with engine.begin() as conn:
        ticket_id = factories.ticket_for_event(conn, event_start=NOW + timedelta(days=19))
        paid_then_closed = _claim_0003(conn, ticket_id, 1, "closed")
    upgrade(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.refund_granted).where(claim_t.c.id == paid_then_closed)).scalar_one() is True
    with pytest.raises(TicketNotClaimable):
        with engine.begin() as conn:
            file_claims(conn, ticket_ids=[ticket_id], reason=Reason.VOLUNTARY, actor="buyer", now=NOW)
    engine.dispose()


def test_the_upgrade_stops_on_a_ticket_refunded_twice_and_names_it(db_url):
    from models.migrate import upgrade

    engine = _at_0003(db_url)
    with engine.begin() as conn:
        ticket_id = factories.ticket_for_event(conn, event_start=NOW + timedelta(days=19))
        _claim_0003(conn, ticket_id, 1, "paid")
        _claim_0003(conn, ticket_id, 2, "paid")
    with pytest.raises(RuntimeError, match=f"ticket {ticket_id} \\(2 claims\\)"):
        upgrade(db_url)
    engine.dispose()
