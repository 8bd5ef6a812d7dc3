"""The API of postponements, regimes and vouchers: who may call, field-level Russian errors, the audit names the principal."""
from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import regimes as regimes_api
from api.app import app, clock
from models.claim_store import audit_t, outbox_t
from models.db import get_engine
from models.settings import get_settings
from tasks.accounts import create_user, issue_api_token
from tasks.auth import create_service_key
from tests import factories as f

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 5, 5, 9, 0, tzinfo=UTC)
REAL = datetime.now(UTC)  # tokens are checked against the real clock


@pytest.fixture
def client(sqlite_url, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[clock] = lambda: NOW
    app.dependency_overrides[regimes_api.clock] = lambda: NOW
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    get_settings.cache_clear()
    get_engine.cache_clear()


@pytest.fixture
def world(client):
    engine = get_engine()
    with engine.begin() as conn:
        org = f.organizer(conn, email="org@example.ru", policy={"vouchers_offered": True, "regime_postponed_refunds": False})
        rival = f.organizer(conn, email="rival@example.ru")
        venue = f.venue(conn, region="77")
        event = f.event(conn, starts_at=datetime(2026, 4, 10, 19, 0, tzinfo=MSK), organizer_id=org, venue_id=venue, title="Фестиваль")
        later = f.event(conn, starts_at=datetime(2026, 9, 10, 19, 0, tzinfo=MSK), organizer_id=org, venue_id=venue, title="Осенью")
        tickets = [f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=datetime(2026, 2, 1, tzinfo=MSK), buyer_email=f"b{i}@example.ru"))
                   for i in range(2)]
    anna = create_user(engine, login="anna@org.ru", password=None, kind="organizer", organizer_id=org, now=REAL)
    other = create_user(engine, login="boris@rival.ru", password=None, kind="organizer", organizer_id=rival, now=REAL)
    ivan = create_user(engine, login="ivan@operator.ru", password=None, kind="staff", role="supervisor", now=REAL)

    def bearer(secret: str) -> dict:
        return {"Authorization": f"Bearer {secret}"}

    return {
        "org": org, "event": event, "later": later, "tickets": tickets,
        "organizer": bearer(issue_api_token(engine, anna.id, name="t", now=REAL)),
        "rival": bearer(issue_api_token(engine, other.id, name="t", now=REAL)),
        "staff": bearer(issue_api_token(engine, ivan.id, name="t", now=REAL)),
        "service": bearer(create_service_key(engine, "sales", now=REAL)),
    }


def test_regimes_are_staff_only_and_validated(client, world):
    assert client.post("/regimes", json={"region": "77", "starts_on": "2026-03-16"}).status_code == 401
    assert client.post("/regimes", json={"region": "77", "starts_on": "2026-03-16"}, headers=world["organizer"]).status_code == 403
    bad = client.post("/regimes", json={"region": "77", "starts_on": "2026-03-16", "ends_on": "2026-03-01"}, headers=world["staff"])
    assert bad.status_code == 422 and bad.json()["detail"][0] == {"loc": ["body", "ends_on"], "msg": "Дата окончания режима раньше даты начала.", "type": "invalid"}
    unknown = client.post("/regimes", json={"region": "Регион 1", "starts_on": "2026-03-16"}, headers=world["staff"])
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "region"]
    assert unknown.json()["detail"][0]["msg"].startswith("Неизвестный регион «Регион 1»")
    iso = client.post("/regimes", json={"region": "RU-MOS", "starts_on": "2026-03-16"}, headers=world["staff"])
    assert iso.status_code == 201 and iso.json()["region"] == "50"  # stored as venues store it
    made = client.post("/regimes", json={"region": "77", "starts_on": "2026-03-16"}, headers=world["staff"])
    assert made.status_code == 201 and made.json()["created_by"] == "staff:supervisor:ivan@operator.ru"
    ended = client.post(f"/regimes/{made.json()['id']}/end", json={"ends_on": "2026-04-30"}, headers=world["staff"])
    assert ended.json()["ends_on"] == "2026-04-30"
    assert [r["id"] for r in client.get("/regimes", params={"region": "77"}, headers=world["staff"]).json()] == [made.json()["id"]]
    assert [r["id"] for r in client.get("/regimes", params={"region": "RU-MOW"}, headers=world["staff"]).json()] == [made.json()["id"]]
    assert [r["id"] for r in client.get("/regimes", params={"region": "MOS"}, headers=world["staff"]).json()] == [iso.json()["id"]]
    wrong = client.get("/regimes", params={"region": "Москва"}, headers=world["staff"])
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["query", "region"]
    assert wrong.json()["detail"][0]["msg"].startswith("Неизвестный регион «Москва»")
    sevastopol = client.post("/regimes", json={"region": "92", "starts_on": "2026-03-16"}, headers=world["staff"])
    assert sevastopol.status_code == 201 and sevastopol.json()["region"] == "92"


