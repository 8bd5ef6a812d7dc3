"""«Где мои деньги» in a real browser (Playwright driving Debian's Chromium, phone-sized): the API under
uvicorn, a real aiosmtpd sink, the outbox dispatching real emails.

The buyer signs in with the order number and the order's email (the code is read from the real email),
files an illness claim, follows the status link in the real acknowledgement email, sees «Ждём документы»,
uploads a PDF and sees the claim move on to the organizer. The claim's flow run is not started here
(no Prefect server): its first step, `assess`, is applied the way the run applies it (claim_store).
"""
from __future__ import annotations

import asyncio
import re
import threading
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

import pytest
from sqlalchemy import select

from cli.stack import free_port
from models.claim_store import apply_trigger, claim_t, document_t, order_t
from models.db import make_engine
from models.migrate import upgrade
from models.settings import get_settings
from tasks.buyer_links import status_link_token
from tasks.outbox import dispatch_emails
from tasks.smtp import SmtpSettings
from tasks.smtp_sink import start_sink
from tests import factories as f
from tests.api.uvicorn_server import api_server, closed_port

EMAIL = "anna.petrova@example.ru"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """A migrated SQLite database with one order (one ticket, a concert in three weeks), an SMTP sink,
    and the API under uvicorn whose links point at itself."""
    url = f"sqlite:///{tmp_path / 'vozvrat.db'}"
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        event = f.event(conn, starts_at=now + timedelta(days=21), title="Щелкунчик")
        order = f.order(conn, created_at=now - timedelta(days=30), buyer_email=EMAIL, buyer_name="Петрова Анна Сергеевна")
        f.ticket(conn, event_id=event, order_id=order)
        order_number = conn.execute(select(order_t.c.number).where(order_t.c.id == order)).scalar_one()
    sink = start_sink(port=0, folder=tmp_path / "mail")
    port = free_port()
    env = {
        "VOZVRAT_DATABASE_URL": url,
        "VOZVRAT_SMTP_PORT": str(sink.port),
        "VOZVRAT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "VOZVRAT_DATA_DIR": str(tmp_path / "data"),
        "PREFECT_API_URL": f"http://127.0.0.1:{closed_port()}/api",
        "VOZVRAT_ACQUIRER_API_URL": f"http://127.0.0.1:{closed_port()}/v3",
    }
    for key, value in env.items():  # this process dispatches the outbox with the same settings
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        with api_server(env, tmp_path / "api.log", port=port) as base_url:
            yield {"base_url": base_url, "engine": engine, "sink": sink, "order": order_number, "tmp": tmp_path}
    finally:
        sink.stop()
        engine.dispose()
        get_settings.cache_clear()


def mail(sink, template: str) -> list:
    parser = BytesParser(policy=policy.default)
    messages = [parser.parsebytes(p.read_bytes()) for p in sorted(sink.folder.glob("*.eml"))]
    return [m for m in messages if m["X-Vozvrat-Template"] == template]


def arrived(sink, template: str, timeout: float = 20.0) -> list:
    """The template's messages once at least one is in the sink (the sign-in code leaves after the page answers)."""
    import time

    deadline = time.monotonic() + timeout
    while not (found := mail(sink, template)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def dispatch_outbox(engine) -> None:
    """The outbox dispatcher (tasks/outbox.py), in a thread of its own: Playwright's loop owns this one."""
    settings = get_settings()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings.from_settings(settings), now=datetime.now(UTC),
                                        mail_from=settings.mail_from))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not errors, errors


