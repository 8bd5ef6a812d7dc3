"""Nothing stuck, nothing lost (issue 9), against a real Prefect server, its runner and the run starter.

The stack's starter sweeps every 2 s for claims quiet for 3 s (tests/flows/conftest.py).
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prefect import get_client
from prefect.states import Crashed
from sqlalchemy import select

from models.claim_store import apply_batch
from models.claim_views import read_claim
from models.db import get_engine
from models.payouts import Payout
from models.tables import ClaimTransition, OutboxMessage, RunAction
from tasks.intake import file_buyer_claim, issue_organizer_token
from tasks.payouts import submit_bank_details
from tests import factories as f
from tests.flows.conftest import claim_run, run_of, run_state, wait_for, waiting_in


@pytest.fixture
def shop(stack, site_key):
    """An organizer with a token and a Moscow event three weeks away; `ticket()` sells one more seat."""
    engine = get_engine()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        org = f.organizer(conn, email="starter-org@example.ru")
        event = f.event(conn, starts_at=now + timedelta(days=21), organizer_id=org, title="Джаз в саду")

    def ticket(payment_method: str = "card") -> int:
        payment_id = f"2d1f5a0e-000f-5000-9000-{next(f._seq):012d}"
        if payment_method == "card":
            stack.register_payment(payment_id, 300000)  # the buyer's card payment, known to the acquirer
        with engine.begin() as conn:
            n = f.order(conn, created_at=now - timedelta(days=30), buyer_email=f"starter{event}@example.ru", payment_method=payment_method,
                        acquirer_payment_id=payment_id)
            return f.ticket(conn, event_id=event, order_id=n, price_paid=300000, nominal=300000)

    with httpx.Client(base_url=stack.api_url, timeout=30, headers=site_key) as api:
        yield {"engine": engine, "now": now, "ticket": ticket, "api": api,
               "auth": {"Authorization": f"Bearer {issue_organizer_token(engine, org)}"}}


def _state(engine, claim_id: int, *states: str):
    return lambda: read_claim(claim_id, engine=engine).state in states


def _waiting_for_organizer(shop) -> tuple[int, str]:
    r = shop["api"].post("/claims", json={"ticket_id": shop["ticket"](), "reason": "other", "description": "переезд"})
    assert r.status_code == 201, r.text
    run_id = claim_run(r.json()["id"], shop["engine"])
    wait_for("run suspended for the organizer", lambda: waiting_in(run_id, "awaiting_organizer"))
    return r.json()["id"], run_id


def test_with_prefect_down_a_filing_and_a_decision_are_answered_and_their_runs_catch_up(stack, shop):
    """Regression: both answered 500 (recorded all the same) and a retry got 409."""
    engine, api = shop["engine"], shop["api"]
    decided, decided_run = _waiting_for_organizer(shop)

    stack.stop_process("prefect-server")
    try:
        filed = api.post("/claims", json={"ticket_id": shop["ticket"](), "reason": "voluntary"})
        assert filed.status_code == 201, filed.text
        assert filed.json()["state"] == "filed" and filed.json()["flow_run_id"] is None
        r = api.post(f"/organizer/claims/{decided}/decision", headers=shop["auth"], json={"decision": "approve", "decided_by": "org:outage"})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "approved"
        wait_for("the starter tried and failed", lambda: _attempted(engine, filed.json()["id"]))
    finally:
        stack.start_prefect_server()
        if stack.processes["deployments"].poll() is not None:  # the runner gives up on a dead server
            stack.processes.pop("deployments")
            stack.start_deployments()

    wait_for("the filed claim paid", _state(engine, filed.json()["id"], "paid"), timeout=180)
    wait_for("the decided claim paid", _state(engine, decided, "paid"), timeout=180)
    assert run_of(claim_run(filed.json()["id"], engine)).name == filed.json()["number"]
    wait_for("the decided claim's run completed", lambda: run_state(decided_run) == "COMPLETED")


def _attempted(engine, claim_id: int) -> bool:
    with engine.connect() as conn:
        action = conn.execute(select(RunAction.__table__).where(RunAction.claim_id == claim_id)).one()
    return action.attempts >= 1 and action.status == "pending" and "Connect" in (action.last_error or "")


def test_claims_decided_with_no_resume_recorded_are_resumed_by_the_sweep(stack, shop):
    """Regression: an API killed mid-bulk left 106 of 120 approved claims with runs nothing resumed."""
    engine = shop["engine"]
    waiting = [_waiting_for_organizer(shop) for _ in range(3)]
    # Decided the way the killed process left them: the step recorded, no resume anywhere.
    result = apply_batch(engine, claim_ids=[c for c, _ in waiting[:2]], trigger="approve", actor="org:bulk", now=datetime.now(UTC))
    assert result.moved_count == 2
    result = apply_batch(engine, claim_ids=[waiting[2][0]], trigger="reject", actor="org:bulk", now=datetime.now(UTC),
                         data={"refusal_code": "ORGANIZER_REFUSED", "refusal_message": "Нет оснований"})
    assert result.moved_count == 1

    for claim_id, run_id in waiting:
        wait_for(f"claim {claim_id}'s run finished", lambda: run_state(run_id) == "COMPLETED", timeout=180)
    assert [read_claim(c, engine=engine).state for c, _ in waiting] == ["paid", "paid", "rejected"]
    with engine.connect() as conn:
        outcomes = conn.execute(select(RunAction.outcome).where(RunAction.claim_id.in_([c for c, _ in waiting]), RunAction.kind == "resume")).scalars().all()
    assert len([o for o in outcomes if o.startswith("resumed")]) == 3, outcomes


def test_a_run_gone_or_crashed_is_replaced_and_the_claim_still_reaches_payout(stack, shop):
    engine, api = shop["engine"], shop["api"]
    (gone, gone_run), (crashed, crashed_run) = _waiting_for_organizer(shop), _waiting_for_organizer(shop)
    with get_client(sync_client=True) as client:
        client.delete_flow_run(gone_run)
        client.set_flow_run_state(crashed_run, Crashed(message="worker killed"), force=True)

    for claim_id in (gone, crashed):
        r = api.post(f"/organizer/claims/{claim_id}/decision", headers=shop["auth"], json={"decision": "approve", "decided_by": "org:test"})
        assert r.status_code == 200, r.text
    for claim_id in (gone, crashed):
        wait_for(f"claim {claim_id} paid", _state(engine, claim_id, "paid"), timeout=180)
    for claim_id, old in ((gone, gone_run), (crashed, crashed_run)):
        new = claim_run(claim_id, engine)
        assert new != old
        assert run_of(new).name.endswith("#2")
        assert run_state(new) in ("COMPLETED", "RUNNING")
    assert run_state(crashed_run) == "CRASHED"


def test_a_claim_waiting_for_bank_details_is_a_suspended_run_that_says_so_and_goes_on_when_they_arrive(stack, shop):
    """Regression: the run of a cash claim ended Completed while the claim waited for bank details."""
    engine = shop["engine"]
    claim = file_buyer_claim(engine, ticket_id=shop["ticket"]("cash"), reason="voluntary", actor="service:test", now=datetime.now(UTC))
    run_id = claim_run(claim.id, engine)
    wait_for("run suspended for bank details", lambda: waiting_in(run_id, "needs_bank_details"))
    assert run_of(run_id).state.name.startswith("Ждёт реквизиты покупателя · до ")  # whom it waits on, until when
    assert run_of(run_id).state.state_details.pause_key.startswith(f"claim-{claim.id}-needs-bank-details-v")

    assert submit_bank_details(engine, claim_id=claim.id, bik="049805746", account="40602810700000000025",
                               name="Соколов Денис Викторович", now=datetime.now(UTC), actor="buyer:starter@example.ru") == []
    wait_for("run completed", lambda: run_state(run_id) == "COMPLETED", timeout=120)
    assert read_claim(claim.id, engine=engine).state == "payout_pending"
    with engine.connect() as conn:
        payouts = conn.execute(select(Payout.channel, Payout.status).where(Payout.claim_id == claim.id)).all()
    assert [tuple(p) for p in payouts] == [("bank_transfer", "pending")]


def test_steps_are_stamped_when_they_happen_not_when_the_run_was_scheduled(stack, shop):
    """Regression: audit rows and sent_at carried the run's scheduled start, 60-100 s early under load."""
    engine = shop["engine"]
    ticket = shop["ticket"]()
    filed_from = datetime.now(UTC)
    r = shop["api"].post("/claims", json={"ticket_id": ticket, "reason": "voluntary"})
    claim_id = r.json()["id"]
    run_id = claim_run(claim_id, engine)
    wait_for("run completed", lambda: run_state(run_id) == "COMPLETED", timeout=120)
    run = run_of(run_id)
    started = run.start_time
    assert started > run.expected_start_time
    with engine.connect() as conn:
        audit = dict(conn.execute(select(ClaimTransition.trigger, ClaimTransition.at).where(ClaimTransition.claim_id == claim_id)).all())
        sent = conn.execute(select(OutboxMessage.sent_at).where(OutboxMessage.claim_id == claim_id,
                                                                 OutboxMessage.template == "claim_received")).scalar_one()
    for trigger in ("assess", "start_payout", "payout_succeeded"):
        assert audit[trigger] >= started, (trigger, audit[trigger], started)
    assert audit["assess"] <= audit["start_payout"] <= audit["payout_succeeded"] <= run.end_time
    # The API itself sends the acknowledgement right after its answer (before the run starts): sent_at
    # is when that happened, never a moment before the claim was filed.
    assert sent is None or sent >= filed_from
