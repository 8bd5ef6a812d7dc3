"""A mass cancellation's chunks against the YooKassa stand-in, on SQLite and PostgreSQL: every valid
ticket gets one claim, card refunds go out concurrently, the rest leave the batch with a reason, the
buyers' mail is held for a second person, and running it again creates nothing twice."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select

from models.payouts import Payout
from models.tables import Claim, ClaimTransition, Event, MassSend, OutboxMessage
from tasks import mass
from tasks.payouts import submit_card_refunds_concurrently
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
claim_t, payout_t, outbox_t, audit_t = Claim.__table__, Payout.__table__, OutboxMessage.__table__, ClaimTransition.__table__


def seed(engine, standin, *, card=40, cash=6, bso=4, scanned=2) -> dict:
    with engine.begin() as conn:
        data = factories.mass_event(conn, starts_at=NOW + timedelta(days=20), card=card, cash=cash, bso=bso, scanned=scanned)
    httpx.post(standin.base + "/_standin/payments", timeout=10, json={"payments": [
        {"id": pid, "amount": {"value": f"{k // 100}.{k % 100:02d}", "currency": "RUB"}} for pid, k in data["payments"].items()
    ]}).raise_for_status()
    return data


def run_all(engine, acquirer, event_id, *, chunk_size=16, action="cancelled", threshold=10, monkeypatch=None):
    run = mass.begin(engine, event_id=event_id, action=action, reason="Артист заболел", started_by="staff:supervisor:anna", now=NOW)
    results = [mass.move_chunk(engine, acquirer, run=run, first_ticket_id=a, last_ticket_id=b, now=NOW, concurrency=8, backoff_base=0.01)
               for a, b in mass.plan_chunks(engine, mass_id=run.id, event_id=event_id, chunk_size=chunk_size)]
    return run, results


def count(engine, table, *where) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def test_every_valid_ticket_is_claimed_paid_or_followed_up_and_a_rerun_creates_nothing(engine, standin, acquirer, monkeypatch):
    monkeypatch.setenv("VOZVRAT_MASS_SEND_THRESHOLD", "10")
    from models.settings import get_settings

    get_settings.cache_clear()
    data = seed(engine, standin)
    declined = sorted(data["payments"])[-1]  # this buyer's card refuses the refund for good
    standin.faults("cancel", payment_id=declined, reason="rejected_by_payee")

    run, results = run_all(engine, acquirer, data["event_id"])
    summary = mass.finish(engine, run=run, now=NOW)

    with engine.connect() as conn:
        assert conn.execute(select(Event.__table__.c.status).where(Event.__table__.c.id == data["event_id"])).scalar_one() == "cancelled"
        states = dict(conn.execute(select(claim_t.c.state, func.count()).group_by(claim_t.c.state)).all())
    # 50 tickets: 2 scanned take no claim; 37 cards paid, 1 declined card and 10 cash/BSO need bank details.
    assert states == {"paid": 37, "needs_bank_details": 11}
    assert summary.tickets == 50 and summary.claims == 48
    assert summary.failures["TICKET_SCANNED"]["count"] == 2
    assert summary.failures["BANK_DETAILS_MISSING"]["count"] == 11
    assert summary.amounts == {"card": 38 * 350000, "cash": 6 * 350000, "bso": 4 * 350000}  # 100 % of the price, no service fee
    assert len(standin.ledger()["refunds"]) == 38  # one call per card, the declined one included
    # One letter per buyer where the refund stands: a held «возврат одобрен» is replaced by the held
    # «деньги отправлены» (37) or «нужны реквизиты» (10) of the same claim (states.lifecycle.SUPERSEDES).
    # The refund notices (more than the threshold of 10) wait for a second person; the ten «нужны
    # реквизиты» are no mass send (released). The declined card's claim left the batch: its approval
    # (held before the refusal) goes out with its own «нужны реквизиты», one by one.
    assert count(engine, outbox_t, outbox_t.c.status == "superseded", outbox_t.c.template == "decision_approved") == 47
    assert count(engine, outbox_t, outbox_t.c.status == "held") == 37
    with engine.connect() as conn:
        sends = dict(conn.execute(select(MassSend.__table__.c.template, MassSend.__table__.c.recipient_count)).all())
        letters = conn.execute(select(outbox_t.c.claim_id, func.count()).where(outbox_t.c.status != "superseded")
                               .group_by(outbox_t.c.claim_id)).all()
        includes = conn.execute(select(outbox_t.c.template, outbox_t.c.payload).where(outbox_t.c.status != "superseded",
                                                                                     outbox_t.c.template != "decision_approved")).all()
    assert sends == {"refund_sent": 37}
    assert sorted(n for _, n in letters) == [1] * 47 + [2]  # the declined card: approval, then the request for bank details
    assert sum(1 for _, payload in includes if payload.get("includes") == "decision_approved") == 47
    # The buyers are told the event was cancelled and why, in the words given when it was cancelled.
    assert {payload.get("event_change_note") for _, payload in includes} == {"Артист заболел"}
    from tasks.emails import render_parts

    template, payload = includes[0]
    assert "отменено. Причина: Артист заболел." in render_parts(template, payload)[1]
    assert count(engine, outbox_t, outbox_t.c.template == "bank_details_needed", outbox_t.c.status == "pending") == 11
    assert count(engine, outbox_t, outbox_t.c.template == "decision_approved", outbox_t.c.status == "pending") == 1
    before = (count(engine, claim_t), count(engine, audit_t), count(engine, outbox_t), count(engine, payout_t))

    # Again, as a re-run of the same event would: every chunk is found done, nothing is written twice.
    run, results = run_all(engine, acquirer, data["event_id"])
    assert all(r.skipped for r in results)
    mass.finish(engine, run=run, now=NOW)
    assert (count(engine, claim_t), count(engine, audit_t), count(engine, outbox_t), count(engine, payout_t)) == before
    assert len(standin.ledger()["refunds"]) == 38
    get_settings.cache_clear()


def test_a_chunk_whose_claims_committed_but_whose_refunds_did_not_resumes_without_filing_again(engine, standin, acquirer):
    data = seed(engine, standin, card=10, cash=0, bso=0, scanned=0)
    run = mass.begin(engine, event_id=data["event_id"], action="replaced", reason="Замена состава", started_by="organizer:1:user:olga", now=NOW)
    (first, last), = mass.plan_chunks(engine, mass_id=run.id, event_id=data["event_id"], chunk_size=100)

    class Killed(BaseException):
        """The worker dies while its refunds are in flight (not an error the chunk could record)."""

    class Dying:
        def create_refund(self, req):
            raise Killed()

    try:
        mass.move_chunk(engine, Dying(), run=run, first_ticket_id=first, last_ticket_id=last, now=NOW)
    except Killed:
        pass
    # The claims committed in the chunk's transaction; the payouts the dead run took are asked again with their keys.
    assert count(engine, claim_t) == 10
    result = mass.move_chunk(engine, acquirer, run=run, first_ticket_id=first, last_ticket_id=last, now=NOW + timedelta(minutes=5))
    assert result.filed == 0 and result.states == {"paid": 10}
    assert count(engine, claim_t) == 10 and len(standin.ledger()["refunds"]) == 10


def test_acquirer_429_and_5xx_are_retried_with_backoff_and_the_same_key(engine, standin, acquirer):
    data = seed(engine, standin, card=6, cash=0, bso=0, scanned=0)
    run = mass.begin(engine, event_id=data["event_id"], action="cancelled", reason="Отмена", started_by="staff:supervisor:anna", now=NOW)
    chunks = mass.plan_chunks(engine, mass_id=run.id, event_id=data["event_id"], chunk_size=100)
    standin.faults("error_429", count=2)
    standin.faults("error_500", count=2, status=503)
    waits: list[float] = []  # the backoffs, recorded instead of slept
    result = mass.move_chunk(engine, acquirer, run=run, first_ticket_id=chunks[0][0], last_ticket_id=chunks[0][1], now=NOW,
                             concurrency=1, backoff_base=0.5, sleep=waits.append)
    assert result.states == {"paid": 6}
    assert waits == [0.5, 1.0, 2.0, 4.0]  # one refund met all four faults in a row (one thread), then went through
    assert len(standin.ledger()["refunds"]) == 6  # each refund made once, whatever was retried


def test_a_refund_that_keeps_failing_leaves_the_batch_for_the_sweep(engine, standin, acquirer):
    with engine.begin() as conn:
        payment = standin.payment("3850.00")
        claim_id = factories.claim_in_payout(conn, acquirer_payment_id=payment, now=NOW)
    from tasks.payouts import open_payouts

    open_payouts(engine, now=NOW, claim_ids=[claim_id])
    standin.faults("error_500", count=3)
    waits: list[float] = []
    report = submit_card_refunds_concurrently(engine, acquirer, now=NOW, claim_ids=[claim_id], attempts=3, backoff_base=0.25,
                                              sleep=waits.append)
    assert waits == [0.25, 0.5]
    assert (report.failed, report.will_retry) == (1, 1)
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.state).where(claim_t.c.id == claim_id)).scalar_one() == "payout_failed"
    assert standin.ledger()["refunds"] == []
