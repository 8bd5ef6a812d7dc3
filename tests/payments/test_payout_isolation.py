"""Issue 8 item 5: a claim's run pays its own claim only, and one payout's failure is that payout's alone.

Against the YooKassa stand-in through the real adapter, on SQLite and PostgreSQL.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prefect.logging import disable_run_logger
from sqlalchemy import select
from typer.testing import CliRunner

from models.claim_store import apply_trigger, file_claims
from models.db import get_engine, make_engine
from models.payouts import Payout
from models.settings import get_settings
from models.tables import Claim
from states.policy import Reason
from tasks.acquirer import RefundRequest, RefundResult, YooKassaAcquirer
from tasks.payouts import open_payouts, submit_card_refunds
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
MALFORMED = "pay-123"  # not a YooKassa payment id: the SDK raises ValueError before sending
payout_t, claim_t = Payout.__table__, Claim.__table__


def approved_card_claim(conn, payment_id: str, price: int = 350000) -> int:
    """A voluntary card claim 19 days before its event, assessed: approved, its payout not started."""
    event_id = factories.event(conn, starts_at=NOW + timedelta(days=19))
    order_id = factories.order(conn, created_at=NOW - timedelta(days=30), acquirer_payment_id=payment_id)
    ticket_id = factories.ticket(conn, event_id=event_id, order_id=order_id, price_paid=price, nominal=price)
    (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=Reason.VOLUNTARY, actor="buyer", now=NOW)
    apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=NOW)
    return claim_id


def state(engine, claim_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(claim_t.c.state).where(claim_t.c.id == claim_id)).scalar_one()


def payouts_of(engine, claim_id: int) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(payout_t).where(payout_t.c.claim_id == claim_id).order_by(payout_t.c.id)).mappings())


def refunded_payments(standin) -> list[str]:
    return [r["payment_id"] for r in standin.ledger()["refunds"]]


@pytest.fixture
def settings_at(db_url, standin, monkeypatch):
    """The process settings a claim run reads: this test's database and the stand-in."""
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", db_url)
    monkeypatch.setenv("VOZVRAT_ACQUIRER_API_URL", standin.server.api_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    yield get_engine()
    get_engine().dispose()
    get_settings.cache_clear()
    get_engine.cache_clear()


def test_a_claims_run_pays_its_own_claim_and_no_other(settings_at, standin):
    """Used to: pay_refund opened and sent every due payout, so one claim's run paid other claims."""
    from tasks.claims import pay_refund

    engine = settings_at
    with engine.begin() as conn:
        other_payment = standin.payment("3500.00")
        other = factories.claim_in_payout(conn, acquirer_payment_id=other_payment, now=NOW)
        mine_payment = standin.payment("3500.00")
        mine = approved_card_claim(conn, mine_payment)
    open_payouts(engine, now=NOW)  # the other claim's payout is open and due

    with disable_run_logger():
        assert pay_refund.fn(mine, NOW) == "paid"

    assert refunded_payments(standin) == [mine_payment]
    assert state(engine, other) == "payout_pending"
    assert [p["status"] for p in payouts_of(engine, other)] == ["pending"]  # left for the payout-run sweep


def test_another_claims_bad_payout_does_not_fail_this_claims_run(settings_at, standin):
    """Used to: the SDK's ValueError on another claim's malformed payment id failed this claim's run."""
    from tasks.claims import pay_refund

    engine = settings_at
    with engine.begin() as conn:
        bad = factories.claim_in_payout(conn, acquirer_payment_id=MALFORMED, now=NOW)
        mine_payment = standin.payment("3500.00")
        mine = approved_card_claim(conn, mine_payment)

    with disable_run_logger():
        assert pay_refund.fn(mine, NOW) == "paid"

    assert refunded_payments(standin) == [mine_payment]
    assert state(engine, bad) == "payout_pending" and payouts_of(engine, bad) == []


def test_a_malformed_payment_id_fails_its_own_payout_and_the_batch_goes_on(engine, standin, acquirer):
    """Used to: the ValueError aborted the batch after every row was marked submitted; valid refunds never left."""
    with engine.begin() as conn:
        bad = factories.claim_in_payout(conn, acquirer_payment_id=MALFORMED, now=NOW)  # first in the batch
        good = [factories.claim_in_payout(conn, acquirer_payment_id=standin.payment("3500.00"), now=NOW) for _ in range(2)]
    assert open_payouts(engine, now=NOW) == 3

    report = submit_card_refunds(engine, acquirer, now=NOW)

    assert (report.asked, report.succeeded, report.failed) == (3, 2, 1)
    assert [state(engine, c) for c in good] == ["paid", "paid"]
    (p,) = payouts_of(engine, bad)
    assert p["status"] == "canceled" and p["cancellation_reason"] == "acquirer_error:invalid_request"
    assert "payment_id" in p["last_error"]
    # the card cannot take this refund: the buyer is asked for bank details
    assert state(engine, bad) == "needs_bank_details"
    assert len(standin.ledger()["refunds"]) == 2


class ExplodingFor:
    """The real adapter, except that one chosen payment's refund raises something nobody expected."""

    def __init__(self, inner: YooKassaAcquirer, payment_id: str):
        self.inner, self.payment_id = inner, payment_id

    def create_refund(self, req: RefundRequest) -> RefundResult:
        if req.payment_id == self.payment_id:
            raise RuntimeError("adapter bug")
        return self.inner.create_refund(req)

    def get_refund(self, refund_id: str) -> RefundResult:
        return self.inner.get_refund(refund_id)


def test_an_unexpected_exception_is_recorded_on_its_payout_and_the_batch_goes_on(engine, standin, acquirer):
    """Used to: any exception from one payout escaped submit_card_refunds and stranded the rest as submitted."""
    with engine.begin() as conn:
        payments = [standin.payment("3500.00") for _ in range(3)]
        claims = [factories.claim_in_payout(conn, acquirer_payment_id=p, now=NOW) for p in payments]
    open_payouts(engine, now=NOW)

    report = submit_card_refunds(engine, ExplodingFor(acquirer, payments[0]), now=NOW)

    assert (report.asked, report.succeeded, report.failed, report.errors) == (3, 2, 1, 1)
    assert [state(engine, c) for c in claims] == ["payout_failed", "paid", "paid"]
    (p,) = payouts_of(engine, claims[0])
    # outcome unknown to us: the row keeps its key (a retry asks again with it), waits for ops
    assert p["status"] == "submitted" and p["next_attempt_at"] is None
    assert p["last_error"] == "RuntimeError: adapter bug"
    assert any("adapter bug" in line for line in report.anomalies)
    # the next run does not trip over it again
    assert submit_card_refunds(engine, acquirer, now=NOW + timedelta(minutes=10)).asked == 0


def test_cli_run_reports_a_bad_payout_without_a_traceback(sqlite_url, standin):
    """Used to: `vozvrat payouts run` died with a ValueError traceback on one malformed payment id."""
    from cli.main import app

    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        bad = factories.claim_in_payout(conn, acquirer_payment_id=MALFORMED, now=NOW)
        good = factories.claim_in_payout(conn, acquirer_payment_id=standin.payment("3500.00"), now=NOW)

    result = CliRunner().invoke(app, ["payouts", "run", "--db", sqlite_url, "--api-url", standin.server.api_url])

    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    assert state(engine, good) == "paid"
    assert state(engine, bad) == "needs_bank_details"
    number = factories_number(engine, bad)
    assert number in result.output
    engine.dispose()


def factories_number(engine, claim_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()


class PollExplodingFor(ExplodingFor):
    def __init__(self, inner: YooKassaAcquirer, refund_id: str):
        super().__init__(inner, payment_id="")
        self.refund_id = refund_id

    def get_refund(self, refund_id: str) -> RefundResult:
        if refund_id == self.refund_id:
            raise RuntimeError("poll bug")
        return self.inner.get_refund(refund_id)


def test_one_bad_poll_does_not_stop_reconcile_and_fails_no_claim(engine, standin, acquirer):
    """Used to: an exception while polling one pending refund aborted reconcile for every other one."""
    from tasks.payouts import reconcile_pending

    with engine.begin() as conn:
        claims = [factories.claim_in_payout(conn, acquirer_payment_id=standin.payment("3500.00"), now=NOW) for _ in range(2)]
    standin.faults("pending", count=2)
    open_payouts(engine, now=NOW)
    assert submit_card_refunds(engine, acquirer, now=NOW).pending == 2
    standin.settle(status="succeeded")
    first_refund = payouts_of(engine, claims[0])[0]["acquirer_refund_id"]

    report = reconcile_pending(engine, PollExplodingFor(acquirer, first_refund), now=NOW + timedelta(minutes=5))

    assert (report.asked, report.succeeded, report.deferred) == (2, 1, 1)
    assert [state(engine, c) for c in claims] == ["payout_pending", "paid"]  # the refund exists: not a failed payout
    assert payouts_of(engine, claims[0])[0]["last_error"] == "RuntimeError: poll bug"
    assert reconcile_pending(engine, acquirer, now=NOW + timedelta(minutes=10)).succeeded == 1
    assert len(standin.ledger()["refunds"]) == 2
