"""A claim by email through the stack `make up` runs: the inbound SMTP server (its own process), the
confirmation in the SMTP sink, the link opened against the API, the claim's flow run on Prefect."""
from __future__ import annotations

import re
import smtplib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import httpx
from sqlalchemy import select

from models.claim_store import claim_t, document_t
from models.db import get_engine
from models.tables import Order
from tests import factories as f
from tests.flows.conftest import body_text, claim_run, mail_in, run_of, wait_for

PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def test_a_letter_with_a_scan_becomes_a_claim_with_its_run_once_the_orders_mailbox_confirms(stack):
    engine = get_engine()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        event = f.event(conn, starts_at=now + timedelta(days=12), title="Пикник")
        order = f.order(conn, created_at=now - timedelta(days=40), buyer_email=f"mail{event}@example.ru")
        f.ticket(conn, event_id=event, order_id=order)
        number = conn.execute(select(Order.__table__.c.number).where(Order.__table__.c.id == order)).scalar_one()
    buyer = f"mail{event}@example.ru"

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = buyer, "vozvrat@example.ru", f"Возврат по заказу № {number}"
    message.set_content("Здравствуйте! Умер мой отец, свидетельство о смерти во вложении.")
    message.add_attachment(PDF, maintype="application", subtype="pdf", filename="свидетельство.pdf")
    with smtplib.SMTP("127.0.0.1", stack.inbound_port, timeout=30) as smtp:
        smtp.send_message(message)

    # the server processes the letter and sends the confirmation itself, to the order's email
    confirmation = wait_for("the confirmation in the sink", lambda: next(
        (m for m in mail_in(stack.mail_dir) if m["To"] == buyer and m["X-Vozvrat-Template"] == "inbound_confirm"), None), timeout=60)
    link = re.search(r"http://\S+/inbound/confirm/\S+", body_text(confirmation)).group(0)
    assert link.startswith(stack.api_url)  # the link points at the API the stack runs

    with httpx.Client(timeout=30) as http:
        assert "Подтвердить заявку" in http.get(link).text
        done = http.post(link, headers={"Accept": "application/json"})
    assert done.status_code == 201, done.text
    [claim] = done.json()["claims"]
    with engine.connect() as conn:
        row = conn.execute(select(claim_t.c.id, claim_t.c.reason).where(claim_t.c.number == claim["number"])).one()
        doc = conn.execute(select(document_t.c.kind, document_t.c.content_type).where(document_t.c.claim_id == row.id)).one()
    assert row.reason == "death" and tuple(doc) == ("death_certificate", "application/pdf")
    run = run_of(claim_run(row.id, engine))
    assert run.name == claim["number"] and "reason:death" in run.tags
    wait_for("«Заявка принята»", lambda: any(claim["number"] in m["Subject"] and "принята" in m["Subject"]
                                            for m in mail_in(stack.mail_dir) if m["To"] == buyer))
