"""Claims by email against a real inbound SMTP server (aiosmtpd on a free port), fed real MIME with
smtplib; replies go through the outbox to a real SMTP sink; the confirmation goes through the API.

Every letter is kept before the sender hears "250"; every letter gets a Russian reply unless a
machine wrote it; nothing is filed until the order's own mailbox confirms.
"""
from __future__ import annotations

import asyncio
import re
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import inbound as inbound_api
from api.app import app
from models.claim_store import audit_t, claim_t, document_t
from models.db import get_engine
from models.settings import get_settings
from models.tables import InboundClaim, InboundLetter, Order
from tasks import documents
from tasks.inbound_mail import InboundConfig, drain, process_letter, start_inbound
from tasks.outbox import dispatch_emails
from tasks.smtp import SmtpSettings
from tasks.smtp_sink import start_sink
from tests import factories as f

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REFUNDS = "vozvrat@example.ru"
BUYER = "anna.petrova@example.ru"
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
MAX_BYTES = 200_000
letter_t, pending_t = InboundLetter.__table__, InboundClaim.__table__


@dataclass
class Mailroom:
    engine: object
    server: object
    sink: object
    client: TestClient
    order_number: str
    ticket_id: int

    def send(self, message: EmailMessage, *, rcpt: str = REFUNDS, envelope_from: str | None = None) -> None:
        with smtplib.SMTP(self.server.host, self.server.port, timeout=10) as smtp:
            smtp.send_message(message, from_addr=envelope_from if envelope_from is not None else message["From"], to_addrs=[rcpt])
        self.server.handler.wait_idle()

    def deliver_replies(self) -> list[EmailMessage]:
        """Send what the outbox holds to the sink; every message the sink has, oldest first."""
        asyncio.run(dispatch_emails(engine=self.engine, smtp=SmtpSettings(port=self.sink.port, timeout=5), now=NOW, mail_from=MAIL_FROM))
        return self.sink.messages()

    def letters(self) -> list:
        with self.engine.connect() as conn:
            return conn.execute(select(letter_t).order_by(letter_t.c.id)).all()


def config(max_bytes: int = MAX_BYTES) -> InboundConfig:
    return InboundConfig(refunds_address=REFUNDS, own_addresses=frozenset({REFUNDS}), max_bytes=max_bytes)


def _mailroom(url: str, tmp_path: Path, monkeypatch, *, process=process_letter) -> Mailroom:
    sink = start_sink("127.0.0.1", 0, tmp_path / "mail")
    monkeypatch.setenv("VOZVRAT_SMTP_PORT", str(sink.port))  # «Заявка принята» from the API goes to the sink too
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", url)
    monkeypatch.setenv("VOZVRAT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VOZVRAT_PUBLIC_URL", "https://vozvrat.example.ru")
    get_settings.cache_clear()
    get_engine.cache_clear()
    engine = get_engine()
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + timedelta(days=20), title="Щелкунчик")
        order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_email=BUYER, buyer_name="Петрова Анна Сергеевна")
        ticket = f.ticket(conn, event_id=event, order_id=order)
        number = conn.execute(select(Order.__table__.c.number).where(Order.__table__.c.id == order)).scalar_one()
    server = start_inbound(engine, port=0, config=config(), clock=lambda: NOW, process=process)
    app.dependency_overrides[inbound_api.clock] = lambda: NOW
    return Mailroom(engine, server, sink, TestClient(app), number, ticket)


@pytest.fixture
def room(sqlite_url, tmp_path, monkeypatch):
    r = _mailroom(sqlite_url, tmp_path, monkeypatch)
    yield r
    _close(r)


def _close(r: Mailroom) -> None:
    r.server.stop()
    r.sink.stop()
    r.client.close()
    app.dependency_overrides.clear()
    get_engine().dispose()
    get_settings.cache_clear()
    get_engine.cache_clear()


