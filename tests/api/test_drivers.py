"""Drivers in the API (issue 9): the buyer withdraws, the organizer refuses false documents, and every
organizer step is recorded under the token's principal, never a name the client typed."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import app, clock
from models.claim_store import apply_trigger, audit_t, claim_t, document_t, file_claims, order_t, outbox_t, ticket_t
from models.crypto import open_sealed
from models.db import get_engine
from models.settings import get_settings
from states.policy import REFUSAL_MESSAGES_RU
from tasks.auth import create_service_key
from tasks.emails import render_parts
from tasks.intake import issue_organizer_token
from tests import factories as f

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
BUYER = "Anna.Petrova@example.ru"


@pytest.fixture
def client(db_url, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", db_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[clock] = lambda: NOW
    monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "false")  # sign-in codes are read from the outbox
    # Buyer endpoints need a principal (issue 10): by default the operator's site, vouching for its buyer.
    service_key = create_service_key(get_engine(), "site", now=NOW)
    with TestClient(app, headers={"Authorization": f"Bearer {service_key}"}) as c:
        yield c
    app.dependency_overrides.clear()
    get_engine().dispose()
    get_settings.cache_clear()
    get_engine.cache_clear()


@pytest.fixture
def organizer():
    """(organizer id, auth header) for an organizer with a token."""
    engine = get_engine()
    with engine.begin() as conn:
        org = f.organizer(conn)
    return org, {"Authorization": f"Bearer {issue_organizer_token(engine, org)}"}


def claim_waiting(*, organizer_id: int, reason: str, buyer_email: str = BUYER) -> tuple[int, str]:
    """A claim filed 10 days before its event and assessed: (id, number)."""
    engine = get_engine()
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + timedelta(days=10), organizer_id=organizer_id, title="Щелкунчик")
        order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_email=buyer_email, buyer_name="Петрова Анна Сергеевна")
        ticket = f.ticket(conn, event_id=event, order_id=order)
        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason=reason, actor="buyer", now=NOW - timedelta(hours=1))
        apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=NOW - timedelta(hours=1))
        number = conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()
    return claim_id, number


def claim_row(claim_id: int):
    with get_engine().connect() as conn:
        return conn.execute(select(claim_t).where(claim_t.c.id == claim_id)).one()


def audit(claim_id: int) -> list[tuple]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(audit_t.c.trigger, audit_t.c.from_state, audit_t.c.to_state, audit_t.c.actor)
            .where(audit_t.c.claim_id == claim_id).order_by(audit_t.c.id))]


def outbox(claim_id: int) -> dict[str, tuple[str, dict]]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(outbox_t.c.template, outbox_t.c.recipient, outbox_t.c.payload).where(outbox_t.c.claim_id == claim_id))
        return {r.template: (r.recipient, r.payload) for r in rows}


# --- the principal ---------------------------------------------------------------------------------

def test_a_decision_records_the_token_principal_not_the_name_the_client_typed(client, organizer):
    """Used to write actor «Президент» (the request body's decided_by) into the audit row."""
    org, auth = organizer
    claim_id, _ = claim_waiting(organizer_id=org, reason="other")
    r = client.post(f"/organizer/claims/{claim_id}/decision", headers=auth,
                    json={"decision": "reject", "note": "Мероприятие состоится", "decided_by": "Президент"})
    assert r.status_code == 200, r.text
    assert audit(claim_id)[-1] == ("reject", "awaiting_organizer", "rejected", f"organizer:{org}")
    assert claim_row(claim_id).decided_by == f"organizer:{org}"


def test_an_extension_and_a_bulk_decision_record_the_token_principal(client, organizer):
    org, auth = organizer
    extended, _ = claim_waiting(organizer_id=org, reason="other")
    bulk = [claim_waiting(organizer_id=org, reason="other")[0] for _ in range(2)]
    r = client.post(f"/organizer/claims/{extended}/extension", headers=auth, json={"reason": "Запросили справку", "decided_by": "Президент"})
    assert r.status_code == 200, r.text
    numbers = [claim_row(claim_id).number for claim_id in bulk]
    r = client.post("/organizer/decisions", headers=auth, json={"numbers": numbers, "decision": "approve", "decided_by": "Президент"})
    assert r.json()["decided"] == 2 and [x["number"] for x in r.json()["results"] if x["outcome"] == "decided"] == numbers, r.text
    assert audit(extended)[-1] == ("extend_review", "awaiting_organizer", "awaiting_organizer", f"organizer:{org}")
    for claim_id in bulk:
        assert audit(claim_id)[-1] == ("approve", "awaiting_organizer", "approved", f"organizer:{org}")
        assert claim_row(claim_id).decided_by == f"organizer:{org}"


def test_decided_by_is_no_longer_part_of_the_decision_schemas(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("Decision", "Extension", "BulkDecision"):
        assert "decided_by" not in schemas[name]["properties"], name


# --- withdraw --------------------------------------------------------------------------------------

def buyer_token(client, number: str, email: str = BUYER) -> dict[str, str]:
    """Sign in as the buyer of the claim's order: the code sent to the order's email buys a token (issue 10)."""
    with get_engine().connect() as conn:
        order_number = conn.execute(select(order_t.c.number).join(ticket_t, ticket_t.c.order_id == order_t.c.id)
                                    .join(claim_t, claim_t.c.ticket_id == ticket_t.c.id).where(claim_t.c.number == number)).scalar_one()
    assert client.post("/buyer/session", json={"order_number": order_number, "email": email}).status_code == 202
    with get_engine().connect() as conn:
        payload = conn.execute(select(outbox_t.c.payload).where(outbox_t.c.template == "buyer_code").order_by(outbox_t.c.id.desc())).first()[0]
    code = open_sealed(payload)["code"]
    r = client.post("/buyer/session/verify", json={"order_number": order_number, "code": code})
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_the_buyer_withdraws_a_claim_awaiting_documents(client, organizer):
    """Used to be impossible: `withdraw` had no driver, so a buyer could not take a claim back."""
    org, _ = organizer
    claim_id, number = claim_waiting(organizer_id=org, reason="illness")
    assert claim_row(claim_id).state == "awaiting_documents"
    headers = buyer_token(client, number, email=" anna.petrova@EXAMPLE.ru ")

    r = client.post(f"/claims/{number}/withdrawal", headers=headers, json={"reason": "Выздоровела, пойду"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "withdrawn" and r.json()["number"] == number
    assert claim_row(claim_id).state == "withdrawn"
    # The principal is the order the buyer proved by the emailed code, never what the client typed.
    (trigger, source, dest, actor) = audit(claim_id)[-1]
    assert (trigger, source, dest) == ("withdraw", "awaiting_documents", "withdrawn") and actor.startswith("buyer:order:ORD-")

    recipient, payload = outbox(claim_id)["claim_withdrawn"]
    assert recipient == BUYER
    subject, text, _ = render_parts("claim_withdrawn", payload)
    assert subject == f"Заявка № {number} отозвана"
    assert "Вы отозвали заявку на возврат" in text and "«Щелкунчик»" in text and "Петрова Анна Сергеевна" in text

    # A withdrawn claim no longer holds the ticket, and cannot be withdrawn twice.
    r = client.post(f"/claims/{number}/withdrawal", headers=headers, json={})
    assert r.status_code == 409 and r.json()["detail"][0]["type"] == "wrong_state"


def test_another_orders_buyer_answers_404_exactly_like_a_missing_claim_and_changes_nothing(client, organizer):
    org, _ = organizer
    claim_id, number = claim_waiting(organizer_id=org, reason="other")
    _, other_number = claim_waiting(organizer_id=org, reason="other", buyer_email="someone.else@example.ru")
    stranger = buyer_token(client, other_number, email="someone.else@example.ru")
    before = audit(claim_id)
    wrong = client.post(f"/claims/{number}/withdrawal", headers=stranger, json={})
    missing = client.post("/claims/VZ-9999999-1/withdrawal", headers=stranger, json={})
    assert wrong.status_code == missing.status_code == 404
    assert wrong.json() == missing.json() == {"detail": [{"loc": ["path", "number"], "msg": "Заявка не найдена.", "type": "not_found"}]}
    assert claim_row(claim_id).state == "awaiting_organizer" and audit(claim_id) == before
    assert "claim_withdrawn" not in outbox(claim_id)


def test_a_decided_claim_cannot_be_withdrawn(client, organizer):
    org, auth = organizer
    claim_id, number = claim_waiting(organizer_id=org, reason="other")
    assert client.post(f"/organizer/claims/{claim_id}/decision", headers=auth, json={"decision": "approve"}).status_code == 200
    r = client.post(f"/claims/{number}/withdrawal", json={})
    assert r.status_code == 409
    assert r.json()["detail"] == [{"loc": ["body", "number"], "msg": "Заявка уже рассмотрена, отозвать её нельзя.", "type": "wrong_state"}]
    assert claim_row(claim_id).state == "approved"


def test_the_orders_email_alone_no_longer_proves_the_buyer(client, organizer):
    """Used to: the claim number and the order's email withdrew a claim; both are in every forwarded email."""
    org, _ = organizer
    claim_id, number = claim_waiting(organizer_id=org, reason="other")
    r = client.post(f"/claims/{number}/withdrawal", headers={"Authorization": ""}, json={"email": BUYER})
    assert r.status_code == 401 and claim_row(claim_id).state == "awaiting_organizer"


# --- documents judged false ------------------------------------------------------------------------

def illness_claim_with_a_document(client, organizer_id: int) -> tuple[int, str]:
    claim_id, number = claim_waiting(organizer_id=organizer_id, reason="illness")
    event_day = (NOW + timedelta(days=10)).date()
    r = client.post(f"/claims/{number}/documents", json={
        "kind": "sick_leave_gosuslugi", "sick_from": (event_day - timedelta(days=3)).isoformat(),
        "sick_to": (event_day + timedelta(days=5)).isoformat(), "person_name": "Петрова Анна Сергеевна"})
    assert r.status_code == 201 and r.json()["state"] == "awaiting_organizer", r.text
    return claim_id, number


def test_the_organizer_refuses_false_documents_with_the_policy_code_and_message(client, organizer):
    """Used to be impossible: DOCUMENTS_FALSE existed in the policy but nothing could set it."""
    org, auth = organizer
    claim_id, _ = illness_claim_with_a_document(client, org)
    r = client.post(f"/organizer/claims/{claim_id}/false-documents", headers=auth,
                    json={"note": "Больничный с таким номером не выдавался (проверено на Госуслугах)", "decided_by": "Президент"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "rejected"

    row = claim_row(claim_id)
    assert (row.state, row.refusal_code, row.refusal_message) == ("rejected", "DOCUMENTS_FALSE", REFUSAL_MESSAGES_RU["DOCUMENTS_FALSE"])
    assert row.decided_by == f"organizer:{org}"
    with get_engine().connect() as conn:
        assert conn.execute(select(document_t.c.judged_false).where(document_t.c.claim_id == claim_id)).scalars().all() == [True]
    assert audit(claim_id)[-1] == ("reject", "awaiting_organizer", "rejected", f"organizer:{org}")
    _, payload = outbox(claim_id)["decision_rejected"]
    _, text, _ = render_parts("decision_rejected", payload)
    assert f"Причина отказа: {REFUSAL_MESSAGES_RU['DOCUMENTS_FALSE']}" in text


def test_false_documents_are_judged_only_on_the_organizers_own_documented_claims(client, organizer):
    org, auth = organizer
    claim_id, _ = illness_claim_with_a_document(client, org)
    with get_engine().begin() as conn:
        other = f.organizer(conn, email="other@example.ru")
    other_auth = {"Authorization": f"Bearer {issue_organizer_token(get_engine(), other)}"}
    assert client.post(f"/organizer/claims/{claim_id}/false-documents", headers=other_auth, json={"note": "Подделка"}).status_code == 404
    r = client.post(f"/organizer/claims/{claim_id}/false-documents", headers=auth, json={"note": "   "})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "note"]
    r = client.post(f"/organizer/claims/{claim_id}/false-documents", headers=auth, json={"note": "Подделка", "document_ids": [2**31 - 1]})
    assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["body", "document_ids"]
    assert claim_row(claim_id).state == "awaiting_organizer"

    other_claim, _ = claim_waiting(organizer_id=org, reason="other")
    r = client.post(f"/organizer/claims/{other_claim}/false-documents", headers=auth, json={"note": "Подделка"})
    assert r.status_code == 409 and r.json()["detail"][0]["type"] == "not_documented"
    waiting, _ = claim_waiting(organizer_id=org, reason="illness")
    r = client.post(f"/organizer/claims/{waiting}/false-documents", headers=auth, json={"note": "Подделка"})
    assert r.status_code == 409 and r.json()["detail"][0]["type"] == "no_documents"
    assert claim_row(waiting).state == "awaiting_documents"
