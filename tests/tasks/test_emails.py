"""Rendering outbound email: every template, both forms, the facts, escaping, no foreign links."""
from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from tasks.emails import (
    OPTIONAL_CONTEXT,
    TEMPLATE_CONTEXT,
    TEMPLATES,
    MissingContext,
    UnknownTemplate,
    basis_ru,
    days_ru,
    message_id_for,
    render_email,
    render_email_bytes,
    rub,
    working_days_ru,
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
    "basis": "ст. 52.1 Основ законодательства РФ о культуре: при обращении менее чем за 10, но не позднее чем за 5 дней — не менее 50 %",
    "decision_working_days": 10,
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
    "overdue_working_days": 2,
    "kind": "decision",
    "deadline": "2026-12-09",
    "organizer_name": "ООО «Концерт»",
    # issue 13: postponements, Decree 442, vouchers
    "order_number": "В-2026-000042",
    "original_date": "2026-12-05",
    "new_date": "2027-06-05",
    "claims_until": "2027-05-01",
    "rule_ru": "постановление Правительства РФ от 06.04.2020 № 442: мероприятие перенесено не более чем на 18 месяцев",
    "voucher_number": "VCH-ABCD-EFGH-JKLM",
    "value_kopecks": 175000,
    "valid_until": "2027-12-05",
    "alert": "warning",
    "days": 7,
    "code": "042042",
    "valid_minutes": 15,
}


def sample(template: str, **overrides) -> dict:
    keys = TEMPLATE_CONTEXT[template] | OPTIONAL_CONTEXT[template]
    return {k: v for k, v in SAMPLE.items() if k in keys} | overrides


def render(template: str, **overrides) -> EmailMessage:
    return render_email(template, to="anna@example.org", context=sample(template, **overrides),
                        mail_from=MAIL_FROM, message_id_key=f"claim:42:{template}", now=NOW)


def bodies(message: EmailMessage) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


@pytest.mark.parametrize("template", sorted(t for t in TEMPLATES if "claim_number" in TEMPLATE_CONTEXT[t]))  # replies to letters: test_inbound_emails.py
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


def test_claim_received_states_the_quote_and_its_rule_in_russian_prose():
    text, html = bodies(render("claim_received", reason="voluntary", days_before=7))
    for body in (text, html):
        assert "По собственной инициативе" in body and "50 %" in body and "7 дней" in body and "1 750,00 ₽" in body
        assert "ст. 52.1 Основ законодательства РФ о культуре: при обращении менее чем за 10, но не позднее чем за 5 дней" in body
        assert "в течение 10 рабочих дней" in body


@pytest.mark.parametrize("reason", ["illness", "death", "other"])
def test_claim_received_for_an_organizer_decision_promises_no_amount_and_says_what_comes_next(reason):
    """Regression: an illness claim's acknowledgement promised «К возврату: 100 % — 4 200,00» and a payout in
    10 working days before the organizer had decided anything."""
    context = sample("claim_received", reason=reason, refund_percent=100, refund_kopecks=420000, documents_received=False)
    message = render_email("claim_received", to="anna@example.org", context=context, mail_from=MAIL_FROM,
                           message_id_key="k", now=NOW)
    text, html = bodies(message)
    for body in (text, re.sub(r"<[^>]+>", "", html)):
        assert "4 200,00" not in body and "К возврату" not in body and "Деньги вернутся" not in body
        assert "Решение о возврате принимает организатор" in body
        assert "в течение 10 рабочих дней" in body
        if reason == "other":
            assert "до 9 декабря 2026 г. включительно" in body
        else:
            assert "19 декабря 2026 г." in body and "после того, как получит документы" in body
            assert " 9 декабря" not in body  # no decision date before the documents are in


def test_claim_received_for_a_documented_claim_with_its_documents_in_names_the_decision_date():
    text, _ = bodies(render("claim_received", reason="illness", documents_received=True))
    assert "до 9 декабря 2026 г. включительно" in text and "пришлите документ" not in text


