"""Issue 9 item 2, retry_payout: a payout that got no answer is retried by the payout-run sweep with
backoff (payout_failed -> retry_payout -> payout_pending, bounded, next attempt stored), or by ops;
a card that refuses for good asks the buyer for bank details. Against the stand-in's ledger: a retry
never pays twice."""
from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from models.payouts import Payout
from models.tables import Claim, ClaimTransition, OutboxMessage
from tasks.acquirer import YooKassaAcquirer
from tasks.payouts import (
    MAX_AUTOMATIC_RETRIES,
    open_payouts,
    retry_due_payouts,
    submit_card_refunds,
    transient_retry_delay,
)
from tests import factories

from .conftest import SECRET, SHOP_ID

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
payout_t, claim_t, audit_t, outbox_t = Payout.__table__, Claim.__table__, ClaimTransition.__table__, OutboxMessage.__table__
runner = CliRunner()


def new_claim(engine, *, payment_id: str, price: int = 350000) -> int:
    with engine.begin() as conn:
        return factories.claim_in_payout(conn, acquirer_payment_id=payment_id, price_paid=price, now=NOW)


def claim(engine, claim_id: int):
    with engine.connect() as conn:
        return conn.execute(select(claim_t).where(claim_t.c.id == claim_id)).mappings().one()


def payouts(engine, claim_id: int) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(payout_t).where(payout_t.c.claim_id == claim_id).order_by(payout_t.c.id)).mappings())


def audit(engine, claim_id: int) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(audit_t).where(audit_t.c.claim_id == claim_id).order_by(audit_t.c.id)).mappings())


def refunds_of(standin, payment_id: str) -> list[tuple[str, str]]:
    return [(r["status"], r["amount"]["value"]) for r in standin.ledger()["refunds"] if r["payment_id"] == payment_id]


@pytest.mark.parametrize("fault", [{"kind": "error_500", "status": 503}, {"kind": "error_429"}, {"kind": "network"}])
def test_no_answer_fails_the_payout_for_now_and_the_sweep_retries_it_with_the_same_key(engine, standin, acquirer, fault):
    """Used to: a 5xx / 429 / network error left the row `submitted` with no retry time, no bound and nothing on the claim."""
    payment = standin.payment("3500.00")
    claim_id = new_claim(engine, payment_id=payment)
    open_payouts(engine, now=NOW)
    if fault["kind"] == "network":
        sender = YooKassaAcquirer(api_url="http://127.0.0.1:9/v3", shop_id=SHOP_ID, secret_key=SECRET, timeout_seconds=2)
    else:
        standin.faults(payment_id=payment, **fault)
        sender = acquirer

    report = submit_card_refunds(engine, sender, now=NOW)

    assert (report.failed, report.will_retry) == (1, 1)
    assert claim(engine, claim_id)["state"] == "payout_failed"
    (p,) = payouts(engine, claim_id)
    assert p["status"] == "submitted" and p["last_error"] and p["next_attempt_at"] == NOW + transient_retry_delay(1)
    last = audit(engine, claim_id)[-1]
    assert (last["trigger"], last["to_state"], last["actor"]) == ("payout_failed", "payout_failed", "acquirer")
    assert "automatic retry 1 of" in last["note"]

    assert retry_due_payouts(engine, now=p["next_attempt_at"] - timedelta(seconds=1)) == []  # not yet
    assert retry_due_payouts(engine, now=p["next_attempt_at"]) == [claim(engine, claim_id)["number"]]
    assert claim(engine, claim_id)["state"] == "payout_pending"
    assert submit_card_refunds(engine, acquirer, now=p["next_attempt_at"]).succeeded == 1

    assert claim(engine, claim_id)["state"] == "paid"
    (p,) = payouts(engine, claim_id)
    assert (p["attempt"], p["status"]) == (1, "succeeded")  # the same payout, the same key
    assert refunds_of(standin, payment) == [("succeeded", "3500.00")]
    assert [a["trigger"] for a in audit(engine, claim_id)][-4:] == ["start_payout", "payout_failed", "retry_payout", "payout_succeeded"]


