"""Proven buyers (issue 10): sign-in codes and buyer tokens, every buyer endpoint behind a service key or
THAT order's buyer token, claims by number, audit rows naming the principal, documents as files."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import app, clock
from models.claim_store import apply_trigger, audit_t, claim_t, document_t, file_claims, order_t, outbox_t
from models.crypto import open_sealed
from models.db import get_engine
from models.settings import get_settings
from tasks.auth import create_service_key
from tasks.intake import issue_organizer_token
from tests import factories as f

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
EMAIL = "Anna.Petrova@example.ru"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000") + b"\x00" * 40


@pytest.fixture
def client(db_url, monkeypatch, tmp_path):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", db_url)
    monkeypatch.setenv("VOZVRAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "false")  # mail stays in the outbox, read from there
    monkeypatch.setenv("VOZVRAT_DOCUMENT_MAX_BYTES", str(64 * 1024))
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[clock] = lambda: NOW
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    get_engine().dispose()
    get_settings.cache_clear()
    get_engine.cache_clear()


def order_with_ticket(*, email: str = EMAIL, event_in: timedelta = timedelta(days=20), payment_method: str = "card") -> dict:
    engine = get_engine()
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + event_in, title="Щелкунчик")
        order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_email=email, buyer_name="Петрова Анна Сергеевна",
                        payment_method=payment_method)
        ticket = f.ticket(conn, event_id=event, order_id=order)
        number = conn.execute(select(order_t.c.number).where(order_t.c.id == order)).scalar_one()
    return {"order": number, "ticket": ticket}


def codes_sent(order_number: str) -> list[str]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(outbox_t.c.payload, outbox_t.c.recipient).where(outbox_t.c.template == "buyer_code").order_by(outbox_t.c.id))
        return [open_sealed(r.payload)["code"] for r in rows if r.payload["order_number"] == order_number]


def sign_in(client, order_number: str, email: str = EMAIL) -> dict[str, str]:
    assert client.post("/buyer/session", json={"order_number": order_number, "email": email}).status_code == 202
    r = client.post("/buyer/session/verify", json={"order_number": order_number, "code": codes_sent(order_number)[-1]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def audit_actors(number: str) -> list[tuple[str, str]]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(audit_t.c.trigger, audit_t.c.actor).join(claim_t, claim_t.c.id == audit_t.c.claim_id)
            .where(claim_t.c.number == number).order_by(audit_t.c.id))]


# --- sign-in ---------------------------------------------------------------------------------------

def test_a_code_goes_to_the_orders_email_and_buys_a_token_for_that_order_only(client):
    world = order_with_ticket()
    r = client.post("/buyer/session", json={"order_number": world["order"], "email": " anna.petrova@EXAMPLE.ru "})
    assert r.status_code == 202
    with get_engine().connect() as conn:
        row = conn.execute(select(outbox_t.c.recipient, outbox_t.c.claim_id).where(outbox_t.c.template == "buyer_code")).one()
        stored = conn.exec_driver_sql("select code_hmac from buyer_code").scalar_one()
    assert row == (EMAIL, None)  # to the address on the order, not the one typed
    (code,) = codes_sent(world["order"])
    assert len(code) == 6 and code not in stored  # stored as an HMAC only
    r = client.post("/buyer/session/verify", json={"order_number": world["order"], "code": code})
    assert r.status_code == 200
    body = r.json()
    assert body["token"].startswith("vzb_") and body["order_number"] == world["order"]
    assert datetime.fromisoformat(body["expires_at"]) == NOW + timedelta(hours=2)
    # a code works once
    r = client.post("/buyer/session/verify", json={"order_number": world["order"], "code": code})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "code"]


def test_the_answer_never_reveals_whether_an_order_or_an_email_exists(client):
    world = order_with_ticket()
    answers = [client.post("/buyer/session", json=body) for body in (
        {"order_number": world["order"], "email": EMAIL},
        {"order_number": world["order"], "email": "someone.else@example.ru"},
        {"order_number": "NO-SUCH-ORDER", "email": EMAIL},
    )]
    assert {(a.status_code, a.text) for a in answers} == {(answers[0].status_code, answers[0].text)}
    assert len(codes_sent(world["order"])) == 1  # only the right pair got a code
    wrong = [client.post("/buyer/session/verify", json={"order_number": n, "code": "000000"}) for n in (world["order"], "NO-SUCH-ORDER")]
    assert wrong[0].status_code == wrong[1].status_code == 422 and wrong[0].json() == wrong[1].json()


def test_a_code_is_spent_after_five_wrong_tries_and_an_order_after_ten(client):
    world = order_with_ticket()
    client.post("/buyer/session", json={"order_number": world["order"], "email": EMAIL})
    (code,) = codes_sent(world["order"])
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    for _ in range(5):
        assert client.post("/buyer/session/verify", json={"order_number": world["order"], "code": wrong}).status_code == 422
    assert client.post("/buyer/session/verify", json={"order_number": world["order"], "code": code}).status_code == 422  # spent
    client.post("/buyer/session", json={"order_number": world["order"], "email": EMAIL})
    second = codes_sent(world["order"])[-1]
    wrong = f"{(int(second) + 1) % 10**6:06d}"
    for _ in range(5):
        client.post("/buyer/session/verify", json={"order_number": world["order"], "code": wrong})
    client.post("/buyer/session", json={"order_number": world["order"], "email": EMAIL})
    third = codes_sent(world["order"])[-1]
    # ten wrong tries within the hour: even the right, fresh code is refused until the hour has passed
    assert client.post("/buyer/session/verify", json={"order_number": world["order"], "code": third}).status_code == 422


def test_code_requests_are_rate_limited_per_order_and_a_new_code_replaces_the_old(client):
    world = order_with_ticket()
    for _ in range(7):
        assert client.post("/buyer/session", json={"order_number": world["order"], "email": EMAIL}).status_code == 202
    codes = codes_sent(world["order"])
    assert len(codes) == 5
    if codes[0] != codes[-1]:
        r = client.post("/buyer/session/verify", json={"order_number": world["order"], "code": codes[0]})
        assert r.status_code == 422  # only the newest code works
    assert client.post("/buyer/session/verify", json={"order_number": world["order"], "code": codes[-1]}).status_code == 200


def test_an_expired_code_and_an_expired_token_are_refused(client):
    world = order_with_ticket()
    client.post("/buyer/session", json={"order_number": world["order"], "email": EMAIL})
    (code,) = codes_sent(world["order"])
    app.dependency_overrides[clock] = lambda: NOW + timedelta(minutes=16)
    assert client.post("/buyer/session/verify", json={"order_number": world["order"], "code": code}).status_code == 422
    app.dependency_overrides[clock] = lambda: NOW
    headers = sign_in(client, world["order"])
    r = client.post("/claims", headers=headers, json={"ticket_id": world["ticket"], "reason": "other"})
    assert r.status_code == 201
    app.dependency_overrides[clock] = lambda: NOW + timedelta(hours=2, seconds=1)
    assert client.get(f"/claims/{r.json()['number']}", headers=headers).status_code == 401


# --- authorization over every buyer endpoint -------------------------------------------------------

def _buyer_endpoints(number: str, ticket: int) -> list[tuple[str, str, dict]]:
    return [
        ("post", "/claims", {"json": {"ticket_id": ticket, "reason": "other"}}),
        ("get", f"/claims/{number}", {}),
        ("post", f"/claims/{number}/documents", {"json": {"kind": "other"}}),
        ("post", f"/claims/{number}/documents", {"files": {"file": ("скан.pdf", PDF, "application/pdf")}, "data": {"kind": "other"}}),
        ("post", f"/claims/{number}/bank-details", {"json": {"bik": "049805746", "account": "40602810700000000025", "name": "Петрова Анна"}}),
        ("post", f"/claims/{number}/withdrawal", {"json": {"reason": "передумала"}}),
    ]


def test_no_buyer_endpoint_works_without_a_service_key_or_that_orders_buyer_token(client):
    """Used to: anyone who reached the API filed claims for any ticket id and uploaded to any claim."""
    mine, theirs = order_with_ticket(), order_with_ticket(email="other.buyer@example.ru")
    engine = get_engine()
    with engine.begin() as conn:
        (claim_id,) = file_claims(conn, ticket_ids=[mine["ticket"]], reason="other", actor="test", now=NOW)
        number = conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()
        organizer_id = conn.execute(select(f.Event.__table__.c.organizer_id).join(claim_t, claim_t.c.event_id == f.Event.__table__.c.id)
                                    .where(claim_t.c.id == claim_id)).scalar_one()
    refused = {
        "no credentials": ({}, 401),
        "an unknown key": ({"Authorization": "Bearer vzb_forged"}, 401),
        "another order's buyer": (sign_in(client, theirs["order"], "other.buyer@example.ru"), 404),
        "the organizer": ({"Authorization": f"Bearer {issue_organizer_token(engine, organizer_id)}"}, 403),
    }
    for who, (headers, status) in refused.items():
        for method, path, kw in _buyer_endpoints(number, mine["ticket"]):
            r = client.request(method.upper(), path, headers=headers, **kw)
            assert r.status_code == status, (who, method, path, r.status_code, r.text)
            assert r.json()["detail"][0]["msg"]
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.state).where(claim_t.c.id == claim_id)).scalar_one() == "filed"
        assert conn.execute(select(document_t.c.id)).first() is None
    # allowed: that order's buyer, and a service key (any order)
    service = {"Authorization": f"Bearer {create_service_key(engine, 'site', now=NOW)}"}
    for headers in (sign_in(client, mine["order"]), service):
        assert client.get(f"/claims/{number}", headers=headers).status_code == 200
        r = client.post(f"/claims/{number}/documents", headers=headers, json={"kind": "other"})
        assert r.status_code == 201, r.text
    r = client.post("/claims", headers=service, json={"ticket_id": theirs["ticket"], "reason": "other"})
    assert r.status_code == 201
    assert client.post(f"/claims/{number}/withdrawal", headers=sign_in(client, mine["order"]), json={}).status_code == 200


def test_every_step_records_the_principal_not_what_the_client_typed(client):
    world = order_with_ticket()
    headers = sign_in(client, world["order"])
    r = client.post("/claims", headers=headers, json={"ticket_id": world["ticket"], "reason": "illness", "description": "ОРВИ"})
    number = r.json()["number"]
    with get_engine().begin() as conn:
        apply_trigger(conn, claim_id=r.json()["id"], trigger="assess", actor="system", now=NOW)
    service = {"Authorization": f"Bearer {create_service_key(get_engine(), 'kassir-site', now=NOW)}"}
    r = client.post(f"/claims/{number}/documents", headers=service, json={"kind": "sick_leave_gosuslugi", "person_name": "Президент"})
    assert r.json()["state"] == "awaiting_organizer"
    client.post(f"/claims/{number}/withdrawal", headers=headers, json={"reason": "buyer:someone-else"})
    assert audit_actors(number) == [
        ("file", f"buyer:order:{world['order']}"),
        ("assess", "system"),
        ("submit_documents", "service:kassir-site"),
        ("withdraw", f"buyer:order:{world['order']}"),
    ]


def test_a_ticket_of_another_order_is_404_like_a_missing_one(client):
    mine, theirs = order_with_ticket(), order_with_ticket(email="other.buyer@example.ru")
    headers = sign_in(client, mine["order"])
    other = client.post("/claims", headers=headers, json={"ticket_id": theirs["ticket"], "reason": "voluntary"})
    missing = client.post("/claims", headers=headers, json={"ticket_id": 2**31 - 1, "reason": "voluntary"})
    assert other.status_code == missing.status_code == 404 and other.json() == missing.json()


# --- documents as files ----------------------------------------------------------------------------

def test_a_pdf_is_stored_by_content_and_bad_files_are_refused_in_russian(client):
    world = order_with_ticket()
    headers = sign_in(client, world["order"])
    number = client.post("/claims", headers=headers, json={"ticket_id": world["ticket"], "reason": "other"}).json()["number"]
    r = client.post(f"/claims/{number}/documents", headers=headers, data={"kind": "other", "person_name": "Петрова Анна"},
                    files={"file": ("больничный.pdf", PDF, "application/octet-stream")})
    assert r.status_code == 201, r.text
    with get_engine().connect() as conn:
        doc = conn.execute(select(document_t.c.filename, document_t.c.content_type, document_t.c.size, document_t.c.sha256)).one()
    assert doc[:3] == ("больничный.pdf", "application/pdf", len(PDF)) and len(doc.sha256) == 64
    r = client.post(f"/claims/{number}/documents", headers=headers, data={"kind": "other"}, files={"file": ("x.pdf", b"MZ\x90\x00 not a pdf", "application/pdf")})
    assert r.status_code == 422 and r.json()["detail"] == [{"loc": ["body", "file"], "msg": "Принимаем только PDF, JPEG и PNG.", "type": "type"}]
    big = PNG + b"\x00" * (70 * 1024)
    r = client.post(f"/claims/{number}/documents", headers=headers, data={"kind": "other"}, files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "МБ" in r.json()["detail"][0]["msg"]
    r = client.post(f"/claims/{number}/documents", headers=headers, data={"kind": "паспорт"}, files={"file": ("a.png", PNG, "image/png")})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "kind"] and r.json()["detail"][0]["msg"] == "Недопустимое значение."
    r = client.post(f"/claims/{number}/documents", headers=headers, data={"kind": "other"})  # a form without a file
    assert r.status_code == 422 and "multipart/form-data" in r.json()["detail"][0]["msg"]


# --- status and bank details -----------------------------------------------------------------------

def test_the_status_says_the_state_in_plain_words_who_holds_it_the_deadline_and_the_history(client):
    world = order_with_ticket()
    headers = sign_in(client, world["order"])
    created = client.post("/claims", headers=headers, json={"ticket_id": world["ticket"], "reason": "illness"}).json()
    with get_engine().begin() as conn:
        apply_trigger(conn, claim_id=created["id"], trigger="assess", actor="system", now=NOW)
    r = client.get(f"/claims/{created['number']}", headers=headers)
    assert r.status_code == 200
    s = r.json()
    assert (s["state"], s["state_ru"], s["holder"]) == ("awaiting_documents", "Ждём документы", "buyer")
    # documents may follow until the 14th day after the event (Decree 1491)
    assert s["deadline"]["due"] == (NOW + timedelta(days=20 + 14)).astimezone(f.MSK).date().isoformat()
    assert 0 < s["deadline"]["working_days_left"] < 34
    assert s["amount"] == "3500.00" and "1491" in s["basis"]
    assert [h["title"] for h in s["history"]] == ["Заявка подана", "Заявка проверена"]
    assert [h["who"] for h in s["history"]] == ["вы", "служба возврата, автоматически"]
    assert s["can_upload_documents"] and s["can_withdraw"] and not s["can_give_bank_details"]



def test_the_status_page_names_who_acts_now_in_grammatical_russian(client):
    """Used to read «Ход за: вы, покупатель» / «Ход за: организатор» (the nominative after «ход за» is not Russian)."""
    from tasks.buyer_links import status_link_token

    world = order_with_ticket()
    headers = sign_in(client, world["order"])
    created = client.post("/claims", headers=headers, json={"ticket_id": world["ticket"], "reason": "illness"}).json()
    with get_engine().begin() as conn:
        apply_trigger(conn, claim_id=created["id"], trigger="assess", actor="system", now=NOW)
    page = client.get(f"/s/{status_link_token(created['number'], now=NOW)}")
    assert page.status_code == 200
    assert 'Кто сейчас действует: <strong id="holder">вы, покупатель</strong>' in page.text and "Ход за" not in page.text

def test_bank_details_are_taken_only_when_waited_for_validated_and_shown_masked(client):
    engine = get_engine()
    with engine.begin() as conn:
        claim_id = f.claim_in_payout(conn, payment_method="cash", now=NOW)
        number = conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()
        assert conn.execute(select(claim_t.c.state).where(claim_t.c.id == claim_id)).scalar_one() == "needs_bank_details"
    service = {"Authorization": f"Bearer {create_service_key(engine, 'site', now=NOW)}"}
    r = client.post(f"/claims/{number}/bank-details", headers=service, json={"bik": "049805746", "account": "40602810700000000026", "name": "Иванов Иван"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "account"]
    r = client.post(f"/claims/{number}/bank-details", headers=service,
                    json={"bik": "049805746", "account": "4060 2810 7000 0000 0025", "name": "Иванов Иван Иванович"})
    assert r.status_code == 200, r.text
    assert r.json()["account_masked"].endswith("0025") and "40602810700000000025" not in r.text
    assert r.json()["state"] == "payout_pending"
    with engine.connect() as conn:
        stored = conn.execute(select(claim_t.c.bank_details).where(claim_t.c.id == claim_id)).scalar_one()
    assert "40602810700000000025" not in stored  # encrypted at rest
    assert ("bank_details_set", "service:site") in audit_actors(number)
    r = client.post(f"/claims/{number}/bank-details", headers=service, json={"bik": "049805746", "account": "40602810700000000025", "name": "Иванов Иван"})
    assert r.status_code == 409


def test_a_sign_in_code_is_sent_at_once_even_behind_a_backlog_of_other_mail(client, tmp_path, monkeypatch):
    """The code goes by its own outbox key: a mass cancellation's thousands of due emails do not delay it."""
    from tasks.buyer_auth import request_code, send_code
    from tasks.smtp_sink import start_sink

    world = order_with_ticket()
    sink = start_sink(port=0, folder=tmp_path / "mail")
    try:
        monkeypatch.setenv("VOZVRAT_SMTP_PORT", str(sink.port))
        monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "true")
        get_settings.cache_clear()
        engine = get_engine()
        from sqlmodel import Session

        from tasks.outbox import enqueue_email

        with Session(engine) as session:  # older mail, due before the code
            for i in range(300):
                enqueue_email(session, dedup_key=f"backlog:{i}", claim_id=None, template="buyer_code", recipient=f"b{i}@example.ru",
                              payload={"order_number": f"B-{i}", "code": "000000", "valid_minutes": 15}, now=NOW - timedelta(hours=1))
            session.commit()
        key = request_code(engine, order_number=world["order"], email=EMAIL, now=NOW)
        report = send_code(engine, key, now=NOW)
        assert report.sent == 1
        assert [m["To"] for m in sink.messages()] == [EMAIL]
    finally:
        sink.stop()


