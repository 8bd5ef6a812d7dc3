"""Reading a letter (states/letter.py): the order number, the reason, mail written by machines."""
from __future__ import annotations

import pytest

from states.letter import automatic_mail, order_number_candidates, recognise_reason
from states.policy import Reason


@pytest.mark.parametrize("subject, text, first", [
    ("Возврат, заказ № ORD-000123", "", "ORD-000123"),
    ("Возврат", "Здравствуйте, номер заказа: 12345678. Телефон +7 999 000-00-00", "12345678"),
    ("Re: order #KS-2024-00017", "", "KS-2024-00017"),
    ("Возврат билетов", "Прошу вернуть деньги по заказу ord-000123, спасибо", "ord-000123"),
])
def test_the_order_number_after_its_keyword_comes_first(subject, text, first):
    assert order_number_candidates(subject, text)[0] == first


def test_a_letter_without_digits_names_no_order():
    assert order_number_candidates("Возврат", "Верните деньги за концерт!") == []


def test_candidates_are_bounded_and_unique():
    text = " ".join(f"A{i:04d}" for i in range(100)) + " a0001"
    found = order_number_candidates("", text)
    assert len(found) == 20 and len({c.upper() for c in found}) == 20


@pytest.mark.parametrize("text, status, reason", [
    ("Я заболела, больничный во вложении", "scheduled", Reason.ILLNESS),
    ("Прикладываю лист нетрудоспособности", "scheduled", Reason.ILLNESS),
    ("У меня умер отец, свидетельство о смерти прилагаю", "scheduled", Reason.DEATH),
    ("Отец долго болел и умер", "scheduled", Reason.DEATH),  # death first: the illness came before it
    ("Концерт отменён, верните деньги", "cancelled", Reason.CANCELLED),
    ("Концерт отменён, верните деньги", "scheduled", Reason.OTHER),  # the buyer's word is not enough
    # Regression: a cancelled or replaced event's letter was filed as illness / voluntary (and priced so).
    ("Я заболела, больничный во вложении", "cancelled", Reason.CANCELLED),
    ("Передумал, верните деньги", "cancelled", Reason.CANCELLED),
    ("Верните деньги, пожалуйста", "replaced", Reason.REPLACED),
    ("Передумал, верните деньги", "postponed", Reason.VOLUNTARY),  # a postponed event's buyer may still choose
    ("Перенос концерта, на новую дату не смогу", "postponed", Reason.POSTPONED),
    ("Передумал, верните деньги", "scheduled", Reason.VOLUNTARY),
    ("Не смогу пойти, верните деньги", "scheduled", Reason.VOLUNTARY),
    ("Верните деньги, пожалуйста", "scheduled", Reason.OTHER),  # voluntary only when the letter says so
    ("У меня все живы и здоровы, никто не болел, но хочу вернуть полную стоимость", "scheduled", Reason.OTHER),
    ("Я болельщик «Зенита», матч совпал с концертом", "scheduled", Reason.OTHER),  # a fan is not ill
])
def test_the_reason_is_recognised_from_the_words(text, status, reason):
    assert recognise_reason("Возврат", text, event_status=status).reason == reason


def test_the_subject_counts_too():
    assert recognise_reason("Возврат по болезни", "Заказ 123456", event_status="scheduled").reason == Reason.ILLNESS


OWN = frozenset({"vozvrat@example.ru"})


def loop(headers=None, envelope_from="anna@example.ru", from_address="anna@example.ru"):
    return automatic_mail(headers or {}, envelope_from=envelope_from, from_address=from_address, own_addresses=OWN,
                          own_message_marker=".vozvrat@")


def test_a_person_writing_is_answered():
    assert loop({"auto-submitted": "no", "subject": "Возврат"}) is None


@pytest.mark.parametrize("headers, envelope_from, from_address", [
    ({"auto-submitted": "auto-replied"}, "anna@example.ru", "anna@example.ru"),
    ({"precedence": "Bulk"}, "anna@example.ru", "anna@example.ru"),
    ({"list-id": "<l.example.org>"}, "anna@example.ru", "anna@example.ru"),
    ({"x-auto-response-suppress": "All"}, "anna@example.ru", "anna@example.ru"),
    ({}, "", "anna@example.ru"),
    ({}, "MAILER-DAEMON@mx.example.org", "anna@example.ru"),
    ({}, "anna@example.ru", "Vozvrat@Example.ru"),
    ({"references": "<a@b> <0badc0de.vozvrat@example.ru>"}, "anna@example.ru", "anna@example.ru"),
])
def test_mail_written_by_machines_or_by_ourselves_gets_no_answer(headers, envelope_from, from_address):
    assert loop(headers, envelope_from, from_address) is not None
