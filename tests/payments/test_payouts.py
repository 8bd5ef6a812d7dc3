"""Card refunds end to end: the payout tasks against the YooKassa stand-in through the real adapter,
on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from models.payouts import Payout
from models.tables import Claim, OutboxMessage
from tasks.payouts import (
    _CardPayout,
    open_payouts,
    payout_key,
    reconcile_pending,
    refund_request,
    retry_due_payouts,
    submit_bank_details,
    submit_card_refunds,
)
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
LATER = NOW + timedelta(minutes=5)  # past the "another worker may be asking" window
payout_t, claim_t, outbox_t = Payout.__table__, Claim.__table__, OutboxMessage.__table__


def card_claims(engine, standin, n: int = 1, *, price: int = 350000, approved: int | None = None) -> list[int]:
    ids = []
    with engine.begin() as conn:
        for _ in range(n):
            payment_id = standin.payment(f"{price // 100}.{price % 100:02d}")
            ids.append(factories.claim_in_payout(conn, acquirer_payment_id=payment_id, price_paid=price, approved_amount=approved, now=NOW))
    return ids


def states(engine, ids) -> list[str]:
    with engine.connect() as conn:
        by_id = dict(conn.execute(select(claim_t.c.id, claim_t.c.state).where(claim_t.c.id.in_(ids))).all())
    return [by_id[i] for i in ids]


def payouts(engine, claim_id) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(payout_t).where(payout_t.c.claim_id == claim_id).order_by(payout_t.c.id)).mappings())


def refunds_by_payment(ledger) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in ledger["refunds"]:
        out.setdefault(r["payment_id"], []).append(r)
    return out


def test_card_claims_are_refunded_once_each_and_paid(engine, standin, acquirer):
    ids = card_claims(engine, standin, 3)
    assert states(engine, ids) == ["payout_pending"] * 3

    assert open_payouts(engine, now=NOW) == 3
    assert open_payouts(engine, now=NOW) == 0  # one live payout per claim
    report = submit_card_refunds(engine, acquirer, now=NOW)

    assert (report.asked, report.succeeded) == (3, 3)
    assert states(engine, ids) == ["paid"] * 3
    for claim_id in ids:
        (p,) = payouts(engine, claim_id)
        assert (p["status"], p["attempt"], p["idempotency_key"], p["amount"]) == ("succeeded", 1, payout_key(claim_id, 1), 350000)
        assert p["acquirer_refund_id"]
    refunds = refunds_by_payment(standin.ledger())
    assert len(refunds) == 3
    assert all([(r["status"], r["amount"]["value"]) for r in rs] == [("succeeded", "3500.00")] for rs in refunds.values())
    # a second run finds nothing to do
    assert open_payouts(engine, now=LATER) == 0
    assert submit_card_refunds(engine, acquirer, now=LATER).asked == 0


def test_a_partial_refund_carries_a_54fz_receipt_and_a_full_one_does_not():
    base = dict(id=1, claim_id=7, claim_number="VZ-1", attempt=1, key="k", payment_id="p" * 36, price_paid=350000, buyer_email="b@example.ru")
    partial = refund_request(_CardPayout(amount=175000, **base))
    full = refund_request(_CardPayout(amount=350000, **base))
    assert partial.receipt["items"][0]["amount"] == {"value": "1750.00", "currency": "RUB"}
    assert partial.receipt["customer"] == {"email": "b@example.ru"}
    assert full.receipt is None
    assert partial.idempotency_key == "k" and "VZ-1" in partial.description


def test_partial_refund_pays_the_approved_amount(engine, standin, acquirer):
    (claim_id,) = card_claims(engine, standin, approved=175000)
    open_payouts(engine, now=NOW)
    assert submit_card_refunds(engine, acquirer, now=NOW).succeeded == 1
    (refund,) = standin.ledger()["refunds"]
    assert refund["amount"]["value"] == "1750.00"
    assert states(engine, [claim_id]) == ["paid"]


def test_insufficient_funds_is_retried_later_with_a_new_key_and_paid(engine, standin, acquirer):
    (claim_id,) = card_claims(engine, standin)
    standin.faults("cancel", reason="insufficient_funds")
    open_payouts(engine, now=NOW)

    report = submit_card_refunds(engine, acquirer, now=NOW)
    assert (report.retry_later, report.failed) == (1, 0)
    assert states(engine, [claim_id]) == ["payout_pending"]  # not a failed claim
    (first,) = payouts(engine, claim_id)
    assert (first["status"], first["cancellation_reason"]) == ("retry_later", "insufficient_funds")
    assert first["next_attempt_at"] == NOW + timedelta(hours=1)

    assert open_payouts(engine, now=NOW + timedelta(minutes=30)) == 0  # not due yet
    assert open_payouts(engine, now=NOW + timedelta(hours=1)) == 1
    assert submit_card_refunds(engine, acquirer, now=NOW + timedelta(hours=1)).succeeded == 1

    first, second = payouts(engine, claim_id)
    assert (second["attempt"], second["status"]) == (2, "succeeded")
    assert second["idempotency_key"] != first["idempotency_key"]
    assert states(engine, [claim_id]) == ["paid"]
    assert [r["status"] for r in standin.ledger()["refunds"]] == ["canceled", "succeeded"]


def test_a_refund_canceled_for_good_asks_for_bank_details_then_pays_by_bank_transfer(engine, standin, acquirer):
    (claim_id,) = card_claims(engine, standin)
    standin.faults("cancel", reason="rejected_by_payee")
    open_payouts(engine, now=NOW)

    report = submit_card_refunds(engine, acquirer, now=NOW)
    assert (report.failed, report.bank_details) == (1, 1)
    assert states(engine, [claim_id]) == ["needs_bank_details"]  # via payout_failed, both in the audit trail
    (p,) = payouts(engine, claim_id)
    assert (p["status"], p["cancellation_reason"]) == ("canceled", "rejected_by_payee")
    with engine.connect() as conn:
        templates = list(conn.execute(select(outbox_t.c.template).where(outbox_t.c.claim_id == claim_id)).scalars())
    assert "bank_details_needed" in templates
    assert open_payouts(engine, now=LATER) == 0  # waits for the buyer's details

    assert submit_bank_details(engine, claim_id=claim_id, bik="049805746", account="40602810700000000025",
                               name="Петров Пётр Петрович", now=LATER, actor="buyer:petrov@example.ru") == []
    assert states(engine, [claim_id]) == ["payout_pending"]
    assert open_payouts(engine, now=LATER) == 1
    first, second = payouts(engine, claim_id)
    assert (second["channel"], second["attempt"], second["status"]) == ("bank_transfer", 2, "pending")
    assert submit_card_refunds(engine, acquirer, now=LATER).asked == 0  # never to the card again
    assert [r["status"] for r in standin.ledger()["refunds"]] == ["canceled"]


def test_a_pending_refund_is_settled_by_reconcile(engine, standin, acquirer):
    (claim_id,) = card_claims(engine, standin)
    standin.faults("pending")
    open_payouts(engine, now=NOW)

    assert submit_card_refunds(engine, acquirer, now=NOW).pending == 1
    assert submit_card_refunds(engine, acquirer, now=LATER).asked == 0  # a known refund is polled, not re-created
    assert reconcile_pending(engine, acquirer, now=LATER).pending == 1
    assert states(engine, [claim_id]) == ["payout_pending"]

    standin.settle(status="succeeded")
    assert reconcile_pending(engine, acquirer, now=LATER).succeeded == 1
    assert states(engine, [claim_id]) == ["paid"]
    assert reconcile_pending(engine, acquirer, now=LATER).asked == 0
    assert len(standin.ledger()["refunds"]) == 1


def test_a_pending_refund_canceled_later_fails_the_claim(engine, standin, acquirer):
    (claim_id,) = card_claims(engine, standin)
    standin.faults("pending")
    open_payouts(engine, now=NOW)
    submit_card_refunds(engine, acquirer, now=NOW)
    standin.settle(status="canceled", reason="general_decline")
    assert reconcile_pending(engine, acquirer, now=LATER).failed == 1
    assert states(engine, [claim_id]) == ["needs_bank_details"]


@pytest.mark.parametrize("made_before_error", [False, True], ids=["500-not-made", "500-made-answer-lost"])
def test_a_500_is_asked_again_with_the_same_key_and_refunds_once(engine, standin, acquirer, made_before_error):
    (claim_id,) = card_claims(engine, standin)
    standin.faults("error_500", apply=made_before_error)
    open_payouts(engine, now=NOW)

    report = submit_card_refunds(engine, acquirer, now=NOW)
    assert (report.failed, report.will_retry, report.succeeded) == (1, 1, 0)
    assert states(engine, [claim_id]) == ["payout_failed"]
    (p,) = payouts(engine, claim_id)
    assert p["status"] == "submitted" and "500" in p["last_error"]  # outcome unknown: the row keeps its key
    assert p["next_attempt_at"] == NOW + timedelta(minutes=5)
    assert submit_card_refunds(engine, acquirer, now=LATER).asked == 0  # a failed claim is not paid until retried

    assert retry_due_payouts(engine, now=LATER) != []
    assert submit_card_refunds(engine, acquirer, now=LATER).succeeded == 1
    (p,) = payouts(engine, claim_id)
    assert (p["status"], p["attempt"]) == ("succeeded", 1)
    (refund,) = standin.ledger()["refunds"]
    assert refund["status"] == "succeeded"
    assert states(engine, [claim_id]) == ["paid"]


def test_the_database_refuses_a_second_live_payout_for_a_claim(engine, standin):
    (claim_id,) = card_claims(engine, standin)
    open_payouts(engine, now=NOW)
    with pytest.raises(IntegrityError):
        with engine.begin() as conn:
            conn.execute(insert(payout_t).values(
                claim_id=claim_id, channel="card", amount=1, attempt=9, idempotency_key="other", status="pending",
                created_at=NOW, updated_at=NOW,
            ))


def test_bank_transfer_payouts_never_reach_the_acquirer(engine, standin, acquirer):
    with engine.begin() as conn:
        claim_id = factories.claim_in_payout(conn, payment_method="cash", now=NOW)
    assert states(engine, [claim_id]) == ["needs_bank_details"]
    assert open_payouts(engine, now=NOW) == 0  # no payout without details
    assert submit_card_refunds(engine, acquirer, now=NOW).asked == 0


def test_several_workers_on_postgresql_share_the_queue_and_refund_each_claim_once(pg_url, standin, acquirer):
    """FOR UPDATE SKIP LOCKED: four workers at once, twenty claims, twenty refunds."""
    from concurrent.futures import ThreadPoolExecutor

    from models.db import make_engine

    engine = make_engine(pg_url, pool_size=8)
    try:
        ids = card_claims(engine, standin, 20)
        open_payouts(engine, now=NOW)
        with ThreadPoolExecutor(4) as pool:
            reports = list(pool.map(lambda _: submit_card_refunds(engine, acquirer, now=NOW, limit=5), range(4)))
        assert sum(r.asked for r in reports) == 20
        assert states(engine, ids) == ["paid"] * 20
        refunds = refunds_by_payment(standin.ledger())
        assert len(refunds) == 20 and all(len(rs) == 1 for rs in refunds.values())
    finally:
        engine.dispose()
