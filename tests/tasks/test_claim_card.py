"""«Карточка заявки» and the run's label, pure: whom a claim waits on and until when, in working days."""
from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from tasks.claim_card import ClaimCard, Step, card_key, final_label, holder_of, render_card, resume_form, run_label, working_days_left
from tasks.sla import breaches_markdown

MSK = ZoneInfo("Europe/Moscow")


def card(**kw) -> ClaimCard:
    base = dict(claim_id=7, number="VZ-0000007-1", state="awaiting_organizer", version=3, reason="other", amount=450000,
                approved_amount=None, quote={}, payment_method="card", organizer_id=12, organizer_name="Мосфильм-Концерт",
                event_id=3, event_title="Щелкунчик", event_start=datetime(2026, 12, 30, 19, 0, tzinfo=MSK), today=date(2026, 12, 8),
                deadline=date(2026, 12, 11), deadline_provisional=False, extended=False, escalated=False, flow_run_id="abc",
                steps=[Step(at=datetime(2026, 12, 8, 12, 0, tzinfo=MSK), trigger="assess", from_state="filed", to_state="awaiting_organizer",
                            actor="system", note=None)])
    return ClaimCard(**(base | kw))


def test_working_days_left_skip_weekends_and_holidays_and_count_overdue_as_sla_watch_does():
    assert working_days_left(date(2026, 12, 8), date(2026, 12, 11)) == 3  # Tue -> Fri: Wed, Thu, Fri
    assert working_days_left(date(2026, 12, 11), date(2026, 12, 11)) == 0
    assert working_days_left(date(2026, 12, 11), date(2026, 12, 14)) == 1  # the weekend does not count
    assert working_days_left(date(2025, 12, 30), date(2026, 1, 12)) == 1  # only 12.01: 31.12.2025 (transferred) and the New Year holidays are off
    assert working_days_left(date(2026, 1, 21), date(2026, 1, 20)) == -1


@pytest.mark.parametrize(("state", "method", "who"), [
    ("awaiting_documents", "card", "покупатель: документы"),
    ("awaiting_organizer", "card", "организатор"),
    ("needs_bank_details", "cash", "покупатель: банковские реквизиты"),
    ("payout_pending", "cash", "бухгалтерия"),
    ("payout_pending", "card", "эквайер"),
])
def test_each_waiting_state_names_who_holds_it(state, method, who):
    assert who in holder_of(state, method).who


def test_the_run_label_says_whom_and_until_when_and_the_card_says_it_at_length():
    c = card()
    name, message = run_label(c)
    assert name == "Ждёт организатора · до 11.12.2026"
    assert "осталось 3 рабочих дня" in message and "Мосфильм-Концерт (id 12)" in message
    text = render_card(c, prefect_ui_url="http://ui:4200/")
    assert text.startswith("# Карточка заявки VZ-0000007-1")
    assert "решение до 11 декабря 2026 г. — осталось 3 рабочих дня" in text and "4 500,00 ₽" in text
    assert "[VZ-0000007-1](http://ui:4200/runs/flow-run/abc)" in text and "`assess`" in text


def test_an_escalated_claim_says_its_deadline_has_passed_whatever_clock_reads_it():
    name, message = run_label(card(state="escalated", escalated=True))
    assert name == "Эскалация: ждёт организатора · срок был 11.12.2026"
    assert "срок истёк" in message
    overdue, _ = run_label(card(today=date(2026, 12, 15)))
    assert overdue == "Ждёт организатора · срок был 11.12.2026"
    assert "просрочено на 2 рабочих дня" in render_card(card(today=date(2026, 12, 15)))


def test_the_resume_form_is_prefilled_for_the_state():
    _, initial = resume_form(card())
    assert initial == {"decision": "approve", "decided_by": "prefect-ui", "amount_kopecks": 450000}
    description, initial = resume_form(card(state="needs_bank_details", payment_method="cash", deadline=date(2026, 12, 22)))
    assert initial["decision"] == "recheck" and "vozvrat payouts bank-details VZ-0000007-1" in description


def test_a_run_that_hands_the_claim_to_accounting_ends_saying_so():
    name, message = final_label(card(state="payout_pending", payment_method="bso", deadline=date(2026, 12, 22)))
    assert name == "Ждёт бухгалтерию · до 22.12.2026" and "бухгалтерия" in message
    assert final_label(card(state="paid", deadline=None))[0] is None


def test_card_keys_are_lowercase_letters_digits_and_dashes():
    assert card_key("VZ-0000007-1") == "claim-vz-0000007-1"
    assert card_key("ВЗ 7/1") == "claim-7-1"


def test_breaches_name_the_organizer_and_link_the_run_and_the_claim():
    row = SimpleNamespace(id=7, number="VZ-0000007-1", state="escalated", reason="other", decision_due=date(2026, 12, 11), payout_due=None,
                          escalated_at=datetime(2026, 12, 12, 9, 0, tzinfo=UTC), flow_run_id="abc", event_id=3, title="Щелкунчик",
                          organizer_id=12, organizer_name="Мосфильм | Концерт")
    text = breaches_markdown([row], now=datetime(2026, 12, 12, 9, 0, tzinfo=UTC), prefect_ui_url="http://ui:4200", api_url="http://api:8000")
    line = next(x for x in text.splitlines() if "VZ-0000007-1" in x)
    assert "Мосфильм \\| Концерт (id 12)" in line and "[run](http://ui:4200/runs/flow-run/abc)" in line
    assert "[заявка](http://api:8000/organizer/claims/7)" in line
    assert "Нарушений нет" in breaches_markdown([], now=datetime(2026, 12, 12, tzinfo=UTC), prefect_ui_url="u", api_url="a")