# --- the status page's forms (api/buyer_pages.py: one handler shape for the three) ------------------

def test_each_status_page_form_shows_its_refusal_on_the_page_and_a_bad_link_reads_nothing(client):
    from tasks.buyer_links import status_link_token

    world = order_with_ticket()
    headers = sign_in(client, world["order"])
    number = client.post("/claims", headers=headers, json={"ticket_id": world["ticket"], "reason": "other"}).json()["number"]
    link = status_link_token(number, now=NOW)
    client.cookies.set("vz_csrf", "test-csrf")
    csrf = {"csrf": "test-csrf"}

    r = client.post(f"/s/{link}/documents", data=csrf | {"kind": "other"})
    assert r.status_code == 422 and "Выберите файл документа." in r.text
    r = client.post(f"/s/{link}/documents", data=csrf | {"kind": "other"}, files={"file": ("x.pdf", b"MZ not a pdf", "application/pdf")})
    assert r.status_code == 422 and "Принимаем только PDF, JPEG и PNG." in r.text
    r = client.post(f"/s/{link}/documents", data=csrf | {"kind": "паспорт"}, files={"file": ("a.png", PNG, "image/png")})
    assert r.status_code == 422 and "Выберите значение из списка." in r.text
    r = client.post(f"/s/{link}/bank-details", data=csrf | {"bik": "049805746", "account": "40602810700000000025", "name": "Иванов Иван"})
    assert r.status_code == 409  # not waited for: the page says so, nothing kept
    r = client.post(f"/s/{link}/withdrawal", data=csrf | {"reason": "Передумал"})
    assert r.status_code == 422 and "Подтвердите, что хотите отозвать заявку." in r.text
    with get_engine().connect() as conn:
        assert conn.execute(select(document_t.c.id)).first() is None

    r = client.post(f"/s/{link}/documents", data=csrf | {"kind": "other"}, files={"file": ("a.png", PNG, "image/png")}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/s/{link}?done=documents"
    r = client.post(f"/s/{link}/withdrawal", data=csrf | {"confirm": "yes", "reason": "Передумал"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/s/{link}?done=withdrawal"
    r = client.post(f"/s/{link}/withdrawal", data=csrf | {"confirm": "yes"})
    assert r.status_code == 409  # withdrawn already: the refusal is on the page

    for form in ("documents", "bank-details", "withdrawal"):  # a stale form: said on the page (HTML), in Russian
        files = {"file": ("a.png", PNG, "image/png")} if form == "documents" else None
        r = client.post(f"/s/{link}/{form}", data={"csrf": "stale", "confirm": "yes"}, files=files)
        assert r.status_code == 403 and r.headers["content-type"].startswith("text/html") and "Форма устарела" in r.text

    r = client.post(f"/s/{link}x/withdrawal", data=csrf | {"confirm": "yes"})
    assert r.status_code == 404 and "ссылк" in r.text.lower()


def test_a_stale_form_on_the_buyer_pages_is_said_on_a_page_and_does_nothing(client):
    world = order_with_ticket()
    client.cookies.set("vz_csrf", "test-csrf")
    r = client.post("/buyer/sign-in", data={"csrf": "stale", "order_number": world["order"], "email": EMAIL})
    assert r.status_code == 403 and r.headers["content-type"].startswith("text/html") and "Форма устарела" in r.text
    assert codes_sent(world["order"]) == []  # no code sent
    token = sign_in(client, world["order"])["Authorization"].removeprefix("Bearer ")
    client.cookies.set("vz_buyer", token)
    r = client.post("/buyer/claims", data={"csrf": "stale", "ticket_id": str(world["ticket"]), "reason": "voluntary"})
    assert r.status_code == 403 and "Форма устарела" in r.text and world["order"] in r.text  # the order's page, with the error
    r = client.post("/buyer/sign-out", data={"csrf": "stale"}, follow_redirects=False)
    assert r.status_code == 403 and "Форма устарела" in r.text
    with get_engine().connect() as conn:
        assert conn.execute(select(claim_t.c.id)).first() is None
    assert client.get("/buyer").status_code == 200 and world["order"] in client.get("/buyer").text  # still signed in



def test_the_order_page_offers_a_cancelled_events_own_reason_and_files_it_at_100_percent(client):
    """Used to go wrong: for a ticket of a cancelled event (two days away) the page offered only the buyer's
    own reasons; «По собственной инициативе» was filed and quoted 0 % (d < 3), though the cancellation pays 100 %."""
    engine = get_engine()
    with engine.begin() as conn:
        cancelled = f.event(conn, starts_at=NOW + timedelta(days=2), title="Щелкунчик", status="cancelled")
        scheduled = f.event(conn, starts_at=NOW + timedelta(days=20), title="Лебединое озеро")
        postponed = f.event(conn, starts_at=NOW + timedelta(days=40), title="Жизель", status="postponed")
        order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_email=EMAIL, buyer_name="Петрова Анна Сергеевна")
        gone, kept, moved = (f.ticket(conn, event_id=e, order_id=order) for e in (cancelled, scheduled, postponed))
        number = conn.execute(select(order_t.c.number).where(order_t.c.id == order)).scalar_one()
    client.cookies.set("vz_buyer", sign_in(client, number)["Authorization"].removeprefix("Bearer "))
    client.cookies.set("vz_csrf", "test-csrf")
    page = client.get("/buyer").text

    def offered(ticket: int) -> list[str]:
        form = page.split(f'name="ticket_id" value="{ticket}"')[1].split("</select>")[0]
        return [o.split('"')[0] for o in form.split('<option value="')[1:]]

    assert offered(gone) == ["cancelled"]
    assert offered(kept) == ["voluntary", "illness", "death", "other"]
    assert offered(moved) == ["postponed", "voluntary", "illness", "death", "other"]
    assert "Мероприятие отменено: стоимость билета вернём полностью (причина «Отмена мероприятия»)." in page
    assert "Мероприятие перенесено: билет действует на новую дату" in page
    assert page.count('class="notice"') == 2  # none for the scheduled event
    assert page.count("При болезни или смерти близкого документ") == 2  # not under the cancelled event's form
    r = client.post("/buyer/claims", data={"csrf": "test-csrf", "ticket_id": str(gone), "reason": "cancelled"}, follow_redirects=False)
    assert r.status_code == 303
    with engine.connect() as conn:
        filed = conn.execute(select(claim_t.c.reason, claim_t.c.amount).where(claim_t.c.ticket_id == gone)).one()
    assert filed.reason == "cancelled" and filed.amount == 350000  # the factory's 3 500,00 ₽, in full


def test_the_order_page_offers_no_new_claim_for_a_ticket_with_one_in_work_and_again_after_a_withdrawal(client):
    """Used to go wrong: a ticket refunded by a mass cancellation (or with a claim in work) still showed
    «Подать заявку на возврат»; the buyer filled it in and got «уже одобрен или выплачен»."""
    world = order_with_ticket()
    headers = sign_in(client, world["order"])
    client.cookies.set("vz_buyer", headers["Authorization"].removeprefix("Bearer "))
    form = f'name="ticket_id" value="{world["ticket"]}"'
    assert form in client.get("/buyer").text
    number = client.post("/claims", headers=headers, json={"ticket_id": world["ticket"], "reason": "illness"}).json()["number"]
    page = client.get("/buyer").text
    assert number in page and form not in page and "Подать заявку на возврат" not in page
    assert client.post(f"/claims/{number}/withdrawal", headers=headers, json={}).status_code == 200
    page = client.get("/buyer").text
    assert number in page and form in page  # withdrawn: the buyer may file again

def test_one_address_gets_at_most_the_limit_of_code_requests_per_hour_then_429(client, monkeypatch):
    """The per-address limit (kept in a table, so every API worker counts the same requests): past it
    the JSON and the page both answer 429 in Russian with Retry-After; another address is unaffected."""
    monkeypatch.setenv("VOZVRAT_BUYER_CODE_REQUESTS_PER_IP", "3")
    monkeypatch.setenv("VOZVRAT_BUYER_CODE_FLOOR_MS", "0")
    get_settings.cache_clear()
    world = order_with_ticket()
    asked = [client.post("/buyer/session", json={"order_number": n, "email": EMAIL}) for n in (world["order"], "NO-SUCH-1", "NO-SUCH-2")]
    assert [r.status_code for r in asked] == [202, 202, 202]
    r = client.post("/buyer/session", json={"order_number": world["order"], "email": EMAIL})
    assert r.status_code == 429 and r.headers["Retry-After"] == "3600"
    assert r.json()["detail"][0]["loc"] == ["client"] and "Слишком много запросов кода" in r.json()["detail"][0]["msg"]
    assert len(codes_sent(world["order"])) == 1  # the refused request queued nothing
    page = client.post("/buyer/sign-in", data={"order_number": world["order"], "email": EMAIL})
    assert page.status_code in (403, 429)  # 403: the form's CSRF check comes first; with the token it is 429
    csrf_page = client.get("/buyer")
    token = csrf_page.text.split('name="csrf" value="')[1].split('"')[0]
    page = client.post("/buyer/sign-in", data={"order_number": world["order"], "email": EMAIL, "csrf": token})
    assert page.status_code == 429 and "Слишком много запросов кода" in page.text and page.headers["Retry-After"] == "3600"
    # Another worker, the same table: still refused; an hour later the address may ask again.
    app.dependency_overrides[clock] = lambda: NOW + timedelta(minutes=30)
    assert client.post("/buyer/session", json={"order_number": "X", "email": EMAIL}).headers["Retry-After"] == "1800"
    app.dependency_overrides[clock] = lambda: NOW + timedelta(hours=1, seconds=1)
    assert client.post("/buyer/session", json={"order_number": world["order"], "email": EMAIL}).status_code == 202
    # Another address has its own count.
    with TestClient(app, client=("203.0.113.7", 50000)) as other:
        app.dependency_overrides[clock] = lambda: NOW
        assert other.post("/buyer/session", json={"order_number": "X", "email": EMAIL}).status_code == 202

