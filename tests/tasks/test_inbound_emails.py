"""The replies to letters (claims by email): Russian, both forms, the anti-phishing footer, no link
but our own confirmation link, the same words for an unknown order and a forged sender."""
from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from tasks.emails import render_email

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"
CONFIRM = {"letter_ref": "000042", "order_number": "ORD-000123", "event_title": "Щелкунчик", "tickets": 2, "reason": "illness",
           "files": [{"filename": "больничный.pdf", "size": 1000}, {"filename": "<script>.pdf", "size": 10}], "code": "123456",
           "confirm_url": "https://vozvrat.example.ru/inbound/confirm/abc.def", "code_url": "https://vozvrat.example.ru/inbound/confirm",
           "expires_at": "2026-11-28T09:30:00+00:00", "buyer_name": "Анна"}


def bodies(template: str, context: dict) -> tuple[str, str, str]:
    message = render_email(template, to="anna@example.org", context=context, mail_from=MAIL_FROM, message_id_key="inbound:42:x", now=NOW)
    assert message["Auto-Submitted"] == "auto-generated" and message["X-Vozvrat-Claim"] is None
    return message["Subject"], message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def test_the_confirmation_carries_the_code_our_link_and_what_will_be_filed():
    subject, text, html = bodies("inbound_confirm", CONFIRM)
    assert "ORD-000123" in subject and "000042" in subject
    for body in (text, html):
        assert "123456" in body and "Болезнь" in body and "больничный.pdf" in body and "28 ноября 2026 г." in body
        assert "НЕ подана" in body.replace("не подана", "НЕ подана")
        assert "Осторожно, мошенники!" in body
        assert set(re.findall(r"https?://[^/\s\"<]+", body)) == {"https://vozvrat.example.ru"}  # our own address only
    assert "&lt;script&gt;.pdf" in html and "<script>" not in html


@pytest.mark.parametrize("outcome, words", [
    ("not_matched", "почтового ящика, указанного при оформлении заказа"),
    ("no_order_number", "не нашли в письме номер заказа"),
    ("bad_attachment", "PDF, JPEG и PNG"),
    ("too_large", "до 25 МБ"),
    ("not_refunds_address", "vozvrat@example.ru"),
    ("malformed", "не смогли прочитать"),
])
def test_every_refusal_says_why_in_russian(outcome, words):
    context = {"letter_ref": "000042", "outcome": outcome, "refunds_address": "vozvrat@example.ru", "max_mb": 25,
               "refused_files": [{"filename": "a.doc", "reason": "Принимаем только PDF, JPEG и PNG."}] if outcome == "bad_attachment" else None}
    subject, text, html = bodies("inbound_refused", context)
    assert subject == "Ваше письмо № 000042: заявка на возврат не подана"
    for body in (text, html):
        assert words in body and "Осторожно, мошенники!" in body and "http" not in body
    if outcome == "bad_attachment":
        assert "a.doc: Принимаем только PDF, JPEG и PNG." in text


@pytest.mark.parametrize("outcome, words", [
    ("no_order_number", "не нашли в письме номер заказа"),
    ("not_matched", "почтового ящика, указанного при оформлении заказа"),
])
def test_a_refusal_names_the_refused_files_too(outcome, words):
    context = {"letter_ref": "000042", "outcome": outcome, "refunds_address": "vozvrat@example.ru",
               "refused_files": [{"filename": "virus.exe", "reason": "Принимаем только PDF, JPEG и PNG; этот файл не из них или повреждён."}]}
    subject, text, html = bodies("inbound_refused", context)
    assert subject == "Ваше письмо № 000042: заявка на возврат не подана"
    for body in (text, html):
        assert words in body and "не все файлы из письма удалось принять" in body
        assert "virus.exe: Принимаем только PDF, JPEG и PNG" in body


@pytest.mark.parametrize("template, context", [
    ("inbound_confirm", CONFIRM),
    ("inbound_refused", {"letter_ref": "000042", "outcome": "bad_attachment", "refunds_address": "vozvrat@example.ru",
                         "refused_files": [{"filename": "скан «паспорта».doc", "reason": "Принимаем только PDF, JPEG и PNG."}]}),
])
def test_the_wire_rendering_is_the_same_message(template, context):
    """The dispatcher sends render_email_bytes; it must be render_email's message (no X-Vozvrat-Claim: no claim yet)."""
    from email import policy
    from email.parser import BytesParser

    from tasks.emails import render_email_bytes

    message = render_email(template, to="anna@example.org", context=context, mail_from=MAIL_FROM, message_id_key="k", now=NOW)
    wire = render_email_bytes(template, to="anna@example.org", context=context, mail_from=MAIL_FROM, message_id_key="k", now=NOW)
    sent = BytesParser(policy=policy.default).parsebytes(wire.data)
    names = ("Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "X-Vozvrat-Template", "X-Vozvrat-Claim")
    assert [str(sent[n]) for n in names] == [str(message[n]) for n in names]
    assert sent.get_body(("plain",)).get_content() == message.get_body(("plain",)).get_content()