def test_a_buyer_signs_in_files_follows_the_emailed_link_uploads_a_pdf_and_sees_the_state_change(shop, page):
    base = shop["base_url"]
    page.goto(base + "/buyer")
    page.fill("#order_number", shop["order"])
    page.fill("#email", "Anna.Petrova@EXAMPLE.ru")
    page.click("button[type=submit]")
    page.wait_for_selector("#code")

    (code_mail,) = arrived(shop["sink"], "buyer_code")  # sent right after the page answered
    assert code_mail["To"] == EMAIL
    code = re.search(r"^\s+(\d{6})\s*$", text_of(code_mail), re.M).group(1)
    page.fill("#code", code)
    page.click("button[type=submit]")
    page.wait_for_selector(f"text=Заказ № {shop['order']}")

    page.select_option("select[name=reason]", "illness")
    page.fill("textarea[name=description]", "Грипп, больничный с Госуслуг пришлю")
    page.click("form[action='/buyer/claims'] button[type=submit]")
    page.wait_for_selector("#done")
    assert "Заявка подана" in page.inner_text("#done")

    with shop["engine"].connect() as conn:
        claim_id, number, state, = conn.execute(select(claim_t.c.id, claim_t.c.number, claim_t.c.state)).one()
    assert state == "filed"
    # The claim's run assesses it: an illness claim without documents waits for them («Нужны документы» email).
    with shop["engine"].begin() as conn:
        apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=datetime.now(UTC))
    dispatch_outbox(shop["engine"])
    (needed,) = mail(shop["sink"], "documents_needed")
    assert f"{base}/s/" in text_of(needed)

    (ack,) = mail(shop["sink"], "claim_received")
    assert ack["To"] == EMAIL and number in ack["Subject"]
    link = re.search(rf"({re.escape(base)}/s/\S+)", text_of(ack)).group(1)
    assert re.fullmatch(rf"{re.escape(base)}/s/[A-Za-z0-9_.-]+", link)  # a signed token, no database id
    html_link = re.search(r'href="([^"]+/s/[^"]+)"', ack.get_body(("html",)).get_content()).group(1)
    assert html_link == link

    page.goto(link)
    assert page.inner_text("#state") == "Ждём документы"
    assert "вы, покупатель" in page.inner_text("#holder")
    assert "рабоч" in page.inner_text("#deadline")
    assert "1491" in page.inner_text("#basis")
    assert "Заявка подана" in page.inner_text("#history")

    pdf = shop["tmp"] / "больничный.pdf"
    pdf.write_bytes(PDF)
    page.set_input_files("#file", str(pdf))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#done")
    assert page.inner_text("#done") == "Документ получен."
    assert page.inner_text("#state") == "Ждём решения организатора"
    assert "Получены документы" in page.inner_text("#history")
    assert "организатор" in page.inner_text("#holder")

    with shop["engine"].connect() as conn:
        doc = conn.execute(select(document_t.c.content_type, document_t.c.filename, document_t.c.size)).one()
        assert conn.execute(select(claim_t.c.state)).scalar_one() == "awaiting_organizer"
    assert tuple(doc) == ("application/pdf", "больничный.pdf", len(PDF))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # readable on a phone: nothing wider than the screen


def test_an_expired_or_forged_link_says_how_to_get_a_fresh_one(shop, page):
    base = shop["base_url"]
    old = status_link_token("VZ-0000001-1", now=datetime.now(UTC) - timedelta(days=31))
    response = page.goto(f"{base}/s/{old}")
    assert response.status == 410
    assert "Ссылка устарела" in page.inner_text("h1") and "номер заказа" in page.inner_text("main")
    response = page.goto(f"{base}/s/{old[:-3]}abc")
    assert response.status == 404 and "Ссылка не распознана" in page.inner_text("h1")
    page.click("text=Войти по номеру заказа")
    page.wait_for_selector("#order_number")


def test_a_form_without_its_csrf_token_is_refused(shop, page):
    """The link authorizes the page; a form posted from elsewhere lacks the CSRF token and changes nothing."""
    import httpx

    with shop["engine"].begin() as conn:
        ticket = conn.execute(select(f.Ticket.__table__.c.id)).scalar_one()
        from models.claim_store import file_claims

        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason="other", actor="test", now=datetime.now(UTC))
        number = conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()
    link = status_link_token(number, now=datetime.now(UTC))
    r = httpx.post(f"{shop['base_url']}/s/{link}/withdrawal", data={"confirm": "yes"}, timeout=10)
    assert r.status_code == 403 and r.headers["content-type"].startswith("text/html") and "Форма устарела" in r.text  # said on the page
    with shop["engine"].connect() as conn:
        assert conn.execute(select(claim_t.c.state).where(claim_t.c.id == claim_id)).scalar_one() == "filed"
    # in the browser, with the page's own token, the withdrawal (with its confirmation) goes through
    page.goto(f"{shop['base_url']}/s/{link}")
    page.click("text=Отозвать заявку")
    page.check("input[name=confirm]")
    page.click("#withdrawal button[type=submit]")
    page.wait_for_selector("#done")
    assert page.inner_text("#state") == "Заявка отозвана"
