"""refund-claim against a real Prefect server, a real SMTP server and the acquirer stand-in."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from models.claim_views import read_claim
from models.db import get_engine
from models.tables import OutboxMessage
from tasks.intake import issue_organizer_token
from tests import factories as f
from tests.flows.conftest import body_text, claim_run, mail_in, run_of, run_state, wait_for, waiting_in


@pytest.fixture
def world(stack, site_key):
    """An organizer with a token, a Moscow event a week away, a card ticket; the API client."""
    engine = get_engine()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        org = f.organizer(conn, email="org@example.ru")
        event = f.event(conn, starts_at=now + timedelta(days=7), organizer_id=org, title="Концерт в Крокусе")
        order = f.order(conn, created_at=now - timedelta(days=30), buyer_name="Иванов Иван Иванович",
                        buyer_email=f"buyer{event}@example.ru", acquirer_payment_id=f"2d1f5a0e-000f-5000-9000-{event:012d}")
        ticket = f.ticket(conn, event_id=event, order_id=order, price_paid=420000, nominal=420000)
    stack.register_payment(f"2d1f5a0e-000f-5000-9000-{event:012d}", 420000 + 35000)  # the buyer's card payment
    token = issue_organizer_token(engine, org)
    with httpx.Client(base_url=stack.api_url, timeout=30, headers=site_key) as api:
        yield {"engine": engine, "now": now, "org": org, "ticket": ticket, "auth": {"Authorization": f"Bearer {token}"},
               "api": api, "email": f"buyer{event}@example.ru"}


def mail_to(stack, address: str) -> list:
    return [m for m in mail_in(stack.mail_dir) if m["To"] == address]


def test_illness_claim_waits_for_documents_and_organizer_then_pays_and_acknowledges_once(stack, world):
    api, engine = world["api"], world["engine"]
    r = api.post("/claims", json={"ticket_id": world["ticket"], "reason": "illness"})
    assert r.status_code == 201, r.text
    claim = r.json()
    run_id = claim_run(claim["id"], engine)

    run = run_of(run_id)
    assert run.name == claim["number"]
    assert {"reason:illness", f"organizer:{world['org']} Концертное агентство"} <= set(run.tags)  # ids first, readable names after
    assert any(t.startswith("event:") and t.endswith(" Концерт в Крокусе") for t in run.tags)

    wait_for("run suspended for documents", lambda: waiting_in(run_id, "awaiting_documents"))
    assert read_claim(claim["id"], engine=engine).state == "awaiting_documents"

    sick_from = (world["now"] - timedelta(days=1)).date()
    r = api.post(f"/claims/{claim['number']}/documents", json={
        "kind": "sick_leave_gosuslugi", "sick_from": sick_from.isoformat(), "sick_to": (sick_from + timedelta(days=14)).isoformat(),
        "person_name": "Иванов Иван Иванович"})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "awaiting_organizer"
    # Resumed by the documents, the run replays and suspends again for the organizer.
    wait_for("run suspended for the organizer", lambda: waiting_in(run_id, "awaiting_organizer"))

    r = api.post(f"/organizer/claims/{claim['id']}/decision", headers=world["auth"], json={"decision": "approve", "decided_by": "org:test"})
    assert r.status_code == 200, r.text
    assert r.json()["resumed"] is True
    wait_for("run completed", lambda: run_state(run_id) == "COMPLETED")
    assert read_claim(claim["id"], engine=engine).state == "paid"

    mail = wait_for("four buyer emails", lambda: (m := mail_to(stack, world["email"])) and len(m) >= 4 and m)
    subjects = [m["Subject"] for m in mail]
    # Regression: a resumed run replays from the top; the acknowledgement must not go out again.
    assert sum("принята" in s for s in subjects) == 1, subjects
    assert all(claim["number"] in s for s in subjects), subjects
    received = next(m for m in mail if "принята" in m["Subject"])
    # An illness claim's acknowledgement promises no amount before the organizer decides (issue 8, item 6).
    assert "4 200,00" not in body_text(received) and "Решение о возврате принимает организатор" in body_text(received)
    assert any("4 200,00" in body_text(m) and "возврат" in body_text(m).lower() for m in mail if m is not received)
    with engine.connect() as conn:
        acks = conn.execute(select(func.count()).select_from(OutboxMessage).where(
            OutboxMessage.claim_id == claim["id"], OutboxMessage.template == "claim_received")).scalar_one()
    assert acks == 1


def test_decisions_are_scoped_checked_and_explained(stack, world):
    api = world["api"]
    claim = api.post("/claims", json={"ticket_id": world["ticket"], "reason": "other", "description": "командировка"}).json()
    run_id = claim_run(claim["id"])
    wait_for("run suspended", lambda: waiting_in(run_id, "awaiting_organizer"))

    # Another organizer's token: the claim does not exist for them.
    with get_engine().begin() as conn:
        other = f.organizer(conn, email="other@example.ru")
    other_auth = {"Authorization": f"Bearer {issue_organizer_token(get_engine(), other)}"}
    r = api.post(f"/organizer/claims/{claim['id']}/decision", headers=other_auth, json={"decision": "approve"})
    assert r.status_code == 404
    # No credentials at all: 401 (the test client carries the site's service key, which is not an organizer: 403).
    assert httpx.post(f"{stack.api_url}/organizer/claims/{claim['id']}/decision", json={"decision": "approve"}, timeout=30).status_code == 401
    assert api.post(f"/organizer/claims/{claim['id']}/decision", json={"decision": "approve"}).status_code == 403

    r = api.post(f"/organizer/claims/{claim['id']}/decision", headers=world["auth"], json={"decision": "maybe"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "decision"
    r = api.post(f"/organizer/claims/{claim['id']}/decision", headers=world["auth"], json={"decision": "reject"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "note"
    assert "причину" in r.json()["detail"][0]["msg"]

    r = api.post(f"/organizer/claims/{claim['id']}/extension", headers=world["auth"], json={"reason": "Запросили подтверждение у артиста"})
    assert r.status_code == 200 and r.json()["resumed"] is False
    r = api.post(f"/organizer/claims/{claim['id']}/extension", headers=world["auth"], json={"reason": "Ещё раз"})
    assert r.status_code == 409 and r.json()["detail"][0]["type"] == "ALREADY_EXTENDED"

    r = api.post(f"/organizer/claims/{claim['id']}/decision", headers=world["auth"],
                 json={"decision": "reject", "note": "Командировка не является основанием для полного возврата."})
    assert r.status_code == 200 and r.json()["state"] == "rejected"
    wait_for("run completed", lambda: run_state(run_id) == "COMPLETED")
    rejected = wait_for("refusal email", lambda: [m for m in mail_to(stack, world["email"]) if "отказ" in m["Subject"].lower()
                                                   or "Командировка не является" in body_text(m)])
    text = body_text(rejected[-1])
    assert "Командировка не является основанием" in text
    # The event is a week away: the buyer is offered the voluntary refund (50 % at d = 5..9).
    assert "По собственной инициативе" in text and "50" in text

    r = api.post(f"/organizer/claims/{claim['id']}/decision", headers=world["auth"], json={"decision": "approve"})
    assert r.status_code == 409


def test_a_run_resumed_from_the_prefect_ui_form_applies_the_decision_itself(stack, world):
    """Ops may answer a suspended run in the UI: the run checks and records the decision, then pays."""
    from prefect.flow_runs import resume_flow_run

    claim = world["api"].post("/claims", json={"ticket_id": world["ticket"], "reason": "other", "description": "болезнь ребёнка"}).json()
    run_id = claim_run(claim["id"])
    wait_for("run suspended", lambda: waiting_in(run_id, "awaiting_organizer"))
    resume_flow_run(run_id, run_input={"decision": "approve", "amount_kopecks": 300000, "decided_by": "ops:ui"})
    wait_for("run completed", lambda: run_state(run_id) == "COMPLETED")
    assert read_claim(claim["id"], engine=world["engine"]).state == "paid"
    with world["engine"].connect() as conn:
        from models.tables import Claim, ClaimTransition

        approved = conn.execute(select(Claim.approved_amount).where(Claim.id == claim["id"])).scalar_one()
        actors = conn.execute(select(ClaimTransition.actor).where(ClaimTransition.claim_id == claim["id"], ClaimTransition.trigger == "approve")).all()
    assert approved == 300000
    # The form's «decided_by» is typed text: the audit names the channel, never a name a client typed.
    assert [a[0] for a in actors] == ["prefect-ui"]