@pytest.mark.parametrize(("quote", "basis"), [
    ({"reason": "voluntary", "days_before": 10, "percent": 100, "source": "Art. 52.1"},
     "ст. 52.1 Основ законодательства РФ о культуре: при обращении не позднее чем за 10 дней — 100 %"),
    ({"reason": "voluntary", "days_before": 9, "percent": 50, "source": "Art. 52.1"},
     "ст. 52.1 Основ законодательства РФ о культуре: при обращении менее чем за 10, но не позднее чем за 5 дней — не менее 50 %"),
    ({"reason": "voluntary", "days_before": 3, "percent": 30, "source": "Art. 52.1"},
     "ст. 52.1 Основ законодательства РФ о культуре: при обращении менее чем за 5, но не позднее чем за 3 дня — не менее 30 %"),
    ({"reason": "voluntary", "days_before": 2, "percent": 0, "source": "Art. 52.1", "refusal_code": "TOO_LATE"},
     "ст. 52.1 Основ законодательства РФ о культуре: при обращении менее чем за 3 дня организатор вправе не возвращать деньги"),
    ({"reason": "voluntary", "days_before": 7, "percent": 80, "source": "organizer policy; Art. 52.1"},
     "условия организатора: при обращении за 7 дней до мероприятия — 80 % (ст. 52.1 Основ законодательства РФ о культуре требует не менее 50 %)"),
    ({"reason": "cancelled", "percent": 100}, "ст. 52.1 Основ законодательства РФ о культуре: при отмене мероприятия — 100 % стоимости билета"),
    ({"reason": "postponed", "percent": 100}, "ст. 52.1 Основ законодательства РФ о культуре: при переносе мероприятия — 100 % стоимости билета"),
])
def test_basis_is_russian_prose_citing_the_rule(quote, basis):
    """Regression: «Основание: Art. 52.1: d >= 10 -> 100 % (d = 18)», the quote's formula text, reached buyers."""
    assert basis_ru(quote) == basis


@pytest.mark.parametrize("reason", ["illness", "death", "other"])
def test_basis_of_an_organizer_decision_cites_its_rule_without_an_amount(reason):
    basis = basis_ru({"reason": reason, "percent": 100})
    assert "организатор" in basis and "%" not in basis
    assert ("1491" in basis) == (reason != "other")


def test_escalation_says_how_many_working_days_overdue():
    message = render("escalation_notice", overdue_working_days=3)
    text, html = bodies(message)
    html = re.sub(r"<[^>]+>", "", html)
    assert message["Subject"] == "Просрочено решение по заявке № В-2026-000042: 3 рабочих дня"
    for body in (text, html):
        assert "просрочено на 3 рабочих дня" in body and "до 9 декабря 2026 г. включительно" in body
    payout = render("escalation_notice", kind="payout", overdue_working_days=1)
    assert payout["Subject"] == "Просрочена выплата по заявке № В-2026-000042: 1 рабочий день"


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


@pytest.mark.parametrize(("n", "text"), [(1, "1 рабочий день"), (2, "2 рабочих дня"), (10, "10 рабочих дней"),
                                         (11, "11 рабочих дней"), (21, "21 рабочий день")])
def test_working_days_ru(n, text):
    assert working_days_ru(n) == text


@pytest.mark.parametrize("template", sorted(t for t in TEMPLATES if "claim_number" in TEMPLATE_CONTEXT[t]))  # replies to letters: test_inbound_emails.py
def test_the_wire_rendering_is_the_same_message(template):
    """The dispatcher sends render_email_bytes (compat32, a third of the time); it must be render_email's message."""
    from email import policy
    from email.parser import BytesParser

    context = sample(template, claim_number="В-2026-000042", event_title="Пикник «Афиши» — большой концерт " * 3)
    message = render_email(template, to="anna@example.org", context=context, mail_from=MAIL_FROM, message_id_key="k", now=NOW)
    wire = render_email_bytes(template, to="anna@example.org", context=context, mail_from=MAIL_FROM, message_id_key="k", now=NOW)
    sent = BytesParser(policy=policy.default).parsebytes(wire.data)
    names = ("Subject", "From", "To", "Date", "Message-ID", "Auto-Submitted", "X-Vozvrat-Template", "X-Vozvrat-Claim")
    assert [str(sent[n]) for n in names] == [str(message[n]) for n in names]
    assert bodies(sent) == bodies(message)
    assert (wire.mail_from, wire.to, wire.message_id) == ("vozvrat@example.ru", "anna@example.org", message["Message-ID"])
    assert all(part.get_content_charset() == "utf-8" and part["Content-Transfer-Encoding"] == "base64" for part in sent.iter_parts())