def test_the_organizer_postpones_their_event_buyers_are_told_the_audit_names_the_principal(client, world):
    client.post("/regimes", json={"region": "77", "starts_on": "2026-03-16", "ends_on": "2026-04-30"}, headers=world["staff"])
    body = {"new_starts_at": "2027-04-10T19:00:00+03:00", "claims_until": "2026-06-01"}
    assert client.post(f"/events/{world['event']}/postponement", json=body, headers=world["rival"]).status_code == 404
    assert client.post(f"/events/{world['event']}/postponement", json=body, headers=world["service"]).status_code == 403
    r = client.post(f"/events/{world['event']}/postponement", json=body, headers=world["organizer"])
    assert r.status_code == 201, r.text
    data = r.json()
    assert data["notices_written"] == 2 and data["regime_rule"]["rule"] == "decree_442_postponed_within_18_months"
    assert "№ 442" in data["regime_rule"]["text_ru"]
    history = client.get(f"/events/{world['event']}/changes", headers=world["staff"]).json()
    assert [h["changed_by"] for h in history] == [f"organizer:{world['org']}:user:anna@org.ru"]
    with get_engine().connect() as conn:
        assert {r.recipient for r in conn.execute(select(outbox_t.c.recipient).where(outbox_t.c.template == "event_postponed"))} == {
            "b0@example.ru", "b1@example.ru"}


@pytest.mark.parametrize(("body", "field", "msg"), [
    ({"new_starts_at": "2027-04-10T19:00:00"}, "new_starts_at", None),  # no time zone: refused by validation
    ({"new_starts_at": "2020-01-01T19:00:00+03:00"}, "new_starts_at", "Новая дата мероприятия должна быть в будущем."),
    ({"claims_until": "2020-01-01"}, "claims_until", "Последний день приёма заявок не может быть в прошлом."),
    ({"unknown": 1}, "unknown", None),
])
def test_bad_postponements_answer_field_level_errors(client, world, body, field, msg):
    r = client.post(f"/events/{world['event']}/postponement", json=body, headers=world["staff"])
    assert r.status_code == 422
    detail = r.json()["detail"][0]
    assert detail["loc"][-1] == field
    assert msg is None or detail["msg"] == msg


def test_a_buyer_takes_a_voucher_through_the_site_and_the_sales_system_redeems_it(client, world):
    client.post("/regimes", json={"region": "77", "starts_on": "2026-03-16", "ends_on": "2026-04-30"}, headers=world["staff"])
    client.post(f"/events/{world['event']}/postponement", json={"new_starts_at": "2027-04-10T19:00:00+03:00"}, headers=world["organizer"])
    assert client.post("/vouchers", json={"ticket_id": world["tickets"][0]}, headers=world["staff"]).status_code == 403
    made = client.post("/vouchers", json={"ticket_id": world["tickets"][0]}, headers=world["service"])
    assert made.status_code == 201, made.text
    number = made.json()["number"]
    assert client.get(f"/vouchers/{number}", headers=world["organizer"]).status_code == 403
    assert client.get(f"/vouchers/{number}", headers=world["staff"]).json()["status"] == "issued"
    used = client.post(f"/vouchers/{number}/redemption", json={"event_id": world["later"]}, headers=world["service"])
    assert used.status_code == 200 and used.json()["redeemed_event_id"] == world["later"]
    again = client.post(f"/vouchers/{number}/redemption", json={"event_id": world["later"]}, headers=world["service"])
    assert again.status_code == 409 and again.json()["detail"][0]["msg"] == "Ваучер уже использован."
    assert client.post("/vouchers/VCH-NONE-NONE-NONE/redemption", json={"event_id": world["later"]}, headers=world["staff"]).status_code == 404
    with get_engine().connect() as conn:
        actors = conn.execute(select(audit_t.c.trigger, audit_t.c.actor).where(audit_t.c.claim_id == made.json()["claim_id"]).order_by(audit_t.c.id)).all()
    assert [tuple(a) for a in actors] == [("file", "service:sales"), ("issue_voucher", "service:sales"), ("redeem_voucher", "service:sales")]


def test_vouchers_for_the_whole_event(client, world):
    client.post("/regimes", json={"region": "77", "starts_on": "2026-03-16", "ends_on": "2026-04-30"}, headers=world["staff"])
    refused = client.post(f"/events/{world['event']}/vouchers", headers=world["organizer"])  # still scheduled
    assert refused.status_code == 409
    client.post(f"/events/{world['event']}/postponement", json={"new_starts_at": "2027-04-10T19:00:00+03:00"}, headers=world["organizer"])
    done = client.post(f"/events/{world['event']}/vouchers", headers=world["organizer"])
    assert done.status_code == 200 and done.json()["issued"] == 2
    again = client.post(f"/events/{world['event']}/vouchers", headers=world["organizer"])
    assert again.json()["issued"] == 0 and again.json()["skipped"] == 2  # each ticket holds its voucher already
