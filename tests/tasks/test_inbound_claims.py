"""Pending email claims (tasks/inbound_claims.py): confirmed once even when two confirmations race,
links that were altered or signed with a retired key, and the confirmation pages' bad input."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import inbound as inbound_api
from api.app import app
from models.claim_store import claim_t
from models.crypto import secret_keys
from models.db import get_engine
from models.settings import get_settings
from models.tables import InboundClaim
from states.policy import Reason
from tasks.inbound_claims import ConfirmationError, confirm, confirm_token, create_pending_claim, read_token
from tasks.inbound_mail import keep_letter
from tests import factories as f

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
pending_t = InboundClaim.__table__


def pending(engine) -> int:
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + timedelta(days=20))
        order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_email="anna@example.ru")
        ticket = f.ticket(conn, event_id=event, order_id=order)
    letter = keep_letter(engine, f"Subject: {ticket}\r\n\r\nx\r\n".encode(), envelope_from="anna@example.ru",
                         rcpt_tos=["vozvrat@example.ru"], now=NOW)
    with engine.begin() as conn:
        return create_pending_claim(conn, letter_id=letter, order_id=order, ticket_ids=[ticket], reason=Reason.OTHER, why="",
                                    description="Прошу вернуть деньги", files=[], now=NOW)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_two_confirmations_at_once_file_one_claim(engine, data_dir):
    pending_id = pending(engine)
    def attempt():
        try:
            return confirm(engine, pending_id=pending_id, now=NOW).claims
        except ConfirmationError as exc:
            return exc.code

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda _: attempt(), range(2)))
    assert sorted(o if isinstance(o, str) else "filed" for o in outcomes) == ["already_confirmed", "filed"]
    with engine.connect() as conn:
        assert len(conn.execute(select(claim_t.c.id)).all()) == 1
        assert conn.execute(select(pending_t.c.status)).scalar_one() == "confirmed"


def test_an_altered_link_is_refused_and_a_rotated_key_still_opens_an_old_one(monkeypatch):
    token = confirm_token(7, now=NOW)
    assert read_token(token, now=NOW) == 7
    with pytest.raises(ConfirmationError) as altered:
        read_token(token[:-2] + ("AA" if not token.endswith("AA") else "BB"), now=NOW)
    assert altered.value.code == "invalid" and altered.value.status == 404
    old = ",".join(secret_keys())
    monkeypatch.setenv("VOZVRAT_SECRET_KEY", f"{Fernet.generate_key().decode()},{old}")  # a new key first, the old one kept
    get_settings.cache_clear()
    try:
        assert read_token(token, now=NOW) == 7
        monkeypatch.setenv("VOZVRAT_SECRET_KEY", Fernet.generate_key().decode())  # the old key retired: links it signed stop working
        get_settings.cache_clear()
        with pytest.raises(ConfirmationError):
            read_token(token, now=NOW)
    finally:
        get_settings.cache_clear()


def test_a_link_older_than_its_validity_is_expired():
    token = confirm_token(7, now=NOW)
    with pytest.raises(ConfirmationError) as expired:
        read_token(token, now=NOW + timedelta(hours=get_settings().inbound_confirm_hours, seconds=1))
    assert (expired.value.code, expired.value.status) == ("expired", 410)
    assert "Срок ссылки истёк" in expired.value.message_ru


@pytest.fixture
def client(sqlite_url, data_dir, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[inbound_api.clock] = lambda: NOW
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    get_engine().dispose()
    get_engine.cache_clear()


def test_the_pages_answer_bad_input_in_russian(client):
    page = client.get("/inbound/confirm/garbage")
    assert page.status_code == 404 and "Ссылка повреждена или недействительна" in page.text
    api = client.post("/inbound/confirm/garbage", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.json()["detail"][0]["loc"] == ["path", "token"]
    missing = client.post("/inbound/confirm", data={"reference": "12"}, headers={"Accept": "application/json"})
    assert missing.status_code == 422
    assert missing.json()["detail"] == [{"loc": ["body", "code"], "msg": "Обязательное поле.", "type": "missing"}]
    form = client.get("/inbound/confirm?reference=000012")
    assert form.status_code == 200 and 'value="000012"' in form.text


def test_codes_stop_after_five_wrong_attempts(client):
    engine = get_engine()
    pending_id = pending(engine)
    with engine.connect() as conn:
        letter_id = conn.execute(select(pending_t.c.letter_id).where(pending_t.c.id == pending_id)).scalar_one()
    answers = [client.post("/inbound/confirm", data={"reference": str(letter_id), "code": "9999999"},
                           headers={"Accept": "application/json"}).status_code for _ in range(6)]
    assert answers == [422] * 5 + [429]
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.id)).first() is None


def test_an_email_claim_for_an_event_cancelled_before_confirmation_is_refused_with_the_event_reason(engine, data_dir):
    """Regression: a «Прочее» claim by email, confirmed after the event was cancelled, was filed for the
    organizer to decide instead of being pointed to «Отмена мероприятия» (100 %)."""
    from sqlalchemy import update

    from models.tables import Event

    pending_id = pending(engine)
    with engine.begin() as conn:
        conn.execute(update(Event.__table__).values(status="cancelled"))
    with pytest.raises(ConfirmationError) as refused:
        confirm(engine, pending_id=pending_id, now=NOW)
    assert refused.value.code == "refused" and "«Отмена мероприятия»" in str(refused.value)
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.id)).first() is None
        assert conn.execute(select(pending_t.c.status).where(pending_t.c.id == pending_id)).scalar_one() == "refused"