def letter(*, subject: str, text: str, sender: str = f"Анна Петрова <{BUYER}>", attachments: tuple = (), **headers: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = REFUNDS
    message["Subject"] = subject
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content(text)
    for name, data, maintype, subtype in attachments:
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message


def body(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def test_a_letter_with_a_pdf_is_confirmed_from_the_orders_mailbox_and_filed_with_its_document(db_url, tmp_path, monkeypatch):
    room = _mailroom(db_url, tmp_path, monkeypatch)
    try:
        room.send(letter(subject=f"Возврат билетов, заказ № {room.order_number}",
                         text="Здравствуйте! Я заболела, больничный во вложении. Прошу вернуть деньги за билеты.",
                         attachments=(("больничный.pdf", PDF, "application", "pdf"),)))
        [kept] = room.letters()
        assert kept.status == "processed" and kept.outcome == "pending_claim"
        assert (tmp_path / "data" / kept.path).read_bytes().startswith(b"From: ")  # the raw letter, as received
        with room.engine.connect() as conn:
            assert conn.execute(select(claim_t.c.id)).first() is None  # nothing filed before the confirmation

        [confirmation] = room.deliver_replies()
        assert confirmation["To"] == BUYER  # the ORDER's email, whatever the From said
        assert room.order_number in confirmation["Subject"]
        text = body(confirmation)
        assert "Заявка ещё НЕ подана" in text and "Болезнь" in text and "больничный.pdf" in text
        link = re.search(r"https://vozvrat\.example\.ru(/inbound/confirm/\S+)", text).group(1)

        page = room.client.get(link)  # opening the link files nothing (mail scanners open links too)
        assert page.status_code == 200 and "Подтвердить заявку" in page.text and "г.." not in page.text
        with room.engine.connect() as conn:
            assert conn.execute(select(claim_t.c.id)).first() is None

        done = room.client.post(link)
        assert done.status_code == 201 and "Заявка подана" in done.text
        with room.engine.connect() as conn:
            claim = conn.execute(select(claim_t).where(claim_t.c.ticket_id == room.ticket_id)).one()
            audit = conn.execute(select(audit_t).where(audit_t.c.claim_id == claim.id)).one()
            doc = conn.execute(select(document_t).where(document_t.c.claim_id == claim.id)).one()
        assert claim.reason == "illness" and claim.state == "filed"
        assert (audit.actor, audit.note) == (f"buyer:order:{room.order_number}", "по письму")
        assert (doc.filename, doc.content_type, doc.size) == ("больничный.pdf", "application/pdf", len(PDF))
        assert documents.read(doc.sha256) == PDF
        assert claim.number in done.text

        again = room.client.post(link, headers={"Accept": "application/json"})  # reused: nothing filed twice
        assert again.status_code == 409 and again.json()["detail"][0]["type"] == "already_confirmed"
        assert claim.number in again.json()["detail"][0]["msg"]
        with room.engine.connect() as conn:
            assert len(conn.execute(select(claim_t.c.id)).all()) == 1

        acknowledgement = room.deliver_replies()[-1]  # the usual «Заявка принята»
        assert acknowledgement["X-Vozvrat-Template"] == "claim_received" and claim.number in acknowledgement["Subject"]
    finally:
        _close(room)


def test_the_code_confirms_too_and_wrong_codes_are_counted(room):
    room.send(letter(subject=f"Заказ {room.order_number}", text="Я передумал, не смогу пойти. Верните деньги."))
    text = body(room.deliver_replies()[0])
    ref = re.search(r"номер письма (\d+)", text).group(1)
    code = re.search(r"код (\d{6})", text).group(1)
    wrong = room.client.post("/inbound/confirm", data={"reference": ref, "code": "000000" if code != "000000" else "111111"},
                             headers={"Accept": "application/json"})
    assert wrong.status_code == 422 and wrong.json()["detail"][0]["loc"] == ["body", "code"]
    done = room.client.post("/inbound/confirm", data={"reference": ref, "code": code}, headers={"Accept": "application/json"})
    assert done.status_code == 201
    [claim] = done.json()["claims"]
    with room.engine.connect() as conn:
        assert conn.execute(select(claim_t.c.reason).where(claim_t.c.number == claim["number"])).scalar_one() == "voluntary"
        assert conn.execute(select(pending_t.c.code_attempts)).scalar_one() == 1


def test_an_expired_link_says_so_in_russian_and_files_nothing(room):
    room.send(letter(subject=f"Заказ {room.order_number}", text="Прошу вернуть деньги, обстоятельства изменились."))
    link = re.search(r"(/inbound/confirm/\S+)", body(room.deliver_replies()[0])).group(1)
    app.dependency_overrides[inbound_api.clock] = lambda: NOW + timedelta(hours=get_settings().inbound_confirm_hours + 1)
    page = room.client.post(link)
    assert page.status_code == 410 and "Срок ссылки истёк" in page.text
    with room.engine.connect() as conn:
        assert conn.execute(select(claim_t.c.id)).first() is None


def test_a_forged_from_and_an_unknown_order_get_the_same_neutral_reply(room):
    room.send(letter(subject=f"Заказ № {room.order_number}", text="Верните деньги", sender="Мошенник <thief@example.org>"))
    room.send(letter(subject="Заказ № ORD-999999", text="Верните деньги", sender="Мошенник <thief@example.org>", Message_ID="<2@x>"))
    assert [r.outcome for r in room.letters()] == ["not_matched", "not_matched"]
    forged, unknown = room.deliver_replies()
    assert forged["To"] == unknown["To"] == "thief@example.org"
    # the same words: whether the order exists is never revealed
    assert re.sub(r"\d{6}", "N", body(forged)) == re.sub(r"\d{6}", "N", body(unknown))
    assert "почтового ящика, указанного при оформлении заказа" in body(forged)
    with room.engine.connect() as conn:
        assert conn.execute(select(pending_t.c.id)).first() is None


def test_no_order_number_is_explained(room):
    room.send(letter(subject="Возврат", text="Верните деньги за концерт!"))
    [reply] = room.deliver_replies()
    assert room.letters()[0].outcome == "no_order_number"
    assert "не нашли в письме номер заказа" in body(reply)


def test_a_letter_without_an_order_number_and_with_a_refused_file_is_told_both(room):
    room.send(letter(subject="Возврат", text="Верните деньги за концерт!",
                     attachments=(("virus.exe", b"MZ\x90\x00\x03\x00\x00\x00", "application", "octet-stream"),
                                  ("справка.pdf", PDF, "application", "pdf"))))
    [reply] = room.deliver_replies()
    assert room.letters()[0].outcome == "no_order_number"
    text = body(reply)
    assert "не нашли в письме номер заказа" in text
    assert "не все файлы из письма удалось принять" in text
    assert "virus.exe: Принимаем только PDF, JPEG и PNG" in text and "справка.pdf" not in text
    html = reply.get_body(preferencelist=("html",)).get_content()
    assert "не нашли в письме номер заказа" in html and "virus.exe" in html


def test_an_unknown_order_with_a_refused_file_is_told_both_and_the_same_as_a_forged_sender(room):
    exe = (("virus.exe", b"MZ\x90\x00", "application", "octet-stream"),)
    room.send(letter(subject="Заказ № ORD-999999", text="Верните деньги", attachments=exe))
    room.send(letter(subject=f"Заказ № {room.order_number}", text="Верните деньги", sender="Мошенник <fraud@example.org>",
                     attachments=exe))
    unknown, forged = room.deliver_replies()
    assert [r.outcome for r in room.letters()] == ["not_matched", "not_matched"]
    for reply in (unknown, forged):
        assert "почтового ящика, указанного при оформлении заказа" in body(reply)
        assert "virus.exe: Принимаем только PDF, JPEG и PNG" in body(reply)
    assert re.sub(r"\d{6}", "N", body(forged)) == re.sub(r"\d{6}", "N", body(unknown))


def test_an_unreadable_attachment_is_refused_with_its_reason(room):
    room.send(letter(subject=f"Заказ {room.order_number}", text="Болею, справка во вложении.",
                     attachments=(("справка.pdf", b"MZ\x90\x00 not a pdf at all", "application", "pdf"),
                                  ("скан.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image", "png"))))
    [reply] = room.deliver_replies()
    assert room.letters()[0].outcome == "bad_attachment"
    text = body(reply)
    assert "справка.pdf: Принимаем только PDF, JPEG и PNG" in text and "скан.png" not in text
    with room.engine.connect() as conn:
        assert conn.execute(select(pending_t.c.id)).first() is None


def test_malformed_mime_is_kept_and_answered(room):
    raw = (f"From: {BUYER}\r\nTo: {REFUNDS}\r\nSubject: =?utf-8?B?broken?=\r\nMIME-Version: 1.0\r\n"
           "Content-Type: multipart/mixed; boundary=\"zzz\"\r\n\r\n--zzz\r\nContent-Type: text/plain; charset=no-such-charset\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n").encode()
    with smtplib.SMTP(room.server.host, room.server.port, timeout=10) as smtp:
        smtp.sendmail(BUYER, [REFUNDS], raw)
    room.server.handler.wait_idle()
    [kept] = room.letters()
    assert kept.status == "processed" and kept.outcome == "malformed"
    assert (Path(get_settings().data_dir) / kept.path).read_bytes() == raw
    [reply] = room.deliver_replies()
    assert "не смогли прочитать ваше письмо" in body(reply)


def test_huge_mail_is_refused_with_552_kept_and_answered_politely(room):
    big = letter(subject=f"Заказ {room.order_number}", text="Сканы во вложении",
                 attachments=(("скан.pdf", PDF + b"0" * (MAX_BYTES + 10_000), "application", "pdf"),))
    with smtplib.SMTP(room.server.host, room.server.port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.send_message(big, to_addrs=[REFUNDS])
    assert refused.value.smtp_code == 552
    room.server.handler.wait_idle()
    [kept] = room.letters()
    assert kept.too_large and kept.outcome == "too_large" and kept.size > MAX_BYTES
    [reply] = room.deliver_replies()
    assert "Письмо слишком большое" in body(reply)


@pytest.mark.parametrize("headers, envelope_from", [
    ({"Auto_Submitted": "auto-replied"}, None),
    ({"Precedence": "bulk"}, None),
    ({"List_Id": "<news.example.org>"}, None),
    ({"In_Reply_To": "<0123456789abcdef.vozvrat@example.ru>"}, None),
    ({}, ""),  # a bounce: null envelope sender
])
def test_mail_written_by_machines_is_kept_and_never_answered(room, headers, envelope_from):
    room.send(letter(subject=f"Заказ {room.order_number}", text="Автоответ: я в отпуске", **headers), envelope_from=envelope_from)
    [kept] = room.letters()
    assert kept.status == "processed" and kept.outcome == "loop"
    assert room.deliver_replies() == []


def test_our_own_address_never_gets_a_reply_and_a_sender_gets_at_most_five_a_day(room):
    room.send(letter(subject="Заказ", text="эхо", sender=REFUNDS))
    for i in range(7):
        room.send(letter(subject="Возврат", text=f"письмо {i}", Message_ID=f"<{i}@example.org>"))
    outcomes = [r.outcome for r in room.letters()]
    assert outcomes == ["loop"] + ["no_order_number"] * 5 + ["rate_limited"] * 2
    assert len(room.deliver_replies()) == 5


def test_mail_for_another_of_our_addresses_is_answered_and_relaying_is_refused(room):
    room.send(letter(subject=f"Заказ {room.order_number}", text="Верните деньги"), rcpt="info@example.ru")
    assert room.letters()[0].outcome == "not_refunds_address"
    assert REFUNDS in body(room.deliver_replies()[0])
    with smtplib.SMTP(room.server.host, room.server.port, timeout=10) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.send_message(letter(subject="x", text="y"), to_addrs=["someone@elsewhere.org"])


def test_a_crash_in_processing_keeps_the_letter_and_the_next_pass_processes_it(sqlite_url, tmp_path, monkeypatch):
    crashes = []

    def crashing(engine, letter_id, *, now, config):
        """The real processing, broken after it took the letter (a dying process, a bug)."""
        crashes.append(letter_id)
        raise RuntimeError("processing crashed")

    room = _mailroom(sqlite_url, tmp_path, monkeypatch, process=crashing)
    try:
        room.send(letter(subject=f"Заказ {room.order_number}", text="Я болел, прошу вернуть деньги."))
        [kept] = room.letters()
        assert crashes == [kept.id] and kept.status == "received"  # the sender heard 250; the letter waits
        assert room.deliver_replies() == []

        assert drain(room.engine, now=NOW, config=config()) == {"pending_claim": 1}
        [kept] = room.letters()
        assert kept.status == "processed" and kept.outcome == "pending_claim" and kept.attempts == 1
        assert room.deliver_replies()[0]["To"] == BUYER
        assert drain(room.engine, now=NOW, config=config()) == {}  # nothing twice
    finally:
        _close(room)


def test_a_letter_that_crashes_mid_processing_stays_received_with_its_error_and_is_retried(room, monkeypatch):
    def broken_store(data):
        raise OSError("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(documents, "store", broken_store)
        room.send(letter(subject=f"Заказ {room.order_number}", text="Болею", attachments=(("справка.pdf", PDF, "application", "pdf"),)))
    [kept] = room.letters()
    assert kept.status == "received" and kept.attempts == 1 and "disk full" in kept.last_error
    assert room.deliver_replies() == []
    assert drain(room.engine, now=NOW, config=config()) == {}  # not due before its backoff
    assert drain(room.engine, now=NOW + timedelta(minutes=2), config=config()) == {"pending_claim": 1}


def test_a_ticket_with_a_claim_in_work_is_left_out_and_the_rest_of_the_order_is_filed(room):
    from models.claim_store import file_claims
    from models.tables import Ticket

    ticket_t = Ticket.__table__
    with room.engine.begin() as conn:
        first = conn.execute(select(ticket_t).where(ticket_t.c.id == room.ticket_id)).one()
        second = f.ticket(conn, event_id=first.event_id, order_id=first.order_id)
        file_claims(conn, ticket_ids=[room.ticket_id], reason="voluntary", actor="buyer", now=NOW)
    room.send(letter(subject=f"Заказ {room.order_number}", text="Передумал, верните деньги за оба билета"))
    link = re.search(r"(/inbound/confirm/\S+)", body(room.deliver_replies()[0])).group(1)
    done = room.client.post(link, headers={"Accept": "application/json"})
    assert done.status_code == 201
    assert done.json()["refused_tickets"] == ["По этому билету уже есть заявка на возврат в работе."]
    [claim] = done.json()["claims"]
    with room.engine.connect() as conn:
        assert conn.execute(select(claim_t.c.ticket_id).where(claim_t.c.number == claim["number"])).scalar_one() == second


def test_a_letter_naming_a_barcode_claims_that_ticket_only(room):
    from models.tables import Ticket

    ticket_t = Ticket.__table__
    with room.engine.begin() as conn:
        first = conn.execute(select(ticket_t).where(ticket_t.c.id == room.ticket_id)).one()
        f.ticket(conn, event_id=first.event_id, order_id=first.order_id)
    room.send(letter(subject=f"Заказ {room.order_number}", text=f"Не смогу пойти, верните деньги за билет {first.barcode}"))
    assert "билетов: 1" in body(room.deliver_replies()[0])
    with room.engine.connect() as conn:
        assert conn.execute(select(pending_t.c.ticket_ids)).scalar_one() == [room.ticket_id]


def test_a_signatures_inline_logo_is_not_a_refused_file(room):
    message = letter(subject=f"Заказ {room.order_number}", text="Передумал, верните деньги")
    message.add_alternative("<p>Передумал, верните деньги</p><img src='cid:logo'>", subtype="html")
    message.get_payload()[1].add_related(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", maintype="image", subtype="gif", cid="<logo>")
    room.send(message)
    assert room.letters()[0].outcome == "pending_claim"
    with room.engine.connect() as conn:
        assert conn.execute(select(pending_t.c.files)).scalar_one() == []


def test_nul_and_control_characters_in_a_letter_are_dropped_on_both_databases(db_url, tmp_path, monkeypatch):
    room = _mailroom(db_url, tmp_path, monkeypatch)
    try:
        raw = (f"From: {BUYER}\r\nTo: {REFUNDS}\r\nSubject: Заказ {room.order_number} \x00\x07\r\nMIME-Version: 1.0\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               "Передумал\x00, верните деньги\r\n").encode()
        with smtplib.SMTP(room.server.host, room.server.port, timeout=10) as smtp:
            smtp.sendmail(BUYER, [REFUNDS], raw)
        room.server.handler.wait_idle()
        [kept] = room.letters()
        assert (kept.status, kept.outcome) == ("processed", "pending_claim") and "\x00" not in kept.subject
        with room.engine.connect() as conn:
            assert conn.execute(select(pending_t.c.description)).scalar_one() == "Передумал, верните деньги"
    finally:
        _close(room)


def test_a_letter_about_a_ticket_that_already_has_a_claim_in_work_is_answered_with_that_claims_link(room):
    """No «confirm your claim» letter (its confirmation would only answer 409): a reply saying the claim
    is already in work, with the signed link to its status page, to the order's own mailbox."""
    from models.claim_store import file_claims
    from tasks.buyer_links import read_status_link

    with room.engine.begin() as conn:
        (claim_id,) = file_claims(conn, ticket_ids=[room.ticket_id], reason="voluntary", actor="buyer", now=NOW)
        number = conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()
    room.send(letter(subject=f"Заказ № {room.order_number}", text="Передумал, верните деньги", sender=f"Анна <{BUYER.upper()}>"))
    assert room.letters()[0].outcome == "claim_open"
    [reply] = room.deliver_replies()
    assert reply["To"] == BUYER and reply["X-Vozvrat-Template"] == "inbound_refused"
    assert "заявка по этому билету уже есть" in reply["Subject"]
    text = body(reply)
    assert "уже есть заявка на возврат в работе" in text and f"заявка № {number}" in text and "подтвердите" not in text.lower()
    link = re.search(r"https://vozvrat\.example\.ru/s/(\S+)", text).group(1)
    assert read_status_link(link, now=NOW) == number  # the link opens that claim's page
    with room.engine.connect() as conn:
        assert conn.execute(select(pending_t.c.id)).first() is None  # nothing to confirm


def test_a_confirmation_held_past_its_deadline_is_not_sent(room):
    """A confirmation held (the kill switch, an outage) until its link and code have expired would ask the
    buyer for the impossible: it is not sent (outbox `send_before`), and nothing was filed."""
    from models.tables import OutboxMessage

    outbox_t = OutboxMessage.__table__
    room.send(letter(subject=f"Заказ {room.order_number}", text="Прошу вернуть деньги, обстоятельства изменились."))
    late = NOW + timedelta(hours=get_settings().inbound_confirm_hours, minutes=1)
    asyncio.run(dispatch_emails(engine=room.engine, smtp=SmtpSettings(port=room.sink.port, timeout=5), now=late, mail_from=MAIL_FROM))
    assert room.sink.messages() == []
    with room.engine.connect() as conn:
        status, error = conn.execute(select(outbox_t.c.status, outbox_t.c.last_error).where(outbox_t.c.template == "inbound_confirm")).one()
        assert status == "failed" and "not sent" in error
        assert conn.execute(select(claim_t.c.id)).first() is None
