"""Rendering outbound email: every template, both forms, the facts, escaping, no foreign links."""
from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from tasks.emails import (
    OPTIONAL_CONTEXT, TEMPLATE_CONTEXT, TEMPLATES, MissingContext, UnknownTemplate, days_ru,
    message_id_for, render_email, rub,
)

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"

SAMPLE = {
    "claim_number": "В-2026-000042",
    "buyer_name": "Анна Петрова",
    "event_title": "Пикник. Большой концерт",
    "event_date": "2026-12-05",
    "reason": "other",
    "refund_percent": 50,
    "refund_kopecks": 175000,
    "days_before": 7,
    "rule": "ст. 52.1 Основ законодательства о культуре: за 5–9 дней — не менее 50 %",
    "decision_deadline": "2026-12-09",
    "documents_deadline": "2026-12-19",
    "payout_deadline": "2026-12-23",
    "rejection_reason": "Причина не подтверждена документами",
    "fallback_percent": 30,
    "fallback_kopecks": 105000,
    "channel": "card",
    "account_masked": "•••• 4242",
    "new_deadline": "2026-12-23",
    "extension_reason": "Запросили оригинал справки",
    "overdue_since": "2026-12-10",
    "deadline": "2026-12-09",
    "organizer_name": "ООО «Концерт»",
}


def sample(template: str, **overrides) -> dict:
    keys = TEMPLATE_CONTEXT[template] | OPTIONAL_CONTEXT[template]
    return {k: v for k, v in SAMPLE.items() if k in keys} | overrides


def render(template: str, **overrides) -> EmailMessage:
    return render_email(template, to="anna@example.org", context=sample(template, **overrides),
                        mail_from=MAIL_FROM, message_id_key=f"claim:42:{template}", now=NOW)


def bodies(message: EmailMessage) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_renders_text_and_html_with_the_key_facts(template):
    message = render(template)
    text, html = bodies(message)

    assert message.get_content_type() == "multipart/alternative"
    assert all(part.get_content_charset() == "utf-8" for part in message.iter_parts())
    assert SAMPLE["claim_number"] in message["Subject"]
    assert message["To"] == "anna@example.org" and "vozvrat@example.ru" in message["From"]
    assert message["Date"] == "Wed, 25 Nov 2026 09:30:00 +0000"
    for body in (text, html):
        assert SAMPLE["claim_number"] in body
        assert "Осторожно, мошенники!" in body and "пароли" in body  # the anti-phishing footer
        assert "http" not in body and "www." not in body  # no links to anywhere
        if "refund_kopecks" in TEMPLATE_CONTEXT[template]:
            assert "1 750,00 ₽" in body
    assert "<html" in html and "<html" not in text


def test_message_id_is_deterministic_per_key():
    first, again = render("decision_approved"), render("decision_approved")
    assert first["Message-ID"] == again["Message-ID"] == message_id_for("claim:42:decision_approved", MAIL_FROM)
    assert first["Message-ID"] != render("refund_sent")["Message-ID"]
    assert first["Message-ID"].endswith("@example.ru>")


def test_unknown_template_is_refused():
    with pytest.raises(UnknownTemplate):
        render_email("concert_invitation", to="x@example.org", context={"claim_number": "1"},
                     mail_from=MAIL_FROM, message_id_key="k", now=NOW)


def test_missing_context_is_refused():
    with pytest.raises(MissingContext, match="refund_kopecks"):
        render_email("decision_approved", to="x@example.org",
                     context={"claim_number": "1", "event_title": "x", "payout_deadline": "2026-12-01"},
                     mail_from=MAIL_FROM, message_id_key="k", now=NOW)


def test_date_comes_from_the_context_when_now_is_not_passed():
    message = render_email("bank_details_needed", to="x@example.org",
                           context=sample("bank_details_needed", now="2026-11-25T09:30:00+00:00"),
                           mail_from=MAIL_FROM, message_id_key="k")
    assert message["Date"] == "Wed, 25 Nov 2026 09:30:00 +0000"


def test_html_escapes_a_hostile_buyer_name():
    text, html = bodies(render("decision_approved", buyer_name="<script>alert(1)</script>"))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<script>alert(1)</script>" in text  # plain text is not HTML: shown as typed


def test_links_in_free_text_are_removed():
    text, html = bodies(render("decision_rejected", rejection_reason="Подробнее: https://evil.example/pay и www.evil.example"))
    for body in (text, html):
        assert "evil.example" not in body and "[ссылка удалена]" in body


def test_subject_is_one_line_whatever_the_claim_number():
    assert "\n" not in render("refund_sent", claim_number="42\nBcc: all@example.org")["Subject"]


def test_claim_received_states_the_quote():
    text, html = bodies(render("claim_received"))
    for body in (text, html):
        assert "Прочее" in body and "50 %" in body and "7 дней" in body
        assert "ст. 52.1" in body and "9 декабря 2026 г." in body


def test_rejection_offers_the_voluntary_refund_only_when_given():
    text, _ = bodies(render("decision_rejected"))
    assert "30 %" in text and "1 050,00 ₽" in text and "«По собственной инициативе»" in text
    ctx = sample("decision_rejected")
    del ctx["fallback_percent"], ctx["fallback_kopecks"]
    message = render_email("decision_rejected", to="x@example.org", context=ctx, mail_from=MAIL_FROM,
                           message_id_key="k", now=NOW)
    text, _ = bodies(message)
    assert "По собственной инициативе" not in text and "Причина не подтверждена" in text


def test_documents_needed_lists_accepted_documents_and_the_rules():
    text, html = bodies(render("documents_needed"))
    for body in (text, html):
        for fact in ("Госуслуг", "ЭЛН", "ПЦР", "свидетельство о смерти", "14 дней", "19 декабря 2026 г.",
                     "период болезни", "ФИО"):
            assert fact in body


def test_refund_channel_in_russian():
    text, _ = bodies(render("refund_sent", channel="bank_transfer"))
    assert "банковским переводом" in text


def test_rub_formats_kopecks_the_russian_way():
    assert rub(175000) == "1 750,00 ₽"
    assert rub(5) == "0,05 ₽"
    assert rub(123456789) == "1 234 567,89 ₽"
    with pytest.raises(TypeError):
        rub(17.5)


@pytest.mark.parametrize(("n", "text"), [(1, "1 день"), (3, "3 дня"), (5, "5 дней"), (11, "11 дней"),
                                         (21, "21 день"), (22, "22 дня"), (14, "14 дней")])
def test_days_ru(n, text):
    assert days_ru(n) == text
