"""GET/POST /mail/switch: staff supervisors hold and release outbound mail live (organizers and support: 403),
bad input is refused field by field, each change is audited with the principal, and /health says who held it."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import app
from api.mail import clock
from models.db import get_engine
from models.settings import get_settings
from models.tables import MailSwitchChange
from tasks.accounts import create_user, issue_api_token
from tasks.intake import issue_organizer_token
from tests import factories as f

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


@pytest.fixture
def client(db_url, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", db_url)
    monkeypatch.delenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", raising=False)
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


def test_only_supervisors_see_and_throw_the_switch(client):
    with get_engine().begin() as conn:
        org = f.organizer(conn)
    organizer = {"Authorization": f"Bearer {issue_organizer_token(get_engine(), org)}"}
    support = staff("sam@example.ru", role="support")
    hold = {"held": True, "reason": "взлом"}
    assert client.get("/mail/switch").status_code == 401
    assert client.post("/mail/switch", json=hold).status_code == 401
    for who in (organizer, support):
        assert client.get("/mail/switch", headers=who).status_code == 403
        r = client.post("/mail/switch", json=hold, headers=who)
        assert r.status_code == 403 and r.json()["detail"][0]["type"] == "forbidden", r.text
    anna = staff("anna@example.ru")
    r = client.get("/mail/switch", headers=anna)
    assert r.status_code == 200 and r.json()["held"] is False and r.json()["changed_by"] is None
    with get_engine().connect() as conn:
        assert conn.execute(select(MailSwitchChange.__table__.c.id)).first() is None


def test_a_supervisor_holds_and_releases_and_health_shows_who(client):
    anna = staff("anna@example.ru")
    r = client.post("/mail/switch", json={"held": True, "reason": "  оператор взломан: фальшивые приглашения "}, headers=anna)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["held"] and body["changed"] and body["changed_by"] == "staff:supervisor:anna@example.ru"
    assert body["reason"] == "оператор взломан: фальшивые приглашения" and body["changed_at"].startswith("2026-12-08T09:00")
    assert client.post("/mail/switch", json={"held": True, "reason": "ещё"}, headers=anna).json()["changed"] is False

    health = client.get("/health").json()
    assert health["outbound_email"] == "held"
    assert health["mail_switch"]["held"] and health["mail_switch"]["changed_by"] == "staff:supervisor:anna@example.ru"
    assert "остановлена выключателем" in health["message"] and "anna@example.ru" in health["message"]

    r = client.post("/mail/switch", json={"held": False}, headers=anna)
    assert r.status_code == 200 and r.json()["held"] is False and r.json()["changed"], r.text
    health = client.get("/health").json()
    assert health["outbound_email"] == "sending" and health["mail_switch"]["held"] is False and "почта" not in health["message"]
    with get_engine().connect() as conn:
        rows = conn.execute(select(MailSwitchChange.__table__.c.principal, MailSwitchChange.__table__.c.held)
                            .order_by(MailSwitchChange.__table__.c.id)).all()
    assert [tuple(r) for r in rows] == [("staff:supervisor:anna@example.ru", True), ("staff:supervisor:anna@example.ru", False)]


@pytest.mark.parametrize(("body", "loc"), [
    ({"held": True}, ["body", "reason"]),
    ({"held": True, "reason": "   "}, ["body", "reason"]),
    ({"held": True, "reason": "я" * 501}, ["body", "reason"]),
    ({"held": True, "reason": "a\x01b"}, ["body", "reason"]),
    ({"reason": "взлом"}, ["body", "held"]),
    ({"held": "maybe", "reason": "взлом"}, ["body", "held"]),
    ({"held": True, "reason": "взлом", "who": "x"}, ["body", "who"]),
])
def test_bad_input_is_refused_field_by_field(client, body, loc):
    r = client.post("/mail/switch", json=body, headers=staff("anna@example.ru"))
    assert r.status_code == 422, r.text
    assert loc in [d["loc"] for d in r.json()["detail"]], r.text
    assert client.get("/mail/switch", headers=staff("boris@example.ru")).json()["held"] is False