def test_a_refund_made_before_its_answer_was_lost_is_paid_once_after_the_retry(engine, standin, acquirer):
    """Exactly once: the acquirer made the refund, answered 502; the automatic retry replays it."""
    payment = standin.payment("3500.00")
    claim_id = new_claim(engine, payment_id=payment)
    open_payouts(engine, now=NOW)
    standin.faults("error_500", status=502, apply=True, payment_id=payment)
    submit_card_refunds(engine, acquirer, now=NOW)
    assert refunds_of(standin, payment) == [("succeeded", "3500.00")]  # made, but we never heard
    later = NOW + transient_retry_delay(1)
    retry_due_payouts(engine, now=later)
    assert submit_card_refunds(engine, acquirer, now=later).succeeded == 1
    assert claim(engine, claim_id)["state"] == "paid"
    assert refunds_of(standin, payment) == [("succeeded", "3500.00")]


def test_backoff_is_bounded_then_ops_retry_pays_once_with_the_real_actor(sqlite_url, standin):
    """Backoff through the `vozvrat payouts run` sweep on a moving clock: 5, 10, 20 ... min, then ops."""
    engine = make_engine(sqlite_url)
    payment = standin.payment("3500.00")
    claim_id = new_claim(engine, payment_id=payment)
    number = claim(engine, claim_id)["number"]
    standin.faults("error_429", count=MAX_AUTOMATIC_RETRIES + 1, payment_id=payment)
    run = ["payouts", "run", "--db", sqlite_url, "--api-url", standin.server.api_url]

    clock = NOW
    waits = []
    with freeze_time(clock) as frozen:
        for _attempt in range(MAX_AUTOMATIC_RETRIES + 1):
            result = runner.invoke(app, run)
            assert result.exit_code == 0, result.output
            assert claim(engine, claim_id)["state"] == "payout_failed"
            (p,) = payouts(engine, claim_id)
            if p["next_attempt_at"] is None:
                break
            waits.append(p["next_attempt_at"] - clock)
            frozen.move_to(p["next_attempt_at"] - timedelta(seconds=1))
            assert runner.invoke(app, run).exit_code == 0  # a run before its time changes nothing
            assert claim(engine, claim_id)["state"] == "payout_failed"
            clock = p["next_attempt_at"]
            frozen.move_to(clock)
        assert waits == [transient_retry_delay(n) for n in range(1, MAX_AUTOMATIC_RETRIES + 1)]
        assert waits[:3] == [timedelta(minutes=5), timedelta(minutes=10), timedelta(minutes=20)]
        assert "waits for ops" in audit(engine, claim_id)[-1]["note"]
        assert f"vozvrat payouts retry {number}" in result.output

        frozen.move_to(clock + timedelta(days=3))  # no more automatic retries, however long we wait
        assert runner.invoke(app, run).exit_code == 0
        assert claim(engine, claim_id)["state"] == "payout_failed"
        assert refunds_of(standin, payment) == []

        retried = runner.invoke(app, ["payouts", "retry", number, "--reason", "YooKassa rate limit lifted", "--db", sqlite_url,
                                      "--api-url", standin.server.api_url])
    assert retried.exit_code == 0, retried.output
    assert f"claim {number}: paid" in retried.output
    ops = [a for a in audit(engine, claim_id) if a["actor"].startswith("ops:")]
    assert [(a["trigger"], a["from_state"], a["to_state"], a["actor"]) for a in ops] == [
        ("retry_payout", "payout_failed", "payout_pending", f"ops:{getpass.getuser()}")]
    assert "YooKassa rate limit lifted" in ops[0]["note"]
    automatic = [a for a in audit(engine, claim_id) if a["trigger"] == "retry_payout" and a["actor"] == "payout-retry"]
    assert len(automatic) == MAX_AUTOMATIC_RETRIES
    (p,) = payouts(engine, claim_id)
    assert (p["attempt"], p["status"]) == (1, "succeeded")
    assert refunds_of(standin, payment) == [("succeeded", "3500.00")]
    engine.dispose()


