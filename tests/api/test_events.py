"""POST /events/{id}/cancellation and /mass-sends: who may, what is refused (field-level, in Russian),
and the two-person rule, before any Prefect run is created."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.app import app
from api.events import clock
from models.db import get_engine
from models.settings import get_settings
from tasks.accounts import create_user, issue_api_token
from tasks.intake import issue_organizer_token
from tasks.mass_sends import queue_mass_send
from tests import factories as f

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


@pytest.fixture
def client(db_url, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", db_url)
    monkeypatch.setenv("VOZVRAT_MASS_SEND_THRESHOLD", "3")
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[clock] = lambda: NOW
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    get_engine().dispose()
    get_settings.cache_clear()
    get_engine.cache_clear()


def staff(login: str, role: str = "supervisor") -> dict:
    user = create_user(get_engine(), login=login, password="correct horse battery", kind="staff", role=role, now=NOW)
    return {"Authorization": f"Bearer {issue_api_token(get_engine(), user.id, name='t', now=NOW)}"}


@pytest.fixture
def event():
    with get_engine().begin() as conn:
        org = f.organizer(conn)
        other = f.organizer(conn, name="Другой организатор")
        event_id = f.event(conn, starts_at=NOW + timedelta(days=10), organizer_id=org)
    return {"id": event_id, "own": {"Authorization": f"Bearer {issue_organizer_token(get_engine(), org)}"},
            "other": {"Authorization": f"Bearer {issue_organizer_token(get_engine(), other)}"}}


def test_who_may_cancel_an_event(client, event):
    url = f"/events/{event['id']}/cancellation"
    assert client.post(url, json={"reason": "Отмена"}).status_code == 401
    r = client.post(url, json={"reason": "Отмена"}, headers=event["other"])  # another organizer's event: as if it did not exist
    assert r.status_code == 404 and r.json()["detail"][0]["msg"] == f"Мероприятие № {event['id']} не найдено."
    r = client.post(url, json={"reason": "Отмена"}, headers=staff("sam@example.ru", role="support"))
    assert r.status_code == 403 and "supervisor" in r.json()["detail"][0]["msg"]


def test_bad_input_is_refused_field_by_field(client, event):
    url = f"/events/{event['id']}/cancellation"
    r = client.post(url, json={"action": "postponed", "reason": "Отмена"}, headers=event["own"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "action"]
    r = client.post(url, json={}, headers=event["own"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reason"]
    r = client.post("/events/0/cancellation", json={"reason": "Отмена"}, headers=event["own"])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "event_id"]


def test_a_finished_status_is_not_cancelled_again(client, event):
    from sqlalchemy import update

    from models.tables import Event

    with get_engine().begin() as conn:
        conn.execute(update(Event.__table__).where(Event.__table__.c.id == event["id"]).values(status="replaced"))
    r = client.post(f"/events/{event['id']}/cancellation", json={"reason": "Отмена"}, headers=event["own"])
    assert r.status_code == 409 and r.json()["detail"][0]["msg"] == "Мероприятие уже заменено: отмена к нему не применяется."


def test_another_action_already_started_is_named_in_russian(client, event):
    from tasks import mass

    mass.begin(get_engine(), event_id=event["id"], action="cancelled", reason="Артист заболел", started_by="organizer:1", now=NOW)
    r = client.post(f"/events/{event['id']}/cancellation", json={"action": "replaced", "reason": "Замена"}, headers=event["own"])
    assert r.status_code == 409 and r.json()["detail"][0]["msg"] == "Для мероприятия уже запущено действие «отмена»."


def test_a_mass_send_is_approved_only_by_another_supervisor(client):
    anna, boris = staff("anna@example.ru"), staff("boris@example.ru")
    payload = {"claim_number": "VZ-1", "event_title": "Концерт", "refund_kopecks": 100, "payout_deadline": "2026-12-20", "buyer_name": "А"}
    with get_engine().begin() as conn:
        mass_send_id = queue_mass_send(conn, template="decision_approved", started_by="staff:supervisor:anna@example.ru", now=NOW,
                                       messages=[(None, f"b{i}@example.ru", payload, f"k{i}") for i in range(5)])
    assert client.get("/mass-sends", headers=staff("sam@example.ru", role="support")).status_code == 403
    shown = client.get(f"/mass-sends/{mass_send_id}", headers=anna).json()
    assert (shown["status"], shown["recipient_count"], shown["sample_recipient"]) == ("held", 5, "b0@example.ru")
    r = client.post(f"/mass-sends/{mass_send_id}/approve", headers=anna)
    assert r.status_code == 409 and r.json()["detail"][0]["type"] == "same_person"
    r = client.post(f"/mass-sends/{mass_send_id}/approve", headers=boris)
    assert r.status_code == 200 and r.json()["approved_by"] == "staff:supervisor:boris@example.ru"
    assert client.post(f"/mass-sends/{mass_send_id}/reject", headers=boris).status_code == 409  # no longer held
    assert client.get("/mass-sends/999", headers=boris).status_code == 404


def test_a_rejected_send_lists_who_was_not_told_and_is_resent_for_a_second_person(client):
    from sqlalchemy import select

    from models.tables import Claim, OutboxMessage
    from tasks.mass_sends import hold_event_mail

    outbox_t, claim_t = OutboxMessage.__table__, Claim.__table__
    with get_engine().begin() as conn:
        event_id = f.event(conn, starts_at=NOW + timedelta(days=30))
        ids = [f.claim_in_payout(conn, payment_method="cash", now=NOW, event_id=event_id) for _ in range(4)]
        conn.execute(outbox_t.delete().where(outbox_t.c.claim_id.in_(ids), outbox_t.c.template != "bank_details_needed"))
        conn.execute(outbox_t.update().where(outbox_t.c.claim_id.in_(ids)).values(status="held"))
        (mass_send_id,) = hold_event_mail(conn, event_id=event_id, started_by="staff:supervisor:anna@example.ru", now=NOW)
        numbers = list(conn.execute(select(claim_t.c.number).where(claim_t.c.id.in_(ids)).order_by(claim_t.c.id)).scalars())
    boris, sam = staff("boris@example.ru"), staff("sam@example.ru", role="support")
    r = client.post(f"/mass-sends/{mass_send_id}/reject", headers=boris, json={"note": "не та формулировка"})
    assert r.status_code == 200 and r.json()["buyer_not_told"] == numbers and r.json()["note"] == "не та формулировка"
    r = client.get("/mass-sends/buyer-not-told", headers=sam, params={"event_id": event_id})
    assert r.status_code == 200 and r.json() == [{"claim_number": n, "mass_send_id": mass_send_id} for n in numbers]
    r = client.post(f"/mass-sends/{mass_send_id}/resend", headers=sam)
    assert r.status_code == 201 and (r.json()["status"], r.json()["resend_of"], r.json()["recipient_count"]) == ("held", mass_send_id, 4)
    again = r.json()["id"]
    assert client.get("/mass-sends/buyer-not-told", headers=sam).json() == []
    r = client.post(f"/mass-sends/{mass_send_id}/resend", headers=sam)
    assert r.status_code == 409 and r.json()["detail"][0]["loc"] == ["path", "mass_send_id"] and "повторять нечего" in r.json()["detail"][0]["msg"]
    assert client.post(f"/mass-sends/{again}/approve", headers=boris).json()["status"] == "approved"
    assert client.post("/mass-sends/999/resend", headers=sam).status_code == 404


def _set_event(event_id: int, **values) -> None:
    from sqlalchemy import update

    from models.tables import Event

    with get_engine().begin() as conn:
        conn.execute(update(Event.__table__).where(Event.__table__.c.id == event_id).values(**values))


@pytest.mark.parametrize("action", ["cancelled", "replaced"])
def test_an_event_that_has_taken_place_is_not_cancelled_or_replaced(client, event, action):
    """Regression: a `scheduled` event dated yesterday was cancelled (202) and every ticket refunded."""
    from sqlalchemy import select

    from models.tables import Event, MassCancellation

    _set_event(event["id"], starts_at=NOW - timedelta(days=1))
    r = client.post(f"/events/{event['id']}/cancellation", json={"action": action, "reason": "Отмена"}, headers=event["own"])
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert len(detail) == 1 and detail[0]["loc"] == ["path", "event_id"] and detail[0]["type"] == "event_taken_place"
    assert detail[0]["msg"].startswith("Мероприятие уже состоялось (07.12.2026 12:00)")  # the venue's time (Moscow)
    with get_engine().connect() as conn:
        assert conn.execute(select(Event.__table__.c.status).where(Event.__table__.c.id == event["id"])).scalar_one() == "scheduled"
        assert conn.execute(select(MassCancellation.__table__.c.id)).first() is None


def test_a_done_mass_cancellation_is_not_started_again_but_an_unfinished_one_is(client, event, monkeypatch):
    """Regression: cancelling an event whose mass cancellation was done started a new run that did nothing (202 each time)."""
    from sqlalchemy import update

    from api import events as events_api
    from models.tables import MassCancellation
    from tasks import mass

    started: list[int] = []

    async def start_run(*, event_id, **_):
        started.append(event_id)
        return "run-1", "http://prefect/runs/run-1"

    monkeypatch.setattr(events_api, "start_run", start_run)
    mass.begin(get_engine(), event_id=event["id"], action="cancelled", reason="Отмена", started_by="organizer:1", now=NOW)
    url = f"/events/{event['id']}/cancellation"
    r = client.post(url, json={"reason": "Отмена"}, headers=event["own"])  # still running (or died in the middle): resumable
    assert r.status_code == 202 and started == [event["id"]]
    with get_engine().begin() as conn:
        conn.execute(update(MassCancellation.__table__).where(MassCancellation.__table__.c.event_id == event["id"]).values(status="done"))
    r = client.post(url, json={"reason": "Отмена"}, headers=event["own"])
    assert r.status_code == 409 and started == [event["id"]]
    assert r.json()["detail"] == [{"loc": ["path", "event_id"], "type": "already_done", "msg": r.json()["detail"][0]["msg"]}]
    assert r.json()["detail"][0]["msg"].startswith("Мероприятие уже отменено")
