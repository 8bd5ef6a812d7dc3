"""The API without a Prefect server: intake errors, validation, organizer scoping (start_flow is not reached)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import app, clock
from models.db import get_engine
from models.settings import get_settings
from tasks.auth import create_service_key
from tasks.intake import issue_organizer_token
from tests import factories as f

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


@pytest.fixture
def client(sqlite_url, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[clock] = lambda: NOW
    # Buyer endpoints need a principal: the operator's site, vouching for its signed-in buyers (issue 10).
    service_key = create_service_key(get_engine(), "site", now=NOW)
    with TestClient(app, headers={"Authorization": f"Bearer {service_key}"}) as c:
        yield c
    app.dependency_overrides.clear()
    get_settings.cache_clear()
    get_engine.cache_clear()


def test_validation_errors_are_field_level_and_russian(client):
    r = client.post("/claims", json={"ticket_id": "x", "reason": "bored"})
    assert r.status_code == 422
    by_field = {e["loc"][-1]: e for e in r.json()["detail"]}
    assert by_field["ticket_id"]["msg"] == "Нужно целое число."
    assert by_field["reason"]["msg"] == "Недопустимое значение."


def test_unknown_ticket_is_404_with_a_russian_message(client):
    r = client.post("/claims", json={"ticket_id": 424242, "reason": "voluntary"})
    assert r.status_code == 404
    assert r.json()["detail"][0] == {"loc": ["body", "ticket_id"], "msg": "Билет не найден.", "type": "not_found"}


def test_voluntary_claim_after_the_event_is_refused_and_nothing_is_written(client):
    engine = get_engine()
    with engine.begin() as conn:
        ticket = f.ticket_for_event(conn, event_start=NOW - timedelta(hours=2))
    r = client.post("/claims", json={"ticket_id": ticket, "reason": "voluntary"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "reason"]
    assert "до начала мероприятия" in r.json()["detail"][0]["msg"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from claim").scalar_one() == 0


def test_organizer_endpoints_need_a_token_and_hide_other_organizers_claims(client):
    engine = get_engine()
    with engine.begin() as conn:
        mine, theirs = f.organizer(conn), f.organizer(conn, email="theirs@example.ru")
        event = f.event(conn, starts_at=NOW + timedelta(days=20), organizer_id=theirs)
        order = f.order(conn, created_at=NOW - timedelta(days=5))
        ticket = f.ticket(conn, event_id=event, order_id=order)
        from models.claim_store import file_claims

        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason="other", actor="buyer", now=NOW)
    assert client.get(f"/organizer/claims/{claim_id}", headers={"Authorization": ""}).status_code == 401
    assert client.get(f"/organizer/claims/{claim_id}", headers={"Authorization": "Bearer nope"}).status_code == 401
    token = issue_organizer_token(engine, mine)
    r = client.post(f"/organizer/claims/{claim_id}/decision", headers={"Authorization": f"Bearer {token}"}, json={"decision": "approve"})
    assert r.status_code == 404
    from models.claim_views import read_claim

    number = read_claim(claim_id, engine=engine).number
    r = client.post("/organizer/decisions", headers={"Authorization": f"Bearer {token}"}, json={"numbers": [number], "decision": "approve"})
    assert r.status_code == 200
    assert r.json()["decided"] == 0 and r.json()["results"] == [{"number": number, "outcome": "refused", "state": None,
                                                                  "type": "not_found", "msg": "Заявка не найдена."}]


def test_bulk_decision_moves_the_waiting_claims_and_explains_the_rest(client):
    from models.claim_store import apply_batch, file_claims

    engine = get_engine()
    with engine.begin() as conn:
        org = f.organizer(conn)
        event = f.event(conn, starts_at=NOW + timedelta(days=20), organizer_id=org)
        tickets = [f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=NOW - timedelta(days=5))) for _ in range(3)]
        waiting = file_claims(conn, ticket_ids=tickets[:2], reason="other", actor="buyer", now=NOW)
        (voluntary,) = file_claims(conn, ticket_ids=tickets[2:], reason="voluntary", actor="buyer", now=NOW)
    apply_batch(engine, claim_ids=waiting + [voluntary], trigger="assess", actor="system", now=NOW)
    token = issue_organizer_token(engine, org)
    from models.claim_views import read_claim

    numbers = [read_claim(i, engine=engine).number for i in waiting + [voluntary]]
    r = client.post("/organizer/decisions", headers={"Authorization": f"Bearer {token}"},
                    json={"numbers": numbers, "decision": "reject", "note": "Мероприятие состоится"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decided"] == 2 and [x["outcome"] for x in body["results"]] == ["decided", "decided", "refused"]
    assert body["results"][2] == {"number": numbers[2], "outcome": "refused", "state": "approved", "type": "already_decided",
                                  "msg": "Решение по заявке уже принято: «возврат одобрен»."}
    r = client.post("/organizer/decisions", headers={"Authorization": f"Bearer {token}"}, json={"numbers": numbers[:2], "decision": "reject"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "note"


@pytest.mark.parametrize("reason", ["postponed", "cancelled", "replaced"])
def test_an_event_reason_for_a_scheduled_event_is_422_in_russian_not_100_percent(client, reason):
    """Used to go wrong: «postponed» on a scheduled event was filed and quoted 100 %."""
    engine = get_engine()
    with engine.begin() as conn:
        ticket = f.ticket_for_event(conn, event_start=NOW + timedelta(days=2))
    r = client.post("/claims", json={"ticket_id": ticket, "reason": reason})
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"] == ["body", "reason"]
    assert "Мероприятие не" in detail["msg"] and "собственной инициативе" not in detail["msg"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from claim").scalar_one() == 0


@pytest.mark.parametrize(("status", "label"), [("cancelled", "«Отмена мероприятия»"), ("replaced", "«Замена мероприятия»")])
def test_a_voluntary_claim_on_a_cancelled_or_replaced_event_is_422_pointing_to_its_reason(client, status, label):
    """Used to go wrong: a voluntary claim on an event cancelled two days ahead was 201 with a 0 % quote."""
    engine = get_engine()
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + timedelta(days=2), status=status)
        ticket = f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=NOW - timedelta(days=30)))
    r = client.post("/claims", json={"ticket_id": ticket, "reason": "voluntary"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert len(detail) == 1 and detail[0]["loc"] == ["body", "reason"] and detail[0]["type"] == f"EVENT_{status.upper()}"
    assert label in detail[0]["msg"] and "100 %" in detail[0]["msg"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from claim").scalar_one() == 0
    r = client.post("/claims", json={"ticket_id": ticket, "reason": status})
    assert r.status_code == 201 and r.json()["quote"]["percent"] == 100