def test_a_failure_after_an_ops_retry_gets_a_fresh_set_of_automatic_retries(engine, standin, acquirer):
    payment = standin.payment("3500.00")
    claim_id = new_claim(engine, payment_id=payment)
    number = claim(engine, claim_id)["number"]
    open_payouts(engine, now=NOW)
    standin.faults("error_500", count=2, payment_id=payment)
    submit_card_refunds(engine, acquirer, now=NOW)
    from tasks.payouts import retry_payout_by_ops

    retry_payout_by_ops(engine, claim_number=number, reason="acquirer incident closed", actor="ops:alice", now=NOW + timedelta(minutes=1))
    submit_card_refunds(engine, acquirer, now=NOW + timedelta(minutes=1))
    (p,) = payouts(engine, claim_id)
    assert p["next_attempt_at"] == NOW + timedelta(minutes=1) + transient_retry_delay(1)
    assert "automatic retry 1 of" in audit(engine, claim_id)[-1]["note"]


@pytest.mark.parametrize("refusal", ["payment_not_found", "card_closed"])
def test_a_card_that_refuses_for_good_asks_the_buyer_for_bank_details(engine, standin, acquirer, refusal):
    """Used to: a permanent refusal left the claim in payout_failed with no way on but a person."""
    if refusal == "payment_not_found":
        payment = "2d1f5a0e-000f-5000-9000-000000000404"  # well-formed, unknown to the acquirer
    else:
        payment = standin.payment("3500.00")
        standin.faults("cancel", reason="yoo_money_account_closed", payment_id=payment)
    claim_id = new_claim(engine, payment_id=payment)
    open_payouts(engine, now=NOW)

    report = submit_card_refunds(engine, acquirer, now=NOW)

    assert (report.failed, report.bank_details, report.will_retry) == (1, 1, 0)
    assert claim(engine, claim_id)["state"] == "needs_bank_details"
    assert [(a["trigger"], a["to_state"]) for a in audit(engine, claim_id)][-2:] == [
        ("payout_failed", "payout_failed"), ("start_payout", "needs_bank_details")]
    (p,) = payouts(engine, claim_id)
    assert p["status"] == "canceled" and p["cancellation_reason"]
    with engine.connect() as conn:
        templates = list(conn.execute(select(outbox_t.c.template).where(outbox_t.c.claim_id == claim_id)).scalars())
    assert templates.count("bank_details_needed") == 1
    assert retry_due_payouts(engine, now=NOW + timedelta(days=1)) == []  # nothing automatic: the buyer acts
    assert [s for s, _ in refunds_of(standin, payment) if s != "canceled"] == []


def test_a_refund_above_what_is_left_of_the_payment_waits_for_a_person_not_for_bank_details(engine, standin, acquirer):
    """The acquirer answers «more than is left of the payment» when the money already went back some
    other way; asking the buyer for bank details would then pay the ticket a second time."""
    payment = standin.payment("100.00")  # the claim asks 3500.00
    claim_id = new_claim(engine, payment_id=payment)
    open_payouts(engine, now=NOW)

    report = submit_card_refunds(engine, acquirer, now=NOW)

    assert (report.failed, report.bank_details, report.will_retry) == (1, 0, 0)
    assert claim(engine, claim_id)["state"] == "payout_failed"
    with engine.connect() as conn:
        templates = list(conn.execute(select(outbox_t.c.template).where(outbox_t.c.claim_id == claim_id)).scalars())
    assert "bank_details_needed" not in templates
    assert retry_due_payouts(engine, now=NOW + timedelta(days=1)) == []  # a person decides, not the sweep
    assert [s for s, _ in refunds_of(standin, payment) if s != "canceled"] == []


def test_retry_cli_bad_input_exits_2_with_one_line(sqlite_url, standin):
    engine = make_engine(sqlite_url)
    payment = standin.payment("3500.00")
    claim_id = new_claim(engine, payment_id=payment)
    number = claim(engine, claim_id)["number"]
    engine.dispose()
    base = ["--db", sqlite_url, "--api-url", standin.server.api_url]
    cases = {
        "unknown claim": ["payouts", "retry", "VZ-404", "--reason", "x", *base],
        "not failed": ["payouts", "retry", number, "--reason", "x", *base],  # payout_pending
        "no reason": ["payouts", "retry", number, *base],
        "blank reason": ["payouts", "retry", number, "--reason", "  ", *base],
    }
    for what, args in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, what
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (what, result.stderr)
    assert standin.ledger()["refunds"] == []
