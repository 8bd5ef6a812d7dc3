"""Sending through a real aiosmtpd sink on a free port; a dead port; a permanent refusal."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from aiosmtpd.controller import Controller
from pydantic import SecretStr

from tasks.emails import render_email
from tasks.smtp import SmtpRejected, SmtpSettings, SmtpUnavailable, send_message
from tasks.smtp_sink import free_port, start_sink

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"


def approved_message(claim_number: str = "В-2026-000042"):
    return render_email(
        "decision_approved", to="anna@example.org", mail_from=MAIL_FROM, message_id_key="claim:42:decision_approved",
        context={"claim_number": claim_number, "event_title": "Пикник", "refund_kopecks": 175000,
                 "payout_deadline": "2026-12-23", "buyer_name": "Анна"},
        now=NOW,
    )


@pytest.fixture
def sink(tmp_path):
    handle = start_sink("127.0.0.1", 0, tmp_path / "mail")
    yield handle
    handle.stop()


def test_sink_receives_a_message_sent_with_send_message(sink):
    message = approved_message()
    asyncio.run(send_message(message, SmtpSettings(host="127.0.0.1", port=sink.port, timeout=5)))

    [received] = sink.messages()
    assert received["Subject"] == "Заявка № В-2026-000042: возврат одобрен"
    assert received["Message-ID"] == message["Message-ID"]
    assert "1 750,00 ₽" in received.get_body(("plain",)).get_content()
    assert "1 750,00 ₽" in received.get_body(("html",)).get_content()
    [eml] = sorted(sink.folder.glob("*.eml"))
    assert eml.name.startswith("000001-")
    assert sink.received[0].rcpt_tos == ["anna@example.org"]


def test_nothing_listening_is_unavailable():
    port = free_port()  # bound and released: nobody listens there
    with pytest.raises(SmtpUnavailable):
        asyncio.run(send_message(approved_message(), SmtpSettings(host="127.0.0.1", port=port, timeout=2)))


class RefuseEveryone:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 No such user"


def test_permanent_refusal_is_rejected():
    controller = Controller(RefuseEveryone(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with pytest.raises(SmtpRejected, match="550"):
            asyncio.run(send_message(approved_message(), SmtpSettings(host="127.0.0.1", port=controller.port, timeout=5)))
    finally:
        controller.stop()


def test_settings_come_from_models_settings_and_hide_the_password():
    settings = SimpleNamespace(smtp_host="smtp.example.ru", smtp_port="587", smtp_starttls=True,
                               smtp_user="robot", smtp_password=SecretStr("s3cret"))
    smtp = SmtpSettings.from_settings(settings)
    assert (smtp.host, smtp.port, smtp.starttls, smtp.user, smtp.password) == ("smtp.example.ru", 587, True, "robot", "s3cret")
    assert "s3cret" not in repr(smtp)
    assert isinstance(SmtpSettings.from_settings(), SmtpSettings)  # from get_settings() by default
