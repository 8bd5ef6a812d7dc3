"""Drivers that end a waiting claim's run, against the real stack (issue 9: no claim waits forever):
the documents window closing (sla-watch), the buyer withdrawing, the organizer refusing false documents."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prefect import get_client
from sqlalchemy import select

from models.claim_store import claim_t
from models.claim_views import read_claim
from models.db import get_engine
from states.policy import documents_deadline
from tasks.intake import issue_organizer_token
from tests import factories as f
from tests.flows.conftest import body_text, mail_in, wait_for
from tests.flows.test_sla_watch import MSK, sla_watch_at


def run_of(flow_run_id: str):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def flow_run_id_of(engine, claim_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(claim_t.c.flow_run_id).where(claim_t.c.id == claim_id)).scalar_one()


def run_is(flow_run_id: str, state_type: str) -> bool:
    state = run_of(flow_run_id).state
    return bool(state and state.type.value == state_type)


@pytest.fixture
def world(stack, site_key):
    """An organizer with a token, a Moscow event two days away, a card ticket, an illness claim whose run
    is suspended waiting for documents; the API client."""
    engine = get_engine()
    now = datetime.now(UTC)
    event_start = (now + timedelta(days=2)).astimezone(MSK)
    with engine.begin() as conn:
        org = f.organizer(conn, email="drivers-org@example.ru")
        event = f.event(conn, starts_at=event_start, organizer_id=org, title="Лебединое озеро")
        email = f"drivers{event}@example.ru"
        order = f.order(conn, created_at=now - timedelta(days=30), buyer_email=email, buyer_name="Петрова Анна Сергеевна",
                        acquirer_payment_id=f"2d1f5a0e-000f-5000-9000-{event:012d}")
        ticket = f.ticket(conn, event_id=event, order_id=order)
    with httpx.Client(base_url=stack.api_url, timeout=30, headers=site_key) as api:
        r = api.post("/claims", json={"ticket_id": ticket, "reason": "illness"})
        assert r.status_code == 201, r.text
        claim = r.json()
        # The API answers before Prefect is asked: the run starter creates the run and links it.
        claim["flow_run_id"] = wait_for("the claim's run exists", lambda: flow_run_id_of(engine, claim["id"]))
        wait_for("the run waits for documents", lambda: run_is(claim["flow_run_id"], "PAUSED"))
        assert read_claim(claim["id"], engine=engine).state == "awaiting_documents"
        yield {"engine": engine, "api": api, "claim": claim, "email": email, "event_start": event_start,
               "auth": {"Authorization": f"Bearer {issue_organizer_token(engine, org)}"}}


def test_sla_watch_refuses_a_claim_whose_documents_never_came_and_its_run_ends(stack, world):
    """Used to wait forever: the claim stayed awaiting documents and its run stayed suspended."""
    claim = world["claim"]
    sla_watch_at(documents_deadline(world["event_start"]) + timedelta(hours=1))
    assert read_claim(claim["id"], engine=world["engine"]).state == "rejected"
    wait_for("the claim's run completed", lambda: run_is(claim["flow_run_id"], "COMPLETED"))

    refusal = wait_for("the refusal email", lambda: [m for m in mail_in(stack.mail_dir) if m["To"] == world["email"] and m["X-Vozvrat-Template"] == "decision_rejected"])
    assert "Документы не поступили в течение 14 дней после мероприятия." in body_text(refusal[0])


def test_a_withdrawn_claims_run_ends(stack, world):
    claim = world["claim"]
    r = world["api"].post(f"/claims/{claim['number']}/withdrawal", json={"reason": "Выздоровела"})
    assert r.status_code == 200 and r.json()["state"] == "withdrawn", r.text
    wait_for("the claim's run completed", lambda: run_is(claim["flow_run_id"], "COMPLETED"))
    assert read_claim(claim["id"], engine=world["engine"]).state == "withdrawn"
    wait_for("the withdrawal email", lambda: [m for m in mail_in(stack.mail_dir) if m["To"] == world["email"] and "отозвана" in m["Subject"]])


def test_a_claim_refused_for_false_documents_ends_its_run(stack, world):
    claim, api = world["claim"], world["api"]
    event_day = world["event_start"].date()
    r = api.post(f"/claims/{claim['number']}/documents", json={
        "kind": "sick_leave_gosuslugi", "sick_from": (event_day - timedelta(days=3)).isoformat(),
        "sick_to": (event_day + timedelta(days=3)).isoformat(), "person_name": "Петрова Анна Сергеевна"})
    assert r.status_code == 201 and r.json()["state"] == "awaiting_organizer", r.text
    wait_for("the run waits for the organizer", lambda: run_is(claim["flow_run_id"], "PAUSED")
             and "-awaiting-organizer-" in (run_of(claim["flow_run_id"]).state.state_details.pause_key or ""))
    r = api.post(f"/organizer/claims/{claim['id']}/false-documents", headers=world["auth"], json={"note": "Номер больничного не найден"})
    assert r.status_code == 200 and r.json() == {"claim_id": claim["id"], "number": claim["number"], "state": "rejected", "resumed": True}
    wait_for("the claim's run completed", lambda: run_is(claim["flow_run_id"], "COMPLETED"))
